"""Likelihood displacement in last-layer DPO: closed forms for how log π(y_w|x) moves (numpy).

Setting (THEORY §1.1): frozen features g_j ∈ R^d, trainable unembedding W (V × d), single-token
responses; N training samples (g_i, y_{w,i}, y_{l,i}) whose tokens are numbered 0..U−1 in
"used-token space". Training is gradient descent (τ = 1) on the mean loss (1/N) Σ_i f(r_i) with
per-sample gradient weights w_i = −f′(r_i) (DPO: σ(−r_i); rDPO: σ(−r_i) + ε/(1−2ε), see
`dpolab.theory.losses`).

**Derivation (ours).** One GD step of size η moves only the used rows:
    ΔW = (ηβ/N) Σ_i w_i (e_{w,i} − e_{l,i}) g_iᵀ,
so the logit of a used token u at sample j moves by δ_{j,u} = η A_{j,u} with
    A_{j,u} = (β/N) Σ_i w_i s_{i,u} K_ij,   s_{i,u} = 1[u = y_{w,i}] − 1[u = y_{l,i}],  K_ij = g_iᵀg_j,
and every unused logit stays put. The new log-partition is therefore exact from the used tokens'
current probabilities alone (the other V − U tokens enter through 1 − Σ_u π(u|x_j)):
    LSE(W′g_j) = LSE(Wg_j) + log(1 + Σ_{u used} π(u|x_j)(e^{δ_{j,u}} − 1)).
Exact one-step changes (`step_change`):
    Δ log π(y|x_j) = δ_{j,y} − log(1 + Σ_u π_j(u)(e^{δ_{j,u}} − 1)),   Δr_j = β(δ_{j,w_j} − δ_{j,l_j}).
Gradient-flow velocities (first order in η, `logp_velocity`):
    d log π(y|x_j)/dt = A_{j,y} − Σ_u π_j(u) A_{j,u},   dr_j/dt = β(A_{j,w_j} − A_{j,l_j})
(the last is THEORY §1.2's Lemma 4.1, τ dr_j/dt = (β²/N) Σ_i w_i C_ij).

**Displacement condition (ours).** Sample j is *displaced* when d log π(y_w|x_j)/dt < 0 while
dr_j/dt > 0. Per training sample i the chosen velocity gets (β/N) w_i K_ij c_ij with
c_ij = s_{i,w_j} − π_j(y_{w,i}) + π_j(y_{l,i}), the margin (β²/N) w_i K_ij m_ij with the
preference-sharing factor m_ij ∈ {±2, ±1, 0}. Writing v_r = dr_j/dt:
    d log π(y_w|x_j)/dt = v_r/(2β) + [ (A_{j,w_j} + A_{j,l_j})/2 − Σ_u π_j(u) A_{j,u} ],
so j is displaced iff its pair (y_w, y_l) is pushed down *together* (the common mode in brackets)
by more than half the margin gain, relative to the policy-weighted mean push. Consequences:
  * one sample alone (N = 1) never displaces itself: the chosen velocity is A_w(1 − π_w + π_l) > 0;
  * **one token pair for every sample** (the Yes/No persona task): A_{j,l} = −A_{j,w}, the common
    mode is zero, and d log π(y_w)/dt = (1 − π_w + π_l)/(2β) · dr/dt — same sign, never displaced.
    More: every row update is antisymmetric (ΔW_Yes = −ΔW_No) for GD and for Adam (elementwise
    normalisation keeps it), so at any time log π_t(y_w) − log π_0(y_w) = a − log(1 + π_0(y_w)(e^a − 1)
    + π_0(y_l)(e^{−a} − 1)) with r = 2βa: the chosen log-prob has risen iff the margin has;
  * displacement needs a third used token: samples i whose tokens j does not share (m_ij = 0)
    still move j's log-partition by −(β/N) w_i K_ij (π_j(y_{w,i}) − π_j(y_{l,i})), and samples that
    reject j's chosen token (c_ij < 0) push it down directly. It grows with the feature similarity
    K_ij across samples with conflicting token roles and with the mass π_j on those tokens.
  * at r = 0 every DPO weight is 1/2: A ∝ β and v_r ∝ β², so the displaced set is β-invariant.

**The paper's statement vs ours.** Razin et al. (ICLR 2025) show, for single-token responses in a
model whose hidden representation h_x is trainable ("unconstrained features"), that the preferred
log-prob can fall when the preferred and dispreferred tokens' *unembeddings* are similar (their
gradient term ⟨W_{y+}, W_{y+} − W_{y−}⟩ − Σ_z π(z)⟨W_z, W_{y+} − W_{y−}⟩ can be negative), and for
multi-token responses measure it with the CHES score of the responses' hidden embeddings. With
frozen features (this package's model) that path is absent: for single-token responses both
responses share h_x, so CHES = ⟨h, h⟩ − ‖h‖² = 0, and the condition above replaces it — the
similarity that displaces is between *prompts'* features K_ij across samples whose token roles
conflict, not between the two responses of one sample. We could not consult the paper; the
statements attributed to it are our reading, the rest is derived here and checked numerically.

Shapes: G (N, d); w, l (N,) int in [0, U); logp (N, U) current log π(u|x_j) of the used tokens
(full-vocabulary normalised, so each row's probabilities sum to ≤ 1); r (N,); weight (N,).

References:
    Y. Razin et al., "Unintentional Unalignment: Likelihood Displacement in Direct Preference
    Optimization", ICLR 2025, arXiv 2410.08847 (§3 persona experiments, §4 single-token theory, CHES).
    THEORY.md §1.1 (last-layer model, cached log-partition), §1.2 (Lemma 4.1).
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit, logsumexp

from dpolab.errors import InputError

#: A row's used-token probabilities may exceed 1 by rounding only (float64, U ≤ ~1e3 terms).
_MASS_TOL = 1e-9


def _inputs(G, w, l, logp, r, beta, weight):
    G = np.asarray(G, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] < 1 or not np.all(np.isfinite(G)):
        raise InputError(f"G must be a finite (N, d) array with N >= 1; got shape {np.shape(G)}")
    n = G.shape[0]
    logp = np.asarray(logp, dtype=np.float64)
    if logp.ndim != 2 or logp.shape[0] != n or logp.shape[1] < 2:
        raise InputError(f"logp must be an (N={n}, U) array with U >= 2 used tokens; got shape {logp.shape}")
    if np.any(np.isnan(logp)) or np.any(logp > _MASS_TOL):
        raise InputError("logp must hold log-probabilities (<= 0, no NaN)")
    mass = np.exp(logsumexp(logp, axis=1))
    if np.any(mass > 1 + _MASS_TOL):
        raise InputError(f"logp rows must be full-vocabulary log-probabilities (Σ_u π(u) <= 1); "
                         f"got a row summing to {mass.max():.6g}")
    U = logp.shape[1]
    idx = []
    for name, t in (("w", w), ("l", l)):
        t = np.asarray(t)
        if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer) or np.any((t < 0) | (t >= U)):
            raise InputError(f"{name} must be (N={n},) integers in [0, U={U}); got {t!r}")
        idx.append(t)
    if np.any(idx[0] == idx[1]):
        raise InputError("w and l must differ in every sample (y_w = y_l has no preference)")
    r = np.asarray(r, dtype=np.float64)
    if r.shape != (n,) or not np.all(np.isfinite(r)):
        raise InputError(f"r must be a finite (N={n},) array of margins; got shape {r.shape}")
    if not (np.isfinite(beta) and beta > 0):
        raise InputError(f"beta={beta!r} is not allowed: beta must be finite and > 0")
    weight = expit(-r) if weight is None else np.asarray(weight, dtype=np.float64)
    if weight.shape != (n,) or not np.all(np.isfinite(weight)):
        raise InputError(f"weight must be a finite (N={n},) array; got shape {weight.shape}")
    return G, idx[0], idx[1], logp, weight


def logit_velocity(G, w, l, weight, *, beta, n_tokens):
    """(N, U) A_{j,u} = (β/N) Σ_i w_i s_{i,u} g_iᵀg_j: the used logits' gradient-flow velocity.

    Computed as G (Gᵀ S) with S (N, U) = w_i (e_{w,i} − e_{l,i}), never forming the N × N kernel.
    """
    n = G.shape[0]
    S = np.zeros((n, n_tokens))
    rows = np.arange(n)
    np.add.at(S, (rows, w), weight)
    np.add.at(S, (rows, l), -weight)
    return (beta / n) * (G @ (G.T @ S))


def _take(a, idx):
    return np.take_along_axis(a, idx[:, None], axis=1)[:, 0]


def logp_velocity(G, w, l, logp, r, *, beta, weight=None) -> dict:
    """Gradient-flow (τ = 1) time derivatives at the current point of mean-loss training.

    Args:
        G: (N, d) features. w, l: (N,) used-token indices of y_w, y_l. logp: (N, U) current
            log π_W(u|x_j) of the used tokens (full-vocabulary normalised). r: (N,) margins.
        beta: β > 0. weight: optional (N,) gradient weights −f′(r_i) (default σ(−r), DPO).

    Returns:
        {"chosen", "rejected", "margin"}: (N,) d log π(y_w|x_j)/dt, d log π(y_l|x_j)/dt, dr_j/dt.
    """
    G, w, l, logp, weight = _inputs(G, w, l, logp, r, beta, weight)
    A = logit_velocity(G, w, l, weight, beta=beta, n_tokens=logp.shape[1])
    mean_push = np.sum(np.exp(logp) * A, axis=1)
    a_w, a_l = _take(A, w), _take(A, l)
    return {"chosen": a_w - mean_push, "rejected": a_l - mean_push, "margin": beta * (a_w - a_l)}


def log_partition_change(logp, delta):
    """(N,) exact LSE(z + δ) − LSE(z) when only the used logits move by δ (N, U).

    log(1 + Σ_u π(u)(e^{δ_u} − 1)) in its accurate log1p/expm1 form where every |δ| ≤ 1; else
    log(π_rest + Σ_u π(u)e^{δ_u}) by log-sum-exp, π_rest = 1 − Σ_u π(u) (no overflow).
    """
    small = np.log1p(np.sum(np.exp(logp) * np.expm1(np.minimum(delta, 1.0)), axis=1))
    log_rest = np.log(-np.expm1(np.minimum(logsumexp(logp, axis=1), -1e-300)))
    large = np.logaddexp(log_rest, logsumexp(logp + delta, axis=1))
    return np.where(np.max(np.abs(delta), axis=1) <= 1.0, small, large)


def step_change(G, w, l, logp, r, *, beta, eta, weight=None) -> dict:
    """Exact change after one full-batch GD step of size η (same arguments as `logp_velocity`).

    Returns:
        {"chosen", "rejected", "margin"}: (N,) Δ log π(y_w|x_j), Δ log π(y_l|x_j), Δr_j.
    """
    if not (np.isfinite(eta) and eta > 0):
        raise InputError(f"eta={eta!r} is not allowed: eta must be finite and > 0")
    G, w, l, logp, weight = _inputs(G, w, l, logp, r, beta, weight)
    delta = eta * logit_velocity(G, w, l, weight, beta=beta, n_tokens=logp.shape[1])
    lognorm = log_partition_change(logp, delta)
    d_w, d_l = _take(delta, w), _take(delta, l)
    return {"chosen": d_w - lognorm, "rejected": d_l - lognorm, "margin": beta * (d_w - d_l)}


def displaced(velocity: dict) -> np.ndarray:
    """(N,) bool: chosen log-prob falling while the margin grows (of `logp_velocity`/`step_change`)."""
    return (np.asarray(velocity["chosen"]) < 0) & (np.asarray(velocity["margin"]) > 0)


def single_pair_ratio(logp, w, l, *, beta):
    """(N,) (1 − π(y_w) + π(y_l))/(2β): d log π(y_w)/dt ÷ dr/dt when every sample uses one token pair."""
    p = np.exp(np.asarray(logp, dtype=np.float64))
    return (1.0 - _take(p, np.asarray(w)) + _take(p, np.asarray(l))) / (2.0 * beta)


def single_pair_chosen_change(margin, logp_w0, logp_l0, *, beta):
    """Cumulative log π_t(y_w) − log π_0(y_w) of a one-pair task from its margin r (any time, GD or
    Adam): a − log(1 + π_0(y_w)(e^a − 1) + π_0(y_l)(e^{−a} − 1)) with a = r/(2β). Same sign as r."""
    a = np.asarray(margin, dtype=np.float64) / (2.0 * beta)
    return a - np.log1p(np.exp(logp_w0) * np.expm1(a) + np.exp(logp_l0) * np.expm1(-a))
