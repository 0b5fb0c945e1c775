"""The trainer's two exact paths (dense features, per-pair Gram blocks): each against the other and
against full-vocabulary autodiff to 1e-12 in float64, the path rule, the block layout, and the
float32 mode against float64 within its precision-keyed tolerance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpolab.sims import blocks
from dpolab.sims.config import DataSpec, TrainSpec, make_params
from dpolab.sims.data import pair_sizes, reference_head, sample_dataset, split_keys
from dpolab.sims.reference import full_vocab_autodiff
from dpolab.sims.train import make_trainer

EXACT = 1e-12
FIELDS = ("margins", "test_margins", "logp_chosen", "logp_rejected", "loss", "dw_norm", "delta_w")

# (data spec, per-cluster training counts or None): equal blocks (reshape), unequal blocks
# (shared tokens, K=3, Z=2: pairs of 4Q and 2Q samples) and an empty pair (a sweep's unseen value)
CASES = {
    "distinct": (DataSpec(K=3, Q=5, d=9, n_test=3, vocab=8), None),
    "shared-unequal": (DataSpec(K=3, Q=4, d=9, n_test=3, vocab=8, tokens="shared", Z=2), None),
    "unbalanced-empty": (DataSpec(K=3, Q=(4, 2, 3), d=9, n_test=3, vocab=8), (4, 2, 0)),
}


def _problem(spec, per_cluster, *, flip=0.0, seed=5):
    params = make_params(beta=0.8, eta=0.6, v=0.3, ref_scale=0.7, flip=flip)
    key = jax.random.key(seed)
    train = sample_dataset(key, spec, params, 0, per_cluster=per_cluster)
    test = sample_dataset(key, spec, params, 1)
    return params, key, train, test


def _run(spec, per_cluster, train_spec, params, train, test):
    run = make_trainer(train_spec, spec.n_pairs, pair_sizes=pair_sizes(spec, per_cluster))
    return jax.jit(run)(train, test, params)


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("loss", ["dpo", "ipo"])
def test_gram_and_feature_paths_agree_with_each_other_and_with_autodiff(case, loss):
    spec, per_cluster = CASES[case]
    params, key, train, test = _problem(spec, per_cluster, flip=0.3)
    steps = 12
    runs = {path: _run(spec, per_cluster, TrainSpec(loss=loss, steps=steps, stride=4, path=path),
                       params, train, test) for path in ("features", "gram")}
    for field in FIELDS:
        assert _max_diff(getattr(runs["features"], field), getattr(runs["gram"], field)) < EXACT, field
    # both against the full V × d head trained by autodiff (shares no code with either path)
    w0 = reference_head(split_keys(key, 0)[1], spec, params.ref_scale)
    ref = full_vocab_autodiff(train.g, train.chosen, train.rejected, w0, beta=params.beta, eta=params.eta,
                              steps=steps, loss=loss, g_test=test.g, y_w_test=test.chosen, y_l_test=test.rejected)
    for path, traj in runs.items():
        for field in ("margins", "test_margins", "logp_chosen", "logp_rejected"):
            assert _max_diff(getattr(traj, field), ref[field][::4]) < EXACT, (path, field)
    assert float(np.max(np.abs(np.asarray(runs["gram"].margins[-1])))) > 0.05  # margins did move


def test_adam_trains_on_the_features_and_cannot_be_forced_onto_gram():
    spec, per_cluster = CASES["shared-unequal"]
    params, key, train, test = _problem(spec, per_cluster)
    traj = _run(spec, per_cluster, TrainSpec(optimizer="adam", steps=6), params, train, test)
    w0 = reference_head(split_keys(key, 0)[1], spec, params.ref_scale)
    ref = full_vocab_autodiff(train.g, train.chosen, train.rejected, w0, beta=params.beta, eta=params.eta,
                              steps=6, optimizer="adam")
    assert _max_diff(traj.margins, ref["margins"]) < 1e-10
    adam = TrainSpec(optimizer="adam", steps=10**6)
    assert blocks.training_path(adam, blocks.pair_blocks((2, 2)), 10**6) == "features"
    with pytest.raises(ValueError, match=r"^path='gram' is not allowed.*optimizer='adam'"):
        TrainSpec(optimizer="adam", path="gram")
    with pytest.raises(ValueError, match=r"^path='fast' is not allowed"):
        TrainSpec(path="fast")


def test_path_rule_golden_costs():
    """The documented rule on hand-computed word counts: the bench's K=16, Q=200, d=1000, 70 steps
    (one recorded checkpoint at the end) trains on the Gram blocks, a short run on the features."""
    lay = blocks.pair_blocks((400,) * 16)
    cost = blocks.path_costs(steps=70, n_checkpoints=2, blocks=lay, d=1000)
    assert cost["features"] == 70 * 2 * 6400 * 1000
    assert cost["gram"] == 70 * 16 * 400**2 + 16 * 400**2 * 1000 / blocks.GEMM_MULADDS_PER_WORD + 2 * 6400 * 1000
    assert blocks.training_path(TrainSpec(steps=70, stride=70), lay, 1000) == "gram"
    assert blocks.training_path(TrainSpec(steps=5, stride=5), lay, 1000) == "features"
    assert blocks.training_path(TrainSpec(steps=5, stride=5, path="gram"), lay, 1000) == "gram"
    # blocks larger than the feature dimension make every Gram step dearer than a feature step
    assert blocks.training_path(TrainSpec(steps=10**4, stride=10**4), blocks.pair_blocks((50,)), 20) == "features"


def test_pair_blocks_layout_and_data_pair_sizes():
    lay = blocks.pair_blocks((2, 0, 3))
    np.testing.assert_array_equal(lay.index, [[0, 1, 0], [0, 0, 0], [2, 3, 4]])
    np.testing.assert_array_equal(lay.mask, [[1, 1, 0], [0, 0, 0], [1, 1, 1]])
    assert not lay.contiguous and lay.n_samples == 5 and blocks.pair_blocks((3, 3)).contiguous
    x = jnp.arange(5.0)
    np.testing.assert_array_equal(blocks.blocked(lay, x), [[0, 1, 0], [0, 0, 0], [2, 3, 4]])
    spec, per_cluster = CASES["shared-unequal"]
    _, _, train, _ = _problem(spec, per_cluster)
    sizes = pair_sizes(spec)
    assert sizes == (16, 8)
    np.testing.assert_array_equal(np.asarray(train.pair), np.repeat(np.arange(2), sizes))  # pair after pair
    with pytest.raises(ValueError, match=r"^pair_sizes="):
        blocks.pair_blocks((2, -1))


def test_trainer_rejects_a_layout_that_does_not_fit_the_data():
    spec, per_cluster = CASES["distinct"]
    params, _, train, test = _problem(spec, per_cluster)
    with pytest.raises(ValueError, match=r"^pair_sizes=None is not allowed with n_pairs=3"):
        make_trainer(TrainSpec(), 3)
    with pytest.raises(ValueError, match=r"^pair_sizes=\(1, 2\) is not allowed.*n_pairs=3"):
        make_trainer(TrainSpec(), 3, pair_sizes=(1, 2))
    with pytest.raises(ValueError, match=r"sum to 29, the training data has N=30"):
        jax.jit(make_trainer(TrainSpec(), 3, pair_sizes=(10, 10, 9)))(train, test, params)


def test_gram_path_flags_the_first_non_finite_margin_like_the_feature_path():
    spec, per_cluster = CASES["shared-unequal"]
    _, _, train, test = _problem(spec, per_cluster)
    params = make_params(beta=1.0, eta=1e30, v=0.3)
    bad = {path: np.asarray(_run(spec, per_cluster, TrainSpec(loss="ipo", steps=30, stride=3, path=path),
                                 params, train, test).nonfinite) for path in ("features", "gram")}
    assert bad["features"][0] >= 0
    np.testing.assert_array_equal(bad["gram"], bad["features"])


def test_float32_mode_agrees_with_float64_within_its_precision_keyed_tolerance():
    """float32 margins are within `margin_tolerance(float32)` of float64's, and the tolerance is not
    vacuous: float32 really ran (it misses the float64 tolerance), and a 1e-3 change of η breaks it."""
    spec, per_cluster = CASES["shared-unequal"]
    params, _, train, test = _problem(spec, per_cluster)
    steps = 20
    for path in ("features", "gram"):
        ts = dict(steps=steps, stride=5, path=path)
        r64 = np.asarray(_run(spec, per_cluster, TrainSpec(**ts), params, train, test).margins)
        t32 = _run(spec, per_cluster, TrainSpec(float32=True, **ts), params, train, test)
        assert t32.margins.dtype == jnp.float32 and t32.delta_w.dtype == jnp.float32
        scale = float(np.max(np.abs(r64)))
        tol32 = blocks.margin_tolerance(jnp.float32, steps=steps, d=spec.d, scale=scale)
        tol64 = blocks.margin_tolerance(jnp.float64, steps=steps, d=spec.d, scale=scale)
        diff = _max_diff(t32.margins, r64)
        assert diff <= tol32, (path, diff, tol32)
        assert diff > tol64  # float32 rounding is visible: the comparison is not float64 vs itself
        off = np.asarray(_run(spec, per_cluster, TrainSpec(**ts), params._replace(eta=params.eta * 1.001),
                              train, test).margins)
        assert _max_diff(off, r64) > tol32  # a 0.1% error in η is caught by the float32 tolerance
