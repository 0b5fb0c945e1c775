"""Tests for dpolab.theory.rdpo: golden values, minimisers vs numeric minimisation, variance, bounds."""
import json
import math

import jax
import numpy as np
import pytest
from scipy import optimize, stats

from dpolab.theory import losses as L
from dpolab.theory import rdpo as R

PS = [0.05, 0.3, 0.5, 0.8, 0.97]
EPSS = [0.0, 0.1, 0.25, 0.45]


# ---- flip model and ε validation -----------------------------------------------------------

def test_observed_win_prob_golden():
    assert float(R.observed_win_prob(0.8, eps=0.1)) == pytest.approx(0.74, rel=1e-15)
    assert float(R.observed_win_prob(0.3, eps=0.25)) == pytest.approx(0.4, rel=1e-15)
    np.testing.assert_allclose(R.observed_win_prob([0.0, 0.5, 1.0], eps=0.2), [0.2, 0.5, 0.8])


@pytest.mark.parametrize("eps", [0.5, -0.1, 0.7, float("nan")])
def test_bad_eps_rejected(eps):
    with pytest.raises(ValueError, match="eps"):
        R.validate_eps(eps)
    with pytest.raises(ValueError, match="eps"):
        R.observed_win_prob(0.7, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        R.validate_eps([0.1, eps])


def test_bad_p_and_loss_rejected():
    with pytest.raises(ValueError, match="p must be in"):
        R.observed_win_prob(1.2, eps=0.1)
    with pytest.raises(ValueError, match="loss") as info:
        R.population_minimizer("slic", 0.7, eps=0.1)
    assert "ripo" in str(info.value)
    with pytest.raises(ValueError, match="loss"):
        R.score_variance(0.7, eps=0.1, loss="cdpo")


# ---- population minimisers -----------------------------------------------------------------

def test_minimizer_golden():
    # p = 0.8, ε = 0.1: q = 0.74; cDPO 0.8 + 2·0.1·0.9·(1 − 1.6) = 0.692; IPO 2q − 1 = 0.48
    assert float(R.population_minimizer("dpo", 0.8, eps=0.1).prob) == pytest.approx(0.74)
    assert float(R.population_minimizer("cdpo", 0.8, eps=0.1).prob) == pytest.approx(0.692)
    rd = R.population_minimizer("rdpo", 0.8, eps=0.1)
    assert float(rd.prob) == 0.8 and float(rd.margin) == pytest.approx(math.log(4.0))
    ipo = R.population_minimizer("ipo", 0.8, eps=0.1)
    assert ipo.prob is None and float(ipo.margin) == pytest.approx(0.48)
    assert float(R.population_minimizer("ripo", 0.8, eps=0.1).margin) == pytest.approx(0.6)


def _expected_loss(loss, p, eps):
    """q·φ(z) + (1−q)·φ(−z), built from dpolab.theory.losses only (independent of rdpo's closed forms)."""
    phi = {"dpo": L.dpo, "cdpo": lambda z: L.cdpo(z, eps), "rdpo": lambda z: L.rdpo(z, eps),
           "ipo": L.ipo, "ripo": lambda z: L.debias(L.ipo, z, eps)}[loss]
    q = p * (1 - eps) + (1 - p) * eps  # the label survives (1−ε) or is flipped in (ε)
    return lambda z: float(q * phi(z) + (1 - q) * phi(-z))


@pytest.mark.parametrize("loss", R.MINIMIZER_LOSSES)
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("eps", EPSS)
def test_minimizer_matches_numeric_minimisation(loss, p, eps):
    res = optimize.minimize_scalar(_expected_loss(loss, p, eps), bracket=(-1.0, 1.0),
                                   options=dict(xtol=1e-12))
    closed = R.population_minimizer(loss, p, eps=eps)
    assert float(closed.margin) == pytest.approx(res.x, abs=2e-6)
    if closed.prob is not None:
        assert float(closed.prob) == pytest.approx(1 / (1 + math.exp(-res.x)), abs=1e-6)


@pytest.mark.parametrize("eps", EPSS)
def test_minimizer_identities(eps):
    p = np.array(PS)
    q = R.observed_win_prob(p, eps=eps)
    clean = R.population_minimizer("dpo", p, eps=0.0)
    # unbiasedness: rDPO on noisy labels has the clean DPO minimiser (and rIPO the clean IPO one)
    np.testing.assert_allclose(R.population_minimizer("rdpo", p, eps=eps).margin, clean.margin)
    np.testing.assert_allclose(R.population_minimizer("ripo", p, eps=eps).margin,
                               R.population_minimizer("ipo", p, eps=0.0).margin)
    # noisy DPO is consistent for q; noisy IPO shrinks its target by (1 − 2ε)
    np.testing.assert_allclose(R.population_minimizer("dpo", p, eps=eps).margin,
                               R.population_minimizer("dpo", q, eps=0.0).margin, rtol=1e-12)
    np.testing.assert_allclose(R.population_minimizer("ipo", p, eps=eps).margin,
                               (1 - 2 * eps) * (2 * p - 1), atol=1e-15)
    # cDPO = label smoothing of q at rate ε; σ(margin) = prob for every logistic loss
    cd = R.population_minimizer("cdpo", p, eps=eps)
    np.testing.assert_allclose(cd.prob, q * (1 - eps) + (1 - q) * eps, rtol=1e-14)
    for loss in ("dpo", "cdpo", "rdpo"):
        m = R.population_minimizer(loss, p, eps=eps)
        np.testing.assert_allclose(1 / (1 + np.exp(-m.margin)), m.prob, rtol=1e-13)


# ---- score variance and asymptotic covariance ----------------------------------------------

def test_score_variance_golden():
    # q = 0.74: 0.74·0.26/0.8² = 0.300625; clean p(1−p) = 0.16
    assert float(R.score_variance(0.8, eps=0.1)) == pytest.approx(0.300625, rel=1e-14)
    assert float(R.score_variance(0.8, eps=0.1, loss="dpo")) == pytest.approx(0.16, rel=1e-14)
    assert float(R.score_variance(0.5, eps=0.25)) == pytest.approx(1.0, rel=1e-14)  # 1/4 / 1/4


@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("eps", EPSS)
def test_score_variance_from_autodiff(p, eps):
    """Two-point law of d rdpo/dz at z* = logit p under noisy labels, via jax.grad."""
    z_star = math.log(p / (1 - p))
    grad = jax.grad(lambda z: L.rdpo(z, eps))
    s_kept, s_flipped = float(grad(z_star)), -float(grad(-z_star))  # observed w≻l / l≻w
    q = p * (1 - eps) + (1 - p) * eps
    mean = q * s_kept + (1 - q) * s_flipped
    assert mean == pytest.approx(0.0, abs=1e-14)
    var = q * s_kept**2 + (1 - q) * s_flipped**2
    assert float(R.score_variance(p, eps=eps)) == pytest.approx(var, rel=1e-12)


def test_asymptotic_covariance_1d_by_hand():
    X, p, eps, beta = np.array([[1.0], [2.0], [-1.0]]), np.array([0.5, 0.8, 0.3]), 0.1, 0.5
    H = beta**2 * (0.25 * 1 + 0.16 * 4 + 0.21 * 1) / 3
    q = [0.5, 0.74, 0.34]  # p + ε(1 − 2p)
    V = beta**2 * (q[0] * (1 - q[0]) + q[1] * (1 - q[1]) * 4 + q[2] * (1 - q[2])) / 3 / 0.8**2
    out = R.asymptotic_covariance(X, p, eps=eps, beta=beta)
    assert out.H[0, 0] == pytest.approx(H, rel=1e-14) and out.V[0, 0] == pytest.approx(V, rel=1e-14)
    assert out.covariance[0, 0] == pytest.approx(V / H**2, rel=1e-13)


def test_asymptotic_covariance_2d_loops_and_weak_preferences():
    rng = np.random.default_rng(0)
    X, p, eps, beta = rng.normal(size=(50, 2)), rng.uniform(0.1, 0.9, 50), 0.2, 0.7
    q = p + eps * (1 - 2 * p)
    H = beta**2 * sum(pi * (1 - pi) * np.outer(x, x) for x, pi in zip(X, p)) / 50
    V = beta**2 * sum(qi * (1 - qi) * np.outer(x, x) for x, qi in zip(X, q)) / 50 / 0.6**2
    out = R.asymptotic_covariance(X, p, eps=eps, beta=beta)
    np.testing.assert_allclose(out.H, H, rtol=1e-13)
    np.testing.assert_allclose(out.V, V, rtol=1e-13)
    np.testing.assert_allclose(out.covariance, np.linalg.inv(H) @ V @ np.linalg.inv(H), rtol=1e-11)
    # q(1−q) ≥ p(1−p): the covariance dominates H⁻¹/(1−2ε)² ...
    gap = out.covariance - np.linalg.inv(H) / (1 - 2 * eps) ** 2
    assert np.linalg.eigvalsh(gap).min() > 0
    # ... with equality at p ≡ 1/2: std grows by exactly 1/(1−2ε) over clean DPO (cov H⁻¹)
    half = R.asymptotic_covariance(X, np.full(50, 0.5), eps=eps, beta=beta)
    np.testing.assert_allclose(half.covariance, np.linalg.inv(half.H) / (1 - 2 * eps) ** 2,
                               rtol=1e-12)
    clean = R.asymptotic_covariance(X, p, eps=0.0, beta=beta)
    np.testing.assert_allclose(clean.covariance, np.linalg.inv(clean.H), rtol=1e-12)


def test_asymptotic_covariance_monte_carlo_1d():
    """n·Var(θ̂) of rDPO fits (Newton, 1-D, vectorised over replicates) ≈ H⁻¹VH⁻¹."""
    rng = np.random.default_rng(1)
    n, reps, eps, beta, theta_star = 1000, 1500, 0.2, 0.5, 1.2
    x = rng.choice([-2.0, -1.0, 0.5, 1.5], size=n)
    p = 1 / (1 + np.exp(-beta * theta_star * x))
    y = rng.random((reps, n)) < p + eps * (1 - 2 * p)  # observed "x-orientation wins"
    sign = np.where(y, 1.0, -1.0)
    theta = np.full((reps, 1), theta_star)
    c = eps / (1 - 2 * eps)
    for _ in range(25):  # rDPO loss of z = s·βθx: grad −β s x (σ(−z) + c), Hessian β²x²σσ′
        z = sign * beta * theta * x
        g = -(beta * sign * x * (1 / (1 + np.exp(z)) + c)).mean(1, keepdims=True)
        h = (beta**2 * x**2 / (2 + np.exp(z) + np.exp(-z))).mean(1, keepdims=True)
        theta = theta - g / h
    predicted = R.asymptotic_covariance(x[:, None], p, eps=eps, beta=beta).covariance[0, 0]
    assert n * theta.var() == pytest.approx(predicted, rel=0.1)  # MC s.e. ≈ √(2/1500) ≈ 4%


# ---- γ, rates and the (reconstructed) bounds -----------------------------------------------

def test_gamma_margin_rate_golden():
    assert float(R.gamma(margin_bound=0.0)) == 0.25
    assert float(R.gamma(margin_bound=math.log(3))) == pytest.approx(3 / 16, rel=1e-14)
    assert float(R.gamma(margin_bound=12.0)) == pytest.approx(
        1 / (2 + math.exp(-12) + math.exp(12)), rel=1e-14)
    with np.errstate(all="raise"):
        assert float(R.gamma(margin_bound=1e4)) == 0.0
    assert R.margin_bound(beta=0.5, L=2.0, B=3.0) == 12.0
    assert R.margin_bound(beta=0.5, L=2.0, B=3.0, c_margin=1.0) == 3.0
    assert float(R.rate(n=100, d=4, delta=math.exp(-5))) == pytest.approx(0.3, rel=1e-14)
    assert float(R.noise_factor(0.25)) == 2.0 and float(R.noise_factor(0.0)) == 1.0


def test_estimation_bound_golden():
    g = 1 / (2 + math.exp(-2) + math.exp(2))  # m = 4·0.5·1·1 = 2
    by_hand = 1 / (g * 0.5 * (1 - 0.5)) * 0.3 + 1.5 * math.sqrt(0.04) * 1.0
    got = R.estimation_bound(n=100, d=4, eps=0.25, beta=0.5, L=1.0, B=1.0, delta=math.exp(-5),
                             lam=0.04, C=1.0, C_prime=1.5)
    assert float(got) == pytest.approx(by_hand, rel=1e-14)
    kw = dict(n=100, d=4, eps=0.25, beta=0.5, L=1.0, B=1.0, delta=0.05)
    assert float(R.suboptimality_gap_bound(kappa=3.0, **kw)) == pytest.approx(
        3.0 * float(R.estimation_bound(**kw)), rel=1e-15)


def test_estimation_bound_rates():
    kw = dict(d=5, eps=0.1, beta=1.0, L=1.0, B=1.0, delta=0.05)
    ns = np.array([10, 100, 1_000, 10_000, 100_000])
    fit = stats.linregress(np.log(ns), np.log(R.estimation_bound(n=ns, **kw)))
    assert fit.slope == pytest.approx(-0.5, abs=1e-12)
    # squared bound is affine in d with slope ∝ 1/n; the ε-dependence is exactly 1/(1−2ε)
    ds = np.arange(1, 40)
    sq = R.estimation_bound(n=1000, d=ds, eps=0.1, beta=1.0, L=1.0, B=1.0, delta=0.05) ** 2
    assert np.abs(np.diff(sq, 2)).max() < 1e-12 * sq.max()
    base = dict(n=1000, d=5, beta=1.0, L=1.0, B=1.0, delta=0.05)
    for eps in (0.1, 0.3, 0.45):
        ratio = R.estimation_bound(eps=eps, **base) / R.estimation_bound(eps=0.0, **base)
        assert float(ratio) == pytest.approx(1 / (1 - 2 * eps), rel=1e-13)


# ---- coverage constant ---------------------------------------------------------------------

def test_coverage_constant():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(4, 4))
    S = A @ A.T + 0.1 * np.eye(4)
    assert R.coverage_constant(S, S) == pytest.approx(1.0, rel=1e-12)
    t, s = np.array([1.0, 4.0, 2.0]), np.array([2.0, 1.0, 2.0])
    assert R.coverage_constant(np.diag(t), np.diag(s)) == pytest.approx(4.0, rel=1e-13)
    assert R.coverage_constant(np.diag(t), np.diag(s), ridge=1.0) == pytest.approx(2.0, rel=1e-13)
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # a common rotation leaves κ unchanged
    assert R.coverage_constant(Q @ np.diag(t) @ Q.T, Q @ np.diag(s) @ Q.T) == pytest.approx(4.0)
    B = rng.normal(size=(4, 4))
    T = B @ B.T
    kappa = R.coverage_constant(T, S)
    v = rng.normal(size=(20000, 4))
    quotients = np.einsum("ni,ij,nj->n", v, T, v) / np.einsum("ni,ij,nj->n", v, S, v)
    assert quotients.max() <= kappa * (1 + 1e-12) and quotients.max() > 0.5 * kappa
    with pytest.raises(ValueError, match="positive definite"):
        R.coverage_constant(np.eye(2), np.diag([1.0, 0.0]))
    with pytest.raises(ValueError, match="ridge"):
        R.coverage_constant(np.eye(2), np.eye(2), ridge=-1.0)


# ---- finite action sets --------------------------------------------------------------------

def test_policies_and_objective_golden():
    pi_sft, r = np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])
    star = R.optimal_policy(pi_sft, r, beta=1.0)
    np.testing.assert_allclose(star, [[math.e / (1 + math.e), 1 / (1 + math.e)]], rtol=1e-15)
    pi = np.array([[0.25, 0.75]])
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert R.objective_J(pi, pi_sft, r, beta=2.0) == pytest.approx(0.25 - 2.0 * kl, rel=1e-14)
    assert R.reward_gap(star, pi, r) == pytest.approx(math.e / (1 + math.e) - 0.25, rel=1e-14)
    # J(π*) = β log Σ_a π_sft e^{r/β}; 0·log 0 = 0 in the KL of a deterministic policy
    assert R.objective_J(star, pi_sft, r, beta=1.0) == pytest.approx(math.log((1 + math.e) / 2))
    assert R.objective_J(np.array([[1.0, 0.0]]), pi_sft, r, beta=1.0) == pytest.approx(
        1 - math.log(2.0), rel=1e-14)
    np.testing.assert_allclose(R.policy(np.array([math.log(3.0)]), np.array([[[1.0], [0.0]]])),
                               [[0.75, 0.25]], rtol=1e-15)


def test_optimal_policy_is_log_linear_shift():
    """π_sft = π_{θ_0}, r = φᵀω* ⇒ π* = π_{θ_0 + ω*/β} (THEORY §2.1)."""
    rng = np.random.default_rng(3)
    phi, theta0, omega = rng.normal(size=(5, 4, 3)), rng.normal(size=3), rng.normal(size=3)
    beta = 0.3
    star = R.optimal_policy(R.policy(theta0, phi), phi @ omega, beta=beta)
    np.testing.assert_allclose(star, R.policy(theta0 + omega / beta, phi), rtol=1e-12)


def test_optimal_policy_maximises_J():
    rng = np.random.default_rng(4)
    S, A, beta = 6, 5, 0.4
    pi_sft, r = rng.dirichlet(np.ones(A), S), rng.normal(size=(S, A))
    w = rng.random(S)
    star = R.optimal_policy(pi_sft, r, beta=beta)
    assert R.suboptimality_gap(star, pi_sft, r, beta=beta, state_weights=w) == pytest.approx(
        0.0, abs=1e-14)
    for pi in rng.dirichlet(np.full(A, 0.5), (200, S)):
        gap = R.suboptimality_gap(pi, pi_sft, r, beta=beta, state_weights=w)
        assert gap >= 0.0
        kl = (pi * np.log(pi / star)).sum(-1)  # J(π*) − J(π) = β E_s KL(π ‖ π*)
        assert gap == pytest.approx(beta * (w / w.sum()) @ kl, rel=1e-9, abs=1e-13)


# ---- bounds summary ------------------------------------------------------------------------

BASE = dict(n=1000, d=8, eps=0.1, beta=0.1, L=1.0, B=2.0, delta=0.05)


def test_bounds_summary_keys_and_values():
    out = R.bounds_summary(**BASE)
    assert tuple(out) == R.SUMMARY_KEYS == ("n", "d", "eps", "beta", "L", "B", "delta", "gamma",
                                            "margin_bound", "noise_factor", "rate",
                                            "estimation_bound")
    json.dumps(out)  # plain Python numbers
    assert out["margin_bound"] == pytest.approx(0.8) and out["noise_factor"] == pytest.approx(1.25)
    assert out["gamma"] == pytest.approx(1 / (2 + math.exp(-0.8) + math.exp(0.8)))
    assert out["rate"] == pytest.approx(math.sqrt((8 + math.log(20)) / 1000))
    assert out["estimation_bound"] == pytest.approx(
        out["noise_factor"] * out["rate"] / (out["gamma"] * 0.1))


@pytest.mark.parametrize("field, value", [
    ("eps", 0.5), ("eps", -0.01), ("n", 0), ("n", 2.5), ("d", 0), ("delta", 0.0), ("delta", 1.0),
    ("beta", 0.0), ("L", -1.0), ("B", 0.0), ("lam", -1.0)])
def test_bounds_summary_errors(field, value):
    with pytest.raises(ValueError, match=field) as info:
        R.bounds_summary(**{**BASE, field: value})
    assert str(value) in str(info.value)


# ---- γ as the curvature floor on Θ_B, and the λ-part of the bound --------------------------

def _dpo_hessian(x, theta, theta0, beta):
    """β² mean_i σ(z_i)σ(−z_i) x_i x_iᵀ in plain numpy: the curvature of ℓ and of ℓ̂_ε alike."""
    z = beta * x @ (theta - theta0)
    return beta**2 * (x.T * (1 / (2 + np.exp(z) + np.exp(-z)))) @ x / len(x)


def _sphere(rng, k, d, radius):
    v = rng.normal(size=(k, d))
    return radius * v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("beta, L, B", [(0.5, 1.0, 2.0), (2.0, 0.5, 0.75)])
def test_gamma_is_the_sharp_curvature_floor_on_the_ball(beta, L, B):
    """λ_min(H, β²Σ̂) ≥ γ for θ, θ_0 on ∂Θ_B and ‖φ‖ = L, and = γ at θ = B u = −θ_0, x = ±2L u."""
    from scipy.linalg import eigh

    gam = float(R.gamma(margin_bound=R.margin_bound(beta=beta, L=L, B=B)))
    assert gam == pytest.approx(1 / (2 + math.exp(-4 * beta * L * B) + math.exp(4 * beta * L * B)), rel=1e-14)
    rng = np.random.default_rng(7)
    d, n, worst = 3, 300, np.inf
    for _ in range(100):
        x = _sphere(rng, n, d, L) - _sphere(rng, n, d, L)
        theta = _sphere(rng, 1, d, B)[0]
        theta0 = -theta if _ % 2 else _sphere(rng, 1, d, B)[0]
        worst = min(worst, eigh(_dpo_hessian(x, theta, theta0, beta), beta**2 * x.T @ x / n, eigvals_only=True)[0])
    assert worst >= gam * (1 - 1e-10)
    u = np.eye(d)[0]
    x = np.concatenate([np.outer(rng.choice([-2 * L, 2 * L], 40), u),
                        np.column_stack([np.zeros(n), _sphere(rng, n, d - 1, L) - _sphere(rng, n, d - 1, L)])])
    sigma = beta**2 * x.T @ x / len(x)
    floor = [eigh(_dpo_hessian(x, t * B * u, -t * B * u, beta), sigma, eigvals_only=True)[0] for t in (0.5, 0.9, 1.0)]
    assert floor[0] > floor[1] > floor[2] == pytest.approx(gam, rel=1e-10)  # approached as |z| → m


def test_ridge_term_is_the_lambda_part_and_c_prime_2_always_suffices():
    assert float(R.ridge_term(lam=0.04, B=1.5, C_prime=2.0)) == pytest.approx(0.6, rel=1e-15)
    kw = dict(n=500, d=3, eps=0.1, beta=0.5, L=1.0, B=1.5, delta=0.05)
    for lam in (1e-3, 0.3, 7.0):
        diff = R.estimation_bound(lam=lam, C_prime=0.7, **kw) - R.estimation_bound(**kw)
        assert float(diff) == pytest.approx(0.7 * math.sqrt(lam) * 1.5, rel=1e-10)
    # ‖Δ‖_{Σ+λI} ≤ ‖Δ‖_Σ + √λ‖Δ‖ ≤ ‖Δ‖_Σ + ridge_term(C′ = 2) whenever ‖Δ‖ ≤ 2B ...
    rng = np.random.default_rng(8)
    a = rng.normal(size=(3, 3))
    sigma, B = a @ a.T, 1.5
    for delta in _sphere(rng, 500, 3, 2 * B) * rng.random((500, 1)):
        for lam in (0.01, 1.0, 100.0):
            full = math.sqrt(delta @ sigma @ delta + lam * delta @ delta)
            assert full**2 == pytest.approx(delta @ sigma @ delta + lam * delta @ delta, rel=1e-14)
            assert full <= math.sqrt(delta @ sigma @ delta) + float(R.ridge_term(lam=lam, B=B, C_prime=2.0)) + 1e-12
    # ... and C′ = 2 is the least: Δ = 2B along a null direction of Σ makes it an equality
    v = np.linalg.eigh(sigma)[1][:, 0]
    flat = sigma - np.linalg.eigh(sigma)[0][0] * np.outer(v, v)
    delta = 2 * B * v
    assert math.sqrt(delta @ flat @ delta + 4.0 * delta @ delta) == pytest.approx(
        float(R.ridge_term(lam=4.0, B=B, C_prime=2.0)), rel=1e-12)
