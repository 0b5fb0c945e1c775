"""Tests for dpolab.theory.mixture: golden values, the exact BT fit against scipy, identical/opposite/
Condorcet mixtures, the Pinsker subgroup bound, triangle defect, parsing and bad inputs."""
import itertools
import math

import numpy as np
import pytest
from scipy import optimize

from dpolab.theory import mixture as X

EX = X.WORKED_EXAMPLES


def _sig(z):
    return 1.0 / (1.0 + math.exp(-z))


def _kl(p, q):
    """KL(Bern(p) ‖ Bern(q)) in plain Python, 0 < p, q < 1."""
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def _objective_by_loops(P, r):
    """Mean over unordered pairs i < j of KL(Bern(P_ij) ‖ Bern(σ(r_i − r_j))), with loops."""
    pairs = list(itertools.combinations(range(len(r)), 2))
    return sum(_kl(P[i][j], _sig(r[i] - r[j])) for i, j in pairs) / len(pairs)


def _random_mixture(rng, K=3, M=5):
    w = rng.dirichlet(np.ones(K))
    return rng.normal(0, 1.5, (K, M)), w / w.sum()


# ---- win probabilities ---------------------------------------------------------------------

def test_win_probs_golden():
    r, w = EX["disagreeing_orders"]["rewards"], EX["disagreeing_orders"]["weights"]
    a = X.group_win_probs(r)
    assert a.shape == (2, 3, 3)
    assert a[0, 0, 2] == pytest.approx(_sig(2.0), rel=1e-15)
    assert a[1, 0, 1] == pytest.approx(_sig(-3.0), rel=1e-15)
    P = X.population_win_probs(r, w)
    assert P[0, 1] == pytest.approx(0.6 * _sig(1.0) + 0.4 * _sig(-3.0), rel=1e-15)
    np.testing.assert_allclose(P + P.T, 1.0, rtol=0, atol=1e-15)


# ---- the single BT fit ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["disagreeing_orders", "four_items"])
def test_irreducible_kl_matches_scipy(name):
    r, w = EX[name]["rewards"], EX[name]["weights"]
    P = X.population_win_probs(r, w).tolist()
    M = len(P)
    res = optimize.minimize(lambda x: _objective_by_loops(P, np.r_[0.0, x]), np.zeros(M - 1),
                            method="Nelder-Mead",
                            options={"xatol": 1e-12, "fatol": 1e-16, "maxiter": 20_000})
    fit = X.fit_single_bt(np.array(P))
    assert X.irreducible_kl(r, w) == fit.kl
    assert fit.kl == pytest.approx(res.fun, abs=1e-10) and fit.kl > 1e-3
    assert fit.kl == pytest.approx(_objective_by_loops(P, fit.reward), rel=1e-13)
    np.testing.assert_allclose(fit.reward - fit.reward[0], np.r_[0.0, res.x], atol=1e-5)
    assert abs(fit.reward.sum()) < 1e-12
    for i in range(M):  # stationarity by central differences of the loop objective
        e = np.eye(M)[i] * 1e-5
        d = (_objective_by_loops(P, fit.reward + e) - _objective_by_loops(P, fit.reward - e)) / 2e-5
        assert abs(d) < 1e-9


def test_condorcet_cycle_golden():
    p = (2 * _sig(1.0) + _sig(-2.0)) / 3
    golden = math.log(2) + p * math.log(p) + (1 - p) * math.log(1 - p)  # log 2 − H(p)
    fit = X.fit_single_bt(X.population_win_probs(**_rw("condorcet_cycle")))
    assert fit.kl == pytest.approx(golden, rel=1e-12)
    np.testing.assert_allclose(fit.reward, 0.0, atol=1e-14)
    assert X.triangle_defect(X.population_win_probs(**_rw("condorcet_cycle"))) == pytest.approx(
        3 * math.log(p / (1 - p)), rel=1e-13)


def _rw(name):
    return {"rewards": EX[name]["rewards"], "weights": EX[name]["weights"]}


def test_identical_groups_give_zero_error_and_recover_the_reward():
    fit = X.fit_single_bt(X.population_win_probs(**_rw("identical_groups")))
    assert 0 <= fit.kl < 1e-14
    r = EX["identical_groups"]["rewards"][0]
    np.testing.assert_allclose(fit.reward, r - r.mean(), atol=1e-12)
    assert X.subgroup_lower_bound(**_rw("identical_groups")) == 0.0


def test_opposite_groups_collapse_to_a_constant_fit():
    P = X.population_win_probs(**_rw("opposite_groups"))
    np.testing.assert_allclose(P, 0.5, rtol=0, atol=1e-15)
    fit = X.fit_single_bt(P)
    assert 0 <= fit.kl < 1e-14
    np.testing.assert_allclose(fit.reward, 0.0, atol=1e-14)
    assert X.subgroup_lower_bound(**_rw("opposite_groups")) > 0.1  # the error is all subgroup


@pytest.mark.parametrize("seed", range(5))
def test_fit_recovers_a_single_random_group(seed):
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 3, 7)
    fit = X.fit_single_bt(X.group_win_probs(r[None])[0])
    np.testing.assert_allclose(fit.reward, r - r.mean(), atol=1e-11)
    assert fit.kl < 1e-14


def test_pair_weights_ordered_equals_symmetrised_and_disconnected_is_rejected():
    rng = np.random.default_rng(11)
    P = X.population_win_probs(*_random_mixture(rng))
    W = rng.uniform(0.1, 1, (5, 5))
    a, b = X.fit_single_bt(P, W), X.fit_single_bt(P, (W + W.T) / 2)
    assert a.kl == pytest.approx(b.kl, rel=1e-12)
    np.testing.assert_allclose(a.reward, b.reward, atol=1e-11)
    assert X.fit_single_bt(P, np.ones((5, 5))).kl == pytest.approx(X.fit_single_bt(P).kl, 1e-14)
    chain = X.fit_single_bt(P, np.eye(5, k=1))  # a tree of comparisons: every P fits exactly
    assert chain.kl < 1e-14
    np.testing.assert_allclose(-np.diff(chain.reward), np.log(np.diag(P, 1) / np.diag(P, -1)),
                               atol=1e-12)
    blocks = np.kron(np.eye(2), np.ones((3, 3)))[:5, :5]  # items {0,1,2} and {3,4} never meet
    with pytest.raises(ValueError, match="pair_weights"):
        X.fit_single_bt(P, blocks)


# ---- subgroup bound and triangle defect ----------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_subgroup_loss_decomposes_and_exceeds_pinsker_bound(seed):
    rng = np.random.default_rng(100 + seed)
    r, w = _random_mixture(rng, K=2 + seed, M=4)
    P = X.population_win_probs(r, w)
    fit = X.fit_single_bt(P)
    bound = X.subgroup_lower_bound(r, w)
    a = X.group_win_probs(r)
    pairs = list(itertools.combinations(range(4), 2))
    var = sum(sum(wk * (a[k, i, j] - P[i, j]) ** 2 for k, wk in enumerate(w)) for i, j in pairs)
    assert bound == pytest.approx(2 * var / len(pairs), rel=1e-12) and bound > 0
    to_P = sum(wk * sum(_kl(a[k, i, j], P[i, j]) for i, j in pairs) / len(pairs)
               for k, wk in enumerate(w))
    for rr in [fit.reward, *rng.normal(0, 2, (200, 4))]:
        loss = X.subgroup_loss(r, w, rr)
        assert loss >= bound
        assert loss == pytest.approx(to_P + _objective_by_loops(P, rr), rel=1e-12)
    assert X.subgroup_loss(r, w, fit.reward) == pytest.approx(to_P + fit.kl, rel=1e-12)


def test_triangle_defect_zero_iff_single_bt_fits():
    rng = np.random.default_rng(5)
    assert X.triangle_defect(X.group_win_probs(rng.normal(0, 2, (1, 6)))[0]) < 1e-12
    for _ in range(5):
        r, w = _random_mixture(rng)
        s = X.summary(r, w)
        assert s["triangle_defect"] > 1e-3 and s["irreducible_kl"] > 1e-8
    assert X.triangle_defect([[0.5, 0.7], [0.3, 0.5]]) == 0.0
    P = np.array([[0.5, 0.6, 0.2], [0.4, 0.5, 0.7], [0.8, 0.3, 0.5]])
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    by_hand = abs(logit(0.6) + logit(0.7) + logit(0.8))  # the two orientations are ±, same |·|
    assert X.triangle_defect(P) == pytest.approx(by_hand, rel=1e-14)


def test_summary_keys_and_values():
    s = X.summary(**_rw("disagreeing_orders"))
    assert set(s) == {"irreducible_kl", "subgroup_lower_bound", "triangle_defect"}
    assert all(isinstance(v, float) for v in s.values())
    assert s["irreducible_kl"] == X.irreducible_kl(**_rw("disagreeing_orders"))


# ---- parsing and bad inputs ----------------------------------------------------------------

def test_parse_rewards_and_weights():
    np.testing.assert_array_equal(X.parse_rewards(" 1,2,3; 0,-1.5,2e0 "),
                                  [[1, 2, 3], [0, -1.5, 2]])
    np.testing.assert_array_equal(X.parse_rewards("1,2;"), [[1, 2]])
    np.testing.assert_array_equal(X.parse_weights("0.25,0.75"), [0.25, 0.75])


@pytest.mark.parametrize("text", ["", "1,2;3", "1,a;2,3", "1", "1,,2", "1,inf", "1,nan;2,3"])
def test_parse_rewards_rejects(text):
    with pytest.raises(ValueError, match="rewards"):
        X.parse_rewards(text)


@pytest.mark.parametrize("call,field", [
    (lambda: X.population_win_probs([[0, 1]], [0.5]), "weights"),
    (lambda: X.population_win_probs([[0, 1], [1, 0]], [0.5, 0.5 + 1e-9]), "weights"),
    (lambda: X.population_win_probs([[0, 1], [1, 0]], [1.0, 0.0]), "weights"),
    (lambda: X.population_win_probs([[0, 1], [1, 0]], [0.5]), "weights"),
    (lambda: X.group_win_probs([0, 1]), "rewards"),
    (lambda: X.group_win_probs([[0, np.nan]]), "rewards"),
    (lambda: X.group_win_probs([[0]]), "rewards"),
    (lambda: X.fit_single_bt([[0.5, 1.0], [0.0, 0.5]]), "P"),
    (lambda: X.fit_single_bt(np.full((2, 3), 0.5)), "P"),
    (lambda: X.fit_single_bt(np.full((2, 2), 0.5), -np.ones((2, 2))), "pair_weights"),
    (lambda: X.triangle_defect([[0.5, np.nan], [0.5, 0.5]]), "P"),
    (lambda: X.subgroup_loss([[0, 1]], [1.0], [0, 1, 2]), "r"),
    (lambda: X.parse_weights("0.5,x"), "weights"),
])
def test_bad_inputs_raise_naming_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()
