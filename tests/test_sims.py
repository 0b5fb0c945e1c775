"""Data generator, fast trainer and Monte-Carlo risk: invariants, golden values, bad input."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpolab.sims.config import DataSpec, TrainSpec, make_params, theorem_regime
from dpolab.sims.data import concept_vectors, pair_sizes, sample_dataset
from dpolab.sims.risk import clopper_pearson
from dpolab.sims.train import check_finite, make_trainer, run_seeds


def _tiny():
    spec = DataSpec(K=2, Q=3, d=5, n_test=2, vocab=6)
    params = make_params(beta=0.9, eta=0.4, v=0.3, ref_scale=0.7)
    key = jax.random.key(11)
    return spec, params, sample_dataset(key, spec, params, 0), sample_dataset(key, spec, params, 1)


def test_one_gd_step_golden_in_plain_numpy():
    """Margins after two GD steps, recomputed with an explicit per-sample numpy loop."""
    spec, params, train, test = _tiny()
    traj = jax.jit(make_trainer(TrainSpec(steps=2), spec.n_pairs, pair_sizes=pair_sizes(spec)))(train, test, params)
    g, yw, yl = np.asarray(train.g), np.asarray(train.chosen), np.asarray(train.rejected)
    beta, eta, n = 0.9, 0.4, g.shape[0]
    dw = np.zeros((4, 5))
    for _ in range(2):
        r = [beta * (dw[yw[i]] - dw[yl[i]]) @ g[i] for i in range(n)]
        grad = np.zeros_like(dw)
        for i in range(n):
            w = 1 / (1 + math.exp(r[i]))
            grad[yw[i]] -= beta / n * w * g[i]
            grad[yl[i]] += beta / n * w * g[i]
        dw -= eta * grad
    expected = np.array([beta * (dw[yw[i]] - dw[yl[i]]) @ g[i] for i in range(n)])
    assert np.all(yw != yl) and np.all(expected > 0)  # a golden value, not 0 = 0 (two GD steps raise every margin)
    np.testing.assert_allclose(np.asarray(traj.margins[-1]), expected, rtol=0, atol=1e-13)
    assert np.all(np.asarray(traj.margins[0]) == 0.0)  # margins start at 0


def test_held_out_margins_time_axis_and_the_recursion_in_plain_numpy():
    """Held-out margins from the trained head, checkpoint times n·η with a stride, and the exact
    recursion r ← r + (ηβ²/N) C σ(−r) on cross terms built in numpy."""
    from dpolab.sims.reference import dataset_cross_terms, margin_recursion

    spec, params, train, test = _tiny()
    run = make_trainer(TrainSpec(steps=6, stride=3), spec.n_pairs, pair_sizes=pair_sizes(spec))
    traj = jax.jit(run)(train, test, params)
    np.testing.assert_allclose(np.asarray(traj.t), [0.0, 1.2, 2.4], rtol=1e-15)
    dw = np.asarray(traj.delta_w)
    gt, yw, yl = np.asarray(test.g), np.asarray(test.chosen), np.asarray(test.rejected)
    held = np.array([0.9 * (dw[yw[i]] - dw[yl[i]]) @ gt[i] for i in range(len(gt))])
    np.testing.assert_allclose(np.asarray(traj.test_margins[-1]), held, atol=1e-13)
    g, w_, l_ = np.asarray(train.g), np.asarray(train.chosen), np.asarray(train.rejected)
    e = lambda w, l: np.eye(2 * spec.n_pairs)[w] - np.eye(2 * spec.n_pairs)[l]  # noqa: E731
    c = (e(w_, l_) @ e(w_, l_).T) * (g @ g.T)
    np.testing.assert_allclose(np.asarray(dataset_cross_terms(train, train)), c, atol=1e-14)
    r = np.zeros(len(g))
    for _ in range(6):
        r = r + 0.4 * 0.9**2 / len(g) * c @ (1 / (1 + np.exp(r)))
    rec, _ = margin_recursion(jnp.asarray(c), jnp.asarray(c[:1]), beta=0.9, eta=0.4, steps=6)
    np.testing.assert_allclose(np.asarray(rec[-1]), r, atol=1e-13)


def test_flips_touch_only_the_training_split():
    spec = DataSpec(K=2, Q=50, d=5, n_test=50)
    params = make_params(beta=1.0, eta=0.1, v=0.1, flip=0.4)
    key, no_flip = jax.random.key(2), make_params(beta=1.0, eta=0.1, v=0.1)
    clean, train = sample_dataset(key, spec, no_flip, 0), sample_dataset(key, spec, params, 0)
    assert 0.25 < np.mean(np.asarray(train.sign) != np.asarray(clean.sign)) < 0.55
    for split in (1, 2, 5):
        noisy, ref = sample_dataset(key, spec, params, split), sample_dataset(key, spec, no_flip, split)
        np.testing.assert_array_equal(np.asarray(noisy.sign), np.asarray(ref.sign))


def test_log_probs_equal_a_full_vocabulary_softmax_in_numpy():
    """The trainer's exact log-probs (cached reference log-partition) against log-softmax of the
    whole head W_0 + ΔW, written in numpy from the same reference head."""
    from dpolab.sims.data import reference_head, split_keys

    spec, params, train, test = _tiny()
    traj = jax.jit(make_trainer(TrainSpec(steps=3), spec.n_pairs, pair_sizes=pair_sizes(spec)))(train, test, params)
    w = np.array(reference_head(split_keys(jax.random.key(11), 0)[1], spec, 0.7))
    w[: 2 * spec.n_pairs] += np.asarray(traj.delta_w)
    logits = np.asarray(train.g) @ w.T
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))[:, None] - logits.max(1)[:, None]
    rows = np.arange(len(logits))
    np.testing.assert_allclose(np.asarray(traj.logp_chosen[-1]), logp[rows, np.asarray(train.chosen)], atol=1e-12)
    np.testing.assert_allclose(np.asarray(traj.logp_rejected[-1]), logp[rows, np.asarray(train.rejected)],
                               atol=1e-12)


def test_autodiff_reference_margins_are_log_ratio_differences():
    """The full-vocabulary reference's margin is β[(log π_W − log π_0)(y_w) − (same)(y_l)] from the
    head it returns, and is 0 at W = W_0 whatever W_0 is."""
    from dpolab.sims.reference import full_vocab_autodiff

    spec, params, train, test = _tiny()
    w0 = 2.0 * np.asarray(jax.random.normal(jax.random.key(5), (spec.vocab, spec.d)))
    out = full_vocab_autodiff(train.g, train.chosen, train.rejected, jnp.asarray(w0), beta=0.9, eta=0.4, steps=2)
    g, yw, yl = np.asarray(train.g), np.asarray(train.chosen), np.asarray(train.rejected)

    def logsoftmax(w):
        z = g @ w.T
        return z - (np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1))[:, None]

    rows = np.arange(len(g))
    ratio = logsoftmax(np.asarray(out["w"])) - logsoftmax(w0)
    expected = 0.9 * (ratio[rows, yw] - ratio[rows, yl])
    np.testing.assert_allclose(np.asarray(out["margins"][-1]), expected, atol=1e-12)
    assert np.all(np.asarray(out["margins"][0]) == 0.0)


def test_seeds_vmap_equals_single_runs_and_is_deterministic():
    spec, train, params = theorem_regime(K=2, Q=6, steps=5)
    both = run_seeds(spec, train, params, [3, 4])
    one = run_seeds(spec, train, params, [4])
    np.testing.assert_array_equal(np.asarray(both.margins[1]), np.asarray(one.margins[0]))
    again = run_seeds(spec, train, params, [3, 4])
    np.testing.assert_array_equal(np.asarray(both.margins), np.asarray(again.margins))
    assert not np.array_equal(np.asarray(both.margins[0]), np.asarray(both.margins[1]))


def test_cluster_means_and_concepts():
    spec = DataSpec(K=3, Q=4000, d=6, n_test=1)
    params = make_params(beta=1.0, eta=0.1, v=0.2, lb=0.4)
    data = sample_dataset(jax.random.key(0), spec, params)
    g, value, sign = map(np.asarray, (data.g, data.value, data.sign))
    for k in range(3):
        for s in (1, -1):
            rows = g[(value == k) & (sign == s)]
            mean = np.zeros(6)
            mean[0], mean[k + 1] = 0.4, s
            se = 0.2 / math.sqrt(len(rows))
            assert np.max(np.abs(rows.mean(0) - mean)) < 5 * se
            assert abs(rows.std(0, ddof=1).mean() - 0.2) < 0.01
    c = np.asarray(concept_vectors(jax.random.key(1), DataSpec(K=3, d=8), 0.5))
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-14)
    np.testing.assert_allclose(np.diag(c[:, 1:4]), 1 - 0.5**2 / 8, atol=1e-14)
    assert np.all(c[:, 0] == 0.0)


@pytest.mark.parametrize("tokens, Z, pairs, z_eff", [("distinct", 1, 5, 1), ("yes_no", 1, 1, 5),
                                                       ("shared", 2, 3, 2)])
def test_token_modes(tokens, Z, pairs, z_eff):
    spec = DataSpec(K=5, Q=2, d=8, tokens=tokens, Z=Z)
    assert spec.n_pairs == pairs and spec.z_effective == z_eff
    data = sample_dataset(jax.random.key(0), spec, make_params(beta=1.0, eta=0.1, v=0.1))
    assert data.ref_logits.shape == (20, 2 * pairs)
    assert int(jnp.max(data.pair)) == pairs - 1


def test_unbalanced_q():
    spec = DataSpec(K=3, Q=(5, 1, 2), d=6)
    data = sample_dataset(jax.random.key(0), spec, make_params(beta=1.0, eta=0.1, v=0.1))
    assert spec.n_train == 16 and np.bincount(np.asarray(data.value)).tolist() == [10, 2, 4]


@pytest.mark.parametrize("kwargs, field", [
    (dict(K=0), "K"), (dict(Q=0), "Q"), (dict(K=4, d=4), "d"), (dict(Q=(1, 2)), "Q"),
    (dict(tokens="many"), "tokens"), (dict(K=40, vocab=64), "vocab"),
])
def test_bad_data_spec_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        DataSpec(**kwargs)


@pytest.mark.parametrize("kwargs, field", [
    (dict(loss="dpo2"), "loss"), (dict(optimizer="sgd"), "optimizer"), (dict(steps=-1), "steps"),
    (dict(steps=10, stride=3), "stride"),
])
def test_bad_train_spec_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        TrainSpec(**kwargs)


@pytest.mark.parametrize("field, value", [("beta", 0.0), ("v", -0.1), ("lb", -1.0), ("eta", np.nan),
                                          ("eps", 0.5), ("delta", 2.0)])
def test_bad_params_name_the_field(field, value):
    kwargs = dict(beta=1.0, eta=0.1, v=0.1)
    kwargs[field] = value
    with pytest.raises(ValueError, match=rf"^{field}="):
        make_params(**kwargs)


def test_non_finite_margin_names_step_and_sample():
    spec = DataSpec(K=2, Q=3, d=5, n_test=1)
    with pytest.raises(FloatingPointError, match=r"step \d+, sample \d+"):
        run_seeds(spec, TrainSpec(loss="ipo", steps=30, stride=3),
                  make_params(beta=1.0, eta=1e30, v=0.1), [0])
    fine = run_seeds(spec, TrainSpec(steps=6, stride=3), make_params(beta=1.0, eta=0.1, v=0.1), [0])
    check_finite(fine)  # does not raise


def test_clopper_pearson_golden():
    lo, hi = clopper_pearson(0, 1000)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 1000), rel=1e-12)
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.18708602, abs=1e-8) and hi == pytest.approx(0.81291398, abs=1e-8)


def test_monte_carlo_risk_equals_the_exact_gaussian_risk():
    """A fixed head: value 0's row difference D = 2·c_0 − e_1, so a fresh sample of cluster s has
    margin β(2 − s·l_b) + noise of sd β·v·‖D‖; the risk is the cluster average of Φ(−μ/σ)."""
    from scipy import stats

    from dpolab.sims.data import split_keys
    from dpolab.sims.risk import monte_carlo_risk
    from dpolab.sims.train import seed_key

    spec = DataSpec(K=1, Q=4, d=6, n_test=1)
    params = make_params(beta=0.7, eta=0.1, v=1.5)
    c = np.asarray(concept_vectors(split_keys(seed_key(3), 0)[0], spec, params.delta, params.concept_cos))
    D = 2 * c[0] - np.eye(6)[0]
    delta_w = jnp.asarray(np.stack([D, np.zeros(6)]))
    risk, (lo, hi), n = monte_carlo_risk(seed_key(3), spec, params, delta_w, n_samples=40_000, level=0.999)
    sigma = 1.5 * np.linalg.norm(D)
    exact = np.mean([stats.norm.cdf(-(2 - s * 0.5) / sigma) for s in (1, -1)])
    assert n >= 40_000 and lo <= exact <= hi, (risk, exact, lo, hi)


def test_gradient_flow_equals_the_ipo_matrix_exponential():
    """solve_ivp on Lemma 4.1 against its closed form for the linear (IPO) case."""
    from dpolab.sims.reference import dataset_cross_terms, gradient_flow
    from dpolab.theory.im_li import ipo_linear_exact

    spec, params, train, test = _tiny()
    c = np.asarray(dataset_cross_terms(train, train))
    t = np.array([0.5, 1.0, 2.0])
    flow = gradient_flow(c, t, beta=0.9, loss="ipo")
    np.testing.assert_allclose(flow, ipo_linear_exact(c, t, N=c.shape[0], beta=0.9), atol=1e-8)
