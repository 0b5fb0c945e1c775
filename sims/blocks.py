"""Samples grouped by response pair: the static block layout, the training-path rule and the
precision-keyed margin tolerance (THEORY §1.1–1.2).

Pair p owns the used tokens a_p = 2p, b_p = 2p + 1 and no other pair uses them, so in the GD
recursion r ← r + (ηβ²/N) C w(r) the cross term C_ij = (e_{w,i} − e_{l,i})ᵀ(e_{w,j} − e_{l,j}) g_iᵀg_j
is 2 s_i s_j g_iᵀg_j for two samples of the same pair and 0 otherwise (no shared token): C is block
diagonal, one n_p × n_p block per pair. The fast trainer therefore stores the training samples as
P blocks of m = max_p n_p slots (padded slots have sign 0 and so never contribute), and trains either

- on the features ("features" path): per step, margins β s (G_p D_p) and per-pair sums
  S_p = G_pᵀ(w s)_p, two dense passes over the N·d features, no scatter; or
- on the Gram blocks ("gram" path, GD only): the exact margin recursion on the P blocks C_p, which
  reads Σ_p n_p² numbers per step instead of N·d, after a one-off Σ_p n_p² d multiply-add set-up.

`training_path` picks the cheaper one per configuration by the words each reads (the documented
rule below). Both are exact and checked against each other and against full-vocabulary autodiff.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from dpolab.errors import InputError

#: Multiply-adds the CPU does in a dense matrix product in the time it streams one word (8 bytes)
#: from memory: the Gram set-up (a GEMM) is charged its multiply-adds ÷ this in `training_path`.
#: Measured on the bench host (AMD EPYC, 2 cores): ~31 G multiply-add/s in float64 GEMM against
#: ~22 GB/s = 2.8 G words/s streaming, i.e. ~11; 8 is the rounded-down, Gram-pessimistic value.
GEMM_MULADDS_PER_WORD = 8.0
#: The constant c of `margin_tolerance` (see there).
TOLERANCE_C = 10.0


class PairBlocks(NamedTuple):
    """Static (NumPy) layout of N samples grouped by pair into P blocks of m slots.

    index: (P, m) int sample index of each slot (0 in a padded slot). mask: (P, m) bool, True for
    a real sample. contiguous: samples are already stored block after block with equal sizes,
    so `g.reshape(P, m, d)` is the blocked view (no copy).
    """

    index: np.ndarray
    mask: np.ndarray
    contiguous: bool

    @property
    def n_samples(self) -> int:
        return int(self.mask.sum())


def pair_blocks(pair_sizes) -> PairBlocks:
    """Blocks for samples stored pair after pair: pair p has the next `pair_sizes[p]` samples.

    Args:
      pair_sizes: P non-negative ints, the samples of each pair (`dpolab.sims.data.pair_sizes`).
    Returns:
      A `PairBlocks`.
    """
    sizes = np.asarray(pair_sizes, dtype=np.int64)
    if sizes.ndim != 1 or sizes.size == 0 or np.any(sizes < 0):
        raise InputError(f"pair_sizes={tuple(pair_sizes)!r} is not allowed: pair_sizes must be "
                         "a non-empty tuple of integers >= 0")
    m = max(int(sizes.max()), 1)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    slot = np.arange(m)[None, :]
    mask = slot < sizes[:, None]
    index = np.where(mask, starts[:, None] + slot, 0)
    return PairBlocks(index=index, mask=mask, contiguous=bool(np.all(sizes == m)))


def blocked(blocks: PairBlocks, x):
    """(P, m, ...) view of a per-sample array x (N, ...); padded slots are zero."""
    if blocks.contiguous:
        return x.reshape(blocks.mask.shape + x.shape[1:])
    mask = jnp.asarray(blocks.mask).reshape(blocks.mask.shape + (1,) * (x.ndim - 1))
    return jnp.where(mask, x[jnp.asarray(blocks.index)], 0)


def gram_blocks(g_blocks, sign_blocks):
    """(P, m, m) per-pair cross terms C_p[i, j] = 2 s_i s_j g_iᵀg_j (0 for padded slots).

    Args:
      g_blocks: (P, m, d) blocked features. sign_blocks: (P, m) ±1, 0 in padded slots.
    References:
      [IL] Lemma 4.1; THEORY §1.2 (preference-sharing factor 2 / −2 within a pair, 0 across).
    """
    gram = jnp.einsum("pid,pjd->pij", g_blocks, g_blocks)
    return 2.0 * sign_blocks[:, :, None] * sign_blocks[:, None, :] * gram


def path_costs(*, steps: int, n_checkpoints: int, blocks: PairBlocks, d: int) -> dict:
    """Words (8-byte numbers in float64) each path reads over a whole run: the path rule's input.

    features: 2 passes over the P·m·d blocked features per step (margins, then per-pair sums).
    gram: P·m² per step, plus the set-up (P·m²·d multiply-adds ÷ `GEMM_MULADDS_PER_WORD`), plus
    one pass over the features per checkpoint to rebuild ΔW from the accumulated weights.
    """
    p, m = blocks.mask.shape
    return dict(features=float(steps) * 2 * p * m * d,
                gram=float(steps) * p * m * m + p * m * m * d / GEMM_MULADDS_PER_WORD
                + float(n_checkpoints) * p * m * d)


def training_path(train, blocks: PairBlocks, d: int) -> str:
    """"features" or "gram" for one configuration (`TrainSpec` `train`, feature dimension d).

    The rule: `train.path` when it is not "auto"; else "features" for any optimiser but GD (the
    Gram recursion is exact for plain GD only); else the path whose `path_costs` is smaller.
    """
    if train.path != "auto":
        return train.path
    if train.optimizer != "gd":
        return "features"
    cost = path_costs(steps=train.steps, n_checkpoints=train.n_checkpoints, blocks=blocks, d=d)
    return "gram" if cost["gram"] < cost["features"] else "features"


def margin_tolerance(dtype, *, steps: int, d: int, scale: float) -> float:
    """Tolerance on a margin trajectory computed in `dtype` against the same run in float64.

    tol = c · eps(dtype) · √d · (steps + 1) · max(1, scale), c = `TOLERANCE_C`: each step adds a
    length-d dot product's rounding (~eps·√d relative, random-walk accumulation) to margins of
    size `scale` (the largest |r| of the float64 run); the features' own rounding to `dtype` is
    the steps = 0 term. For float64 this is ~1e-13 on the tests' sizes, for float32 ~1e-4 · scale.
    """
    eps = float(jnp.finfo(dtype).eps)
    return TOLERANCE_C * eps * float(np.sqrt(d)) * (steps + 1) * max(1.0, float(scale))
