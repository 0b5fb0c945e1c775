"""Closed forms of Im & Li's last-layer DPO theory (THEORY.md §1), as pure float64 functions.

References:
    [IL] S. Im, S. Li, "Can DPO Learn Diverse Human Values? A Theoretical Scaling Law",
    arXiv 2408.03459 (v5). Lemma 4.1 (margin dynamics), Theorem 4.2 (training guarantee),
    Theorem 4.3 (generalization), Appendix C (approximately orthogonal values).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.linalg
import scipy.special

from dpolab.errors import InputError

LOG3 = math.log(3.0)
#: Theorem 4.2: every training margin at tau_1 lies in this window (orthogonal values).
MARGIN_WINDOW = (LOG3 / 40.0, LOG3)
#: Theorem 4.2's envelope factors: r_L(t) = R_LOWER·s, r_U(t) = R_UPPER·s with s = β²t/(Kτ);
#: Appendix C halves r_L (R_LOWER_DELTA). The one source for the sweep engine and the audit.
R_LOWER, R_LOWER_DELTA, R_UPPER = 1.0 / 8.0, 1.0 / 16.0, 5.0
#: Appendix C: the window when values are only approximately orthogonal (r_L halves).
MARGIN_WINDOW_DELTA = (LOG3 / 80.0, LOG3)
BOUNDS = ("simplified", "refined")
_Q_MIN = 40  # Theorem 4.3 needs Q >= 40
_SCAN_LIMIT = 100_000  # longest rising stretch q_star scans point by point


def _positive(**fields):
    for name, value in fields.items():
        if not np.all(np.asarray(value, dtype=np.float64) > 0):
            raise InputError(f"{name} must be > 0, got {value!r}")


def _f64(x):  # the closed forms are float64 numpy whatever the jax precision
    return np.asarray(x, dtype=np.float64)


def tau_1(*, K, beta, tau=1.0):
    """Time tau_1 = K tau log3 / (5 beta^2) at which Theorem 4.2 places every margin.

    Args:
        K: number of values (> 0). beta: DPO temperature (> 0). tau: inverse learning rate (> 0).

    References:
        [IL] Theorem 4.2.
    """
    _positive(K=K, beta=beta, tau=tau)
    return K * tau * LOG3 / (5.0 * beta**2)


def r_lower(t, *, K, beta, tau=1.0, delta_orthogonal=False):
    """Lower margin envelope r_L(t) = beta^2 t / (8 K tau) (/16 when delta_orthogonal).

    Args:
        t: time(s), any shape; the result has the same shape. K, beta, tau: as in `tau_1`.
        delta_orthogonal: use Appendix C's constant 1/16 (approximately orthogonal values).

    References:
        [IL] Theorem 4.2; Appendix C.
    """
    _positive(K=K, beta=beta, tau=tau)
    return ((R_LOWER_DELTA if delta_orthogonal else R_LOWER) * beta**2 * _f64(t) / (K * tau))[()]


def r_upper(t, *, K, beta, tau=1.0):
    """Upper margin envelope r_U(t) = 5 beta^2 t / (K tau), t any shape.

    References:
        [IL] Theorem 4.2 (unchanged in Appendix C).
    """
    _positive(K=K, beta=beta, tau=tau)
    return (R_UPPER * beta**2 * _f64(t) / (K * tau))[()]


@dataclasses.dataclass(frozen=True)
class Condition:
    """One hypothesis of Theorems 4.2/4.3: `value` is the tested number (the left side)."""

    name: str
    value: float
    requirement: str
    holds: bool


def conditions(*, Q, d, v, lb, Z, K=None, delta=None, generalization=True, rtol=1e-12):
    """Check the hypotheses of Theorem 4.2 (and 4.3, and Appendix C when delta is given).

    Upper-bound comparisons allow a relative slack `rtol` so that the theorem's own defaults
    (d = 5Q, v = 1/(32 sqrt Q)) count as satisfied however they were rounded.

    Args:
        Q: samples per cluster. d: dimension. v: cluster noise std. lb: shared offset l_b.
        Z: most value pairs sharing one token. delta: Appendix C orthogonality defect (None: skip).
        K: number of values; adds the model's condition d >= K + 1 (e_1 and K orthogonal
        concepts must fit in R^d). None: skip (callers that do not know K).
        generalization: add Theorem 4.3's extra condition Q >= 40.

    Returns:
        list[Condition] in the order Z, d, v, lb, [d >= K + 1], [Q], [delta].

    References:
        [IL] Theorems 4.2, 4.3; Appendix C (eps = 1/(16 v (Z+2)), so eps v / 8 = 1/(128 (Z+2))).
    """
    le = lambda a, b: bool(a <= b * (1.0 + rtol))  # noqa: E731
    out = [
        Condition("Z <= 1/(4 lb^2)", float(Z), f"<= {1 / (4 * lb**2):.6g}", le(Z, 1 / (4 * lb**2))),
        Condition("d <= 5Q", float(d), f"<= {5 * Q:.6g}", le(d, 5 * Q)),
        Condition("v <= 1/(32 sqrt(Q))", float(v), f"<= {1 / (32 * math.sqrt(Q)):.6g}",
                  le(v, 1 / (32 * math.sqrt(Q)))),
        Condition("1/4 <= lb <= 1/2", float(lb), "in [0.25, 0.5]", bool(0.25 <= lb <= 0.5)),
    ]
    if K is not None:
        out.append(Condition("d >= K + 1", float(d), f">= {K + 1:.6g}", bool(d >= K + 1)))
    if generalization:
        out.append(Condition("Q >= 40", float(Q), ">= 40", bool(Q >= _Q_MIN)))
    if delta is not None:
        cap = min(1.0 / (128.0 * (Z + 2)), 0.25)  # eps v / 8, written without v (v may be 0)
        out.append(Condition("delta <= min(eps v/8, 1/4)", float(delta), f"<= {cap:.6g}",
                             le(delta, cap)))
    return out


def bound_simplified(*, K, Q):
    """Main-text generalization bound R(P) <= 2 K Q^2 exp(-Q/45), vectorised over K, Q.

    References:
        [IL] Theorem 4.3 (simplified form, main text).
    """
    K, Q = _f64(K), _f64(Q)
    return (2.0 * K * Q**2 * np.exp(-Q / 45.0))[()]


def _proxy_const(lb, Z, delta_orthogonal):
    # 1 + lb^2 + (2 or 5/2) eps v, with eps v = 1/(16 (Z+2)) independent of v
    return 1.0 + lb**2 + (2.5 if delta_orthogonal else 2.0) / (16.0 * (Z + 2.0))


def concentration_eps(*, v, Z=1):
    """eps = 1/(16 v (Z+2)) of Lemma B.1, Theorem 4.3's refined bound and Appendix C (v > 0).

    References:
        [IL] Lemma B.1 (Gram concentration), Theorem 4.3 proof, Appendix C; THEORY.md §1.5.
    """
    _positive(v=v)
    return (1.0 / (16.0 * _f64(v) * (_f64(Z) + 2.0)))[()]


def gram_band(*, v, Z=1):
    """Half-width 2 eps v = 1/(8 (Z+2)) of Lemma B.1's band around the Gram means (independent of v).

    References:
        [IL] Lemma B.1 (RECONSTRUCTED: the band |g_i^T g_j - E g_i^T g_j| <= 2 eps v is what the
        Theorem 4.2/4.3 proofs use; its two halves are the mu-noise and the noise-feature parts).
    """
    return (2.0 * concentration_eps(v=v, Z=Z) * _f64(v))[()]


def gram_mean(value, sign, *, lb, v, d):
    """(N, N) exact means E g_i^T g_j of the data model (THEORY §1.3, orthogonal unit concepts).

    g_i = lb e_1 + s_i c_{k_i} + v xi_i with independent xi_i ~ N(0, I_d), so for i != j
    E g_i^T g_j = mu_i^T mu_j = lb^2 + s_i s_j 1[k_i = k_j] (lb^2 + 1 same cluster, lb^2 - 1 the
    value's other cluster, lb^2 another value), and E ||g_i||^2 = lb^2 + 1 + d v^2.

    Args:
        value: (N,) int value index k_i. sign: (N,) +-1 cluster sign s_i. lb, v, d: data model.

    References:
        [IL] Lemma B.1 (the means the Gram entries concentrate around).
    """
    value, sign = np.asarray(value), _f64(sign)
    same = (value[:, None] == value[None, :]).astype(np.float64)
    return lb**2 + sign[:, None] * sign[None, :] * same + d * v**2 * np.eye(value.size)


def bound_refined(*, K, Q, d, v, lb, Z=1, delta_orthogonal=False):
    """Refined Theorem 4.3 bound, RECONSTRUCTED FROM THE APPENDIX PROOF (not printed as such).

    R(P) <= 2 K Q^2 exp(-eps^2 / (2 (1 + lb^2 + d v^2 + 2 eps v))), eps = 1/(16 v (Z+2));
    with delta_orthogonal the proxy term 2 eps v becomes (5/2) eps v. v = 0 gives 0 exactly.
    All arguments broadcast.

    References:
        [IL] Theorem 4.3 and its appendix proof; Appendix C for delta_orthogonal.
    """
    K, Q, d, v, lb, Z = np.broadcast_arrays(*map(_f64, (K, Q, d, v, lb, Z)))
    if np.any(v < 0):
        raise InputError(f"v must be >= 0, got {v!r}")
    pos = v > 0
    vs = np.where(pos, v, 1.0)
    eps = concentration_eps(v=vs, Z=Z)
    proxy = _proxy_const(lb, Z, delta_orthogonal) + d * vs**2
    return np.where(pos, 2.0 * K * Q**2 * np.exp(-(eps**2) / (2.0 * proxy)), 0.0)[()]


def default_d(Q):
    """Theorem 4.2's largest admissible dimension d = 5Q."""
    return 5 * Q


def default_v(Q):
    """Theorem 4.2's largest admissible noise v = 1/(32 sqrt Q)."""
    return (1.0 / (32.0 * np.sqrt(_f64(Q))))[()]


def _bound_at(Q, *, K, bound, d, v, lb, Z, delta_orthogonal):
    if bound == "simplified":
        return bound_simplified(K=K, Q=Q)
    return bound_refined(K=K, Q=Q, d=default_d(Q) if d is None else d,
                         v=default_v(Q) if v is None else v, lb=lb, Z=Z,
                         delta_orthogonal=delta_orthogonal)


def _first_true(pred, lo, hi):
    """Smallest integer q in [lo, hi] with pred(q), for pred False...False True...True; else None."""
    if not pred(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if pred(mid) else (mid + 1, hi)
    return lo


def _decreasing_from(*, bound, d, v, lb, Z, delta_orthogonal, q_max):
    """Integer Q0 >= 40 with Q -> bound non-increasing on [Q0, inf), or None if none <= q_max.

    Writing log B = log 2K + 2 log Q - E(Q), every case is unimodal on Q >= 40:
      simplified: E = Q/45, d/dQ log B = 2/Q - 1/45 -> peak Q = 90.
      refined, v default: eps^2 = 4Q/(Z+2)^2, E = 2Q^2 / ((Z+2)^2 (A Q + D)) with
        A = proxy without d v^2 and D = d/1024 (d fixed) or A += 5/1024, D = 0 (d default).
        d/dQ log B <= 0  <=>  h(Q) = Q^2 (A Q + 2D) / ((Z+2)^2 (A Q + D)^2) >= 1, and
        d log h/dQ = 2D/(Q(AQ+D)) + A/(AQ+2D) > 0, so h increases: one sign change.
      refined, v fixed: eps is constant and d v^2 is constant or grows with Q, so E is constant
        or decreasing: B never decreases (None).
    """
    if bound == "simplified":
        return 90
    if v is not None:
        return None
    A = _proxy_const(lb, Z, delta_orthogonal) + (5.0 / 1024.0 if d is None else 0.0)
    D = 0.0 if d is None else d / 1024.0
    h = lambda q: q**2 * (A * q + 2 * D) / ((Z + 2.0) ** 2 * (A * q + D) ** 2)  # noqa: E731
    return _first_true(lambda q: h(float(q)) >= 1.0, _Q_MIN, q_max)


def q_star(K, *, threshold=0.05, bound="simplified", d=None, v=None, lb=0.5, Z=1,
           q_max=10**9, delta_orthogonal=False):
    """Exact Q*(K) = min{integer Q >= 40 : bound(K, Q) < threshold}, or None if no Q <= q_max.

    d or v left as None take `default_d(Q)` / `default_v(Q)` at each candidate Q (only for the
    refined bound; the simplified one has neither). The bound is unimodal in Q (see
    `_decreasing_from`): its rising stretch is scanned point by point (up to 10^5 points; past
    that it is still >= the last scanned value) and its decreasing tail is bisected. With a fixed
    v the refined bound only rises (2 K Q^2 x a factor that does not fall), so Q* is 40 or None.

    Args:
        K: number of values (> 0). threshold: target risk in (0, 1]. q_max: largest Q searched.
        bound: "simplified" (main text) or "refined" (reconstructed, see `bound_refined`).
        d, v, lb, Z, delta_orthogonal: refined-bound parameters.

    Returns:
        int Q*, or None when no Q in [40, q_max] satisfies the bound.

    References:
        [IL] Theorem 4.3; headline "K = 10 needs more than 875 samples per value" (Q*(10) = 880
        at threshold 0.05); Figure 4.
    """
    if bound not in BOUNDS:
        raise InputError(f"bound must be one of {BOUNDS}, got {bound!r}")
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold must be in (0, 1], got {threshold!r}")
    _positive(K=K)
    if bound == "simplified" and (d is not None or v is not None):
        raise InputError(f"d and v apply only to bound='refined'; got d={d!r}, v={v!r}")
    if int(q_max) != q_max or q_max < _Q_MIN:
        raise InputError(f"q_max must be an integer >= {_Q_MIN}, got {q_max!r}")
    q_max = int(q_max)
    kw = dict(K=K, bound=bound, d=d, v=v, lb=lb, Z=Z, delta_orthogonal=delta_orthogonal)
    q0 = _decreasing_from(bound=bound, d=d, v=v, lb=lb, Z=Z,
                          delta_orthogonal=delta_orthogonal, q_max=q_max)
    # rising stretch [40, q0 - 1] (the real peak lies in (q0 - 1, q0]); scanned exhaustively
    qs = np.arange(_Q_MIN, min(q_max + 1 if q0 is None else q0, _Q_MIN + _SCAN_LIMIT))
    vals = _f64(_bound_at(qs, **kw))
    # the analysis above says this stretch is non-decreasing; check it up to rounding
    assert np.all(np.diff(vals) >= -1e-12 * vals[1:] - 1e-300), "bound not rising before its peak"
    hit = np.flatnonzero(vals < threshold)
    if hit.size:
        return int(qs[hit[0]])
    if q0 is None:  # rising up to q_max: nothing past the scan is smaller than what was scanned
        return None
    return _first_true(lambda q: float(_bound_at(q, **kw)) < threshold, q0, q_max)


def q_star_table(Ks, **kwargs):
    """`q_star` for each K in Ks; float64 array (exact integers), NaN where Q* is None."""
    out = [q_star(K, **kwargs) for K in np.ravel(Ks)]
    return np.array([np.nan if q is None else q for q in out], dtype=np.float64)


PROBABILITY_NOTE = (
    "Theorems 4.2/4.3 are stated to hold 'with probability at least "
    "1 - 8 K Q^(9/4) exp(-min(c sqrt(Q)/5, Q^(3/4)/256)) for some constant c > 0'. c is never "
    "given, so the expression is NON-COMPUTABLE, and it does not follow from the appendix (a "
    "leftover of an earlier version). Even ignoring the c-term (which can only lower it), it is "
    "<= 0 for every Q below about 1.4e5 when K = 1 (and later for larger K), e.g. at the "
    "headline Q = 880, K = 10. It is reported for information only and is NEVER a pass criterion."
)


def probability_statement_note():
    """Return `PROBABILITY_NOTE` (why the theorems' probability statement decides nothing)."""
    return PROBABILITY_NOTE


def probability_statement_upper_value(*, K, Q):
    """1 - 8 K Q^{9/4} exp(-Q^{3/4}/256): an UPPER bound on the stated success probability.

    min(c sqrt(Q)/5, Q^{3/4}/256) <= Q^{3/4}/256 for any c, so dropping the c-term can only raise
    the value. Use it to show the statement is vacuous (<= 0); it never decides anything.

    References:
        [IL] Theorems 4.2, 4.3 (probability clause); see `PROBABILITY_NOTE`.
    """
    K, Q = _f64(K), _f64(Q)
    return (1.0 - 8.0 * K * Q**2.25 * np.exp(-(Q**0.75) / 256.0))[()]


def _rate(t, K, beta, tau):
    _positive(K=K, beta=beta, tau=tau)
    t = _f64(t)
    if np.any(t < 0):
        raise InputError(f"t must be >= 0, got {t!r}")
    return 2.0 * beta**2 * t / (K * tau)


def dpo_noise_free(t, *, K, beta, tau=1.0):
    """Noise-free DPO margin: the solution of r + e^r = 1 + 2 beta^2 t/(K tau), t >= 0 any shape.

    With v -> 0, distinct tokens and orthogonal values every row of Lemma 4.1's cross-term
    matrix sums to 4Q (same cluster 2(1 + lb^2), opposite cluster 2(1 - lb^2)), so all margins
    stay equal and tau dr/dt = (2 beta^2/K) sigma(-r), i.e. (1 + e^r) dr = (2 beta^2/(K tau)) dt.
    Solved as r = c - W0(e^c) = log W0(e^c) (Lambert W, c <= 700) and polished by Newton on
    phi(r) = r - log1p(x - r) (x = c - 1), which never overflows and keeps relative accuracy
    ~1e-15 for tiny x.

    References:
        [IL] Lemma 4.1, Theorem 4.2 (at tau_1, r ~ 0.208 for every K, beta); THEORY.md §1.6.
    """
    x = _rate(t, K, beta, tau)
    small = x <= 699.0
    w = scipy.special.lambertw(np.exp(1.0 + np.where(small, x, 0.0))).real
    r = np.where(small, np.log(w), np.log1p(x))  # log1p(x) >= root: Newton then descends
    for _ in range(4):  # phi is increasing and convex: Newton converges quadratically
        u = 1.0 + x - r
        r = r - (r - np.log1p(x - r)) / (1.0 + 1.0 / u)
    return np.where(x == 0, 0.0, r)[()]


def ipo_noise_free(t, *, K, beta, tau=1.0):
    """Noise-free IPO margin r(t) = 1 - exp(-4 beta^2 t/(K tau)) (target margin 1).

    References:
        [IL] Lemma 4.1 with weight -f'(r) = 2(1 - r), f(r) = (r-1)^2; THEORY.md §1.6.
    """
    return (-np.expm1(-2.0 * _rate(t, K, beta, tau)))[()]


def slic_noise_free(t, *, K, beta, tau=1.0):
    """Noise-free SLiC margin r(t) = min(1, 2 beta^2 t/(K tau)).

    References:
        [IL] Lemma 4.1 with weight -f'(r) = 1[r < 1], f(r) = max(0, 1 - r); THEORY.md §1.6.
    """
    return np.minimum(1.0, _rate(t, K, beta, tau))[()]


def ipo_linear_exact(C, t, *, N, beta, tau=1.0):
    """Exact IPO margins r(t) = (I - expm(-2 beta^2 C t/(N tau))) 1 of the linear system.

    Args:
        C: (n, n) cross terms of the training samples (`cross_terms`). t: scalar or (T,) times.
        N: number of samples in the loss mean. beta, tau: as in `tau_1`.

    Returns:
        (n,) margins for scalar t, (T, n) for a 1-D t.

    References:
        [IL] Lemma 4.1 with IPO weight 2(1 - r): tau dr/dt = (2 beta^2/N) C (1 - r).
    """
    C, t = _f64(C), _f64(t)
    ones = np.ones(C.shape[0])
    rs = [ones - scipy.linalg.expm(-2.0 * beta**2 * C * s / (N * tau)) @ ones for s in t.ravel()]
    return np.stack(rs)[0] if t.ndim == 0 else np.stack(rs)
