"""Exact last-layer training with arbitrary single-token pairs, for likelihood displacement.

`dpolab.sims.train` trains pairs of tokens that never overlap (pair p owns tokens 2p, 2p+1); the
displacement study also needs responses that share tokens across values. Here sample i has any
used tokens (y_{w,i}, y_{l,i}) in 0..U−1, the state is ΔW of the U used rows (only they move,
THEORY §1.1), and log π(u|x) is exact over the full vocabulary from the cached reference
log-partition of the unused tokens. Time is a `lax.scan` over checkpoints with an inner scan.

Token structures of K values (value k's clusters C_{k,+} prefer a_k ≻ b_k, C_{k,−} the reverse):
  one-pair: a_k = 0, b_k = 1 for every k (the Yes/No persona task; U = 2);
  distinct: a_k = 2k, b_k = 2k + 1 (no token shared; U = 2K);
  chain:    a_k = k, b_k = k + 1 (value k's rejected token is value k+1's chosen one; U = K + 1);
  star:     a_k = 0, b_k = k + 1 (one token every value prefers in its + cluster; U = K + 1).
Features, concepts, noise, reference head and label flips are those of `dpolab.sims.data`.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpolab.errors import InputError
from dpolab.sims.config import DataSpec, SimParams
from dpolab.sims.data import FLIP_STREAM, concept_vectors, features, layout, reference_head, split_keys
from dpolab.theory.losses import get_loss

STRUCTURES = ("one-pair", "distinct", "chain", "star")


def token_pairs(structure: str, K: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(a, b, U): value k's + cluster prefers token a[k] over b[k]; U used tokens."""
    k = np.arange(K)
    table = {"one-pair": (0 * k, 0 * k + 1, 2), "distinct": (2 * k, 2 * k + 1, 2 * K),
             "chain": (k, k + 1, K + 1), "star": (0 * k, k + 1, K + 1)}
    if structure not in table:
        raise InputError(f"structure={structure!r} is not allowed: structure must be one of {STRUCTURES}")
    return table[structure]


class TokenData(NamedTuple):
    """N training samples with arbitrary used tokens (a pytree).

    g: (N, d) features. chosen, rejected: (N,) used-token indices of y_w, y_l. value: (N,) value k.
    flipped: (N,) bool, the label was flipped (y_w is the cluster's dispreferred token).
    ref_logits: (N, U) reference logits (W_0 g)_u of the used tokens. ref_lse_rest: (N,)
    log Σ_{y unused} exp((W_0 g)_y), which training never changes.
    """

    g: jnp.ndarray
    chosen: jnp.ndarray
    rejected: jnp.ndarray
    value: jnp.ndarray
    flipped: jnp.ndarray
    ref_logits: jnp.ndarray
    ref_lse_rest: jnp.ndarray


def sample_token_data(key, spec: DataSpec, params: SimParams, structure: str) -> TokenData:
    """Training data of `spec` (K, Q, d, vocab) with the token structure's responses.

    Features l_b·e_1 + sign·c_k + v·noise (concept cosine ρ = params.concept_cos needs d ≥ K + 2);
    each label flips with probability params.flip (y_w and y_l swapped, features unchanged).
    """
    a, b, n_used = token_pairs(structure, spec.K)
    if spec.vocab < n_used + 1:
        raise InputError(f"vocab={spec.vocab} is not allowed: vocab must be > U={n_used} used tokens")
    k_concept, k_head, k_noise = split_keys(key, 0)
    value, sign, _ = layout(spec, spec.q_per_value)
    concepts = concept_vectors(k_concept, spec, params.delta, params.concept_cos)
    g = features(k_noise, spec, params, concepts, jnp.asarray(value), jnp.asarray(sign))
    flipped = jax.random.bernoulli(jax.random.fold_in(k_noise, FLIP_STREAM), params.flip, sign.shape)
    label = jnp.where(flipped, -sign, sign)
    chosen = jnp.where(label > 0, a[value], b[value])
    rejected = jnp.where(label > 0, b[value], a[value])
    logits = g @ reference_head(k_head, spec, params.ref_scale).T
    return TokenData(g=g, chosen=chosen, rejected=rejected, value=jnp.asarray(value), flipped=flipped,
                     ref_logits=logits[:, :n_used], ref_lse_rest=jax.nn.logsumexp(logits[:, n_used:], axis=1))


class TokenTrajectory(NamedTuple):
    """At the C = steps/stride + 1 checkpoints: t (C,) time n·η; margins (C, N);
    logp (C, N, U) exact log π_W(u|x_j) of every used token."""

    t: jnp.ndarray
    margins: jnp.ndarray
    logp: jnp.ndarray


def used_logp(data: TokenData, delta_w):
    """(N, U) exact log π_W(u|x) from the moved used rows and the cached rest of the partition."""
    logits = data.ref_logits + data.g @ delta_w.T
    lse = jax.nn.logsumexp(jnp.concatenate([data.ref_lse_rest[:, None], logits], axis=1), axis=1)
    return logits - lse[:, None]


def margins(data: TokenData, delta_w, beta):
    """(N,) r_i = β (e_{y_w} − e_{y_l})ᵀ ΔW g_i."""
    change = data.g @ delta_w.T
    take = lambda idx: jnp.take_along_axis(change, idx[:, None], axis=1)[:, 0]  # noqa: E731
    return beta * (take(data.chosen) - take(data.rejected))


def make_token_trainer(*, n_tokens: int, steps: int, stride: int = 1, loss: str = "dpo",
                       optimizer: str = "gd"):
    """Factory: `run(data, beta, eta, eps) -> TokenTrajectory` (pure; jit/vmap over the floats).

    Args:
        n_tokens: U used tokens. steps, stride: GD/Adam steps and the recording stride.
        loss: a name of `dpolab.theory.losses.LOSSES`. optimizer: "gd" or "adam".
    """
    weight_fn = get_loss(loss).weight
    if steps < 0 or stride < 1 or steps % stride:
        raise InputError(f"steps={steps}, stride={stride} are not allowed: stride >= 1 must divide steps >= 0")
    if optimizer not in ("gd", "adam"):
        raise InputError(f"optimizer={optimizer!r} is not allowed: optimizer must be 'gd' or 'adam'")
    opt = optax.identity() if optimizer == "gd" else optax.scale_by_adam()

    def run(data: TokenData, beta, eta, eps=0.0) -> TokenTrajectory:
        n, d = data.g.shape
        sign = jax.nn.one_hot(data.chosen, n_tokens) - jax.nn.one_hot(data.rejected, n_tokens)

        def step(state, _):
            delta_w, opt_state = state
            w = weight_fn(margins(data, delta_w, beta), eps)
            grad = -(beta / n) * (w[:, None] * sign).T @ data.g
            direction, opt_state = opt.update(grad, opt_state)
            return (delta_w - eta * direction, opt_state), None

        def segment(state, _):
            state, _ = jax.lax.scan(step, state, None, length=stride)
            return state, (margins(data, state[0], beta), used_logp(data, state[0]))

        zeros = jnp.zeros((n_tokens, d), data.g.dtype)
        _, (r, lp) = jax.lax.scan(segment, (zeros, opt.init(zeros)), None, length=steps // stride)
        r = jnp.concatenate([margins(data, zeros, beta)[None], r])
        lp = jnp.concatenate([used_logp(data, zeros)[None], lp])
        return TokenTrajectory(t=eta * stride * jnp.arange(steps // stride + 1), margins=r, logp=lp)

    return run
