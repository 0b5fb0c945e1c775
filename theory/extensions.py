"""Closed forms the audit derived beyond the seed papers, as pure float64 functions.

Each one is a prediction an audit question (`dpolab.audit`) compares with its simulations: the exact
noise-free GD recursion and when it leaves the window, the mean-field margin of a held-out sample
(seen or unseen value, orthogonal or correlated concepts), the share law of an unbalanced mixture,
the flipped-label flow, and Adam's sign-descent margin. Their derivations are in the docstrings and
THEORY.md; tests/test_audit_*.py check them against independent computations.

References:
    [IL] S. Im, S. Li, "Can DPO Learn Diverse Human Values? A Theoretical Scaling Law", arXiv 2408.03459.
    [rDPO] S. R. Chowdhury et al., "Provably Robust DPO", arXiv 2403.00409.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from dpolab.errors import InputError
from dpolab.theory import im_li
from dpolab.theory.losses import get_loss

#: Token modes of the mean-field margin: a new token pair per value, or Yes/No shared by all.
TOKENS = ("distinct", "yes_no")


def noise_free_recursion(h, n, *, loss="dpo", flip=0.0, eps=0.0):
    """Exact noise-free GD margins m_0..m_n of a clean sample (v = 0, distinct or shared tokens).

    Every row of C sums to 4Q without noise, so r(j+1) = r(j) + h·[(1−f)·w(r) − f·w(−r)] with
    h = 2ηβ²/K and the loss weight w = −f′ (`dpolab.theory.losses`), when a fraction f of each cluster's
    labels is flipped (flipped samples have margin −r). f = 0, dpo: r + hσ(−r), whose h → 0 limit
    is `dpolab.theory.im_li.dpo_noise_free` at 2β²t/K = hj.

    Args:
        h: per-step gain 2ηβ²/K, a float or an array (broadcast). n: number of steps.
        loss, eps: loss name and its ε (cdpo, rdpo). flip: flip fraction f in [0, 1/2).
    Returns:
        (n + 1, *shape of h) margins.

    References: [IL] Lemma 4.1 and its GD form (THEORY §1.2); [rDPO] weights (THEORY §2.2).
    """
    weight = get_loss(loss).weight
    h = np.asarray(h, dtype=float)
    r = np.zeros_like(h)
    out = [r]
    for _ in range(int(n)):
        drift = (1 - flip) * np.asarray(weight(r, eps)) - flip * np.asarray(weight(-r, eps))
        r = r + h * drift
        out.append(r)
    return np.stack(out)


def exit_time_ratio() -> float:
    """t×/τ_1 = 5(2 + log 3)/(2 log 3): when the noise-free margin reaches log 3 (any K, β)."""
    return 5 * (2 + im_li.LOG3) / (2 * im_li.LOG3)


def mean_field_sandwich(*, K, rate, beta, checkpoints, t_mult=1.0):
    """(holds, in window at the end) for the mean-field margin r(t) = DPO noise-free curve at K/rate.

    Checks r_L(t_c) ≤ r(t_c) ≤ r_U(t_c) at the recorded checkpoints t_c = c·t_mult·τ_1/checkpoints
    with 0 < t_c ≤ τ_1 (the sweep's sandwich metric), and r(end) in Theorem 4.2's window
    [log3/40, log3] (its in_window)."""
    tau = im_li.tau_1(K=K, beta=beta)
    t = t_mult * tau * np.arange(1, checkpoints + 1) / checkpoints
    r = im_li.dpo_noise_free(t, K=K / rate, beta=beta)
    inside = (r >= im_li.r_lower(t, K=K, beta=beta)) & (r <= im_li.r_upper(t, K=K, beta=beta))
    w_lo, w_hi = im_li.MARGIN_WINDOW
    return bool(np.all(inside | (t > tau * (1 + 1e-12)))), bool(w_lo <= r[-1] <= w_hi)


def concepts(total: int, d: int, concept_cos: float) -> np.ndarray:
    """(total, d) concept vectors of `dpolab.sims.data.concept_vectors` at δ = 0, in numpy:
    c_k = √(1−ρ)·e_{k+2} + √ρ·e_{total+2} (1-based e_i; a test checks they are equal). Built here
    because the jax version compiles its random draws anew for every shape, seconds per call."""
    c = np.zeros((total, d))
    c[np.arange(total), np.arange(1, total + 1)] = math.sqrt(1.0 - concept_cos)
    if concept_cos > 0:
        c[:, total + 1] = math.sqrt(concept_cos)
    return c


def mean_field(*, K, Q, d, tokens, concept_cos, v, lb, unseen=0, spectrum=None, seen=True):
    """Mean-field (common loss weight) margin of a held-out sample of a seen or unseen value.

    With every training weight equal, ΔW_a − ΔW_b ∝ Σ_j s_j g_j over the samples on the test
    sample's pair (value u alone for distinct tokens, all K values for yes_no), so its margin is
    ∝ X = s̃ (Σ_j s_j g_j)·g̃. Over training and test noise (covariance v²·diag(spectrum)):
      E X = 2Q Σ_k ⟨c_k, c_u⟩,
      Var X = 4Q²v² SᵀΛS + v² n_g (l_b² Λ_11 + c_uᵀΛc_u) + v⁴ n_g tr Λ²,
    S = Σ_k c_k over the group, n_g = 2Q·|group|; a training sample gets E = 2Q ⟨S, c_k⟩ + v² tr Λ
    (its own noise). Concept vectors are `concepts` (those of `dpolab.sims.data.concept_vectors` at
    δ = 0) for K + unseen values.

    Returns:
      dict: mean_rel, sd_rel (held-out mean and sd in units of the mean training margin),
      risk P(X ≤ 0) ≈ Φ(−E/√Var) (1 for a new-token unseen value: r̃ ≡ 0 is a tie), and rate
      (E of a training sample / 2Q: the mean-field time factor, margins follow the noise-free DPO
      curve with K replaced by K/rate).
    """
    if tokens not in TOKENS:
        raise InputError(f"tokens={tokens!r} is not allowed: tokens must be one of {TOKENS}")
    total = K + unseen
    c = concepts(total, d, float(concept_cos))
    lam = np.ones(d) if spectrum is None else np.asarray(spectrum, dtype=float)
    own_train = 2 * Q * (1.0 if tokens == "distinct" else c[:K].sum(0) @ c[0])
    mu_train = own_train + v**2 * lam.sum()
    rate = mu_train / (2 * Q)
    u = 0 if seen else K
    group = ([u] if seen else []) if tokens == "distinct" else list(range(K))
    if not group:
        return {"mean_rel": 0.0, "sd_rel": 0.0, "risk": 1.0, "rate": rate}
    s, n_g = c[group].sum(0), 2 * Q * len(group)
    mu = 2 * Q * s @ c[u]
    var = (4 * Q**2 * v**2 * (lam * s**2).sum() + v**2 * n_g * (lb**2 * lam[0] + lam @ c[u] ** 2)
           + v**4 * n_g * (lam**2).sum())
    sd = math.sqrt(var)
    risk = float(stats.norm.cdf(-mu / sd)) if sd > 0 else float(mu <= 0)
    return {"mean_rel": mu / mu_train, "sd_rel": sd / mu_train, "risk": risk, "rate": rate}


def share_margin(*, K, Q, q_last, beta=1.0):
    """Noise-free minority margin at τ_1 by the share law: `dpo_noise_free` with K_eff = ΣQ/q_last.

    Args:
        K: values. Q: majority Q per cluster. q_last: minority Q (array-like). beta: temperature.

    References:
        [IL] Lemma 4.1, Theorem 4.2 (τ_1); THEORY §1.6 (noise-free closed form).
    """
    q = np.asarray(q_last, float)
    k_eff = ((K - 1) * Q + q) / q
    return im_li.dpo_noise_free(im_li.tau_1(K=K, beta=beta), K=k_eff, beta=beta)


def window_q_min(*, K, Q, beta=1.0) -> int:
    """Smallest integer q_last whose share-law margin at τ_1 is ≥ log 3/40 (Theorem 4.2's floor)."""
    qs = np.arange(1, Q + 1)
    return int(qs[np.argmax(share_margin(K=K, Q=Q, q_last=qs, beta=beta) >= im_li.MARGIN_WINDOW[0])])


def dpo_flip_flow(s, eps):
    """Noise-free DPO margin m(s) of a clean sample when a fraction ε of labels is flipped: the root
    of m − log((1−ε−εe^m)/(1−2ε))/ε = 2(1−ε)s on [0, log((1−ε)/ε)) (ε = 0: `im_li.dpo_noise_free`).

    Args: s: β²t/(Kτ), any shape. eps: flip fraction in [0, 1/2).
    Returns: m(s), same shape as s.
    """
    s = np.asarray(s, dtype=float)
    if eps == 0:
        return im_li.dpo_noise_free(s, K=1, beta=1.0)
    top = math.log((1 - eps) / eps)
    lhs = lambda m: m - np.log((1 - eps - eps * np.exp(m)) / (1 - 2 * eps)) / eps  # noqa: E731
    lo, hi = np.zeros_like(s), np.full_like(s, top)
    for _ in range(200):  # bisection: lhs increases from 0 to +∞ on [0, top)
        mid = (lo + hi) / 2
        below = lhs(mid) < 2 * (1 - eps) * s
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


def sign_descent_margin(t, *, beta, v, d, K, n_pair):
    """Adam's margin after time t = ηn in its sign-descent limit: 2βt·(1 + v(d−K−1)·√(2/(π n_pair))).

    Early Adam moves every coordinate of ΔW by ±η per step: the concept direction adds 2βη per step
    to the margin and each of the d − K − 1 noise coordinates a half-normal amount of scale v/√n_pair
    (n_pair samples on the sample's token pair). Independent of K except through d − K − 1.

    Args:
        t: ηn (array-like). beta: DPO temperature. v: noise level. d: dimension. K: values.
        n_pair: samples on the pair (2Q for distinct tokens, 2QK for shared Yes/No).
    """
    return 2 * beta * np.asarray(t, dtype=float) * (1 + v * (d - K - 1) * math.sqrt(2 / (math.pi * n_pair)))
