"""How far real embeddings sit from the Im & Li data model (THEORY §1.3, §1.8), in numpy.

The theorem's model: value k has clusters l_b·e_1 ± c_k + v·noise with unit, orthogonal c_k.
Estimates, per persona k with positive statements P_k (" Yes" matches) and negative ones N_k:
  c_k = (mean P_k − mean N_k)/2,  shared mean m = mean over clusters of their means (l_b = ‖m‖),
  within-cluster covariance Σ_w (pooled), v = √(tr Σ_w / d), effective rank (tr Σ_w)²/tr(Σ_w²).
Features are rescaled by one global factor so that the mean ‖c_k‖ is 1 (the theorem's units) for
the condition table; the paper's own statistics (cosines, covariance norm, squared distance) are
reported on embeddings rescaled to unit norm on average, as in its Appendix E.
"""
from __future__ import annotations

import numpy as np

from dpolab.theory import im_li


def _cos(a):
    """Cosine matrix of a's rows; NaN for a zero row (one group minus its own mean)."""
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    unit = np.divide(a, norm, out=np.full_like(a, np.nan, dtype=np.float64), where=norm > 0)
    return unit @ unit.T


def _offdiag_mean(m):
    return float(m[~np.eye(len(m), dtype=bool)].mean()) if len(m) > 1 else float("nan")


def embedding_structure(gs: list[np.ndarray], labels: list[np.ndarray]) -> dict:
    """Paper-style statistics (Figs 3, 6; App. E) for personas' positive-statement embeddings.

    Args:
      gs: per persona (n_k, d) hidden states. labels: per persona (n_k,) ±1 (+1: " Yes" matches).
    Returns:
      dict with cosine matrices before/after removing the shared mean, their off-diagonal means,
      the mean Frobenius norm of the per-persona covariance and the mean squared distance to the
      persona mean.
    """
    scale = 1.0 / np.mean(np.concatenate([np.linalg.norm(g, axis=1) for g in gs]))
    pos = [scale * g[y > 0] for g, y in zip(gs, labels)]
    means = np.stack([p.mean(axis=0) for p in pos])
    before, after = _cos(means), _cos(means - means.mean(axis=0))
    cov_norm = np.mean([np.linalg.norm(np.cov(p, rowvar=False)) for p in pos])
    sq_dist = np.mean([np.mean(np.sum((p - p.mean(axis=0)) ** 2, axis=1)) for p in pos])
    return {"cosine_before": before, "cosine_after": after,
            "mean_cosine_before": _offdiag_mean(before), "mean_cosine_after": _offdiag_mean(after),
            "covariance_frobenius": float(cov_norm), "mean_squared_distance": float(sq_dist),
            "paper_llama_3_1_8b": {"covariance_frobenius": 0.058, "mean_squared_distance": 0.227}}


def data_model_estimates(gs: list[np.ndarray], labels: list[np.ndarray], Z: int | None = None) -> dict:
    """Estimates of l_b, ‖c_k‖, v, effective rank, orthogonality, Z and d vs 5Q, in units where
    the mean ‖c_k‖ is 1, and the Theorem 4.2/4.3 conditions at those estimates (Z: the most
    values sharing one token; None: K, every value answering with the same " Yes"/" No").
    Also returns the estimated directions: shared (d,) = l_b·e_1 and concepts (K, d) = c_k."""
    plus = [g[y > 0] for g, y in zip(gs, labels)]
    minus = [g[y < 0] for g, y in zip(gs, labels)]
    c = np.stack([(p.mean(0) - m.mean(0)) / 2 for p, m in zip(plus, minus)])
    unit = 1.0 / np.mean(np.linalg.norm(c, axis=1))
    c = unit * c
    shared = unit * np.mean([x.mean(0) for x in plus + minus], axis=0)
    resid = np.concatenate([unit * (x - x.mean(0)) for x in plus + minus if len(x) > 1])
    spectrum = np.clip(np.linalg.eigvalsh(resid.T @ resid / len(resid)), 0, None)
    d = resid.shape[1]
    v = float(np.sqrt(spectrum.sum() / d))
    q = int(min(min(len(p), len(m)) for p, m in zip(plus, minus)))
    K = len(gs)
    Z = K if Z is None else Z
    conditions = im_li.conditions(Q=max(q, 1), d=d, v=v, lb=float(np.linalg.norm(shared)), Z=Z)
    return {"lb": float(np.linalg.norm(shared)), "c_norms": np.linalg.norm(c, axis=1),
            "concept_cosine_mean": _offdiag_mean(_cos(c)), "v": v,
            # the model has c_k ⟂ e_1; a value's tilt towards the shared mean is what l_b amplifies
            "concept_shared_cosine": _cos(np.vstack([shared, c]))[0, 1:],
            "v_per_dimension": np.sqrt(spectrum[::-1]),  # noise std along each principal axis
            "effective_rank": float(spectrum.sum() ** 2 / np.sum(spectrum**2)),
            "Z": Z, "d": d, "Q_min": q, "d_over_5Q": d / (5 * max(q, 1)),
            "conditions": {cond.name: (cond.value, cond.requirement, cond.holds) for cond in conditions},
            "shared": shared, "concepts": c}


def clusters(w, l, group):
    """Im & Li's clusters in a user's data: within each group, the records of its most common
    (unordered) token pair, labelled +1 for one order and −1 for the other.

    Args:
      w, l: (N,) chosen / rejected token indices. group: (N,) group ids 0..K-1.

    Returns:
      (label (N,) int8 in {+1, −1, 0}; 0: a record of another pair, outside the data model),
      pairs (K, 2) the token pair of each group, lower index first.
    """
    label = np.zeros(len(w), dtype=np.int8)
    pairs = []
    for k in range(int(group.max()) + 1):
        at = np.flatnonzero(group == k)
        lo, hi = np.minimum(w[at], l[at]), np.maximum(w[at], l[at])
        keys, counts = np.unique(np.stack([lo, hi], axis=1), axis=0, return_counts=True)
        a, b = keys[np.argmax(counts)]
        label[at[(w[at] == a) & (l[at] == b)]] = 1
        label[at[(w[at] == b) & (l[at] == a)]] = -1
        pairs.append((int(a), int(b)))
    return label, np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def orthogonality_defect(shared, concepts):
    """Appendix C's δ for estimated concept directions: the largest δ_i with ⟨ĉ_i, e_i⟩ = 1 − δ_i²/8,
    where ĉ_i = c_i/‖c_i‖ and e is the orthonormal set closest to {ê_1, ĉ_1 … ĉ_K} (Löwdin's
    symmetric orthogonalisation, which maximises Σ_i ⟨ĉ_i, e_i⟩), ê_1 the shared direction; our
    reading of "|⟨c_i, e_{c_i}⟩| ≥ 1 − δ²/8" for measured directions.

    Args:
      shared: (d,) the shared mean l_b·e_1. concepts: (K, d) the value directions c_k.
    """
    vecs = np.vstack([shared, concepts])
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    gram = vecs @ vecs.T
    vals, vecs_ = np.linalg.eigh(gram)
    if vals.min() <= 1e-12:
        return float("inf")  # linearly dependent: no orthonormal set is close
    root = (vecs_ * np.sqrt(vals)) @ vecs_.T  # ⟨ĉ_i, e_i⟩ = (G^{1/2})_ii for Löwdin's e
    cos = np.clip(np.diag(root)[1:], -1.0, 1.0)
    return float(np.sqrt(8.0 * np.max(1.0 - cos)))


def disagreement(records) -> dict:
    """What one Bradley–Terry model must lose when groups disagree (THEORY §4), from the records.

    A *comparison* is a prompt with its unordered answer pair. For every comparison made by two or
    more groups, group k prefers the first answer (in code-point order) with frequency a_k and
    weight w_k ∝ its records; the population frequency is P = Σ_k w_k a_k. A single model of the
    pair predicts one probability for every group; the best one is P (its loss KL(P ‖ ·) is then
    0, so E_irr = 0 for a lone pair), and what it still loses is the subgroup term
    D = Σ_k w_k KL(Bern(a_k) ‖ Bern(P)) ≥ 2 Σ_k w_k (a_k − P)² (Pinsker). Reported as the mean over
    shared comparisons weighted by their records.

    Args:
      records: `dpolab.sims.llm.preferences.Preference` records.

    Returns:
      dict: comparisons (distinct), shared (made by ≥ 2 groups), disagreeing (group frequencies
      differ), subgroup_loss D and pinsker_bound (NaN without shared comparisons).
    """
    from dpolab.theory.mixture import bernoulli_kl

    table: dict = {}
    for rec in records:
        first = min(rec.chosen, rec.rejected)
        key = (rec.prompt, first, max(rec.chosen, rec.rejected))
        table.setdefault(key, {}).setdefault(rec.group, []).append(rec.chosen == first)
    losses, bounds, weights, disagreeing = [], [], [], 0
    for groups in table.values():
        if len(groups) < 2:
            continue
        n = np.asarray([len(v) for v in groups.values()], dtype=np.float64)
        a = np.asarray([np.mean(v) for v in groups.values()])
        w = n / n.sum()
        P = float(w @ a)
        disagreeing += bool(np.ptp(a) > 0)
        losses.append(float(w @ bernoulli_kl(a, np.log(P) - np.log1p(-P))) if 0 < P < 1 else 0.0)
        bounds.append(float(2 * w @ (a - P) ** 2))
        weights.append(n.sum())
    mean = (lambda x: float(np.average(x, weights=weights))) if weights else (lambda x: float("nan"))
    return {"comparisons": len(table), "shared": len(weights), "disagreeing": disagreeing,
            "subgroup_loss": mean(losses), "pinsker_bound": mean(bounds)}
