"""Last-layer DPO on a real model's hidden states (THEORY §1.8), in JAX.

The features are the frozen final hidden states g(x) of persona statements; value k is a persona,
C_{k,+} its statements answered " Yes" (" Yes" ≻ " No") and C_{k,−} the others. Every persona uses
the same two tokens (one pair, Z = K): the paper's regime. The trainable rows are the LM head's
" Yes" and " No" rows, initialised at the reference; exact log-probabilities use the cached
reference logits and log-partition of the other 262,142 tokens.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dpolab.sims.config import SimParams, TrainSpec, make_params
from dpolab.sims.data import Dataset
from dpolab.sims.train import Trajectory, make_trainer

#: The paper's last-layer protocol: Adam, lr 1e-3, β = 0.01, full batch, 100 steps.
PAPER_PROTOCOL = dict(optimizer="adam", eta=1e-3, beta=0.01, steps=100)


class PersonaFeatures(NamedTuple):
    """One persona's statements: g (n, d) hidden states; label (n,) +1 when " Yes" matches the
    behaviour; ref_logp_yes, ref_logp_no, ref_lse, ref_lse_rest (n,) reference quantities."""

    g: np.ndarray
    label: np.ndarray
    ref_logp_yes: np.ndarray
    ref_logp_no: np.ndarray
    ref_lse: np.ndarray
    ref_lse_rest: np.ndarray


def split_indices(n: int, seed: int, train_frac: float = 0.9):
    """A per-persona random split (train indices, test indices), deterministic in the seed."""
    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(train_frac * n))
    return np.sort(order[:cut]), np.sort(order[cut:])


def to_dataset(features: list[PersonaFeatures], rows: list[np.ndarray]) -> Dataset:
    """Stacks the selected rows of each persona into a one-pair `Dataset` (float64).

    Tokens: used-token 0 is " Yes", 1 is " No"; sign +1 means " Yes" ≻ " No" for that statement.
    """
    parts = [(f, r, k) for k, (f, r) in enumerate(zip(features, rows))]
    cat = lambda fn: np.concatenate([fn(f, r, k) for f, r, k in parts])
    ref_logits = cat(lambda f, r, k: np.stack([f.ref_logp_yes[r] + f.ref_lse[r],
                                               f.ref_logp_no[r] + f.ref_lse[r]], axis=1))
    return Dataset(
        g=jnp.asarray(cat(lambda f, r, k: f.g[r]), dtype=jnp.float64),
        pair=jnp.zeros(sum(len(r) for r in rows), dtype=jnp.int32),
        sign=jnp.asarray(cat(lambda f, r, k: f.label[r]), dtype=jnp.int32),
        value=jnp.asarray(cat(lambda f, r, k: np.full(len(r), k)), dtype=jnp.int32),
        ref_logits=jnp.asarray(ref_logits, dtype=jnp.float64),
        ref_lse_rest=jnp.asarray(cat(lambda f, r, k: f.ref_lse_rest[r]), dtype=jnp.float64),
    )


def train_split(features: list[PersonaFeatures], *, seed: int, optimizer: str, eta: float,
                beta: float, steps: int, loss: str = "dpo", train_frac: float = 0.9,
                stride: int = 1) -> tuple[Trajectory, Dataset, Dataset]:
    """Trains the Yes/No rows on a 90/10 split of every persona; returns the trajectory."""
    splits = [split_indices(len(f.label), seed * 1009 + k, train_frac) for k, f in enumerate(features)]
    train = to_dataset(features, [s[0] for s in splits])
    test = to_dataset(features, [s[1] for s in splits])
    run = _jitted_trainer(TrainSpec(loss=loss, optimizer=optimizer, steps=steps, stride=stride))
    params: SimParams = make_params(beta=beta, eta=eta, v=0.0)
    return run(train, test, params), train, test


def per_value_means(traj: Trajectory, data: Dataset, k_values: int, test: bool = False):
    """(C, K) mean margin per value at each checkpoint."""
    margins = np.asarray(traj.test_margins if test else traj.margins)
    value = np.asarray(data.value)
    return np.stack([margins[:, value == k].mean(axis=1) for k in range(k_values)], axis=1)


@functools.lru_cache(maxsize=16)
def _jitted_trainer(spec: TrainSpec):
    """One compiled one-pair trainer per static setting (reused across split seeds and K sets)."""
    return jax.jit(make_trainer(spec, 1))
