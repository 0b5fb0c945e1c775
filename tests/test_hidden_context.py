"""Tests for the hidden-context (Borda count) closed forms, the balanced sampler and their checks.

References are plain Python/numpy loops or scipy minimisers written here, never the code under
test; golden values are computed by hand from σ.
"""
import itertools
import math

import numpy as np
import pytest
from scipy import optimize, special, stats

from dpolab.checks import hidden_context as C
from dpolab.errors import InputError
from dpolab.sims.hidden_context import sample_balanced_counts
from dpolab.theory import hidden_context as H
from dpolab.theory import mixture


def _sig(z):
    return 1.0 / (1.0 + math.exp(-z))


def _P_loops(rewards, weights):
    M = len(rewards[0])
    return np.array([[sum(w * _sig(r[i] - r[j]) for r, w in zip(rewards, weights)) for j in range(M)]
                     for i in range(M)])


def _fit_loops(P, W=None):
    """Mean-zero minimiser of Σ_{i≠j} W_ij·(−P_ij log σ(r_i − r_j)), loops + Nelder–Mead then BFGS."""
    M = len(P)
    W = np.ones((M, M)) if W is None else W

    def loss(x):
        r = np.r_[0.0, x]
        return sum(-W[i][j] * P[i][j] * math.log(_sig(r[i] - r[j]))
                   for i, j in itertools.permutations(range(M), 2))

    x = optimize.minimize(loss, np.zeros(M - 1), method="BFGS", options={"gtol": 1e-10}).x
    r = np.r_[0.0, x]
    return r - r.mean()


def test_borda_count_and_scores_golden():
    rewards, weights = [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]], [0.6, 0.4]
    P = _P_loops(rewards, weights)
    bc = H.borda_count(P)
    # BC(0) = P01 + P02 with P01 = 0.6σ(1) + 0.4σ(−3), P02 = 0.6σ(2) + 0.4σ(−1)
    assert bc[0] == pytest.approx(0.6 * _sig(1) + 0.4 * _sig(-3) + 0.6 * _sig(2) + 0.4 * _sig(-1), rel=1e-15)
    assert bc.sum() == pytest.approx(3.0, rel=1e-15)
    r = np.array([0.3, -1.0, 0.7])
    assert H.bt_scores(r)[1] == pytest.approx(_sig(-1.3) + _sig(-1.7), rel=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_population_fit_reproduces_borda_and_its_order(seed):
    rng = np.random.default_rng(seed)
    K, M = 2 + seed % 3, 4 + seed
    rewards, weights = rng.normal(0, 2.5, (K, M)).tolist(), rng.dirichlet(np.ones(K)).tolist()
    P = _P_loops(rewards, weights)
    fit = mixture.fit_single_bt(P).reward
    np.testing.assert_allclose(H.bt_scores(fit), H.borda_count(P), rtol=0, atol=1e-12)
    ref = _fit_loops(P)
    np.testing.assert_allclose(fit, ref, atol=1e-5)
    bc = P.sum(axis=1) - 0.5
    for i, j in itertools.combinations(range(M), 2):
        assert np.sign(bc[i] - bc[j]) == np.sign(fit[i] - fit[j]) == np.sign(ref[i] - ref[j])


def test_fit_from_borda_matches_an_independent_minimiser_in_the_mean_zero_gauge():
    P = _P_loops([[0.0, 1.0, 2.0, 3.0], [3.0, 0.0, 1.0, 0.5]], [0.7, 0.3])
    r = H.fit_from_borda(P.sum(axis=1) - 0.5)
    assert abs(r.mean()) <= 1e-15
    np.testing.assert_allclose(r, _fit_loops(P), atol=1e-6)
    # scores of a known reward give that reward back
    r0 = np.array([0.5, -1.25, 2.0, -1.25])
    np.testing.assert_allclose(H.fit_from_borda(H.bt_scores(r0)), r0 - r0.mean(), atol=1e-12)


def test_add_cycle_is_a_zero_row_sum_flow():
    P = _P_loops([[0.0, 1.0, 2.0, 3.0], [3.0, 0.0, 1.0, 0.5]], [0.7, 0.3])
    Pc = H.add_cycle(P, (0, 1, 2), 0.05)
    assert Pc[0, 1] == P[0, 1] + 0.05 and Pc[1, 2] == P[1, 2] + 0.05 and Pc[2, 0] == P[2, 0] + 0.05
    np.testing.assert_allclose(Pc + Pc.T, 1.0, atol=1e-15)
    np.testing.assert_allclose(Pc.sum(axis=1), P.sum(axis=1), atol=1e-15)
    np.testing.assert_allclose(mixture.fit_single_bt(Pc).reward, mixture.fit_single_bt(P).reward, atol=1e-12)


def test_nonuniform_example_breaks_the_borda_order_but_keeps_the_weighted_scores():
    ex = H.NONUNIFORM_EXAMPLE
    P, W = _P_loops(ex["rewards"].tolist(), ex["weights"].tolist()), ex["pair_weights"]
    ref = _fit_loops(P, W)
    assert P[0, 1] + P[0, 2] > P[1, 0] + P[1, 2] + 0.1 and ref[1] > ref[0] + 0.05
    expected = [sum(W[a, b] * P[a, b] for b in range(3) if b != a) for a in range(3)]
    np.testing.assert_allclose(H.weighted_borda(P, W), expected, rtol=1e-15)
    fit = mixture.fit_single_bt(P, pair_weights=W).reward
    np.testing.assert_allclose((W * special.expit(fit[:, None] - fit[None, :])).sum(1), expected, atol=1e-12)


def test_one_d_example_closed_forms_and_reversal():
    ex = H.ONE_D_EXAMPLE
    assert H.line_win_margin(0.25, ex["weights"], ex["slopes"]) == pytest.approx(
        0.7 * _sig(2.0) + 0.3 * _sig(-10.0) - 0.5, rel=1e-14)
    rewards = H.line_rewards(ex["positions"], ex["slopes"])
    np.testing.assert_allclose(rewards[1], -40 * np.linspace(0, 1, 5), rtol=1e-15)
    eu = H.expected_utility(rewards, ex["weights"])
    np.testing.assert_allclose(eu, -6.4 * (np.linspace(0, 1, 5) - 0.5), atol=1e-14)
    fit = _fit_loops(_P_loops(rewards.tolist(), ex["weights"].tolist()))
    assert np.all(np.diff(fit) > 0.1) and H.order_agreement(fit, eu) == -1.0


def test_weak_preferences_give_expected_utility_at_rate_eps_squared():
    ex = H.ONE_D_EXAMPLE
    rewards = np.outer(ex["slopes"], ex["positions"])
    eu = ex["weights"] @ rewards
    eu = eu - eu.mean()
    eps = np.array([0.02, 0.01, 0.005, 0.0025])
    dev = [np.max(np.abs(mixture.fit_single_bt(_P_loops((e * rewards).tolist(), ex["weights"].tolist())).reward / e
                         - eu)) for e in eps]
    slope = stats.linregress(np.log(eps), np.log(dev)).slope
    assert 1.9 <= slope <= 2.1, slope  # r̂ = ε·EU + O(ε³): the deviation of r̂/ε is O(ε²)


def test_additive_reversal_has_zero_eirr_and_reversed_expected_utility():
    ex = H.ONE_D_EXAMPLE
    w, s = ex["weights"].tolist(), ex["slopes"].tolist()
    d = H.additive_reversal(w, s)

    def g(x):
        p = w[0] * _sig(s[0] * x) + w[1] * _sig(s[1] * x)
        return math.log(p / (1 - p))

    assert abs(g(2 * d) - 2 * g(d)) <= 1e-13 and g(d) > 0.3
    rewards = [[si * x for x in (0.0, d, 2 * d)] for si in s]
    assert mixture.irreducible_kl(rewards, w) <= 1e-14
    assert np.dot(w, s) < 0  # EU falls along the line while BT rises
    with pytest.raises(InputError, match="EU slope"):
        H.additive_reversal([0.7, 0.3], [8.0, 1.0])


def test_balanced_sampler_compares_every_pair_m_times_with_the_mixture_probability():
    rewards, weights = [[0.0, 1.0, 2.0, 3.0], [3.0, 0.0, 1.0, 0.5]], [0.7, 0.3]
    P = _P_loops(rewards, weights)
    m = 20_000
    wins = sample_balanced_counts(np.random.default_rng(7), np.array(rewards), np.array(weights), m)
    i, j = np.triu_indices(4, 1)
    np.testing.assert_array_equal((wins + wins.T)[i, j], m)
    z = np.abs(wins[i, j] / m - P[i, j]) / np.sqrt(P[i, j] * (1 - P[i, j]) / m)
    assert z.max() <= special.ndtri(1 - 0.0005 / i.size)  # 99.9%, Bonferroni over the 6 pairs


def test_bad_inputs_name_the_field():
    with pytest.raises(InputError, match="P must"):
        H.borda_count(np.full((2, 3), 0.5))
    with pytest.raises(InputError, match="bc must sum"):
        H.fit_from_borda([1.0, 1.0, 0.0])
    with pytest.raises(InputError, match="Landau"):
        H.fit_from_borda([0.0, 1.0, 2.0])  # a transitive tournament: the fit is at infinity
    with pytest.raises(InputError, match="cycle"):
        H.add_cycle(np.full((3, 3), 0.5), (0, 1), 0.1)
    with pytest.raises(InputError, match="per_pair"):
        sample_balanced_counts(np.random.default_rng(0), [[0.0, 1.0]], [1.0], 0)
    with pytest.raises(InputError, match="pair_weights"):
        H.weighted_borda(np.full((3, 3), 0.5), -np.ones((3, 3)))


@pytest.mark.parametrize("check_id", sorted(C.CHECKS))
def test_checks_pass_in_quick_mode(check_id):
    result = C.CHECKS[check_id](True)
    assert result.id == check_id and result.verdict == "pass", result.measured
