"""Baselines of the "im-li" suite: the same full-batch GD on the used rows, written the ways a
researcher would write it without this package (THEORY §1.1–1.2).

- `numpy_loop_dpo_gd`: a Python loop over samples (the naive baseline);
- `numpy_blocked_dpo_gd`: vectorised NumPy on the per-pair blocks, features or Gram path — the
  best NumPy we could write (batched BLAS products; no `np.add.at`, whose scatter is slower);
- `torch_blocked_dpo_gd`: the same two algorithms in PyTorch eager on the CPU (torch is imported
  lazily: `torch_available()` says whether it can run);
- `make_full_vocab_gd_step`: one GD step of the whole V × d head by autodiff (the paper's way).

Each returns the final margins (N,) in the samples' order, so the suite checks equal work against
the fast path. Samples are grouped by pair with `dpolab.sims.blocks.pair_blocks` (the sorting is
done once, outside the timed run, as a researcher would do it once per dataset).
"""
from __future__ import annotations

import importlib.util
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import expit

from dpolab.sims.blocks import PairBlocks
from dpolab.theory.losses import get_loss


def numpy_loop_dpo_gd(g, pair, sign, *, beta, eta, n_pairs, steps):
    """Full-batch DPO GD on the used rows with a Python loop over samples (the naive baseline).

    Per step, for each sample i: r_i = β s_i (ΔW_{a_i} − ΔW_{b_i})·g_i, w_i = σ(−r_i), and the
    gradient −(β/N) w_i s_i g_i is accumulated into row a_i (and its negative into b_i); then
    ΔW ← ΔW − η ∇. Tokens are in used-token space: a_p = 2p, b_p = 2p + 1.

    Args:
      g: (N, d) float64 features. pair: (N,) pair index p. sign: (N,) ±1.
      beta, eta: floats. n_pairs: P. steps: GD steps.
    Returns:
      ΔW (2P, d) after `steps` steps, and the list of per-step wall times (s).
    """
    g = np.asarray(g, dtype=np.float64)
    n, d = g.shape
    pair, sign = np.asarray(pair).tolist(), np.asarray(sign).tolist()
    delta_w = np.zeros((2 * n_pairs, d))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        grad = np.zeros_like(delta_w)
        for i in range(n):
            a, b, s = 2 * pair[i], 2 * pair[i] + 1, sign[i]
            r = beta * s * np.dot(delta_w[a] - delta_w[b], g[i])
            # σ(−r) without overflowing exp for large |r|
            w = 1.0 / (1.0 + math.exp(r)) if r < 0 else math.exp(-r) / (1.0 + math.exp(-r))
            coef = (beta / n) * w * s
            grad[a] -= coef * g[i]
            grad[b] += coef * g[i]
        delta_w -= eta * grad
        times.append(time.perf_counter() - start)
    return delta_w, times


def numpy_margins(g, pair, sign, delta_w, *, beta):
    """(N,) r_i = β s_i (ΔW_{2p_i} − ΔW_{2p_i+1})·g_i, vectorised (used only for the check)."""
    pair = np.asarray(pair)
    diff = delta_w[2 * pair] - delta_w[2 * pair + 1]
    return beta * np.asarray(sign) * np.einsum("nd,nd->n", np.asarray(g), diff)


def to_blocks(blocks: PairBlocks, g, sign):
    """NumPy (P, m, d) features and (P, m) signs by pair (zero in padded slots)."""
    g_b = np.where(blocks.mask[..., None], np.asarray(g)[blocks.index], 0.0)
    s_b = np.where(blocks.mask, np.asarray(sign, dtype=g_b.dtype)[blocks.index], 0.0)
    return g_b, s_b


def numpy_blocked_dpo_gd(g_b, s_b, mask, *, beta, eta, steps, path):
    """DPO GD in vectorised NumPy on per-pair blocks; returns the final blocked margins (P, m).

    path "features": per step r = β s ⊙ (G_p D_p) and D_p += (2ηβ/N) G_pᵀ(σ(−r) s) (batched
    matrix-vector products, D_p = ΔW_{a_p} − ΔW_{b_p}). path "gram": C_p = 2 s sᵀ ⊙ G_p G_pᵀ once,
    then r += (ηβ²/N) C_p σ(−r) per step (THEORY §1.2). mask: (P, m) real slots.
    """
    n = int(mask.sum())
    if path == "gram":
        cross = 2.0 * s_b[:, :, None] * s_b[:, None, :] * (g_b @ g_b.transpose(0, 2, 1))
        r = np.zeros(s_b.shape)
        for _ in range(steps):
            r = r + (eta * beta**2 / n) * (cross @ expit(-r)[..., None])[..., 0]
        return r
    diff = np.zeros((g_b.shape[0], g_b.shape[2]))
    for _ in range(steps):
        r = beta * s_b * (g_b @ diff[..., None])[..., 0]
        diff += (2.0 * eta * beta / n) * ((expit(-r) * s_b)[:, None, :] @ g_b)[:, 0, :]
    return beta * s_b * (g_b @ diff[..., None])[..., 0]


def torch_available() -> bool:
    """Whether PyTorch can be imported (it comes with the `llm` extra)."""
    return importlib.util.find_spec("torch") is not None


def torch_blocked_dpo_gd(g_b, s_b, mask, *, beta, eta, steps, path):
    """`numpy_blocked_dpo_gd` in PyTorch eager (CPU, float64 tensors from the same arrays)."""
    import torch

    g_t, s_t = torch.from_numpy(g_b), torch.from_numpy(s_b)
    n = int(mask.sum())
    with torch.no_grad():
        if path == "gram":
            cross = 2.0 * s_t[:, :, None] * s_t[:, None, :] * torch.bmm(g_t, g_t.transpose(1, 2))
            r = torch.zeros_like(s_t)
            for _ in range(steps):
                r = r + (eta * beta**2 / n) * torch.bmm(cross, torch.sigmoid(-r)[..., None])[..., 0]
            return r.numpy()
        diff = torch.zeros(g_t.shape[0], g_t.shape[2], dtype=g_t.dtype)
        for _ in range(steps):
            r = beta * s_t * torch.bmm(g_t, diff[..., None])[..., 0]
            diff += (2.0 * eta * beta / n) * torch.bmm((torch.sigmoid(-r) * s_t)[:, None, :], g_t)[:, 0, :]
        return (beta * s_t * torch.bmm(g_t, diff[..., None])[..., 0]).numpy()


def make_full_vocab_gd_step(*, beta, eta, loss="dpo"):
    """One GD step of the full V × d head on the log-softmax loss, reference log-probs cached.

    Returns `step(w, g, y_w, y_l, ref_diff) -> w'` (jitted): w (V, d), g (N, d), y_w, y_l (N,)
    vocabulary ids, ref_diff (N,) log π_0(y_w|x) − log π_0(y_l|x). Same objective as
    `dpolab.sims.reference.full_vocab_autodiff` without its per-step logging.
    """
    fn = get_loss(loss)

    def margins(w, g, y_w, y_l, ref_diff):
        logp = jax.nn.log_softmax(g @ w.T, axis=1)
        pick = lambda y: jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
        return beta * (pick(y_w) - pick(y_l) - ref_diff)

    def step(w, g, y_w, y_l, ref_diff):
        objective = lambda w: jnp.mean(fn.value(margins(w, g, y_w, y_l, ref_diff), 0.0))
        return w - eta * jax.grad(objective)(w)

    return jax.jit(step), jax.jit(margins)
