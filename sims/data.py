"""Synthetic value-mixture preference data (THEORY §1.3), deterministic from a PRNG key.

Value k is a pair of Gaussian clusters C_{k,±} with means l_b·e_1 ± c_k and covariance
v²·diag(spectrum) (isotropic: spectrum = 1). Response tokens are numbered in "used-token space":
pair p uses tokens a_p = 2p and b_p = 2p + 1; C_{k,+} prefers a over b, C_{k,-} the reverse.
The reference head W_0 (V × d) only matters for log-probabilities: margins never depend on it.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dpolab.errors import InputError
from dpolab.sims.config import DataSpec, SimParams


class Dataset(NamedTuple):
    """Preference pairs with frozen features (a pytree; N samples, P pairs, U = 2P tokens).

    g: (N, d) features g(x). pair: (N,) int pair index p. sign: (N,) ±1, +1 when
    (y_w, y_l) = (a_p, b_p). value: (N,) int value index k (−1 for none).
    ref_logits: (N, U) reference logits (W_0 g)_u of the used tokens.
    ref_lse_rest: (N,) log Σ_{y unused} exp((W_0 g)_y), the cached reference log-partition part
    that training never changes (THEORY §1.1).
    """

    g: jnp.ndarray
    pair: jnp.ndarray
    sign: jnp.ndarray
    value: jnp.ndarray
    ref_logits: jnp.ndarray
    ref_lse_rest: jnp.ndarray

    @property
    def n_tokens(self) -> int:
        return self.ref_logits.shape[-1]

    @property
    def chosen(self) -> jnp.ndarray:
        """(N,) used-token index of y_w."""
        return 2 * self.pair + (self.sign < 0)

    @property
    def rejected(self) -> jnp.ndarray:
        """(N,) used-token index of y_l."""
        return 2 * self.pair + (self.sign > 0)


def layout(spec: DataSpec, per_cluster: tuple[int, ...]):
    """Static (value, sign, pair) arrays for clusters of the given sizes, cluster by cluster."""
    value, sign = [], []
    for k, q in enumerate(per_cluster):
        value += [k] * (2 * q)
        sign += [1] * q + [-1] * q
    value = np.asarray(value, dtype=np.int32)
    if spec.tokens == "distinct":
        pair = value
    elif spec.tokens == "yes_no":
        pair = np.zeros_like(value)
    else:
        pair = value // spec.Z
    return value, np.asarray(sign, dtype=np.int32), pair.astype(np.int32)


def pair_sizes(spec: DataSpec, per_cluster=None) -> tuple[int, ...]:
    """(P,) training samples of each pair, for `layout`'s order (pair after pair, since the pair
    index value // Z never decreases along the values): the trainer's static `pair_sizes`.

    Args:
      spec: static data shape. per_cluster: samples per cluster of each value (default Q).
    """
    per_cluster = spec.q_per_value if per_cluster is None else tuple(per_cluster)
    pair = layout(spec, per_cluster)[2]
    return tuple(int(c) for c in np.bincount(pair, minlength=spec.n_pairs))


def concept_vectors(key, spec: DataSpec, delta, concept_cos=0.0) -> jnp.ndarray:
    """(K, d) unit concept vectors, all ⟂ e_1.

    With ρ = concept_cos = 0: ⟨c_k, e_{k+2}⟩ = 1 − δ²/8 (THEORY §1.5; δ = 0 gives the orthonormal
    c_k = e_{k+2}). With ρ > 0: c'_k = √(1−ρ)·c_k + √ρ·e_{K+2}, a direction shared by every value,
    so that ⟨c'_i, c'_j⟩ = ρ exactly for δ = 0 (approximately for δ > 0); needs d ≥ K + 2, which the
    caller checks (the sweep's im-li simulation does).
    """
    K, d = spec.K, spec.d
    base = jnp.eye(K, d, k=1)
    u = jax.random.normal(key, (K, d)).at[:, 0].set(0.0)
    u = u * (1.0 - base)
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    cos = 1.0 - delta**2 / 8.0
    c = cos * base + jnp.sqrt(jnp.maximum(1.0 - cos**2, 0.0)) * u
    shared = jnp.eye(1, d, k=K + 1)
    return jnp.sqrt(1.0 - concept_cos) * c + jnp.sqrt(concept_cos) * shared


def low_rank_spectrum(d: int, rank: int, share: float) -> tuple[float, ...]:
    """Per-coordinate noise variances (relative, mean 1) of a rank-`rank` spike carrying a fraction
    `share` of the total variance, on `rank` coordinates spread evenly over all d (the bias e_1 and
    concept coordinates included); the other coordinates share the rest equally.

    Args:
      d: dimension. rank: number of spiked coordinates, 1 <= rank < d. share: in (0, 1).
    Returns:
      d variances summing to d (the isotropic total, so v keeps its meaning as the average scale).
    """
    if not 1 <= rank < d:
        raise InputError(f"noise_rank={rank!r} is not allowed: noise_rank must be in [1, d={d})")
    if not 0.0 < share < 1.0:
        raise InputError(f"noise_share={share!r} is not allowed: noise_share must be in (0, 1)")
    spike = np.unique(np.round(np.linspace(0, d - 1, rank)).astype(int))
    spec = np.full(d, (1.0 - share) * d / (d - len(spike)))
    spec[spike] = share * d / len(spike)
    return tuple(float(x) for x in spec)


def reference_head(key, spec: DataSpec, ref_scale) -> jnp.ndarray:
    """(V, d) reference unembedding W_0 with i.i.d. N(0, ref_scale²) entries."""
    return ref_scale * jax.random.normal(key, (spec.vocab, spec.d))


def features(key, spec: DataSpec, params: SimParams, concepts, value, sign) -> jnp.ndarray:
    """(n, d) features l_b·e_1 + sign·c_value + v·noise for static value/sign arrays."""
    n = value.shape[0]
    noise = jax.random.normal(key, (n, spec.d))
    if spec.noise_spectrum is not None:
        noise = noise * jnp.sqrt(jnp.asarray(spec.noise_spectrum))
    mean = params.lb * jnp.eye(1, spec.d)[0] + sign[:, None] * concepts[value]
    return mean + params.v * noise


def with_reference(g, value, sign, pair, w0, n_pairs) -> Dataset:
    """Builds a `Dataset`, caching reference logits of used tokens and the rest's log-partition."""
    logits = g @ w0.T
    used = 2 * n_pairs
    return Dataset(
        g=g, pair=jnp.asarray(pair), sign=jnp.asarray(sign), value=jnp.asarray(value),
        ref_logits=logits[:, :used],
        ref_lse_rest=jax.nn.logsumexp(logits[:, used:], axis=1),
    )


#: fold_in index (on the split's noise key) of the training-label flips.
FLIP_STREAM = 7919


def split_keys(key, split: int):
    """Key for one split: concepts and head come from `key`, the noise from fold_in(key, split)."""
    k_concept, k_head, _ = jax.random.split(key, 3)
    k_noise = jax.random.fold_in(key, split)
    return k_concept, k_head, k_noise


def sample_dataset(key, spec: DataSpec, params: SimParams, split: int = 0,
                   per_cluster=None) -> Dataset:
    """The training set (split 0), test set (split 1) or any fresh split of the same mixture.

    Args:
      key: PRNG key of the mixture (concepts and W_0 derive from it; the noise from the split).
      spec: static data shape. params: dynamic parameters (v, l_b, δ, ρ, ref_scale; flip on the
        training split).
      split: 0 = train, 1 = held-out test, >= 2 = further fresh samples (Monte-Carlo risk).
      per_cluster: samples per cluster for each value; default Q per value (train) or n_test.
    Returns:
      A `Dataset`.
    """
    if per_cluster is None:
        per_cluster = spec.q_per_value if split == 0 else (spec.n_test,) * spec.K
    k_concept, k_head, k_noise = split_keys(key, split)
    value, sign, pair = layout(spec, tuple(per_cluster))
    concepts = concept_vectors(k_concept, spec, params.delta, params.concept_cos)
    g = features(k_noise, spec, params, concepts, jnp.asarray(value), jnp.asarray(sign))
    label = jnp.asarray(sign)
    # training labels (split 0) flip with probability params.flip; `split` may be traced
    # (dpolab.sims.risk.monte_carlo_risk jits over it), so no Python `if` on it
    flipped = jax.random.bernoulli(jax.random.fold_in(k_noise, FLIP_STREAM), params.flip,
                                   label.shape)
    label = jnp.where(flipped & (jnp.asarray(split) == 0), -label, label)
    return with_reference(g, value, label, pair, reference_head(k_head, spec, params.ref_scale),
                          spec.n_pairs)
