"""One Bradley–Terry model fitted to a mixture of preference groups (THEORY.md §4), in numpy.

Shapes: ``rewards`` (K, M) — K groups' rewards for M items; ``weights`` (K,) — group weights
w_k > 0 with Σ w_k = 1. Group k prefers item i to j with probability a_k[i, j] =
σ(r_k[i] − r_k[j]); the population with P = Σ_k w_k a_k. "E_pairs" is the uniform mean over
the M(M−1) ordered pairs i ≠ j; since a[j, i] = 1 − a[i, j] and KL(Bern(1−p) ‖ Bern(1−q)) = KL(Bern(p) ‖ Bern(q)), it
equals the mean over the M(M−1)/2 unordered pairs i < j (the same holds for the variances).

References:
    [BT] Bradley & Terry, "Rank Analysis of Incomplete Block Designs", Biometrika 1952.
    THEORY.md §4 [MIX] (misspecification error E_irr, subgroup error via Pinsker's inequality);
    Pinsker: KL(Bern(a) ‖ Bern(q)) ≥ 2(a − q)².
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, logit, xlogy

from dpolab.errors import InputError

_GRAD_TOL = 1e-13
_MAX_NEWTON = 100
_WEIGHT_SUM_TOL = 1e-12


def _check_rewards(rewards):
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 1 or r.shape[1] < 2 or not np.all(np.isfinite(r)):
        raise InputError(f"rewards must be a finite (K, M) array, K >= 1, M >= 2; got {rewards!r}")
    return r


def _check_weights(weights, K):
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (K,):
        raise InputError(f"weights must have shape ({K},) (one per group); got {w.shape}")
    if not np.all(w > 0) or abs(w.sum() - 1.0) > _WEIGHT_SUM_TOL:  # > 0 also rejects NaN
        raise InputError(f"weights must be > 0 and sum to 1 (within 1e-12); got {weights!r}")
    return w


def _check_win_probs(P):
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] < 2:
        raise InputError(f"P must be a square (M, M) array with M >= 2; got shape {P.shape}")
    off = ~np.eye(P.shape[0], dtype=bool)
    if not np.all((P[off] > 0) & (P[off] < 1)):  # the BT optimum is finite only inside (0, 1)
        raise InputError("P must have off-diagonal entries in the open interval (0, 1) (at 0 or "
                         "1 the BT optimum is at infinity; σ rounds to 1 for reward gaps > ~37)")
    return P


def _offdiag_mean(x):
    """Mean over the last two axes' ordered pairs i ≠ j; x (..., M, M)."""
    M = x.shape[-1]
    return (x.sum(axis=(-2, -1)) - np.trace(x, axis1=-2, axis2=-1)) / (M * (M - 1))


def bernoulli_kl(p, x):
    """KL(Bern(p) ‖ Bern(σ(x))) elementwise, as −H(p) + p·softplus(−x) + (1−p)·softplus(x).

    Args:
        p: probabilities in [0, 1], any shape. x: logits, broadcastable with ``p``.
    """
    p, x = np.asarray(p, dtype=np.float64), np.asarray(x, dtype=np.float64)
    neg_entropy = xlogy(p, p) + xlogy(1.0 - p, 1.0 - p)
    kl = neg_entropy + p * np.logaddexp(0.0, -x) + (1.0 - p) * np.logaddexp(0.0, x)
    return np.maximum(kl, 0.0)  # KL >= 0; rounding can give -1e-17 at p = σ(x)


def group_win_probs(rewards):
    """a[k, i, j] = σ(r_k[i] − r_k[j]), shape (K, M, M). References: [BT]."""
    r = _check_rewards(rewards)
    return expit(r[:, :, None] - r[:, None, :])


def population_win_probs(rewards, weights):
    """P = Σ_k w_k a_k, shape (M, M); P[j, i] = 1 − P[i, j]. References: THEORY §4."""
    a = group_win_probs(rewards)
    return np.tensordot(_check_weights(weights, a.shape[0]), a, axes=1)


class BTFit(NamedTuple):
    """A single Bradley–Terry fit: ``reward`` (M,) in the mean-zero gauge; ``kl`` its minimum."""

    reward: np.ndarray
    kl: float


def _pair_weights(pair_weights, M):
    W = np.ones((M, M)) if pair_weights is None else np.array(pair_weights, dtype=np.float64)
    if W.shape != (M, M) or not np.all(np.isfinite(W) & (W >= 0)):
        raise InputError(f"pair_weights must be a finite, >= 0 ({M}, {M}) array")
    np.fill_diagonal(W, 0.0)
    if connected_components(W > 0, directed=False)[0] != 1:
        raise InputError("pair_weights must connect all items (else the BT optimum is not unique)")
    return W / W.sum()


def _objective(P, W, r):
    return float(np.sum(W * bernoulli_kl(P, r[:, None] - r[None, :])))


def fit_single_bt(P, pair_weights=None):
    """The single BT reward minimising Σ_{i≠j} W_ij KL(Bern(P_ij) ‖ Bern(σ(r_i − r_j))).

    W = ``pair_weights`` normalised to sum 1 over i ≠ j (default: uniform over ordered pairs).
    The objective is convex (logistic regression with soft labels): d/dx KL = σ(x) − p and
    d²/dx² = σ(x)σ(−x), so the Hessian in r is the Laplacian of S + Sᵀ, S = W ⊙ σσ'. Damped
    Newton with that exact Hessian on the free coordinates r_1..r_{M−1} (r_0 = 0), run until
    the gradient norm is < 1e-13; the result is then shifted to mean zero.

    Args:
        P: (M, M) win probabilities, off-diagonal entries in (0, 1); the diagonal is ignored.
        pair_weights: optional (M, M) array of >= 0 weights; their graph must connect all items.

    Returns:
        :class:`BTFit` (reward (M,), kl).

    Raises:
        ValueError: naming ``P`` or ``pair_weights`` (bad shape/range, or items not connected).
        RuntimeError: if Newton did not reach the gradient tolerance (not expected).

    References:
        [BT]; THEORY §4 (E_irr = min_r E_pairs KL(Bern(P) ‖ Bern(σ(Δr)))).
    """
    P = _check_win_probs(P)
    M = P.shape[0]
    W = _pair_weights(pair_weights, M)
    r = np.zeros(M)
    f = _objective(P, W, r)
    for _ in range(_MAX_NEWTON):
        X = r[:, None] - r[None, :]
        G = W * (expit(X) - P)
        grad = G.sum(axis=1) - G.sum(axis=0)
        if np.linalg.norm(grad) < _GRAD_TOL:
            return BTFit(r - r.mean(), f)
        S = W * expit(X) * expit(-X)
        S = S + S.T
        H = np.diag(S.sum(axis=1)) - S
        step = np.zeros(M)
        step[1:] = -np.linalg.solve(H[1:, 1:], grad[1:])  # positive definite: W connects items
        t, slope = 1.0, float(grad @ step)
        slack = 8 * np.finfo(float).eps * (abs(f) + 1.0)  # flat at machine precision near r*
        while t > 1e-12:
            f_new = _objective(P, W, r + t * step)
            if f_new <= f + 1e-4 * t * slope + slack:
                break
            t *= 0.5
        r, f = r + t * step, f_new
    raise RuntimeError(f"fit_single_bt: gradient norm {np.linalg.norm(grad):.3g} >= {_GRAD_TOL}")


def irreducible_kl(rewards, weights):
    """E_irr = min_r E_pairs KL(Bern(P) ‖ Bern(σ(Δr))), uniform over pairs (ordered = unordered).

    Zero iff logit P is additive (:func:`triangle_defect` = 0); it is a population quantity, so
    it does not shrink with the number of samples. References: THEORY §4.
    """
    return fit_single_bt(population_win_probs(rewards, weights)).kl


def subgroup_loss(rewards, weights, r):
    """Σ_k w_k E_pairs KL(Bern(a_k) ‖ Bern(σ(r_i − r_j))) for one shared reward r of shape (M,).

    References: THEORY §4 (subgroup error).
    """
    a = group_win_probs(rewards)
    w = _check_weights(weights, a.shape[0])
    r = np.asarray(r, dtype=np.float64)
    if r.shape != (a.shape[1],) or not np.all(np.isfinite(r)):
        raise InputError(f"r must be a finite ({a.shape[1]},) array; got shape {r.shape}")
    return float(w @ _offdiag_mean(bernoulli_kl(a, r[:, None] - r[None, :])))


def subgroup_lower_bound(rewards, weights):
    """2·E_pairs Var_{k∼w}(a_k), a lower bound on :func:`subgroup_loss` for every r.

    Pinsker gives KL(Bern(a_k) ‖ Bern(q)) ≥ 2(a_k − q)², and Σ_k w_k (a_k − q)² ≥ Var_k(a_k)
    (minimised at q = P). Positive whenever two groups disagree on some pair.

    References: THEORY §4; Pinsker's inequality.
    """
    a = group_win_probs(rewards)
    w = _check_weights(weights, a.shape[0])
    var = np.tensordot(w, (a - np.tensordot(w, a, axes=1)) ** 2, axes=1)
    return float(2.0 * _offdiag_mean(var))


def triangle_defect(P):
    """max over distinct (i, j, k) of |logit P_ij + logit P_jk + logit P_ki| (0 for M < 3).

    Zero iff logit P is additive (cycle-consistent), i.e. iff a single BT model fits P exactly.
    Uses O(M³) memory. References: THEORY §4.
    """
    P = _check_win_probs(P)
    M = P.shape[0]
    if M < 3:
        return 0.0
    L = logit(P)
    cycle = L[:, :, None] + L[None, :, :] + L.T[:, None, :]  # [i,j,k] = L_ij + L_jk + L_ki
    i, j, k = np.ogrid[:M, :M, :M]
    return float(np.abs(cycle[(i != j) & (j != k) & (i != k)]).max())


def summary(rewards, weights):
    """The numbers behind ``dpolab bounds mixture --json``: a dict of three floats."""
    P = population_win_probs(rewards, weights)
    return {"irreducible_kl": fit_single_bt(P).kl,
            "subgroup_lower_bound": subgroup_lower_bound(rewards, weights),
            "triangle_defect": triangle_defect(P)}


def _parse_floats(text, field, sep):
    try:
        values = [float(s) for s in text.split(sep)]
    except ValueError:
        raise InputError(f"{field} must be numbers separated by {sep!r}; got {text!r}") from None
    if not np.all(np.isfinite(values)):
        raise InputError(f"{field} must be finite numbers; got {text!r}")
    return values


def parse_rewards(text):
    """Parses "r11,r12,...;r21,r22,..." (groups split by ';', items by ',') into (K, M).

    Raises:
        ValueError: naming ``rewards`` (empty, non-numeric, non-finite, ragged, or M < 2).
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"rewards must be a non-empty string 'r11,r12;r21,r22'; got {text!r}")
    rows = [_parse_floats(g, "rewards", ",") for g in text.strip().strip(";").split(";")]
    if len({len(row) for row in rows}) != 1:
        raise InputError(f"rewards must give every group the same number of items; got {text!r}")
    return _check_rewards(rows)


def parse_weights(text):
    """Parses "w1,w2,..." into a (K,) array (validated against K by the functions using it)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"weights must be a non-empty string 'w1,w2,...'; got {text!r}")
    return np.array(_parse_floats(text.strip(), "weights", ","))


def _example(rewards, weights, note):
    r, w = np.array(rewards, dtype=np.float64), np.array(weights, dtype=np.float64)
    r.flags.writeable = w.flags.writeable = False
    return {"rewards": r, "weights": w, "note": note}


#: Small mixtures used by tests and checks (read-only arrays).
WORKED_EXAMPLES = {
    "disagreeing_orders": _example([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]], [0.6, 0.4],
                                   "K=2, M=3, groups rank the items differently: E_irr > 0"),
    "four_items": _example([[0.0, 1.0, 2.0, 3.0], [3.0, 0.0, 1.0, 0.5]], [0.7, 0.3],
                           "K=2, M=4 generic mixture: E_irr > 0"),
    "condorcet_cycle": _example([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0]],
                                [1 / 3, 1 / 3, 1 / 3],
                                "cyclic P_01 = P_12 = P_20 = p = (2σ(1) + σ(−2))/3: the fit is "
                                "constant by symmetry and E_irr = log 2 − H(p) > 0"),
    "identical_groups": _example([[1.0, -0.5, 2.0], [1.0, -0.5, 2.0]], [0.25, 0.75],
                                 "one group in disguise: E_irr = 0"),
    "opposite_groups": _example([[1.5, -1.0, 0.25, 0.0], [-1.5, 1.0, -0.25, 0.0]], [0.5, 0.5],
                                "r_2 = −r_1, w = 1/2: P ≡ 1/2, E_irr = 0, constant fit "
                                "(centroid collapse: pluralism lost without any error)"),
}
