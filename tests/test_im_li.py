"""Tests for dpolab.theory.im_li: golden values, exact Q*, the scaling-law slope, closed forms vs ODEs,
the vacuous probability clause, and the multi-token velocity against autodiff."""
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats
from scipy.integrate import solve_ivp

from dpolab.theory import im_li as IL
from dpolab.theory import im_li_dynamics as ILD

LOG3 = math.log(3.0)


def _noise_free_dataset(K=3, Q=2, lb=0.5):
    """v = 0, orthogonal values, distinct tokens: g = lb e_1 +- e_{1+i}, pair i = (2i, 2i+1)."""
    g, yw, yl = [], [], []
    for i in range(K):
        for sign in (1, -1):
            e = np.zeros(K + 1)
            e[0], e[1 + i] = lb, sign
            for _ in range(Q):
                g.append(e)
                yw.append(2 * i if sign > 0 else 2 * i + 1)
                yl.append(2 * i + 1 if sign > 0 else 2 * i)
    g, yw, yl = np.array(g), np.array(yw), np.array(yl)
    return np.asarray(ILD.cross_terms(g, yw, yl, g, yw, yl)), 2 * K * Q


def _brute_q_star(bound_fn, threshold=0.05, q_hi=20_000):
    """Plain Python linear search of min{Q >= 40 : bound(Q) < threshold}."""
    for q in range(40, q_hi + 1):
        if bound_fn(q) < threshold:
            return q
    return None


# ---- Theorem 4.2 envelopes ------------------------------------------------------------------

def test_tau_1_and_envelopes_golden():
    assert IL.tau_1(K=2, beta=1.0) == pytest.approx(0.4394449154672439, rel=1e-15)  # 2 log3 / 5
    assert IL.tau_1(K=10, beta=0.1, tau=2.0) == pytest.approx(10 * 2 * LOG3 / 0.05, rel=1e-15)
    for K, beta, tau in [(1, 1.0, 1.0), (7, 0.3, 2.5)]:
        t1 = IL.tau_1(K=K, beta=beta, tau=tau)
        assert IL.r_lower(t1, K=K, beta=beta, tau=tau) == pytest.approx(IL.MARGIN_WINDOW[0])
        assert IL.r_upper(t1, K=K, beta=beta, tau=tau) == pytest.approx(IL.MARGIN_WINDOW[1])
        assert IL.r_lower(t1, K=K, beta=beta, tau=tau, delta_orthogonal=True) == pytest.approx(
            IL.MARGIN_WINDOW_DELTA[0])
    t = np.array([0.0, 1.0, 8.0])
    np.testing.assert_allclose(IL.r_lower(t, K=2, beta=2.0), [0.0, 0.25, 2.0], rtol=1e-15)
    np.testing.assert_allclose(IL.r_upper(t, K=2, beta=2.0), [0.0, 10.0, 80.0], rtol=1e-15)
    assert IL.MARGIN_WINDOW == (LOG3 / 40, LOG3) and IL.MARGIN_WINDOW_DELTA == (LOG3 / 80, LOG3)
    with pytest.raises(ValueError, match="beta"):
        IL.tau_1(K=2, beta=0.0)


def test_conditions_on_theorem_defaults_hold_and_violations_are_reported():
    names = ["Z <= 1/(4 lb^2)", "d <= 5Q", "v <= 1/(32 sqrt(Q))", "1/4 <= lb <= 1/2", "Q >= 40",
             "delta <= min(eps v/8, 1/4)"]
    for Q in (40, 97, 1000):
        cs = IL.conditions(Q=Q, d=IL.default_d(Q), v=IL.default_v(Q), lb=0.5, Z=1, delta=0.0)
        assert [c.name for c in cs] == names and all(c.holds for c in cs)
    cs = IL.conditions(Q=40, d=200, v=1 / (32 * math.sqrt(40)), lb=0.5, Z=1, generalization=False)
    assert [c.name for c in cs] == names[:4]
    assert {c.name: c.value for c in cs}["d <= 5Q"] == 200.0
    bad = dict(Q=40, d=200, v=IL.default_v(40), lb=0.5, Z=1, delta=0.0)
    # lb = 0.6 also breaks Z <= 1/(4 lb^2) = 0.69 (Z >= 1), hence two failures there
    for field, value, name, n_bad in [("d", 201, "d <= 5Q", 1), ("v", 1.01 * IL.default_v(40),
                                      names[2], 1), ("lb", 0.6, names[3], 2), ("lb", 0.2, names[3], 1),
                                      ("Z", 2, names[0], 1), ("Q", 39, "Q >= 40", 1),
                                      ("delta", 1 / 300, names[5], 1)]:
        args = {**bad, field: value}
        if field == "Q":
            args.update(d=IL.default_d(39), v=IL.default_v(39))
        cs = {c.name: c for c in IL.conditions(**args)}
        assert not cs[name].holds, (field, value)
        assert sum(not c.holds for c in cs.values()) == n_bad
    # delta cap by hand: eps v / 8 = 1 / (128 (Z + 2)) = 1/384 for Z = 1
    assert {c.name: c.holds for c in IL.conditions(**{**bad, "delta": 1 / 384})}[names[5]]


# ---- Theorem 4.3 bounds and Q* ----------------------------------------------------------------

def test_bound_simplified_golden_and_q_star_10():
    b880, b879 = 2 * 10 * 880**2 * math.exp(-880 / 45), 2 * 10 * 879**2 * math.exp(-879 / 45)
    assert IL.bound_simplified(K=10, Q=880) == pytest.approx(b880, rel=1e-14)
    assert IL.bound_simplified(K=10, Q=880) < 0.05 <= IL.bound_simplified(K=10, Q=879)
    assert b880 == pytest.approx(0.049788090653, rel=1e-10) and b879 > 0.05
    np.testing.assert_allclose(IL.bound_simplified(K=np.array([[1], [10]]), Q=np.array([40, 90])),
                               [[3200 * math.exp(-40 / 45), 16200 * math.exp(-2)],
                                [32000 * math.exp(-40 / 45), 162000 * math.exp(-2)]], rtol=1e-14)
    assert IL.q_star(10, threshold=0.05) == 880


@pytest.mark.parametrize("K", [1, 2, 10, 1000, 10**5])
def test_q_star_matches_brute_force(K):
    def simple(q):
        return 2 * K * q**2 * math.exp(-q / 45)

    def refined(q, d=None, v=None, lb=0.5, Z=1):
        d = 5 * q if d is None else d
        v = 1 / (32 * math.sqrt(q)) if v is None else v
        eps = 1 / (16 * v * (Z + 2))
        return 2 * K * q**2 * math.exp(-eps**2 / (2 * (1 + lb**2 + d * v**2 + 2 * eps * v)))

    assert IL.q_star(K) == _brute_q_star(simple)
    assert IL.q_star(K, threshold=0.5) == _brute_q_star(simple, 0.5)
    assert IL.q_star(K, bound="refined") == _brute_q_star(refined)
    assert IL.q_star(K, bound="refined", lb=0.25, Z=2) == _brute_q_star(
        lambda q: refined(q, lb=0.25, Z=2))
    assert IL.q_star(K, bound="refined", d=2000) == _brute_q_star(lambda q: refined(q, d=2000))
    # fixed large d: the rising stretch ends at an interior peak (~670 for d = 1e8)
    assert IL.q_star(K, bound="refined", d=10**8) == _brute_q_star(lambda q: refined(q, d=1e8))
    # fixed v: the bound only rises with Q, so Q* is 40 or nothing
    assert IL.q_star(K, bound="refined", v=0.001) == 40
    assert IL.q_star(K, bound="refined", v=0.05, q_max=10**6) is None
    assert IL.q_star(K, bound="refined", v=0.05, d=300, q_max=10**6) is None
    assert IL.q_star(K, q_max=100) is None


def test_q_star_finds_a_hit_on_the_rising_stretch():
    # K = 5e-4: 2KQ^2 e^{-Q/45} is 0.66 at Q = 40 and 1.09 at the peak Q = 90, so Q*(thr=1) = 40
    # although the tail (Q ~ 600) also crosses 1: only the scan of [40, 90) finds it
    assert IL.q_star(5e-4, threshold=1.0) == 40 == _brute_q_star(
        lambda q: 1e-3 * q**2 * math.exp(-q / 45), 1.0)


@pytest.mark.parametrize("d,Z,lb", [(None, 20, 0.1), (None, 6, 0.2), (1e8, 1, 0.5),
                                    (1e6, 3, 0.3), (1e11, 1, 0.5)])
def test_refined_bound_rises_before_q0_and_falls_after(d, Z, lb):
    q0 = IL._decreasing_from(bound="refined", d=d, v=None, lb=lb, Z=Z, delta_orthogonal=False,
                             q_max=10**9)
    q = np.arange(40, 200_000)
    b = IL.bound_refined(K=1, Q=q, d=5 * q if d is None else d, v=1 / (32 * np.sqrt(q)), lb=lb,
                         Z=Z)
    assert 41 < q0 < q[-1] and q0 - 1 <= q[np.argmax(b)] <= q0  # the real peak is in (q0-1, q0]
    step, tol = np.diff(b), 1e-13 * b[1:] + 1e-300  # 1e-300: denormals have no relative precision
    assert np.all(step[: q0 - 41] >= -tol[: q0 - 41]) and np.all(step[q0 - 40:] <= tol[q0 - 40:])


def test_q_star_past_the_scan_limit_matches_vectorised_brute_force():
    # d = 1e14 puts the peak near Q = 6.6e5, beyond the 1e5-point scan: bisection must take over
    q = np.arange(40, 6_000_001, dtype=np.float64)
    eps2, proxy = 4 * q / 9, 1.25 + 1e14 / (1024 * q) + 1 / 24
    hits = np.flatnonzero(2e6 * q**2 * np.exp(-eps2 / (2 * proxy)) < 0.05)
    assert hits.size and IL.q_star(1e6, bound="refined", d=10**14) == int(q[hits[0]])


def test_q_star_grows_like_45_log_K():
    Ks = np.logspace(1, 6, 11)
    qs = IL.q_star_table(Ks)
    assert qs[0] == 880 and np.all(np.diff(qs) > 0)
    fit = stats.linregress(np.log(Ks), qs)
    # Q* solves Q = 45 (log(2K/thr) + 2 log Q) up to a ceiling, so dQ*/dlog K = 45/(1 - 90/Q*):
    # between 45/(1-90/Q*(1e6)) ~ 47.9 and 45/(1-90/Q*(10)) ~ 50.1 over this range; the ceiling
    # moves each Q* by < 1 over a span of ~560, i.e. < 0.1 on the slope.
    lo, hi = 45 / (1 - 90 / qs[-1]) - 0.2, 45 / (1 - 90 / qs[0]) + 0.2
    assert lo < fit.slope < hi and fit.rvalue > 0.999, (fit.slope, lo, hi)
    assert 45 < lo and hi < 51


def test_q_star_validation():
    with pytest.raises(ValueError, match="bound.*'simplified'.*'refined'.*'nope'"):
        IL.q_star(10, bound="nope")
    for thr in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="threshold"):
            IL.q_star(10, threshold=thr)
    with pytest.raises(ValueError, match="d and v"):
        IL.q_star(10, d=100)
    assert np.isnan(IL.q_star_table([10, 20], q_max=500)).all()


def test_bound_refined_golden_and_v_zero():
    Q, K = 100, 3
    eps = 2 * math.sqrt(Q) / 3  # 1/(16 v (Z+2)) with v = 1/(32 sqrt Q), Z = 1
    proxy = 1 + 0.25 + 5 / 1024 + 2 * eps / (32 * math.sqrt(Q))
    by_hand = 2 * K * Q**2 * math.exp(-eps**2 / (2 * proxy))
    got = IL.bound_refined(K=K, Q=Q, d=IL.default_d(Q), v=IL.default_v(Q), lb=0.5)
    assert got == pytest.approx(by_hand, rel=1e-13)
    proxy_d = 1 + 0.25 + 5 / 1024 + 2.5 * eps / (32 * math.sqrt(Q))
    assert IL.bound_refined(K=K, Q=Q, d=500, v=IL.default_v(Q), lb=0.5, delta_orthogonal=True) \
        == pytest.approx(2 * K * Q**2 * math.exp(-eps**2 / (2 * proxy_d)), rel=1e-13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert IL.bound_refined(K=K, Q=Q, d=500, v=0.0, lb=0.5) == 0.0
        out = IL.bound_refined(K=K, Q=Q, d=500, v=np.array([0.0, IL.default_v(Q)]), lb=0.5)
    assert out[0] == 0.0 and out[1] == pytest.approx(by_hand, rel=1e-13)


def test_probability_statement_is_vacuous_below_about_1_4e5():
    Q = np.arange(1, 400_001, dtype=np.float64)
    val = IL.probability_statement_upper_value(K=1, Q=Q)
    first = int(Q[np.argmax(val > 0)])
    assert 1e5 < first < 2e5 and np.all(val[: first - 1] <= 0) and np.all(val[first - 1:] > 0)
    # independently: root of Q^{3/4}/256 - log 8 - (9/4) log Q (single sign change past Q ~ 7000)
    root = optimize.brentq(lambda q: q**0.75 / 256 - math.log(8) - 2.25 * math.log(q), 1e4, 1e6)
    assert first == math.ceil(root) == 143469  # THEORY §1.4 says "~1.4e5": agrees
    assert IL.probability_statement_upper_value(K=10, Q=880) < 0
    note = IL.probability_statement_note()
    assert note is IL.PROBABILITY_NOTE and "NEVER a pass criterion" in note and "1.4e5" in note


# ---- noise-free closed forms --------------------------------------------------------------------

def test_dpo_noise_free_solves_its_equation():
    x = np.sort(np.concatenate([[0.0], np.logspace(-12, 300, 400), [698.5, 699.0, 699.5]]))
    r = IL.dpo_noise_free(x / 2, K=1, beta=1.0)  # 2 beta^2 t/(K tau) = x
    big = x > 1.0
    np.testing.assert_allclose(r[big] + np.exp(r[big]), 1 + x[big], rtol=1e-13, atol=0)
    np.testing.assert_allclose((r + np.expm1(r))[~big], x[~big], rtol=1e-13, atol=0)
    assert r[0] == 0.0 and np.all(np.diff(r) > 0)
    # at the largest x the root is log(x - r): check it in log space
    assert r[-1] == pytest.approx(math.log(1e300 - r[-1]), rel=1e-14)


def test_dpo_noise_free_matches_scalar_ode_and_full_lemma_4_1_system():
    K, beta, tau = 3, 0.7, 1.3
    ts = np.linspace(0, 5 * IL.tau_1(K=K, beta=beta, tau=tau), 9)
    scalar = solve_ivp(lambda t, r: 2 * beta**2 / (K * tau) / (1 + np.exp(r)), (0, ts[-1]), [0.0],
                       t_eval=ts, rtol=1e-12, atol=1e-14, method="DOP853")
    np.testing.assert_allclose(IL.dpo_noise_free(ts, K=K, beta=beta, tau=tau), scalar.y[0],
                               rtol=1e-9, atol=1e-12)
    C, N = _noise_free_dataset(K=K, Q=2)
    full = solve_ivp(lambda t, r: beta**2 / (N * tau) * C @ (1 / (1 + np.exp(r))), (0, ts[-1]),
                     np.zeros(N), t_eval=ts, rtol=1e-12, atol=1e-14, method="DOP853")
    np.testing.assert_allclose(full.y, np.broadcast_to(scalar.y[0], full.y.shape), atol=1e-10)


@pytest.mark.parametrize("K,beta,tau", [(1, 1.0, 1.0), (2, 0.1, 1.0), (16, 0.01, 3.0),
                                        (10**6, 5.0, 0.2)])
def test_dpo_at_tau_1_is_0_2081(K, beta, tau):
    root = optimize.brentq(lambda r: r + math.exp(r) - 1 - 2 * LOG3 / 5, 0, 1, xtol=1e-16)
    assert root == pytest.approx(0.20810386245, abs=1e-11)  # r + e^r = 1 + (2/5) log 3
    got = IL.dpo_noise_free(IL.tau_1(K=K, beta=beta, tau=tau), K=K, beta=beta, tau=tau)
    assert got == pytest.approx(root, rel=1e-14)
    assert IL.MARGIN_WINDOW[0] < got < IL.MARGIN_WINDOW[1]


def test_ipo_slic_golden_points():
    # 4 beta^2 t / (K tau) = log 2 at K = 2, beta = 0.5, tau = 1, t = 2 log 2 -> r = 1/2
    assert IL.ipo_noise_free(2 * math.log(2), K=2, beta=0.5) == pytest.approx(0.5, rel=1e-15)
    assert IL.ipo_noise_free(0.0, K=2, beta=0.5) == 0.0
    np.testing.assert_allclose(IL.slic_noise_free(np.array([0.0, 1.0, 2.0, 5.0]), K=4, beta=1.0),
                               [0.0, 0.5, 1.0, 1.0], rtol=0, atol=0)
    assert IL.slic_noise_free(3.0, K=3, beta=0.5, tau=2.0) == pytest.approx(0.25, rel=1e-15)
    with pytest.raises(ValueError, match="t must be >= 0"):
        IL.ipo_noise_free(-1.0, K=2, beta=0.5)


def test_ipo_linear_exact_equals_noise_free_closed_form():
    K, beta, tau = 3, 0.8, 1.5
    C, N = _noise_free_dataset(K=K, Q=3)
    ts = np.array([0.0, 0.3, 1.0, 4.0, 20.0])
    exact = IL.ipo_linear_exact(C, ts, N=N, beta=beta, tau=tau)
    assert exact.shape == (ts.size, N)
    np.testing.assert_allclose(exact, np.broadcast_to(
        IL.ipo_noise_free(ts, K=K, beta=beta, tau=tau)[:, None], exact.shape), atol=1e-13)
    assert IL.ipo_linear_exact(C, 1.0, N=N, beta=beta, tau=tau).shape == (N,)


def test_cross_terms_token_factors():
    g = np.array([[1.0, 2.0], [0.5, -1.0]])
    #           same pair+order, swapped, shares w only, shares l with w', no shared token
    yw_b, yl_b = np.array([0, 1, 0, 5, 7]), np.array([1, 0, 4, 0, 8])
    gb = np.tile(g[1], (5, 1))
    C = np.asarray(ILD.cross_terms(g[:1], np.array([0]), np.array([1]), gb, yw_b, yl_b))
    gram = g[0] @ g[1]
    np.testing.assert_array_equal(C, [[2 * gram, -2 * gram, gram, -gram, 0.0]])


# ---- multi-token velocity vs autodiff -----------------------------------------------------------

def test_multi_token_reward_velocity_matches_autodiff():
    """The formula against jax.grad + jvp of the multi-token DPO loss (dpolab.sims.multi_token)."""
    from dpolab.sims.multi_token import autodiff_reward_velocity, random_problem

    problem = random_problem(jax.random.key(0), beta=0.7, tau=1.7)
    formula = ILD.multi_token_reward_velocity(**problem.formula_args())
    auto = autodiff_reward_velocity(problem)
    np.testing.assert_allclose(np.asarray(formula), np.asarray(auto), rtol=1e-12, atol=1e-14)
    assert float(jnp.max(jnp.abs(formula))) > 1e-3  # the check is not vacuous
    args = problem.formula_args()
    for y in range(problem.w.shape[0]):
        args["y"] = y
        assert float(ILD.multi_token_reward_velocity(**args)) == float(formula[y])
