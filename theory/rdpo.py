"""Closed forms of Provably Robust DPO (THEORY.md §2) as pure float64 numpy functions.

Labels are flipped independently with known rate ε ∈ [0, 1/2); a pair whose clean label says
"w ≻ l" with probability p is observed that way with probability q = p + ε(1 − 2p). The margin is
z = βh with h = (θ − θ_0)ᵀx, x = φ(s, a_w) − φ(s, a_l) (DPO is logistic regression in β(θ − θ_0)).

What is certain here (exact algebra): the flip model, the population minimisers, the score
variance, the asymptotic covariance, γ, the coverage constant and the finite-action objective.
What is not: the constants C, C′ of the estimation bound and the exact form of the sub-optimality
bound; they are reconstructed shapes (THEORY §2.3) and must never pass a check by choosing C.

References:
    [rDPO] S. R. Chowdhury, A. Kini, N. Natarajan, "Provably Robust DPO: Aligning Language Models
        with Noisy Feedback", ICML 2024, arXiv 2403.00409 (THEORY §2).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import scipy.linalg
import scipy.special

from dpolab.errors import InputError
from dpolab.theory import losses as _losses

MINIMIZER_LOSSES = ("dpo", "cdpo", "rdpo", "ipo", "ripo")
SUMMARY_KEYS = ("n", "d", "eps", "beta", "L", "B", "delta", "gamma", "margin_bound",
                "noise_factor", "rate", "estimation_bound")


def _f64(x):  # the closed forms are float64 numpy whatever the jax precision
    return np.asarray(x, dtype=np.float64)


def _check(name, value, ok, allowed):
    if not np.all(ok(_f64(value))):  # NaN fails every comparison, so it is rejected too
        raise InputError(f"{name} must be {allowed}; got {value!r}")


def _positive(**fields):
    for name, value in fields.items():
        _check(name, value, lambda v: v > 0, "> 0")


def _integer(**fields):
    for name, value in fields.items():
        _check(name, value, lambda v: (v >= 1) & (v == np.floor(v)) & np.isfinite(v),
               "an integer >= 1")


def _probability(name, p):
    _check(name, p, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")
    return _f64(p)


def validate_eps(eps):
    """Checks flip rate(s) 0 ≤ ε < 1/2 via :func:`dpolab.theory.losses.validate_eps`; returns float64.

    Raises ValueError naming ``eps``, its value and the range [0, 0.5) (scalars or arrays).
    """
    values = _f64(eps)
    for e in values.ravel():
        _losses.validate_eps("rdpo", e)
    return values[()]


def observed_win_prob(p, *, eps):
    """Observed win probability q = p + ε(1 − 2p) under independent flips at rate ε.

    Args:
        p: clean win probabilities in [0, 1], any shape. eps: flip rate in [0, 1/2).

    Returns:
        q, shape of ``p``; q − 1/2 = (1 − 2ε)(p − 1/2) (flips shrink preferences toward 1/2).

    References:
        [rDPO] (random flip model); THEORY §2.1.
    """
    p, eps = _probability("p", p), validate_eps(eps)
    return (p + eps * (1.0 - 2.0 * p))[()]


class Minimizer(NamedTuple):
    """Population minimiser: ``margin`` z* and, for logistic losses, ``prob`` = σ(z*)."""

    prob: Optional[np.ndarray]
    margin: np.ndarray


def population_minimizer(loss, p, *, eps):
    """Minimiser z* of the per-pair expected loss on noisy labels (observed win prob. q).

    The expectation is q·φ(z) + (1 − q)·φ(−z) for the loss φ applied on the observed orientation.
      * ``dpo``:  σ(z*) = q (consistent for the *noisy* preference, biased for p);
      * ``cdpo``: σ(z*) = q(1−ε) + (1−q)ε = p + 2ε(1−ε)(1−2p) (biased even further toward 1/2);
      * ``rdpo``: σ(z*) = p (consistent: E_flip ℓ̂_ε = ℓ pointwise);
      * ``ipo`` with f(z) = (z − 1)² (dpolab.theory.losses.ipo): q(z−1)² + (1−q)(z+1)² is minimised at
        z* = 2q − 1 = (1 − 2ε)(2p − 1), the clean target 2p − 1 shrunk by (1 − 2ε);
      * ``ripo`` = debias(ipo): z* = 2p − 1 (the clean target).
    For the logistic losses ``margin`` = logit(prob) (±inf at prob 0 or 1). IPO's margin is not a
    log-odds, so for ``ipo``/``ripo`` ``prob`` is None and only ``margin`` is returned.

    Args:
        loss: one of ``dpo, cdpo, rdpo, ipo, ripo``. p: clean win probabilities, any shape.
        eps: flip rate in [0, 1/2).

    Returns:
        :class:`Minimizer` (prob, margin), arrays of the shape of ``p``.

    References:
        [rDPO] (unbiased loss; cDPO comparison); THEORY §2.2.
    """
    if loss not in MINIMIZER_LOSSES:
        raise InputError(f"loss must be one of {MINIMIZER_LOSSES}; got {loss!r}")
    q = _f64(observed_win_prob(p, eps=eps))
    p = _f64(p)
    if loss in ("ipo", "ripo"):
        return Minimizer(None, (2.0 * (q if loss == "ipo" else p) - 1.0)[()])
    eps = _f64(eps)
    prob = {"dpo": q, "cdpo": q * (1.0 - eps) + (1.0 - q) * eps, "rdpo": p}[loss]
    return Minimizer(prob[()], scipy.special.logit(prob)[()])


def score_variance(p, *, eps, loss="rdpo"):
    """Variance of the per-sample score at the truth, per unit β²‖x‖².

    The score of a pair is ∇_θ loss = −β·w·x with a random scalar w; this returns Var(w), so the
    score covariance is β²·Var(w)·xxᵀ. ``rdpo`` (noisy labels, at z* = logit p): w is
    −(1−p) − c or p + c with c = ε/(1−2ε) (they differ by 1/(1−2ε)), mean 0, variance
    q(1−q)/(1−2ε)². ``dpo``: the clean-label DPO baseline p(1−p) (``eps`` unused; equals noisy
    DPO's q(1−q) at its own minimiser only when ε = 0).

    Args:
        p: clean win probabilities, any shape. eps: flip rate. loss: ``rdpo`` or ``dpo``.

    Returns:
        Var(w), shape of ``p``.

    References:
        [rDPO] (variance of the de-biased gradient); THEORY §2.2.
    """
    if loss not in ("rdpo", "dpo"):
        raise InputError(f"loss must be one of ('rdpo', 'dpo'); got {loss!r}")
    q, p = _f64(observed_win_prob(p, eps=eps)), _f64(p)
    if loss == "dpo":
        return (p * (1.0 - p))[()]
    return (q * (1.0 - q) / (1.0 - 2.0 * _f64(eps)) ** 2)[()]


class AsymptoticCovariance(NamedTuple):
    """``covariance`` = H⁻¹VH⁻¹ of √n(θ̂ − θ*), the Hessian ``H`` and score covariance ``V``."""

    covariance: np.ndarray
    H: np.ndarray
    V: np.ndarray


def asymptotic_covariance(X, p, *, eps, beta):
    """Sandwich covariance of the rDPO estimator: √n(θ̂ − θ*) → N(0, H⁻¹VH⁻¹).

    H = β² mean_i(p_i(1−p_i) x_i x_iᵀ) (the same for DPO, cDPO and rDPO),
    V = β² mean_i(q_i(1−q_i) x_i x_iᵀ)/(1−2ε)². Clean DPO has V = H, covariance H⁻¹. Since
    q(1−q) = 1/4 − (1−2ε)²(p − 1/2)² ≥ p(1−p), V ⪰ H/(1−2ε)² (equality iff p ≡ 1/2). For weak
    preferences (p ≈ 1/2, q(1−q) ≈ p(1−p) ≈ 1/4) the covariance is H⁻¹/(1−2ε)²: the error grows by
    exactly 1/(1−2ε) over clean DPO; for strong preferences the inflation is larger.

    Args:
        X: (n, d) feature differences x_i. p: (n,) clean win probabilities (0 < p < 1 somewhere
            enough for H to be invertible). eps: flip rate. beta: DPO temperature (> 0).

    Returns:
        :class:`AsymptoticCovariance` with three (d, d) arrays.

    References:
        [rDPO]; THEORY §2.2 (standard M-estimator sandwich).
    """
    X = _f64(X)
    if X.ndim != 2 or _f64(p).shape != X.shape[:1]:
        raise InputError(f"X must be (n, d) and p (n,); got X {X.shape} and p {_f64(p).shape}")
    _positive(beta=beta)
    p = _f64(p)
    H = beta**2 * (X.T * (p * (1.0 - p))) @ X / len(X)
    V = beta**2 * (X.T * score_variance(p, eps=eps)) @ X / len(X)
    H_inv_V = np.linalg.solve(H, V)
    cov = np.linalg.solve(H, H_inv_V.T).T  # H⁻¹ V H⁻¹ (H symmetric)
    return AsymptoticCovariance(0.5 * (cov + cov.T), H, V)


def margin_bound(*, beta, L, B, c_margin=4.0):
    """m = c·βLB bounding |β(θ − θ_0)ᵀx|: ‖θ − θ_0‖ ≤ 2B, ‖x‖ ≤ 2L gives c = 4. THEORY §2.3."""
    _positive(beta=beta, L=L, B=B, c_margin=c_margin)
    return c_margin * beta * L * B


def gamma(*, margin_bound):
    """γ = 1/(2 + e^{−m} + e^{m}) = σ(m)σ(−m) = min_{|z|≤m} σ′(z) (curvature lower bound).

    Computed as expit(m)·expit(−m) so that large m underflows to 0 without overflow.
    References: [rDPO] (strong convexity constant); THEORY §2.3.
    """
    _check("margin_bound", margin_bound, lambda v: v >= 0, ">= 0")
    m = _f64(margin_bound)
    return (scipy.special.expit(m) * scipy.special.expit(-m))[()]


def rate(*, n, d, delta):
    """Statistical rate √((d + log(1/δ))/n). n, d: integers ≥ 1; δ ∈ (0, 1). THEORY §2.3."""
    _integer(n=n, d=d)
    _check("delta", delta, lambda v: (v > 0) & (v < 1), "in (0, 1)")
    return np.sqrt((_f64(d) + np.log(1.0 / _f64(delta))) / _f64(n))[()]


def noise_factor(eps):
    """The flip-noise inflation 1/(1 − 2ε) of the rDPO bound. THEORY §2.3."""
    return (1.0 / (1.0 - 2.0 * validate_eps(eps)))[()]


def estimation_bound(*, n, d, eps, beta, L, B, delta, lam=0.0, C=1.0, C_prime=1.0,
                     c_margin=4.0):
    """Estimation-error bound ‖θ̂ − θ*‖_{Σ̂+λI} ≤ C/(γβ(1−2ε))·√((d+log(1/δ))/n) + C′√λ·B.

    Reconstructed shape from the standard analysis; constants C, C′ NOT verified against the
    paper; never pass a check by choosing C. What is certain is the dependence on n (−1/2),
    d (+1/2), 1/(1−2ε) and γ (THEORY §2.3). γ uses m = c_margin·βLB.

    Args:
        n, d: sample size and dimension (integers ≥ 1). eps: flip rate in [0, 1/2). beta, L, B:
            temperature, feature-norm bound and parameter-ball radius (> 0). delta: failure
            probability in (0, 1). lam: ridge λ ≥ 0. C, C_prime: unknown constants (> 0 and
            ≥ 0). c_margin: see :func:`margin_bound`. n, d, eps, delta may be arrays (broadcast).

    References:
        [rDPO] (estimation-error theorem; shape only); THEORY §2.3.
    """
    _positive(C=C)
    g = gamma(margin_bound=margin_bound(beta=beta, L=L, B=B, c_margin=c_margin))
    out = C * noise_factor(eps) / (g * beta) * rate(n=n, d=d, delta=delta)
    return (out + ridge_term(lam=lam, B=B, C_prime=C_prime))[()]


def ridge_term(*, lam, B, C_prime=1.0):
    """The λ-part C′√λ·B of :func:`estimation_bound` (reconstructed; C′ not verified).

    For the Θ_B-constrained fit λ enters only through the norm: ‖Δ‖²_{Σ̂+λI} = ‖Δ‖²_Σ̂ + λ‖Δ‖² with
    ‖Δ‖ = ‖θ̂ − θ*‖ ≤ 2B, so C′ = 2 always suffices on top of the λ = 0 bound.

    Args:
        lam: ridge λ ≥ 0 (may be an array). B: ball radius (> 0). C_prime: C′ ≥ 0.

    References:
        [rDPO] (estimation-error theorem; shape only); THEORY §2.3.
    """
    _check("lam", lam, lambda v: v >= 0, ">= 0")
    _check("C_prime", C_prime, lambda v: v >= 0, ">= 0")
    _positive(B=B)
    return (C_prime * np.sqrt(_f64(lam)) * B)[()]


def suboptimality_gap_bound(*, kappa, **estimation_kwargs):
    """Reconstructed sub-optimality bound κ × :func:`estimation_bound` (same caveats: shape only).

    The headline O((1/(1−2ε))√(d/n)) is certain; the product form with the coverage constant κ
    (see :func:`coverage_constant`) and all constants are reconstructed. References: [rDPO]
    (sub-optimality theorem; shape only); THEORY §2.3.
    """
    _check("kappa", kappa, lambda v: (v >= 0) & np.isfinite(v), "finite and >= 0")
    return (_f64(kappa) * estimation_bound(**estimation_kwargs))[()]


def coverage_constant(sigma_target, sigma_sft, *, ridge=0.0):
    """κ = sup_v vᵀΣ_target v / vᵀ(Σ_sft + ridge·I)v, the relative condition number.

    The largest generalised eigenvalue of the pencil (Σ_target, Σ_sft + ridge·I) (scipy.linalg.eigh
    with ``b``). κ = 1 for equal covariances; for diagonal ones max_j t_j/(s_j + ridge).

    Args:
        sigma_target: (d, d) symmetric PSD feature covariance under π* (or any target policy).
        sigma_sft: (d, d) symmetric PSD feature covariance under π_sft; Σ_sft + ridge·I must be
            positive definite. ridge: ≥ 0.

    References:
        [rDPO] (relative condition number / coverage); THEORY §2.3.
    """
    a, b = _f64(sigma_target), _f64(sigma_sft)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or b.shape != a.shape:
        raise InputError(f"sigma_target and sigma_sft must be (d, d) of the same shape; got "
                         f"{a.shape} and {b.shape}")
    _check("ridge", ridge, lambda v: v >= 0, ">= 0")
    try:
        return float(scipy.linalg.eigh(a, b + ridge * np.eye(len(b)), eigvals_only=True)[-1])
    except np.linalg.LinAlgError as err:
        raise InputError(f"sigma_sft + ridge*I must be positive definite; got ridge={ridge!r}"
                         ) from err


def policy(theta, phi):
    """Log-linear policy π_θ(a|s) = softmax_a(φ(s, a)ᵀθ); theta (d,), phi (S, A, d) → (S, A)."""
    return scipy.special.softmax(_f64(phi) @ _f64(theta), axis=-1)


def _state_weights(state_weights, S):
    if state_weights is None:
        return np.full(S, 1.0 / S)
    w = _f64(state_weights)
    _check("state_weights", w, lambda v: v >= 0, ">= 0 (normalised to sum 1)")
    return w / w.sum()


def objective_J(pi, pi_sft, reward, *, beta, state_weights=None):
    """J(π) = E_s[Σ_a π(a|s) r(s,a)] − β E_s KL(π(·|s) ‖ π_sft(·|s)).

    Args:
        pi, pi_sft, reward: (S, A). beta: KL weight (> 0). state_weights: (S,) state
            distribution (normalised to sum 1; default uniform). 0·log 0 = 0 in the KL.

    References:
        [rDPO] (KL-regularised objective); THEORY §2.3.
    """
    _positive(beta=beta)
    pi, pi_sft, reward = _f64(pi), _f64(pi_sft), _f64(reward)
    w = _state_weights(state_weights, pi.shape[0])
    per_state = (pi * reward).sum(-1) - beta * scipy.special.rel_entr(pi, pi_sft).sum(-1)
    return float(w @ per_state)


def reward_gap(pi_a, pi_b, reward, *, state_weights=None):
    """Unregularised reward gap E_s Σ_a (π_a − π_b)(a|s) r(s, a); all (S, A). THEORY §2.3."""
    w = _state_weights(state_weights, _f64(pi_a).shape[0])
    return float(w @ ((_f64(pi_a) - _f64(pi_b)) * _f64(reward)).sum(-1))


def optimal_policy(pi_sft, reward, *, beta):
    """KL-regularised optimum π*(a|s) ∝ π_sft(a|s)·exp(r(s,a)/β); (S, A) → (S, A).

    For log-linear π_sft = π_{θ_0} and r = φᵀω*, π* = π_{θ_0 + ω*/β}.
    References: [rDPO]; THEORY §2.1.
    """
    _positive(beta=beta)
    with np.errstate(divide="ignore"):  # π_sft = 0 stays 0
        return scipy.special.softmax(np.log(_f64(pi_sft)) + _f64(reward) / beta, axis=-1)


def suboptimality_gap(pi, pi_sft, reward, *, beta, state_weights=None):
    """J(π*) − J(π) ≥ 0 with π* = :func:`optimal_policy`; equals β E_s KL(π ‖ π*). All (S, A)."""
    pi_star = optimal_policy(pi_sft, reward, beta=beta)
    return (objective_J(pi_star, pi_sft, reward, beta=beta, state_weights=state_weights)
            - objective_J(pi, pi_sft, reward, beta=beta, state_weights=state_weights))


def bounds_summary(*, n, d, eps, beta, L, B, delta, lam=0.0, C=1.0, C_prime=1.0,
                   c_margin=4.0) -> dict:
    """Every rDPO bound quantity at one point (for ``dpolab bounds rdpo --json``).

    Args:
        n, d: integers ≥ 1. eps: [0, 1/2). beta, L, B: > 0. delta: (0, 1). lam: ≥ 0.
        C, C_prime, c_margin: see :func:`estimation_bound` (reconstructed constants).

    Returns:
        dict with exactly the keys n, d, eps, beta, L, B, delta, gamma, margin_bound,
        noise_factor, rate, estimation_bound (plain Python numbers).

    Raises:
        ValueError: naming the offending field, its value and the allowed range.
    """
    eps = float(validate_eps(eps))  # n, d, δ, β, L, B, λ are checked by the calls below
    m = margin_bound(beta=beta, L=L, B=B, c_margin=c_margin)
    bound = estimation_bound(n=n, d=d, eps=eps, beta=beta, L=L, B=B, delta=delta, lam=lam, C=C,
                             C_prime=C_prime, c_margin=c_margin)
    return dict(n=int(n), d=int(d), eps=eps, beta=float(beta), L=float(L), B=float(B),
                delta=float(delta), gamma=float(gamma(margin_bound=m)), margin_bound=float(m),
                noise_factor=float(noise_factor(eps)), rate=float(rate(n=n, d=d, delta=delta)),
                estimation_bound=float(bound))
