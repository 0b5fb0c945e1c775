"""Idealized ranking accuracy and the loss-threshold view of ranking (THEORY.md §3), in numpy.

Sign conventions (used throughout, all log-ratios natural logs, per pair of responses):
    u     = log π_θ(y_w|x)/π_θ(y_l|x)      ``log_policy_ratio``
    R_ref = log π_ref(y_w|x)/π_ref(y_l|x)  ``log_ref_ratio``
    c     = log π_ref(y_l|x)/π_ref(y_w|x) = −R_ref   (the paper's c, Theorem 4.1)
    L_DPO = ℓ(β(u − R_ref)) = ℓ(β(u + c)), ℓ(z) = softplus(−z); DPO^γ replaces R_ref by γ·R_ref.
Every function broadcasts its array arguments and returns float64 / bool numpy arrays.

References:
    [CR] Chen, Mitra, Pal et al., "Preference Learning Algorithms Do Not Learn Preference
        Rankings", NeurIPS 2024, arXiv 2405.19534: Theorem 3.1 (optimal policy ratio),
        Corollary 3.3 (idealized ranking accuracy), Proposition 2.6, Theorem 4.1 (threshold).
    [DPO] Rafailov et al., "Direct Preference Optimization", NeurIPS 2023, arXiv 2305.18290.
    [IPO] Azar et al., "A General Theoretical Paradigm to Understand Learning from Human
        Preferences", arXiv 2310.12036 (population optimum of IPO).
"""
from __future__ import annotations

import math

import numpy as np

from dpolab.errors import InputError

#: [CR] replaces a unanimous vote α = 1 by 1 − 0.001 (and α = 0 by 0.001).
UNANIMOUS = 1e-3
#: Loss bound of [CR] Prop. 2.6; any bound < ℓ(0) = log 2 ≈ 0.693 would do.
PROP_2_6_LOSS = 0.6
#: As stated in THEORY.md §3 for Alpaca Farm validation (ranges of fractions, not re-derived
#: here): DPO/IT models' raw and length-normalised ranking accuracy, and the range of the
#: idealized medians they are compared against. Reported numbers, not outputs of this module.
REPORTED_ALPACA_FARM = {
    "raw_ranking_accuracy": (0.40, 0.42),
    "length_normalised_ranking_accuracy": (0.53, 0.54),
    "idealized_ranking_accuracy_median": (0.73, 0.99),
}


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _real_scalar(x):
    """float(x) for a finite real number or 0-d real array (not str/bool), else NaN."""
    a = np.asarray(x)
    if a.ndim != 0 or a.dtype.kind not in "iuf" or not np.isfinite(a):
        return math.nan
    return float(a)


def _check_beta(beta):
    if not _real_scalar(beta) > 0:  # NaN fails
        raise InputError(f"beta must be a finite scalar > 0; got {beta!r}")
    return float(beta)


def _check_gamma(gamma):
    if math.isnan(_real_scalar(gamma)):
        raise InputError(f"gamma must be a finite real scalar; got {gamma!r}")
    return float(gamma)


def _check_alpha(alpha):
    a = _f64(alpha)
    if not np.all((a >= 0.0) & (a <= 1.0)):  # also rejects NaN
        raise InputError(f"alpha must lie in [0, 1]; got {alpha!r}")
    return a


def clamp_alpha(alpha, *, unanimous=UNANIMOUS):
    """Unanimous-vote clamp: α = 1 → 1 − u and α = 0 → u; every other α is left unchanged.

    Only the endpoints move, since only α ∈ {0, 1} puts the optimum at infinity; votes from a
    few raters put α on a grid coarser than u, so the clamp keeps their order.

    Args:
        alpha: win probabilities of y_w over y_l, any shape, each in [0, 1].
        unanimous: u, in (0, 1/2).

    Returns:
        float64 array of the shape of ``alpha``.

    Raises:
        ValueError: naming ``alpha`` (outside [0, 1]) or ``unanimous`` (outside (0, 1/2)).

    References:
        [CR] §3 (α ← 1 − 0.001 for unanimous votes).
    """
    if not 0.0 < _real_scalar(unanimous) < 0.5:
        raise InputError(f"unanimous must lie in (0, 0.5); got {unanimous!r}")
    a = _check_alpha(alpha)
    return np.where(a == 1.0, 1.0 - unanimous, np.where(a == 0.0, unanimous, a))


def optimal_log_ratio(log_ref_ratio, alpha, *, beta, unanimous=UNANIMOUS):
    """log π*(y_w)/π*(y_l) = R_ref + (1/β)·log(α/(1−α)), with α clamped (:func:`clamp_alpha`).

    Args:
        log_ref_ratio: R_ref, any shape. alpha: win probabilities, broadcastable with it.
        beta: KL strength β > 0. unanimous: clamp for α ∈ {0, 1}.

    References:
        [CR] Theorem 3.1: π*(y_w)/π*(y_l) = (π_ref(y_w)/π_ref(y_l))·(α/(1−α))^{1/β}.
    """
    beta = _check_beta(beta)
    a = clamp_alpha(alpha, unanimous=unanimous)
    return _f64(log_ref_ratio) + (np.log(a) - np.log1p(-a)) / beta


def idealized_correct(log_ref_ratio, alpha, *, beta, unanimous=UNANIMOUS):
    """Elementwise 1[optimal_log_ratio > 0] (strict, as in Cor. 3.3; ties have measure zero).

    References:
        [CR] Corollary 3.3.
    """
    return optimal_log_ratio(log_ref_ratio, alpha, beta=beta, unanimous=unanimous) > 0.0


def idealized_ranking_accuracy(log_ref_ratio, alpha, *, beta, unanimous=UNANIMOUS):
    """R* = mean over pairs of :func:`idealized_correct` (a float in [0, 1]).

    References:
        [CR] Corollary 3.3.
    """
    return float(np.mean(idealized_correct(log_ref_ratio, alpha, beta=beta, unanimous=unanimous)))


def ranking_correct(log_policy_ratio):
    """R = 1[π_θ(y_w) ≥ π_θ(y_l)] = 1[u ≥ 0] elementwise (note ≥: a tie counts as correct).

    References:
        [CR] §2 (ranking accuracy).
    """
    return _f64(log_policy_ratio) >= 0.0


def dpo_loss_from_ratios(log_policy_ratio, log_ref_ratio, *, beta, gamma=1.0):
    """L^γ = ℓ(β(u − γ·R_ref)) = softplus(−β(u − γ·R_ref)); γ = 1 is DPO.

    References:
        [DPO] Rafailov et al. 2023, Eq. 7; [CR] §4 (DPO^γ, the attenuated reference).
    """
    beta, gamma = _check_beta(beta), _check_gamma(gamma)
    return _softplus(-(beta * (_f64(log_policy_ratio) - gamma * _f64(log_ref_ratio))))


def loss_threshold(c, *, beta, gamma=1.0):
    """−log σ(βγc) = softplus(−βγc), c = log π_ref(y_l)/π_ref(y_w) = −R_ref.

    Exact equivalence (any real γ, any β > 0): L^γ(u) = softplus(−β(u − γR_ref)) is strictly
    decreasing in u, so R = 1 ⟺ u ≥ 0 ⟺ L^γ(u) ≤ L^γ(0) = softplus(βγR_ref) = softplus(−βγc)
    = −log σ(βγc). No sign clarification of THEORY §3 is needed with c = −R_ref. The product is
    formed as β·(γ·c) so that u = 0 reproduces this value bit for bit.

    Args:
        c: log π_ref(y_l)/π_ref(y_w), any shape. beta: β > 0. gamma: γ (1 for DPO).

    References:
        [CR] Theorem 4.1 (γ = 1) and its DPO^γ form (THEORY §3).
    """
    beta, gamma = _check_beta(beta), _check_gamma(gamma)
    return _softplus(-(beta * (gamma * _f64(c))))


def prop_2_6_holds(log_policy_ratio, log_ref_ratio, *, beta):
    """Premise and conclusion of Prop. 2.6: [R_ref ≥ 0 and L_DPO ≤ 0.6] ⇒ R = 1.

    Why 0.6 works: R_ref ≥ 0 means c ≤ 0, so the exact threshold of Theorem 4.1 is
    −log σ(βc) ≥ −log σ(0) = log 2 ≈ 0.693 > 0.6 ≥ L_DPO, hence R = 1.

    Returns:
        (premise, conclusion): bool arrays; the proposition says premise ⇒ conclusion.

    References:
        [CR] Proposition 2.6; Theorem 4.1.
    """
    loss = dpo_loss_from_ratios(log_policy_ratio, log_ref_ratio, beta=beta)
    premise = (_f64(log_ref_ratio) >= 0.0) & (loss <= PROP_2_6_LOSS)
    return premise, ranking_correct(log_policy_ratio)


# ---- IPO analogue (our convention: loss (z − 1)², z = β(u − R_ref); dpolab.theory.losses.ipo) -------

def ipo_optimal_log_ratio(log_ref_ratio, alpha, *, beta):
    """Population IPO optimum u* = R_ref + (2α − 1)/β (no clamp: it is finite at α ∈ {0, 1}).

    With y_w ≻ y_l observed with probability α, the expected loss of one pair is
    α(z − 1)² + (1 − α)(−z − 1)², minimised at z* = 2α − 1; z = β(u − R_ref) gives u*.
    (Azar et al.'s h* = (p − 1/2)/τ with target 1/(2τ); here 1/(2τ) = 1/β.)

    References:
        [IPO] §5 (IPO population optimum); THEORY §1.2 (f(z) = (z − 1)²).
    """
    beta = _check_beta(beta)
    return _f64(log_ref_ratio) + (2.0 * _check_alpha(alpha) - 1.0) / beta


def ipo_idealized_correct(log_ref_ratio, alpha, *, beta):
    """Elementwise 1[R_ref + (2α − 1)/β > 0], the IPO analogue of Cor. 3.3.

    Since logit α ≥ 2α − 1 for α ≥ 1/2, at equal β an IPO-correct pair with α ≥ 1/2 is also
    DPO-correct: IPO's idealized optimum corrects a wrongly ordered reference less.
    """
    return ipo_optimal_log_ratio(log_ref_ratio, alpha, beta=beta) > 0.0


def ipo_idealized_ranking_accuracy(log_ref_ratio, alpha, *, beta):
    """Mean of :func:`ipo_idealized_correct` (a float in [0, 1])."""
    return float(np.mean(ipo_idealized_correct(log_ref_ratio, alpha, beta=beta)))


def ipo_loss_from_ratios(log_policy_ratio, log_ref_ratio, *, beta):
    """Per-pair IPO loss (β(u − R_ref) − 1)²; minimal (0) at u = m = R_ref + 1/β."""
    beta = _check_beta(beta)
    return (beta * (_f64(log_policy_ratio) - _f64(log_ref_ratio)) - 1.0) ** 2


def ipo_loss_threshold(c, *, beta):
    """IPO loss at u = 0: t = (1 − βc)² = β²m², m = 1/β − c (see :func:`ipo_certifies_ranking`)."""
    beta = _check_beta(beta)
    return (1.0 - beta * _f64(c)) ** 2


def ipo_certifies_ranking(loss, c, *, beta):
    """Whether an IPO loss value alone certifies R = 1: βc ≤ 1 and loss ≤ (1 − βc)².

    There is NO two-sided analogue of Theorem 4.1 for IPO: L(u) = β²(u − m)² is not monotone,
    so the two roots u = m ± √L/β share one loss and can rank differently. What holds exactly:
      (a) sufficiency, for every u: certificate ⇒ R = 1 (m ≥ 0 and |u − m| ≤ m give u ∈ [0, 2m]);
      (b) equivalence on the under-shoot branch u ≤ m (where gradient flow from u = R_ref stays):
          R = 1 ⟺ certificate (L is decreasing there, with L(0) = t when m ≥ 0; m < 0 ⇒ u < 0);
      (c) if βc > 1 (m < 0) no loss value certifies R = 1; R = 1 then forces L ≥ t.

    Args:
        loss: IPO loss values, any shape. c: −R_ref, broadcastable. beta: β > 0.

    Returns:
        bool array.
    """
    beta = _check_beta(beta)
    c = _f64(c)
    return (beta * c <= 1.0) & (_f64(loss) <= ipo_loss_threshold(c, beta=beta))
