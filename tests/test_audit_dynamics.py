"""Audit questions Q5 (Adam vs GD), Q6 (after τ_1), Q7 (β) and Q9 (flips): their pure functions,
and their files and report sections in one `dpolab audit --quick` run (the `audit_quick` fixture)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dpolab.audit import q5_adam, q6_after_tau1, q7_beta, q9_flips
from dpolab.sims.config import DataSpec, make_params
from dpolab.sims.data import sample_dataset
from dpolab.sims.reference import dataset_cross_terms, margin_recursion
from dpolab.theory import extensions as closed_forms
from dpolab.theory import im_li

MODULES = {m.NAME: m for m in (q5_adam, q6_after_tau1, q7_beta, q9_flips)}
NUMBER = {"q5-adam": 5, "q6-after-tau1": 6, "q7-beta": 7, "q9-flips": 9}


# ---- pure functions ------------------------------------------------------------------------------

def test_mean_ci_matches_the_normal_interval():
    from dpolab.sims.risk import fmt_ci, mean_ci

    x = np.array([[1.0, 2.0, 4.0, 7.0], [0.0, 0.0, 0.0, 0.0]])
    mean, half = mean_ci(x)
    assert mean == pytest.approx([3.5, 0.0])
    sd = np.sqrt(((x[0] - 3.5) ** 2).sum() / 3)
    assert half == pytest.approx([stats.norm.ppf(0.975) * sd / 2, 0.0], rel=1e-12)
    assert np.isnan(mean_ci(np.ones((2, 1)))[1]).all()  # one seed: no interval, never a zero width
    assert mean_ci(x.T, axis=0)[1] == pytest.approx(half, rel=1e-15)
    assert fmt_ci(3.5, 0.01234) == "3.5 ± 0.012" and fmt_ci(3.5, 0.01234, 2, fixed=True) == "3.50 ± 0.01"


def test_kendall_per_seed_orders_and_ties():
    K = np.array([1.0, 2.0, 4.0])
    y = np.stack([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [1.0, 3.0, 2.0]], axis=1)  # (3, S=4)
    tau = q5_adam.kendall_per_seed(K, y)
    assert tau == pytest.approx([-1.0, 1.0, 0.0, stats.kendalltau(K, [1.0, 3.0, 2.0]).statistic])


def test_loglog_slope_recovers_a_power_law():
    K = np.array([1.0, 3.0, 9.0])
    y = np.stack([2.0 * K**-1.0, 0.5 * K**0.25], axis=-1)
    assert q5_adam.loglog_slope_per_seed(K, y) == pytest.approx([-1.0, 0.25], abs=1e-12)
    assert np.isnan(q5_adam.loglog_slope_per_seed(K, np.array([[1.0], [0.0], [2.0]]))[0])


def test_noise_free_recursion_converges_to_the_flow_at_rate_one():
    """Euler on τ dr/dt = (2β²/K)σ(−r): global error O(h), so halving h halves the error."""
    s = 1.0
    errors = []
    for n in (100, 200, 400, 800):
        r = closed_forms.noise_free_recursion(2 * s / n, n)[-1]
        errors.append(abs(r - im_li.dpo_noise_free(s, K=1, beta=1.0)))
    slope = stats.linregress(np.log([100, 200, 400, 800]), np.log(errors)).slope
    assert -1.1 < slope < -0.9  # first-order method: slope −1 (band: ±0.1 for the O(h²) remainder)


@pytest.mark.parametrize("tokens", ["distinct", "yes_no"])
def test_noise_free_recursion_is_the_exact_gd_recursion_without_noise(tokens):
    """With v = 0 every row of C sums to 4Q (THEORY §1.6), for distinct and shared tokens alike:
    the independent cross-term recursion of dpolab.sims.reference gives the same margin for every sample."""
    spec = DataSpec(K=3, Q=4, d=8, n_test=1, tokens=tokens)
    params = make_params(beta=1.3, eta=0.05, v=0.0)
    data = sample_dataset(jax.random.key(1), spec, params, 0)
    r, _ = margin_recursion(dataset_cross_terms(data, data), jnp.zeros((1, data.g.shape[0])),
                            beta=1.3, eta=0.05, steps=30)
    h = 2 * 0.05 * 1.3**2 / spec.K
    expected = closed_forms.noise_free_recursion(h, 30)
    np.testing.assert_allclose(np.asarray(r), np.repeat(expected[:, None], r.shape[1], 1), rtol=1e-12,
                               atol=1e-14)  # float64 rounding of 30 steps


def test_rdpo_drift_with_matching_flips_is_the_clean_drift():
    """(1−ε)[σ(−m) + c] − ε[σ(m) + c] = σ(−m) for c = ε/(1−2ε): rDPO restores the clean dynamics."""
    h = np.array([0.01, 0.3])
    clean = closed_forms.noise_free_recursion(h, 200)
    for eps in (0.1, 0.3, 0.45):
        robust = closed_forms.noise_free_recursion(h, 200, loss="rdpo", flip=eps, eps=eps)
        np.testing.assert_allclose(robust, clean, rtol=1e-12, atol=1e-14)
    # the check can fail: DPO with flips does not restore it
    assert not np.allclose(closed_forms.noise_free_recursion(h, 200, flip=0.3), clean, rtol=1e-3)


def test_dpo_flip_flow_solves_its_equation_and_limits():
    eps = 0.2
    s = np.array([0.01, 0.5, 3.0, 100.0])  # at s = 100 the gap to saturation is ~e^{−2ε(1−ε)s}
    m = closed_forms.dpo_flip_flow(s, eps)
    lhs = m - np.log((1 - eps - eps * np.exp(m)) / (1 - 2 * eps)) / eps
    # (near saturation the log term is ill-conditioned: the equation is checked away from it)
    np.testing.assert_allclose(lhs[:3], 2 * (1 - eps) * s[:3], rtol=1e-9)
    assert m[-1] == pytest.approx(math.log((1 - eps) / eps), rel=1e-6)  # saturation
    # the small-h recursion with flips converges to this flow; ε → 0 gives the clean closed form
    n = 4000
    assert closed_forms.noise_free_recursion(2 * 3.0 / n, n, flip=eps)[-1] == pytest.approx(m[2], rel=2e-3)
    # ε = 1e-6: the flow moves by O(ε); the 1/ε in the equation costs ~1e-16/ε of cancellation
    assert closed_forms.dpo_flip_flow(s, 1e-6) == pytest.approx(im_li.dpo_noise_free(s, K=1, beta=1.0), rel=1e-4)
    assert closed_forms.dpo_flip_flow(s, 0.0) == pytest.approx(im_li.dpo_noise_free(s, K=1, beta=1.0))


def test_early_dpo_signal_scales_by_one_minus_two_eps():
    h, eps = 1e-4, 0.3
    assert closed_forms.noise_free_recursion(h, 1, flip=eps)[-1] == pytest.approx((1 - 2 * eps) * h / 2, rel=1e-12)


def test_exit_time_ratio_is_where_the_closed_form_reaches_log3():
    K, beta = 3, 0.7
    t = closed_forms.exit_time_ratio() * im_li.tau_1(K=K, beta=beta)
    assert im_li.dpo_noise_free(t, K=K, beta=beta) == pytest.approx(math.log(3), rel=1e-12)


def test_crossing_interpolates_in_log_time():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    assert q6_after_tau1.crossing(x, np.array([1.0, 1.0, 0.0, 0.0]), 0.5, falling=True) == pytest.approx(
        math.sqrt(8.0))
    assert q6_after_tau1.crossing(x, np.array([0.0, 1.0, 2.0, 3.0]), 2.0, falling=False) == pytest.approx(4.0)
    assert np.isnan(q6_after_tau1.crossing(x, np.zeros(4), 0.5, falling=False))


def test_euler_threshold_is_the_first_step_count_within_tolerance():
    s = 4 * math.log(3) / 5
    n, h = q7_beta.euler_threshold(s, tol=0.05)
    flow = im_li.dpo_noise_free(s, K=1, beta=1.0)
    dev = lambda k: abs(closed_forms.noise_free_recursion(2 * s / k, k)[-1] / flow - 1)  # noqa: E731
    assert h == pytest.approx(2 * s / n) and dev(n) <= 0.05 < dev(n - 1)


def test_goodman_kruskal_gamma_and_collapse_scores():
    x = np.array([1.0, 1.0, 2.0, 3.0])
    assert q7_beta.goodman_kruskal_gamma(x, [0.5, 0.7, 1.0, 2.0]) == 1.0  # the x-tie is not counted
    assert q7_beta.goodman_kruskal_gamma(x, [3.0, 2.0, 1.0, 0.0]) == -1.0
    # margins that are a function of s collapse on s (γ = 1) and not on βt
    betas, Ks, tm = np.array([0.5, 2.0]), np.array([1.0, 4.0]), np.array([1.0, 2.0, 4.0])
    margins = np.broadcast_to(np.log1p(tm)[None, None, :, None], (2, 2, 3, 2))
    gamma = q7_beta.collapse_scores(margins, betas, Ks, tm)
    assert np.all(gamma[0] == 1.0) and np.all(gamma[1] < 1.0)


def test_step_sizes():
    eta = q5_adam.step_sizes(40)
    assert eta["gd"] * 40 == pytest.approx(im_li.tau_1(K=1, beta=1.0))
    r_tau1 = im_li.dpo_noise_free(im_li.tau_1(K=1, beta=1.0), K=1, beta=1.0)
    assert 2 * eta["adam"] * 40 == pytest.approx(r_tau1)


def test_flip_risk_model_limits():
    """Huge Q and n_test: flip fractions and test noise concentrate, so the model tends to the
    exact-fraction value Φ(−(1−2ε)/(v√((1−2ε)² + dv²/(2Q)))) (here with d/Q fixed at 5)."""
    v, eps = 0.3, 0.2
    mean, worst = q9_flips.flip_risk_model(eps, 4, v=v, d=5 * 10**6, Q=10**6, n_test=10**7, draws=200)
    a = 1 - 2 * eps
    exact = stats.norm.cdf(-a / (v * math.sqrt(a**2 + 5 * v**2 / 2)))
    # residual spread: flip fractions sd 4e-4 and test noise sd ~0.3% of the error: 2% is ample
    assert mean == pytest.approx(exact, rel=0.02) and worst == pytest.approx(exact, rel=0.02)
    # at the runs' size the worst of K values exceeds the mean, more so for larger K
    m1, w1 = q9_flips.flip_risk_model(0.3, 1, v=v, d=250, Q=50, n_test=100)
    m8, w8 = q9_flips.flip_risk_model(0.3, 8, v=v, d=250, Q=50, n_test=100)
    assert w1 == pytest.approx(m1) and w8 > 2 * m8 and m8 == pytest.approx(m1, rel=0.1)


# ---- one `dpolab audit --quick` run ---------------------------------------------------------------

def _data(out, name):
    with np.load(out / name / "data.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_quick_q5_orderings(audit_quick):
    """GD margins ∝ 1/K at fixed steps and flat with steps ∝ K; Adam flat at fixed steps and ∝ K
    when scaled (theorem regime). The noise-free predictions are slopes ≈ −0.96/0/0/+1; the bands
    (±0.15) are 10× the quick run's seed CI (~0.015) and far from the alternative (|Δslope| ≈ 1)."""
    _, out = audit_quick
    slope = _data(out, "q5-adam")["slope_margin"][0].mean(axis=-1)  # (optimizer, schedule)
    assert slope[0, 0] < -0.8 and abs(slope[0, 1]) < 0.15
    assert abs(slope[1, 0]) < 0.15 and slope[1, 1] > 0.8


def test_quick_q7_exact_collapse_passes_and_can_fail(audit_quick):
    _, out = audit_quick
    data = _data(out, "q7-beta")
    assert q7_beta.finding(data).verdict == "pass"
    broken = data["gd_margin_mean"].copy()
    broken[1] *= 1 + 1e-6  # a β-dependence far below any physical one, far above rounding
    rel = np.abs(broken - broken[list(data["betas"]).index(1.0)]) / broken[list(data["betas"]).index(1.0)]
    assert q7_beta.finding(data | {"gd_rel_spread_beta": rel.max(axis=0)}).verdict == "fail"


def test_quick_q9_rdpo_restores_the_clean_margin(audit_quick):
    """Theorem regime (v ≈ 0.01) at τ_1: rDPO's clean margin ≈ the noise-free clean one, DPO's is
    smaller (≈ (1−2ε)×). The band 25% covers the quick run's flip-fraction noise (Q = 10: the flip
    fraction's sd √(ε(1−ε)/Q) ≈ 0.14 moves the margin by ~15%); DPO is predicted at 40%."""
    _, out = audit_quick
    data = _data(out, "q9-flips")
    losses, e = list(data["losses"]), len(data["eps"]) - 1
    clean = data["test_margin_mean"][0, 0, :, 0, 0].mean()
    robust = data["test_margin_mean"][losses.index("rdpo"), e, :, 0, 0].mean()
    plain = data["test_margin_mean"][losses.index("dpo"), e, :, 0, 0].mean()
    assert abs(robust / clean - 1) < 0.25 and plain / clean < 0.75
    assert data["nonfinite"].sum() == 0
