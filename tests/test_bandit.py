"""The log-linear bandit generator and projected fits; the new bound families' CLI contract."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpolab.checks import mixture as checks_mixture
from dpolab.checks import rdpo as checks_rdpo
from dpolab.cli import main
from dpolab.sims.bandit import (
    BanditSpec,
    grouped,
    make_bandit_params,
    make_fit,
    make_instance,
    pair_rows,
    project,
    run_bandit,
    sample_pairs,
)


def test_instance_and_pairs_respect_the_model():
    spec = BanditSpec(S=5, A=4, d=3, n=4000)
    params = make_bandit_params(eps=0.25, L=2.0, sft_scale=0.5, reward_scale=1.0)
    fits, data, inst = run_bandit(spec, params, [0])
    np.testing.assert_allclose(np.linalg.norm(np.asarray(inst.phi), axis=-1), 2.0, rtol=1e-14)
    assert float(jnp.linalg.norm(inst.theta0)) == pytest.approx(0.5)
    flipped = np.asarray(data.flipped[0])
    assert abs(flipped.mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 4000)
    x = np.asarray(data.x[0])
    assert np.all(np.linalg.norm(x, axis=1) > 0)  # two distinct actions per pair
    # the observed winner is the clean winner unless flipped: E[p of observed] differs by ε(1−2p)
    assert np.all((np.asarray(data.p[0]) > 0) & (np.asarray(data.p[0]) < 1))


def test_labels_follow_bradley_terry_and_the_optimum_is_theta0_plus_omega_over_beta():
    """p of the observed winner is σ(±ω*ᵀx) (the clean orientation), x is a difference of two
    actions' features of the pair's context, and θ* = θ_0 + ω*/β."""
    spec = BanditSpec(S=4, A=5, d=3, n=500)
    params = make_bandit_params(beta=2.0, eps=0.3, reward_scale=1.3)
    _, data, inst = run_bandit(spec, params, [1])
    x, p, flipped = np.asarray(data.x[0]), np.asarray(data.p[0]), np.asarray(data.flipped[0])
    clean = np.where(flipped[:, None], -x, x)  # orientation of the clean label
    z = clean @ np.asarray(inst.omega)
    np.testing.assert_allclose(np.where(flipped, 1 - p, p), 1 / (1 + np.exp(-z)), rtol=1e-12)
    phi, state = np.asarray(inst.phi), np.asarray(data.state[0])
    diffs = phi[state][:, :, None, :] - phi[state][:, None, :, :]  # (n, A, A, d)
    assert all(np.any(np.all(np.abs(diffs[i] - x[i]) < 1e-12, axis=-1)) for i in range(len(x)))
    np.testing.assert_allclose(np.asarray(inst.theta_star(2.0)),
                               np.asarray(inst.theta0) + np.asarray(inst.omega) / 2.0, rtol=1e-15)


def test_n_active_uses_a_prefix_and_one_compilation():
    spec = BanditSpec(n=2000, loss="rdpo")
    params = make_bandit_params(eps=0.1, B=5.0)
    small, data, inst = run_bandit(spec, params, [0, 1], n_active=500)
    ref_spec = BanditSpec(n=500, loss="rdpo")
    fit = jax.jit(make_fit(ref_spec))
    prefix = jax.tree_util.tree_map(lambda a: a[1, :500], data)
    direct = fit(prefix, inst, params)
    np.testing.assert_allclose(np.asarray(small.theta[1]), np.asarray(direct.theta), atol=1e-12)


def test_fit_reaches_the_stationary_point():
    spec = BanditSpec(n=3000, loss="dpo", steps=400)
    params = make_bandit_params(eps=0.0, B=6.0, reward_scale=1.0)
    fits, data, inst = run_bandit(spec, params, [0])
    x, theta = np.asarray(data.x[0]), np.asarray(fits.theta[0])
    z = x @ (theta - np.asarray(inst.theta0))
    grad = -(1 / (1 + np.exp(z))) @ x / len(x)
    assert np.linalg.norm(grad) < 1e-10 and not bool(fits.diverged[0])


# −dℓ/dz of each fitting loss, written out here (not imported): σ(−z) = 1/(1 + e^z)
_WEIGHTS = {"dpo": lambda z, e: 1 / (1 + np.exp(z)),
            "cdpo": lambda z, e: 1 / (1 + np.exp(z)) - e,
            "rdpo": lambda z, e: 1 / (1 + np.exp(z)) + e / (1 - 2 * e),
            "ipo": lambda z, e: 2 * (1 - z),
            "ripo": lambda z, e: 2 * (1 - z) + 4 * e / (1 - 2 * e)}


@pytest.mark.parametrize("loss", sorted(_WEIGHTS))
def test_newton_alone_reaches_an_interior_optimum_to_rounding(loss):
    """Interior optimum: the Newton phase ends at a gradient of rounding size and leaves nothing
    to polish (a Newton phase that stops early leaves it to the first-order polish)."""
    spec = BanditSpec(n=2000, loss=loss, steps=400)
    params = make_bandit_params(eps=0.2, B=50.0, reward_scale=1.0)
    fits, data, inst = run_bandit(spec, params, [0, 1])
    for s in range(2):
        x, theta = np.asarray(data.x[s]), np.asarray(fits.theta[s])
        z = x @ (theta - np.asarray(inst.theta0))
        grad = -_WEIGHTS[loss](z, 0.2) @ x / len(x)
        assert np.linalg.norm(grad) < 1e-13 and int(fits.polish_steps[s]) == 0, (np.linalg.norm(grad), fits)
        assert np.linalg.norm(theta) < 0.5 * params.B


def test_pair_numbers_name_each_rows_features():
    spec = BanditSpec(S=5, A=4, n=300)
    params = make_bandit_params()
    inst = make_instance(jax.random.key(3), spec, params)
    data = sample_pairs(jax.random.key(4), spec, inst, params)
    assert np.array_equal(np.asarray(pair_rows(inst))[np.asarray(data.pair)], np.asarray(data.x))
    assert pair_rows(inst).shape == (5 * 4 * 3, spec.d) and int(data.pair.max()) < 5 * 4 * 3


def test_the_two_actions_are_drawn_from_sft_without_replacement():
    """Each context's unordered action pair {a, b} has the Plackett-Luce top-2 probability under
    π_sft(·|s) ∝ exp(θ_0ᵀφ(s, ·)): π_a π_b/(1 − π_a) + π_b π_a/(1 − π_b) (exact, in NumPy), tested
    by Pearson's χ² over all cells at the 99.9% quantile."""
    from scipy import stats

    spec = BanditSpec(S=3, A=4, d=3, n=60000)
    params = make_bandit_params(sft_scale=1.5)  # a peaked π_sft: a uniform second draw is far from it
    inst = make_instance(jax.random.key(7), spec, params)
    data = sample_pairs(jax.random.key(8), spec, inst, params)
    q, r = np.divmod(np.asarray(data.pair), spec.A - 1)
    state, winner = np.divmod(q, spec.A)
    loser = r + (r >= winner)
    assert np.array_equal(state, np.asarray(data.state))
    logits = np.asarray(inst.phi) @ np.asarray(inst.theta0)
    pi = np.exp(logits - logits.max(axis=1, keepdims=True))
    pi /= pi.sum(axis=1, keepdims=True)
    a, b = np.triu_indices(spec.A, k=1)
    counts = np.zeros((spec.S, spec.A, spec.A))
    np.add.at(counts, (state, np.minimum(winner, loser), np.maximum(winner, loser)), 1)
    observed = counts[:, a, b]  # (S, unordered pairs)
    top2 = pi[:, a] * pi[:, b] / (1 - pi[:, a]) + pi[:, b] * pi[:, a] / (1 - pi[:, b])
    expected = top2 * np.bincount(state, minlength=spec.S)[:, None]
    np.testing.assert_allclose(top2.sum(axis=1), 1.0, rtol=1e-12)
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    assert chi2 < stats.chi2.ppf(0.999, spec.S * (len(a) - 1)), (chi2, observed, expected)


@pytest.mark.parametrize("loss", ["dpo", "rdpo", "ripo"])
def test_pair_counts_and_rows_give_the_same_fit(loss):
    """The grouped rule (n > S·A·(A−1): the fit reads pair counts) against the same data read row by
    row (no pair numbers), for a prefix n_active too: the same objective summed in another order."""
    spec = BanditSpec(S=4, A=4, n=600, loss=loss)
    assert grouped(spec)
    params = make_bandit_params(eps=0.2, B=50.0)
    inst = make_instance(jax.random.key(5), spec, params)
    data = sample_pairs(jax.random.key(6), spec, inst, params)
    fit = jax.jit(make_fit(spec))
    for n_active in (spec.n, 100):
        by_pairs, by_rows = fit(data, inst, params, n_active), fit(data._replace(pair=None), inst, params, n_active)
        np.testing.assert_allclose(np.asarray(by_pairs.theta), np.asarray(by_rows.theta), rtol=0, atol=1e-12)
        assert abs(float(by_pairs.loss) - float(by_rows.loss)) <= 1e-14 * (1 + abs(float(by_rows.loss)))


def test_projection():
    v = jnp.array([3.0, 4.0])
    np.testing.assert_allclose(np.asarray(project(v, 1.0)), [0.6, 0.8])
    np.testing.assert_array_equal(np.asarray(project(v, jnp.inf)), np.asarray(v))


@pytest.mark.parametrize("kwargs, field", [(dict(eps=0.5), "eps"), (dict(beta=0.0), "beta"),
                                           (dict(B=0.5, sft_scale=1.0), "B"), (dict(L=-1.0), "L")])
def test_bad_bandit_params(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        make_bandit_params(**kwargs)


@pytest.mark.parametrize("kwargs, field", [(dict(A=1), "A"), (dict(loss="ripo2"), "loss"),
                                           (dict(features="cube"), "features"), (dict(n=0), "n")])
def test_bad_bandit_spec(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        BanditSpec(**kwargs)


def test_bounds_json_contracts(capsys):
    assert main(["bounds", "rdpo", "--n", "1000", "--d", "10", "--eps", "0.2", "--beta", "1",
                 "--L", "1", "--B", "1", "--delta", "0.05", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert list(row) == ["n", "d", "eps", "beta", "L", "B", "delta", "gamma", "margin_bound",
                         "noise_factor", "rate", "estimation_bound"]
    assert row["noise_factor"] == pytest.approx(1 / 0.6)
    assert row["rate"] == pytest.approx(np.sqrt((10 + np.log(20)) / 1000))
    assert row["gamma"] == pytest.approx(1 / (2 + np.exp(-4) + np.exp(4)))
    assert main(["bounds", "rdpo", "--eps", "0.5", "--json"]) == 2
    assert "eps" in capsys.readouterr().err
    assert main(["bounds", "ranking", "--log-ref-ratio", "-1", "--alpha", "0.9", "--beta", "0.1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["optimal_log_ratio"] == pytest.approx(-1 + 10 * np.log(9))
    assert row["idealized_correct"] is True
    assert row["loss_threshold"] == pytest.approx(np.log1p(np.exp(-0.1)))
    assert main(["bounds", "mixture", "--rewards", "1,0,2;1,0,2", "--weights", "0.5,0.5", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert set(row) == {"irreducible_kl", "subgroup_lower_bound", "triangle_defect"}
    assert row["irreducible_kl"] < 1e-14 and row["triangle_defect"] < 1e-12


# checks that must go red when what they guard is broken

def test_population_minimizer_check_fails_with_a_biased_rdpo_weight(monkeypatch):
    import dpolab.theory.losses as L

    real = L.LOSSES["rdpo"]
    monkeypatch.setitem(L.LOSSES, "rdpo", real._replace(weight=lambda z, e: L.dpo_weight(z)))
    assert checks_rdpo.population_minimizers(True).verdict == "fail"


def test_subgroup_check_fails_when_the_bound_is_doubled(monkeypatch):
    import dpolab.theory.mixture as M

    real = M.subgroup_lower_bound
    monkeypatch.setattr(M, "subgroup_lower_bound", lambda *a, **k: 2 * real(*a, **k))
    assert checks_mixture.subgroup_bound(True).verdict == "fail"


def test_ranking_equivalence_check_fails_with_the_threshold_sign_flipped(monkeypatch):
    import dpolab.theory.ranking as R
    from dpolab.checks import ranking as checks_ranking

    real = R.loss_threshold
    monkeypatch.setattr(R, "loss_threshold", lambda c, **kw: real(-c, **kw))
    result = checks_ranking.threshold_equivalence(True)
    assert result.verdict == "fail" and result.measured["DPO mismatches"] > 0
