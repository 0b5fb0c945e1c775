"""Tests for dpolab.theory.ranking: golden values, Theorem 3.1 against the RLHF optimum, Cor. 3.3,
Theorem 4.1 (and DPO^γ) on 10⁶ random pairs, Prop. 2.6, the IPO analogue, and bad inputs."""
import math

import numpy as np
import pytest
from scipy import optimize

from dpolab.theory import ranking as R

N_DRAWS = 1_000_000


def _ell(z):
    """ℓ(z) = log(1 + e^{−z}) in plain Python."""
    return math.log1p(math.exp(-z)) if z >= 0 else -z + math.log1p(math.exp(z))


def _draws(seed, n=N_DRAWS, scale=3.0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, scale, n), rng.normal(0, scale, n)  # u, R_ref


# ---- golden values -------------------------------------------------------------------------

def test_golden_values():
    np.testing.assert_array_equal(R.clamp_alpha([0.0, 0.25, 0.5, 1.0]), [0.001, 0.25, 0.5, 0.999])
    assert R.clamp_alpha(1.0, unanimous=0.01) == 0.99
    assert R.optimal_log_ratio(0.3, 0.8, beta=0.5) == pytest.approx(0.3 + 2 * math.log(4), 1e-15)
    assert R.optimal_log_ratio(0.0, 1.0, beta=0.1) == pytest.approx(10 * math.log(999), rel=1e-14)
    assert R.optimal_log_ratio(-1.0, 0.5, beta=0.1) == -1.0
    np.testing.assert_array_equal(R.ranking_correct([-1e-300, 0.0, 2.0]), [False, True, True])
    assert R.loss_threshold(0.0, beta=3.0) == pytest.approx(math.log(2), rel=1e-15)
    assert R.loss_threshold(1.0, beta=2.0) == pytest.approx(_ell(2.0), rel=1e-15)
    assert R.loss_threshold(1.0, beta=2.0, gamma=0.25) == pytest.approx(_ell(0.5), rel=1e-15)
    assert R.dpo_loss_from_ratios(1.0, 0.25, beta=2.0) == pytest.approx(_ell(1.5), rel=1e-15)
    assert R.dpo_loss_from_ratios(1.0, 0.25, beta=2.0, gamma=0.0) == pytest.approx(_ell(2.0))
    assert R.ipo_loss_from_ratios(1.0, 0.25, beta=2.0) == pytest.approx(0.25, rel=1e-15)
    assert R.ipo_optimal_log_ratio(0.5, 1.0, beta=0.25) == 4.5
    assert R.ipo_loss_threshold(3.0, beta=0.5) == 0.25
    assert R.PROP_2_6_LOSS < math.log(2)
    for lo, hi in R.REPORTED_ALPACA_FARM.values():
        assert 0 < lo <= hi < 1


# ---- Theorem 3.1 and Corollary 3.3 ---------------------------------------------------------

@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_theorem_3_1_is_the_exact_rlhf_optimum(beta):
    """π* maximising E_π r − β KL(π‖π_ref) over 6 responses, found by scipy; α = σ(r_w − r_l)."""
    rng = np.random.default_rng(int(beta * 10))
    log_ref = np.log(rng.dirichlet(np.ones(6)))
    r = rng.normal(0, 0.5, 6)

    def neg_objective(theta):
        logp = theta - np.logaddexp.reduce(theta)
        return -(np.exp(logp) @ r - beta * np.exp(logp) @ (logp - log_ref))

    theta = optimize.minimize(neg_objective, log_ref, method="BFGS", options={"gtol": 1e-12}).x
    logp = theta - np.logaddexp.reduce(theta)
    w, l = np.triu_indices(6, 1)
    alpha = 1 / (1 + np.exp(-(r[w] - r[l])))
    np.testing.assert_allclose(R.optimal_log_ratio(log_ref[w] - log_ref[l], alpha, beta=beta),
                               logp[w] - logp[l], atol=1e-5)


@pytest.mark.parametrize("alpha", [0.05, 0.3, 0.5, 0.8, 0.97])
def test_population_dpo_loss_minimiser_matches_theorem_3_1(alpha):
    beta, r_ref = 0.7, -0.4
    f = lambda u: alpha * _ell(beta * (u - r_ref)) + (1 - alpha) * _ell(-beta * (u - r_ref))  # noqa
    u = optimize.minimize_scalar(f, bracket=(-5, 5), tol=1e-12).x
    assert R.optimal_log_ratio(r_ref, alpha, beta=beta) == pytest.approx(u, abs=1e-6)


def test_idealized_ranking_accuracy_and_unanimous_clamp():
    beta = 0.5
    r_ref = np.array([-1.0, -1.0, 0.5, -3.0, 2.0])
    alpha = np.array([0.75, 0.5, 0.5, 0.9, 0.1])
    # by hand: -1 + 2 log 3 > 0; -1 < 0; 0.5 > 0; -3 + 2 log 9 > 0; 2 - 2 log 9 < 0
    np.testing.assert_array_equal(R.idealized_correct(r_ref, alpha, beta=beta),
                                  [True, False, True, True, False])
    assert R.idealized_ranking_accuracy(r_ref, alpha, beta=beta) == 0.6
    edge = -2 * math.log(999)  # α = 1 → 0.999 moves the log-ratio by exactly 2·log 999 at β = 1/2
    assert R.idealized_correct(edge + 1e-9, 1.0, beta=beta)
    assert not R.idealized_correct(edge - 1e-9, 1.0, beta=beta)


# ---- Theorem 4.1, DPO^γ, Prop. 2.6 ---------------------------------------------------------

@pytest.mark.parametrize("beta,gamma", [(0.1, 1.0), (1.0, 1.0), (0.5, 0.5), (2.0, 0.0),
                                        (0.3, -0.7), (1.5, 2.0)])
def test_theorem_4_1_equivalence_on_random_pairs(beta, gamma):
    u, r_ref = _draws(int(10 * beta + 100 * gamma + 1000))
    loss = R.dpo_loss_from_ratios(u, r_ref, beta=beta, gamma=gamma)
    below = loss <= R.loss_threshold(-r_ref, beta=beta, gamma=gamma)
    np.testing.assert_array_equal(below, R.ranking_correct(u))
    assert 0.2 < below.mean() < 0.8
    at_zero = R.dpo_loss_from_ratios(0.0, r_ref[:1000], beta=beta, gamma=gamma)
    np.testing.assert_array_equal(at_zero, R.loss_threshold(-r_ref[:1000], beta=beta, gamma=gamma))


def test_prop_2_6_and_why_its_bound_must_stay_below_log_2():
    u, r_ref = _draws(7, scale=1.0)
    premise, conclusion = R.prop_2_6_holds(u, r_ref, beta=1.0)
    assert premise.sum() > 50_000
    assert np.all(conclusion[premise])
    loss = R.dpo_loss_from_ratios(u, r_ref, beta=1.0)  # with bound 0.75 > log 2 it fails:
    assert np.any((r_ref >= 0) & (loss <= 0.75) & ~conclusion)


# ---- IPO analogue --------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_ipo_optimum_minimises_expected_loss(alpha):
    beta, r_ref = 0.4, 0.3
    f = lambda u: (alpha * (beta * (u - r_ref) - 1) ** 2  # noqa: E731
                   + (1 - alpha) * (-beta * (u - r_ref) - 1) ** 2)
    u = optimize.minimize_scalar(f, bracket=(-5, 5), tol=1e-12).x
    assert R.ipo_optimal_log_ratio(r_ref, alpha, beta=beta) == pytest.approx(u, abs=1e-7)


def test_ipo_idealized_correct_implies_dpo_correct_when_alpha_at_least_half():
    rng = np.random.default_rng(3)
    r_ref, alpha = rng.normal(0, 5, 100_000), rng.choice(np.linspace(0.5, 1, 5), 100_000)
    ipo = R.ipo_idealized_correct(r_ref, alpha, beta=0.5)
    dpo = R.idealized_correct(r_ref, alpha, beta=0.5)
    assert np.all(dpo[ipo]) and np.any(dpo & ~ipo)
    assert R.ipo_idealized_ranking_accuracy(r_ref, alpha, beta=0.5) < R.idealized_ranking_accuracy(
        r_ref, alpha, beta=0.5)


@pytest.mark.parametrize("beta", [0.2, 1.0, 3.0])
def test_ipo_certificate_sufficient_everywhere_exact_on_undershoot_branch(beta):
    u, r_ref = _draws(int(beta * 10) + 50)
    loss = R.ipo_loss_from_ratios(u, r_ref, beta=beta)
    cert = R.ipo_certifies_ranking(loss, -r_ref, beta=beta)
    correct = R.ranking_correct(u)
    assert np.all(correct[cert]) and cert.sum() > 10_000  # (a) sufficient
    branch = u <= r_ref + 1 / beta
    np.testing.assert_array_equal(cert[branch], correct[branch])  # (b) exact on u <= m
    assert np.any(correct & ~cert & ~branch)  # off the branch the loss alone cannot tell
    assert not np.any(cert[-r_ref * beta > 1])  # (c) m < 0: nothing certifies


def test_ipo_has_no_loss_threshold_equivalence():
    """The two roots u = m ± d share one IPO loss but rank differently (m = 0.5, d = 1)."""
    beta, r_ref = 1.0, -0.5
    lo, hi = R.ipo_loss_from_ratios([-0.5, 1.5], r_ref, beta=beta)
    assert lo == hi
    np.testing.assert_array_equal(R.ranking_correct([-0.5, 1.5]), [False, True])


# ---- bad inputs ----------------------------------------------------------------------------

@pytest.mark.parametrize("call,field", [
    (lambda: R.clamp_alpha(1.2), "alpha"),
    (lambda: R.clamp_alpha([0.5, np.nan]), "alpha"),
    (lambda: R.clamp_alpha(0.5, unanimous=0.5), "unanimous"),
    (lambda: R.optimal_log_ratio(0.0, -0.1, beta=1.0), "alpha"),
    (lambda: R.optimal_log_ratio(0.0, 0.5, beta=0.0), "beta"),
    (lambda: R.loss_threshold(0.0, beta=-1.0), "beta"),
    (lambda: R.loss_threshold(0.0, beta=1.0, gamma=np.inf), "gamma"),
    (lambda: R.dpo_loss_from_ratios(0.0, 0.0, beta=np.nan), "beta"),
    (lambda: R.ipo_optimal_log_ratio(0.0, 2.0, beta=1.0), "alpha"),
    (lambda: R.ipo_certifies_ranking(0.1, 0.0, beta=0.0), "beta"),
    (lambda: R.loss_threshold(0.0, beta="1"), "beta"),
    (lambda: R.loss_threshold(0.0, beta=[1.0]), "beta"),
    (lambda: R.loss_threshold(0.0, beta=1.0, gamma=1j), "gamma"),
    (lambda: R.clamp_alpha(0.5, unanimous=None), "unanimous"),
])
def test_bad_inputs_raise_naming_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()
