"""Last-layer preference training, the fast exact path (THEORY §1.1–1.2).

Only the 2P rows of W that belong to some response pair ever move, so the state is ΔW restricted
to those rows (U × d, U = 2P). Each step reads the features once: margins
r_i = β s_i (ΔW_{a_p} − ΔW_{b_p})·g_i, loss weights w(r_i) = −f′(r_i), and the gradient
∇_{ΔW_a} = −(β/N) Σ_{i∈p} w_i s_i g_i = −∇_{ΔW_b}. Log-probabilities are exact at checkpoints from
the cached reference log-partition. Time is a `lax.scan` over checkpoints with an inner scan over
`stride` steps.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpolab.sims.config import DataSpec, SimParams, TrainSpec
from dpolab.sims.data import Dataset, sample_dataset
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


def reward_margins(data: Dataset, delta_w, beta):
    """(N,) r_i = β (e_{y_w} − e_{y_l})ᵀ ΔW g_i (THEORY §1.1 identity; independent of W_0)."""
    d_rows = pair_difference(delta_w)[data.pair]
    return beta * data.sign * jnp.sum(data.g * d_rows, axis=1)


def log_probs(data: Dataset, delta_w):
    """(N,), (N,) exact log π_W(y_w|x), log π_W(y_l|x) via the cached reference log-partition."""
    logits = data.ref_logits + data.g @ delta_w.T
    lse = jax.nn.logsumexp(jnp.concatenate([data.ref_lse_rest[:, None], logits], axis=1), axis=1)
    take = lambda idx: jnp.take_along_axis(logits, idx[:, None], axis=1)[:, 0]
    return take(data.chosen) - lse, take(data.rejected) - lse


def used_rows_gradient(data: Dataset, weights, beta, n_pairs):
    """(2P, d) ∇_{ΔW} L for loss weights w_i = −f′(r_i): rows a_p get −(β/N)S_p, b_p get +."""
    n = data.g.shape[0]
    s = jax.ops.segment_sum((weights * data.sign)[:, None] * data.g, data.pair,
                            num_segments=n_pairs)
    grad_a = -(beta / n) * s
    return jnp.stack([grad_a, -grad_a], axis=1).reshape(2 * n_pairs, -1)


def _optimizer(name):
    """Direction transform; the step size η is applied outside so that it can be vmapped."""
    return optax.identity() if name == "gd" else optax.scale_by_adam()


def make_trainer(train: TrainSpec, n_pairs: int):
    """Factory: returns `run(train_data, test_data, params) -> Trajectory` (pure, jit/vmap-able).

    Args:
      train: static trainer settings (loss, optimizer, steps, stride).
      n_pairs: P, the number of response-token pairs (the data's `ref_logits` has 2P columns).
    """
    loss = get_loss(train.loss)
    opt = _optimizer(train.optimizer)

    def summary(data, delta_w, params):
        r = reward_margins(data, delta_w, params.beta)
        return r, jnp.mean(loss.value(r, params.eps)), jnp.mean(r > 0)

    def run(data: Dataset, test: Dataset, params: SimParams) -> Trajectory:
        delta_w = jnp.zeros((2 * n_pairs, data.g.shape[1]), data.g.dtype)

        def step(carry, _):
            delta_w, opt_state, n, bad = carry
            r = reward_margins(data, delta_w, params.beta)
            finite = jnp.isfinite(r)
            first_bad = jnp.stack([n, jnp.argmin(finite)])
            bad = jnp.where((bad[0] < 0) & ~jnp.all(finite), first_bad, bad)
            grad = used_rows_gradient(data, loss.weight(r, params.eps), params.beta, n_pairs)
            direction, opt_state = opt.update(grad, opt_state)
            return (delta_w - params.eta * direction, opt_state, n + 1, bad), None

        def record(delta_w):
            r, l, acc = summary(data, delta_w, params)
            rt, lt, acct = summary(test, delta_w, params)
            lp_w, lp_l = log_probs(data, delta_w)
            return dict(margins=r, test_margins=rt, logp_chosen=lp_w, logp_rejected=lp_l,
                        loss=l, accuracy=acc, test_loss=lt, test_accuracy=acct,
                        dw_norm=jnp.linalg.norm(delta_w))

        def segment(carry, _):
            carry, _ = jax.lax.scan(step, carry, None, length=train.stride)
            rec = record(carry[0])
            delta_w, opt_state, n, bad = carry
            finite = jnp.isfinite(rec["margins"])  # the final checkpoint is never stepped from
            bad = jnp.where((bad[0] < 0) & ~jnp.all(finite), jnp.stack([n, jnp.argmin(finite)]), bad)
            return (delta_w, opt_state, n, bad), rec

        init = (delta_w, opt.init(delta_w), jnp.asarray(0), jnp.asarray([-1, -1]))
        carry, recs = jax.lax.scan(segment, init, None, length=train.n_checkpoints - 1)
        first = record(delta_w)
        recs = {k: jnp.concatenate([first[k][None], recs[k]]) for k in first}
        t = params.eta * train.stride * jnp.arange(train.n_checkpoints)
        return Trajectory(t=t, delta_w=carry[0], nonfinite=carry[3], **recs)

    return run


def make_margin_simulation(data_spec: DataSpec, train: TrainSpec):
    """Factory: `simulate(key, params) -> Trajectory` that samples train/test data and trains.

    `jax.jit(jax.vmap(simulate))(keys, params)` runs seeds (and stacked parameters) at once.
    """
    run = make_trainer(train, data_spec.n_pairs)

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
