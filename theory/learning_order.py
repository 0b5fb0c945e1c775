"""Learning order between values: which value's mean margin crosses a level first, and when.

Paper's statement (Im & Li, "Understanding the Learning Dynamics of Alignment with Human Feedback",
ICML 2024, arXiv 2403.18742; recalled, not re-read): behaviours whose preferred and non-preferred
embedding distributions are further apart (more *distinguishable*) are learned faster by DPO, and
the authors show it on Anthropic persona data with an LLM. Everything below is OUR derivation in
this package's last-layer model (THEORY §1.1–1.2); it is not the paper's formula.

Model. Sample i has features g_i ∈ R^d, chosen/rejected used tokens (w_i, l_i) and u_i = e_{w_i} − e_{l_i}.
With x_i = u_i g_iᵀ (a U × d matrix), r_i = β⟨ΔW, x_i⟩ and C_ij = ⟨x_i, x_j⟩_F. Under gradient flow
(τ = 1, mean DPO loss, full batch, r(0) = 0), dr_j/dt = (β²/N) Σ_i σ(−r_i) C_ij (Lemma 4.1).

Group sums. X_k = Σ_{i∈k} x_i, n_k = |k|, M_kk' = ⟨X_k, X_k'⟩_F. The mean margin m_k of group k obeys
  dm_k/dt = (β²/(N n_k)) Σ_{j∈k} Σ_i σ(−r_i) C_ij                      (exact),
so at t = 0 its velocity is exactly v_k = (β²/(2N n_k)) Σ_k' M_kk' (`initial_velocity`).

Distinguishability (ours, in the paper's spirit): D_k = ‖X_k/n_k‖_F / √2. For one token pair this is
‖mean_i s_i g_i‖ = ‖(μ̂_k⁺ − μ̂_k⁻)/2‖ for balanced classes: half the distance between the means of the
embeddings whose chosen answer is a and those whose chosen answer is b. A value alone on its pair
starts at v_k = (β² n_k/N)·D_k²: its learning speed is its squared mean separation times its share.
Spread enters only through D_k's finite-sample bias (E D_k² = ‖c_k‖² + tr Σ_k/n_k) and, later, through
the dispersion of the margins inside the value (the band below); it is not in the denominator.

Mean-field prediction (ours). Replace each σ(−r_i) by σ(−m_{k(i)}):
  dm_k/dt = (β²/(N n_k)) Σ_k' M_kk' σ(−m_k').
This is exactly DPO gradient flow on the group centroids (group k collapsed to X_k/n_k with weight
n_k), so it is exact whenever every sample of a group has the same margin (noise-free clusters, any
token sharing and any concept overlap). A group alone on its tokens (M_kk' = 0 for k' ≠ k) solves in
closed form: m + e^m = 1 + 2 v_k t, so it crosses `level` ℓ at t_k = (ℓ + e^ℓ − 1)/(2 v_k)
(`isolated_time`; THEORY §1.6 is the case v_k = β²/K). Coupled groups are integrated
(`mean_field_crossings`, RK45 with rtol 1e-11).

Band (ours, first order in the margin dispersion). Inside an isolated group let ρ_i be sample i's
initial velocity over the group mean. Early on r_i ≈ ρ_i m, and expanding σ(−r_i) about σ(−m) gives
exact velocity = mean-field velocity × (1 − σ(m)·m·Var(ρ) + O(m² Var ρ)): the mean margin lags, and
the crossing time of ℓ is later by a relative amount ≤ σ(ℓ)·ℓ·Var(ρ) to first order
(`dispersion_band` returns twice that, the factor 2 covering the second-order terms; it is meant for
σ(ℓ)·ℓ·Var(ρ) ≤ 0.1). Gradient descent with step η adds Euler's error (`euler_band`).

References:
    Im & Li 2024 (ICML), arXiv 2403.18742 (the claim); [IL] Lemma 4.1 and THEORY §1.2, §1.6 (the
    dynamics it is derived from).
"""
from __future__ import annotations

import math

import numpy as np
import scipy.linalg
from scipy import integrate
from scipy.special import expit

from dpolab.errors import InputError

#: Relative tolerance of the mean-field integration (the predicted times carry ~1e-10 relative error).
RTOL = 1e-11
#: The integration stops (np.inf for the groups still below the level) at this multiple of the
#: isolated-time scale (ℓ + e^ℓ − 1)/(2 max_k |v_k|): margins grow like log t once a group is learned.
HORIZON = 1e8


def _group_sums(G, w, l, group):
    """(ids (K,), X (K, U, d) group sums of u_i g_iᵀ, n (K,) counts, x_rows (N,) group index)."""
    G = np.asarray(G, dtype=np.float64)
    w, l, group = (np.asarray(a) for a in (w, l, group))
    if G.ndim != 2 or G.shape[0] == 0 or not np.all(np.isfinite(G)):
        raise InputError(f"G: shape {G.shape} is not allowed: G must be a finite (N, d) array with N >= 1")
    n_samples = G.shape[0]
    for name, a in (("w", w), ("l", l), ("group", group)):
        if a.shape != (n_samples,) or not np.issubdtype(a.dtype, np.integer):
            raise InputError(f"{name}: shape {a.shape}, dtype {a.dtype} is not allowed: {name} must be "
                             f"an integer array of shape ({n_samples},)")
    if np.any(w < 0) or np.any(l < 0):
        raise InputError(f"w, l: min {min(w.min(), l.min())} is not allowed: token indices must be >= 0")
    if np.any(w == l):
        raise InputError(f"w, l: sample {int(np.argmax(w == l))} has w == l, not allowed: "
                         "the chosen and rejected tokens must differ")
    ids, rows = np.unique(group, return_inverse=True)
    U = int(max(w.max(), l.max())) + 1
    X = np.zeros((len(ids), U, G.shape[1]))
    np.add.at(X, (rows, w), G)
    np.add.at(X, (rows, l), -G)
    return ids, X, np.bincount(rows).astype(np.float64), rows


def _check_scalars(beta, level):
    for name, value in (("beta", beta), ("level", level)):
        if not (np.isscalar(value) and np.isfinite(value) and value > 0):
            raise InputError(f"{name}={value!r} is not allowed: {name} must be a finite number > 0")


def centroid_gram(G, w, l, group):
    """(ids (K,), M (K, K), n (K,)): M_kk' = ⟨X_k, X_k'⟩_F with X_k = Σ_{i∈k} (e_{w_i} − e_{l_i}) g_iᵀ.

    Args: G (N, d) features; w, l (N,) int used-token indices; group (N,) int group ids.
    """
    ids, X, n, _ = _group_sums(G, w, l, group)
    flat = X.reshape(len(ids), -1)
    return ids, flat @ flat.T, n


def distinguishability(G, w, l, group):
    """(ids (K,), D (K,)): D_k = ‖X_k/n_k‖_F/√2 (one pair: ‖mean s_i g_i‖, half the class-mean gap)."""
    ids, M, n = centroid_gram(G, w, l, group)
    return ids, _separation(M, n)


def _separation(M, n):
    return np.sqrt(np.diag(M) / 2.0) / n


def initial_velocity(G, w, l, group, *, beta):
    """(ids (K,), v (K,)): exact dm_k/dt at t = 0, v_k = (β²/(2 N n_k)) Σ_k' M_kk' (σ(0) = 1/2)."""
    _check_scalars(beta, 1.0)
    ids, M, n = centroid_gram(G, w, l, group)
    return ids, beta**2 * M.sum(axis=1) / (2.0 * n.sum() * n)


def isolated_time(velocity, level):
    """t = (ℓ + e^ℓ − 1)/(2v): a group alone on its tokens, all its margins equal, reaches ℓ
    (np.inf where v ≤ 0). velocity: array-like of initial velocities v_k; level: ℓ > 0."""
    _check_scalars(1.0, level)
    v = np.asarray(velocity, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(v > 0, (level + math.expm1(level)) / (2.0 * v), np.inf)


def mean_field_rhs(M, n, *, beta):
    """f(t, m) = (β²/(N n_k)) Σ_k' M_kk' σ(−m_k'): the mean-field ODE's right-hand side."""
    A = beta**2 * np.asarray(M) / (np.sum(n) * np.asarray(n)[:, None])
    return lambda t, m: A @ expit(-m)


def mean_field_margins(t, M, n, *, beta):
    """(len(t), K) mean-field mean margins at increasing times t >= 0 (from m = 0)."""
    t = np.asarray(t, dtype=np.float64)
    sol = integrate.solve_ivp(mean_field_rhs(M, n, beta=beta), (0.0, float(t[-1])), np.zeros(len(n)),
                              t_eval=t, rtol=RTOL, atol=1e-13, method="RK45")
    return sol.y.T


def mean_field_crossings(M, n, *, beta, level):
    """(K,) first time each mean-field mean margin reaches `level` (np.inf if not before the horizon)."""
    rhs = mean_field_rhs(M, n, beta=beta)
    v0 = rhs(0.0, np.zeros(len(n)))
    if not np.any(v0 > 0):
        return np.full(len(n), np.inf)
    scale = (level + math.expm1(level)) / (2.0 * np.max(np.abs(v0)))
    events = []
    for k in range(len(n)):
        ev = lambda t, m, k=k: m[k] - level  # noqa: E731
        ev.direction = 1.0
        events.append(ev)
    sol = integrate.solve_ivp(rhs, (0.0, HORIZON * scale), np.zeros(len(n)), events=events,
                              rtol=RTOL, atol=1e-13, method="RK45")
    return np.array([te[0] if len(te) else np.inf for te in sol.t_events])


def predict_order(G, w, l, group, *, beta, level) -> dict:
    """Predicted crossing times of each group's mean margin (mean-field gradient flow).

    Args:
      G: (N, d) features. w, l: (N,) int token indices (chosen, rejected) into the used tokens.
      group: (N,) int value/group ids. beta: β > 0. level: ℓ > 0, the mean-margin level.
    Returns:
      {"groups": (K,) sorted unique ids, "distinguishability": (K,) D_k,
       "predicted_time": (K,) gradient-flow time (τ = 1, mean DPO loss, full batch, from r = 0) at
       which the group's mean margin reaches ℓ (np.inf if never), "order": (K,) ids sorted by
       predicted_time (ties by id)}, all float64 / int numpy arrays.
    """
    _check_scalars(beta, level)
    ids, M, n = centroid_gram(G, w, l, group)
    times = mean_field_crossings(M, n, beta=float(beta), level=float(level))
    return {"groups": ids, "distinguishability": _separation(M, n),
            "predicted_time": times, "order": ids[np.lexsort((ids, times))]}


def velocity_dispersion(G, w, l, group, *, beta):
    """(ids (K,), Var_k(ρ)): variance inside each group of ρ_i = v_i / mean_{j∈k} v_j, where
    v_i = (β²/(2N)) Σ_j C_ij is sample i's exact initial velocity."""
    ids, X, n, rows = _group_sums(G, w, l, group)
    _check_scalars(beta, 1.0)
    G = np.asarray(G, dtype=np.float64)
    total = X.sum(axis=0)  # Σ_j x_j, (U, d)
    w, l = np.asarray(w), np.asarray(l)
    v = beta**2 * np.einsum("id,id->i", G, total[w] - total[l]) / (2.0 * len(rows))
    var = np.zeros(len(ids))
    for k in range(len(ids)):
        rho = v[rows == k] / v[rows == k].mean()
        var[k] = rho.var()
    return ids, var


def dispersion_band(var_rho, level):
    """Relative crossing-time band 2·σ(ℓ)·ℓ·Var(ρ) of the mean-field prediction (first order, ours)."""
    return 2.0 * expit(level) * level * np.asarray(var_rho, dtype=np.float64)


def euler_band(M, n, *, beta, eta, times):
    """(K,) bound on |GD crossing time − flow crossing time| for step η, groups with M >= 0.

    With Ā = (β²/(N n_k)) M_kk' and a_k = Σ_k' Ā_kk': margins stay >= 0 (σ(−m) ≤ 1/2), so
    |m_k'| ≤ a_k/2 and |m_k''| ≤ b_k = Σ_k' Ā_kk' a_k'/8 (|σ'| ≤ 1/4). The Jacobian −Ā diag(σσ) has
    a non-positive diagonal and off-diagonal entries ≤ L_kk' = Ā_kk'/4, so by componentwise
    comparison Euler's global error obeys E' ≤ L E + η b/2, E(0) = 0: E(t) = ∫_0^t e^{Ls} ds · η b/2
    (= η b t/2 for isolated groups), plus η² b/8 for the linear interpolation between steps. A margin
    error E at the crossing moves it by ≤ E / (velocity there); the velocity is taken at 1.1·t (it
    decreases in t when M >= 0), valid while the shift is < 0.1·t.
    """
    M, n = np.asarray(M, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if np.any(M < 0):
        raise InputError("M: negative entries are not allowed: euler_band needs M >= 0 (margins stay >= 0)")
    times = np.asarray(times, dtype=np.float64)
    A = beta**2 * M / (n.sum() * n[:, None])
    b = A @ A.sum(axis=1) / 8.0
    L = (A - np.diag(np.diag(A))) / 4.0
    rhs = mean_field_rhs(M, n, beta=beta)
    out = np.full(len(n), np.inf)
    for k in np.nonzero(np.isfinite(times))[0]:
        aug = np.zeros((len(n) + 1, len(n) + 1))
        aug[:-1, :-1], aug[:-1, -1] = L * times[k], eta * b / 2.0 * times[k]
        err = scipy.linalg.expm(aug)[k, -1] + eta**2 * b[k] / 8.0
        later = mean_field_margins(np.array([0.0, 1.1 * times[k]]), M, n, beta=beta)[-1]
        out[k] = err / rhs(0.0, later)[k]
    return out
