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
    unit = a / np.linalg.norm(a, axis=1, keepdims=True)
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


def data_model_estimates(gs: list[np.ndarray], labels: list[np.ndarray]) -> dict:
    """Estimates of l_b, ‖c_k‖, v, effective rank, orthogonality, Z and d vs 5Q, in units where
    the mean ‖c_k‖ is 1, and the Theorem 4.2/4.3 conditions at those estimates."""
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
    conditions = im_li.conditions(Q=max(q, 1), d=d, v=v, lb=float(np.linalg.norm(shared)), Z=K)
    return {"lb": float(np.linalg.norm(shared)), "c_norms": np.linalg.norm(c, axis=1),
            "concept_cosine_mean": _offdiag_mean(_cos(c)), "v": v,
            "v_per_dimension": np.sqrt(spectrum[::-1]),  # noise std along each principal axis
            "effective_rank": float(spectrum.sum() ** 2 / np.sum(spectrum**2)),
            "Z": K, "d": d, "Q_min": q, "d_over_5Q": d / (5 * max(q, 1)),
            "conditions": {cond.name: (cond.value, cond.requirement, cond.holds) for cond in conditions}}
