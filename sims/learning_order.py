"""Values of controlled distinguishability, trained by the exact last-layer simulator.

The data are THEORY §1.3's clusters with one change (ours): value k's concept vector is scaled by a
norm κ_k, so C_{k,±} have means l_b·e_1 ± κ_k·c_k and covariance v²I. κ_k sets the value's
distinguishability (D_k → κ_k as v → 0, see `dpolab.theory.learning_order`). Concepts are
`dpolab.theory.extensions.concepts` (unit, pairwise cosine ρ); layout, token pairs and the reference
cache are `dpolab.sims.data`'s; training is `dpolab.sims.train.make_trainer` (exact GD).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dpolab.errors import InputError
from dpolab.sims.config import DataSpec, TrainSpec, make_params
from dpolab.sims.data import Dataset, layout, with_reference
from dpolab.sims.train import check_finite, make_trainer
from dpolab.theory.extensions import concepts


def value_data(seed: int, *, norms, Q: int, d: int, v: float, lb: float = 0.5, tokens: str = "distinct",
               concept_cos: float = 0.0) -> Dataset:
    """A training set of K = len(norms) values, Q samples per cluster, deterministic in `seed`.

    Args:
      seed: numpy seed of the noise and the reference head. norms: (K,) κ_k > 0. Q: samples per
      cluster. d: dimension (>= K + 2). v: noise scale >= 0. lb: bias length. tokens: "distinct"
      (a pair per value) or "yes_no" (one pair shared by all). concept_cos: ρ in [0, 1).
    Returns:
      A `dpolab.sims.data.Dataset` (float64) laid out value after value.
    """
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim != 1 or norms.size == 0 or not np.all(norms > 0):
        raise InputError(f"norms={norms.tolist()!r} is not allowed: norms must be a non-empty list of numbers > 0")
    if d < norms.size + 2:
        raise InputError(f"d={d!r} is not allowed: d must be >= K + 2 = {norms.size + 2}")
    spec = DataSpec(K=norms.size, Q=Q, d=d, n_test=0, tokens=tokens, vocab=2 * norms.size + 2)
    value, sign, pair = layout(spec, spec.q_per_value)
    rng = np.random.default_rng(seed)
    c = concepts(norms.size, d, concept_cos) * norms[:, None]
    g = lb * np.eye(1, d)[0] + sign[:, None] * c[value] + v * rng.standard_normal((value.size, d))
    w0 = rng.standard_normal((spec.vocab, d))
    return with_reference(jnp.asarray(g), value, sign, pair, jnp.asarray(w0), spec.n_pairs)


def token_indices(data: Dataset):
    """(w, l, group) numpy int arrays of a `Dataset`: chosen, rejected used tokens and value ids."""
    return np.asarray(data.chosen), np.asarray(data.rejected), np.asarray(data.value)


@functools.lru_cache(maxsize=8)
def _trainer(steps: int, stride: int, n_pairs: int, sizes: tuple[int, ...]):
    return jax.jit(make_trainer(TrainSpec(steps=steps, stride=stride), n_pairs, pair_sizes=sizes))


def train_means(data: Dataset, *, beta: float, eta: float, steps: int, stride: int = 1):
    """(t (C,), means (C, K)): exact GD, recorded every `stride` steps, mean margin per value.

    One compilation per (steps, stride, number of pairs, pair sizes); values must be 0..K−1."""
    n_pairs = data.n_tokens // 2
    sizes = tuple(int(c) for c in np.bincount(np.asarray(data.pair), minlength=n_pairs))
    traj = _trainer(steps, stride, n_pairs, sizes)(data, data, make_params(beta=beta, eta=eta, v=0.0))
    check_finite(traj)
    margins, value = np.asarray(traj.margins), np.asarray(data.value)
    K = int(value.max()) + 1
    return np.asarray(traj.t), np.stack([margins[:, value == k].mean(axis=1) for k in range(K)], axis=1)


def crossing_times(t, means, level):
    """(K,) first time each column of `means` reaches `level`, linearly interpolated between
    checkpoints (np.inf if never). t: (C,) increasing; means: (C, K)."""
    t, means = np.asarray(t, dtype=np.float64), np.asarray(means, dtype=np.float64)
    out = np.full(means.shape[1], np.inf)
    for k in range(means.shape[1]):
        above = np.nonzero(means[:, k] >= level)[0]
        if above.size == 0:
            continue
        j = above[0]
        if j == 0:
            out[k] = t[0]
            continue
        lo, hi = means[j - 1, k], means[j, k]
        out[k] = t[j - 1] + (level - lo) / (hi - lo) * (t[j] - t[j - 1])
    return out


def stable_step(data: Dataset, *, beta: float, horizon: float, accuracy: float = 0.1, max_steps: int = 20000):
    """(η, steps, stride) for GD to follow gradient flow up to `horizon`: η·(β²/N)·λ_max(C)/4 ≤ accuracy
    (the linearised flow's fastest rate; λ_max(C) = 2·σ_max(G)² for one token pair per sample), at
    most `max_steps` steps (η grows if needed), recorded at about 400 checkpoints."""
    g = np.asarray(data.g)
    lam = 2.0 * np.linalg.norm(g, 2) ** 2
    eta = max(4.0 * accuracy * g.shape[0] / (beta**2 * lam), horizon / max_steps)
    stride = max(1, int(np.ceil(horizon / eta / 400)))
    steps = int(np.ceil(horizon / eta / stride)) * stride
    return horizon / steps, steps, stride
