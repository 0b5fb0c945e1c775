"""Last-layer preference training, the fast exact path (THEORY §1.1–1.2).

Only the 2P rows of W that belong to some response pair ever move, so the state is ΔW restricted
to those rows (U × d, U = 2P). The training samples are held as P dense per-pair blocks
(`dpolab.sims.blocks`). On the "features" path each step computes the margins
r_i = β s_i (ΔW_{a_p} − ΔW_{b_p})·g_i by one batched product, loss weights w(r_i) = −f′(r_i), and
the gradient ∇_{ΔW_a} = −(β/N) Σ_{i∈p} w_i s_i g_i = −∇_{ΔW_b} by a dense per-block reduction (no
scatter). On the "gram" path (GD) it runs the exact margin recursion r ← r + (ηβ²/N) C w(r) on the
per-pair Gram blocks and rebuilds ΔW at checkpoints from the accumulated weights. Both record the
same trajectory. Log-probabilities are exact at checkpoints from the cached reference
log-partition. Time is a `lax.scan` over checkpoints with an inner scan over `stride` steps.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpolab.errors import InputError
from dpolab.sims.blocks import blocked, gram_blocks, pair_blocks, training_path
from dpolab.sims.config import DataSpec, SimParams, TrainSpec
from dpolab.sims.data import Dataset, pair_sizes, sample_dataset
from dpolab.theory.losses import get_loss


class Trajectory(NamedTuple):
    """Recorded at the C = steps/stride + 1 checkpoints n = 0, stride, ..., steps.

    t: (C,) time n·η. margins: (C, N) train margins. test_margins: (C, M) held-out margins.
    logp_chosen, logp_rejected: (C, N) log π_W(y_w|x), log π_W(y_l|x) (exact).
    loss, accuracy, test_loss, test_accuracy: (C,) mean loss and fraction with r > 0.
    dw_norm: (C,) ‖W − W_0‖_F. delta_w: (U, d) final ΔW of the used rows.
    nonfinite: (2,) int first (step, sample) with a non-finite train margin, or (−1, −1).
    """

    t: jnp.ndarray
    margins: jnp.ndarray
    test_margins: jnp.ndarray
    logp_chosen: jnp.ndarray
    logp_rejected: jnp.ndarray
    loss: jnp.ndarray
    accuracy: jnp.ndarray
    test_loss: jnp.ndarray
    test_accuracy: jnp.ndarray
    dw_norm: jnp.ndarray
    delta_w: jnp.ndarray
    nonfinite: jnp.ndarray


def pair_difference(delta_w):
    """(P, d) D_p = ΔW_{a_p} − ΔW_{b_p} from the (2P, d) used rows."""
    return delta_w[0::2] - delta_w[1::2]


def _take(a, idx):
    """(N,) a[i, idx_i] for a (N, U) and idx (N,)."""
    return jnp.take_along_axis(a, idx[:, None], axis=1)[:, 0]


def reward_margins(data: Dataset, delta_w, beta):
    """(N,) r_i = β (e_{y_w} − e_{y_l})ᵀ ΔW g_i (THEORY §1.1 identity; independent of W_0).

    From the logit changes G ΔWᵀ (N × 2P), the product `log_probs` also takes (XLA computes it once
    when both are in one program): one pass over the features, no N × d temporary."""
    logits = data.g @ delta_w.T
    return beta * (_take(logits, data.chosen) - _take(logits, data.rejected))


def log_probs(data: Dataset, delta_w):
    """(N,), (N,) exact log π_W(y_w|x), log π_W(y_l|x) via the cached reference log-partition."""
    logits = data.ref_logits + data.g @ delta_w.T
    lse = jax.nn.logsumexp(jnp.concatenate([data.ref_lse_rest[:, None], logits], axis=1), axis=1)
    take = lambda idx: _take(logits, idx)
    return take(data.chosen) - lse, take(data.rejected) - lse


def block_margins(g_blocks, sign_blocks, delta_w, beta):
    """(P, m) margins r_i = β s_i D_pᵀg_i of blocked samples, one dense product (0 when padded).

    Args:
      g_blocks: (P, m, d) features by pair. sign_blocks: (P, m) ±1, 0 in padded slots.
      delta_w: (2P, d) used rows. beta: β.
    """
    return beta * sign_blocks * jnp.einsum("pid,pd->pi", g_blocks, pair_difference(delta_w))


def pair_sums(g_blocks, coef_blocks):
    """(P, d) S_p = Σ_{i∈p} c_i g_i: the dense segmented reduction over each pair's block."""
    return jnp.einsum("pi,pid->pd", coef_blocks, g_blocks)


def used_rows_gradient(s, beta, n):
    """(2P, d) ∇_{ΔW} L from S_p = Σ_{i∈p} w_i s_i g_i (w_i = −f′(r_i)): rows a_p get −(β/N)S_p,
    rows b_p get +(β/N)S_p. n: N, the number of training samples."""
    grad_a = -(beta / n) * s
    return jnp.stack([grad_a, -grad_a], axis=1).reshape(2 * s.shape[0], -1)


def _optimizer(name):
    """Direction transform; the step size η is applied outside so that it can be vmapped."""
    return optax.identity() if name == "gd" else optax.scale_by_adam()


def _float32(tree):
    """Casts every floating leaf of a pytree to float32 (integer leaves unchanged)."""
    cast = lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree.map(cast, tree)


def make_trainer(train: TrainSpec, n_pairs: int, *, pair_sizes=None):
    """Factory: returns `run(train_data, test_data, params) -> Trajectory` (pure, jit/vmap-able).

    Args:
      train: static trainer settings (loss, optimizer, steps, stride, path, float32).
      n_pairs: P, the number of response-token pairs (the data's `ref_logits` has 2P columns).
      pair_sizes: P ints: the training samples are stored pair after pair, pair p having the next
        `pair_sizes[p]` (`dpolab.sims.data.pair_sizes(spec)` for `sample_dataset`'s data). May be
        omitted only when P = 1. It fixes the static blocks both paths train on
        (`dpolab.sims.blocks`); `training_path` picks the path.
    """
    loss = get_loss(train.loss)
    opt = _optimizer(train.optimizer)
    if pair_sizes is None and n_pairs != 1:
        raise InputError(f"pair_sizes=None is not allowed with n_pairs={n_pairs}: pair_sizes must "
                         "give the samples of each pair (dpolab.sims.data.pair_sizes)")
    if pair_sizes is not None and len(pair_sizes) != n_pairs:
        raise InputError(f"pair_sizes={tuple(pair_sizes)!r} is not allowed: pair_sizes must have "
                         f"n_pairs={n_pairs} entries")

    def summary(data, delta_w, params):
        r = reward_margins(data, delta_w, params.beta)
        return r, jnp.mean(loss.value(r, params.eps)), jnp.mean(r > 0)

    def run(data: Dataset, test: Dataset, params: SimParams) -> Trajectory:
        if train.float32:
            data, test, params = _float32(data), _float32(test), _float32(params)
        n, d = data.g.shape
        blocks = pair_blocks((n,) if pair_sizes is None else pair_sizes)
        if blocks.n_samples != n:
            raise InputError(f"pair_sizes={tuple(pair_sizes)!r} is not allowed: they sum to "
                             f"{blocks.n_samples}, the training data has N={n} samples")
        path = training_path(train, blocks, d)
        g_blocks = blocked(blocks, data.g)
        sign_blocks = blocked(blocks, data.sign.astype(data.g.dtype))
        mask, index = jnp.asarray(blocks.mask), jnp.asarray(blocks.index)

        if path == "gram":
            # state (r, A): blocked margins and accumulated η·w; ΔW_a = (β/N) Σ_i A_i s_i g_i
            cross = gram_blocks(g_blocks, sign_blocks)
            scale = params.eta * params.beta**2 / n

            def advance(state):
                r, acc = state
                w = jnp.where(mask, loss.weight(r, params.eps), 0.0)
                return (r + scale * jnp.einsum("pij,pj->pi", cross, w), acc + params.eta * w), r

            def delta_w_of(state):
                return -used_rows_gradient(pair_sums(g_blocks, state[1] * sign_blocks),
                                           params.beta, n)

            state0 = (jnp.zeros(blocks.mask.shape, data.g.dtype),) * 2
        else:
            def advance(state):
                delta_w, opt_state = state
                r = block_margins(g_blocks, sign_blocks, delta_w, params.beta)
                coef = loss.weight(r, params.eps) * sign_blocks
                grad = used_rows_gradient(pair_sums(g_blocks, coef), params.beta, n)
                direction, opt_state = opt.update(grad, opt_state)
                return (delta_w - params.eta * direction, opt_state), r

            delta_w_of = lambda state: state[0]  # noqa: E731
            zeros = jnp.zeros((2 * n_pairs, d), data.g.dtype)
            state0 = (zeros, opt.init(zeros))

        def step(carry, _):
            state, k, bad = carry
            state, r = advance(state)
            nonfinite = ~jnp.isfinite(r) & mask
            first_bad = jnp.stack([k, jnp.min(jnp.where(nonfinite, index, n))])
            bad = jnp.where((bad[0] < 0) & jnp.any(nonfinite), first_bad, bad)
            return (state, k + 1, bad), None

        def record(delta_w):
            r, l, acc = summary(data, delta_w, params)
            rt, lt, acct = summary(test, delta_w, params)
            lp_w, lp_l = log_probs(data, delta_w)
            return dict(margins=r, test_margins=rt, logp_chosen=lp_w, logp_rejected=lp_l,
                        loss=l, accuracy=acc, test_loss=lt, test_accuracy=acct,
                        dw_norm=jnp.linalg.norm(delta_w))

        def segment(carry, _):
            carry, _ = jax.lax.scan(step, carry, None, length=train.stride)
            state, k, bad = carry
            rec = record(delta_w_of(state))
            finite = jnp.isfinite(rec["margins"])  # the final checkpoint is never stepped from
            bad = jnp.where((bad[0] < 0) & ~jnp.all(finite), jnp.stack([k, jnp.argmin(finite)]), bad)
            return (state, k, bad), rec

        init = (state0, jnp.asarray(0), jnp.asarray([-1, -1]))
        carry, recs = jax.lax.scan(segment, init, None, length=train.n_checkpoints - 1)
        first = record(delta_w_of(state0))
        recs = {k: jnp.concatenate([first[k][None], recs[k]]) for k in first}
        t = params.eta * train.stride * jnp.arange(train.n_checkpoints)
        return Trajectory(t=t, delta_w=delta_w_of(carry[0]), nonfinite=carry[2], **recs)

    return run


def make_margin_simulation(data_spec: DataSpec, train: TrainSpec):
    """Factory: `simulate(key, params) -> Trajectory` that samples train/test data and trains.

    `jax.jit(jax.vmap(simulate))(keys, params)` runs seeds (and stacked parameters) at once.
    """
    run = make_trainer(train, data_spec.n_pairs, pair_sizes=pair_sizes(data_spec))

    def simulate(key, params: SimParams) -> Trajectory:
        data = sample_dataset(key, data_spec, params, split=0)
        test = sample_dataset(key, data_spec, params, split=1)
        return run(data, test, params)

    return simulate


def check_finite(traj: Trajectory) -> None:
    """Raises FloatingPointError naming the step and sample of the first non-finite margin."""
    bad = np.asarray(traj.nonfinite).reshape(-1, 2)
    for row, (step, sample) in enumerate(bad):
        if step >= 0:
            where = f" (run {row} of the batch)" if bad.shape[0] > 1 else ""
            raise FloatingPointError(
                f"non-finite reward margin at step {int(step)}, sample {int(sample)}{where}")


@functools.lru_cache(maxsize=64)
def batched_simulation(data_spec: DataSpec, train: TrainSpec):
    """`jit(vmap(simulate))` over seeds for one static setting, compiled once and cached.

    The returned function takes `(keys, params)`: keys (S,) PRNG keys, params a `SimParams` shared
    by every seed, and returns a `Trajectory` with a leading seed axis.
    """
    return jax.jit(jax.vmap(make_margin_simulation(data_spec, train), in_axes=(0, None)))


def seed_key(seed):
    """The mixture key of one seed: fold_in(key(0), seed)."""
    return jax.random.fold_in(jax.random.key(0), seed)


def run_seeds(data_spec: DataSpec, train: TrainSpec, params: SimParams, seeds) -> Trajectory:
    """Trains one run per seed (keys fold_in(key(0), seed)); raises on a non-finite margin."""
    keys = jax.vmap(seed_key)(jnp.asarray(seeds))
    traj = batched_simulation(data_spec, train)(keys, params)
    check_finite(traj)
    return traj
