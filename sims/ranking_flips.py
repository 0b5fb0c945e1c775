"""DPO^γ training of a log-linear policy from its reference: which mis-ranked pairs flip, and when
(THEORY §3, Chen et al. 2024).

π_θ(y|s) = softmax_y(φ(s, y)ᵀθ) over the A responses of context s; training starts at the
reference, θ(0) = θ_0. Pair i = (s_i, y_w, y_l) carries a vote share α_i that y_w ≻ y_l and
contributes the soft-label DPO^γ loss
    α_i ℓ(z_i) + (1 − α_i) ℓ(−z_i),   z_i = β(u_i(θ) − γ R_ref,i),
with u_i(θ) = log π_θ(y_w|s_i) − log π_θ(y_l|s_i) and R_ref,i = u_i(θ_0) (γ = 1 is DPO, γ < 1 the
attenuated reference of [CR] §4). Gradient descent with step η on the mean over pairs; `lax.scan`
over checkpoints every `stride` steps records every pair's u_i and its DPO^γ loss on the preferred
orientation, ℓ(z_i) — the quantity [CR] Theorem 4.1 compares with −log σ(βγc_i), c_i = −R_ref,i.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dpolab.errors import InputError
from dpolab.theory.losses import logistic_loss


@dataclasses.dataclass(frozen=True)
class FlipSpec:
    """Static settings: `steps` gradient steps, a checkpoint every `stride` (steps % stride == 0)."""

    steps: int = 400
    stride: int = 20

    def __post_init__(self):
        for field in ("steps", "stride"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{field}={value!r} is not allowed: {field} must be an integer >= 1")
        if self.steps % self.stride:
            raise InputError(f"stride={self.stride!r} is not allowed: stride must divide steps={self.steps}")

    @property
    def n_checkpoints(self) -> int:
        return self.steps // self.stride + 1


class FlipParams(NamedTuple):
    """Dynamic parameters (scalars or stacked arrays for vmap): beta (> 0), gamma (the reference's
    weight: 1 DPO, 0 no reference), eta (step size > 0)."""

    beta: jnp.ndarray
    gamma: jnp.ndarray
    eta: jnp.ndarray


class FlipPairs(NamedTuple):
    """Training pairs. phi: (S, A, d) features. state: (n,) context of each pair. chosen, rejected:
    (n,) response indices of y_w and y_l. alpha: (n,) vote share of y_w ≻ y_l (clamped away from
    0 and 1 by the caller, e.g. `dpolab.theory.ranking.clamp_alpha`)."""

    phi: jnp.ndarray
    state: jnp.ndarray
    chosen: jnp.ndarray
    rejected: jnp.ndarray
    alpha: jnp.ndarray


class FlipTrajectory(NamedTuple):
    """At the C = steps/stride + 1 checkpoints k = 0, stride, ..., steps: log_ratio (C, n) u_i and
    loss (C, n) ℓ(β(u_i − γR_ref,i)); log_ref_ratio (n,) R_ref,i = u_i(θ_0)."""

    log_ratio: jnp.ndarray
    loss: jnp.ndarray
    log_ref_ratio: jnp.ndarray


def log_ratio(theta, pairs: FlipPairs):
    """(n,) u_i = log π_θ(y_w|s_i) − log π_θ(y_l|s_i) from the log-softmax over each context."""
    logp = jax.nn.log_softmax(pairs.phi[pairs.state] @ theta, axis=-1)
    pick = lambda idx: jnp.take_along_axis(logp, idx[:, None], axis=1)[:, 0]  # noqa: E731
    return pick(pairs.chosen) - pick(pairs.rejected)


def make_flip_training(spec: FlipSpec):
    """Factory: `train(pairs, theta0, params) -> FlipTrajectory` (pure; vmap it over params).

    Args of `train`: pairs a `FlipPairs`; theta0 (d,) the reference parameter; params `FlipParams`.
    """

    def train(pairs: FlipPairs, theta0, params: FlipParams) -> FlipTrajectory:
        r_ref = log_ratio(theta0, pairs)

        def margins(theta):
            return params.beta * (log_ratio(theta, pairs) - params.gamma * r_ref)

        def objective(theta):
            z = margins(theta)
            return jnp.mean(pairs.alpha * logistic_loss(z) + (1 - pairs.alpha) * logistic_loss(-z))

        grad = jax.grad(objective)

        def segment(theta, _):
            theta = jax.lax.fori_loop(0, spec.stride, lambda _, t: t - params.eta * grad(t), theta)
            return theta, record(theta)

        def record(theta):
            return log_ratio(theta, pairs), logistic_loss(margins(theta))

        _, (u, loss) = jax.lax.scan(segment, theta0, None, length=spec.n_checkpoints - 1)
        u0, loss0 = record(theta0)
        return FlipTrajectory(log_ratio=jnp.concatenate([u0[None], u]),
                              loss=jnp.concatenate([loss0[None], loss]), log_ref_ratio=r_ref)

    return train
