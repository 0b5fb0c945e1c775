"""Exact-gradient (population) DPO on the tabular bandit under three pair samplers (Shi, Zhou & Du,
ICLR 2025; the closed forms are in `dpolab.theory.samplers`).

The instance is the bandit of `dpolab.sims.bandit` (`BanditInstance`) with one-hot features
φ(x, y) = e_{x·A+y} ∈ R^{S·A}: the log-linear policy is then the tabular softmax π_θ(y|x) ∝
exp(θ_{x,y}), θ_0 = θ_ref, the true reward is r*(x, y) = φᵀω and θ* = θ_0 + ω/β (`theta_star`).
Each step evaluates the population DPO loss under the sampler's measure W(x, y, y') on ordered
pairs (labels drawn by Bradley–Terry from r*, so the loss is exact, not sampled),

    L_W(θ) = Σ_{x,y,y'} W(x,y,y') [p ℓ(z) + (1 − p) ℓ(−z)],  z = β(u_y − u_y'),  u = Φ(θ − θ_0),
    p = σ(r*_y − r*_y'),  ℓ = the `dpo` loss −log σ(z),

holds W fixed (sampling is not differentiated, as in online DPO) and takes θ ← θ − η ∇L_W(θ)
(autodiff). Samplers (the index `SAMPLERS.index(name)` is dynamic: one program serves all three):

- "uniform": y, y' i.i.d. uniform, x uniform: W = 1/(S·A²); step η = params.eta.
- "mix-r": per prompt the mixture α_x·Unif(A×A) + (1 − α_x)·π⁺_x ⊗ π⁻_x, π^± ∝ exp(±r*),
  α_x = A²/(A² + Z⁺_x Z⁻_x), prompts drawn ∝ A² + Z⁺_x Z⁻_x; step η = N/(β²A), N = Σ_x (A² + Z⁺_x Z⁻_x)
  (times params.step_scale).
- "mix-p": the same mixture built from the current implicit reward r_θ = β(θ − θ_0) in place of r*
  (π^± ∝ (π_θ/π_ref)^{±β}), re-built at every step; step N_θ/(β²A) (times params.step_scale).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dpolab.errors import InputError
from dpolab.sims.bandit import BanditInstance
from dpolab.theory.losses import dpo

SAMPLERS = ("uniform", "mix-r", "mix-p")


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """Static shape: S prompts, A actions per prompt (≥ 2), `steps` gradient steps."""

    S: int = 3
    A: int = 4
    steps: int = 200

    def __post_init__(self):
        for field, lo in (("S", 1), ("A", 2), ("steps", 1)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise InputError(f"{field}={value!r} is not allowed: {field} must be an integer >= {lo}")


class SamplerParams(NamedTuple):
    """Dynamic parameters: sampler (index into SAMPLERS), beta (> 0), eta (the uniform sampler's
    step), step_scale (multiplies the mixed samplers' Newton step N/(β²A))."""

    sampler: jnp.ndarray
    beta: jnp.ndarray
    eta: jnp.ndarray
    step_scale: jnp.ndarray


def make_sampler_params(*, sampler="uniform", beta=1.0, eta=1.0, step_scale=1.0) -> SamplerParams:
    """Validated `SamplerParams` (a sampler name; scalars)."""
    if sampler not in SAMPLERS:
        raise InputError(f"sampler={sampler!r} is not allowed: sampler must be one of {SAMPLERS}")
    for field, value in (("beta", beta), ("eta", eta), ("step_scale", step_scale)):
        if not (np.isfinite(value) and value > 0):
            raise InputError(f"{field}={value!r} is not allowed: {field} must be a finite number > 0")
    return SamplerParams(jnp.asarray(SAMPLERS.index(sampler)), *(jnp.asarray(v, dtype=float)
                                                                 for v in (beta, eta, step_scale)))


def tabular_instance(key, spec: SamplerSpec, *, ref_scale=0.5, reward_scale=1.0) -> BanditInstance:
    """One-hot features (S, A, S·A); θ_0 = θ_ref ~ ref_scale·N(0, I); ω = r* ~ reward_scale·N(0, I)."""
    if not (ref_scale >= 0 and reward_scale >= 0):
        raise InputError(f"ref_scale={ref_scale!r}, reward_scale={reward_scale!r} are not allowed: both must be >= 0")
    d = spec.S * spec.A
    k_ref, k_rew = jax.random.split(key)
    return BanditInstance(phi=jnp.eye(d).reshape(spec.S, spec.A, d),
                          theta0=ref_scale * jax.random.normal(k_ref, (d,)),
                          omega=reward_scale * jax.random.normal(k_rew, (d,)))


def mixture_pair_probs(reward):
    """(W, N): the mixed sampler's probabilities W (S, A, A) of (x, y, y') and its normaliser N,
    built literally as prompt ∝ A² + Z⁺Z⁻, then α·Unif(A×A) + (1 − α)·π⁺ ⊗ π⁻ from reward (S, A)."""
    A = reward.shape[-1]
    plus = jax.nn.softmax(reward, axis=-1)
    minus = jax.nn.softmax(-reward, axis=-1)
    zz = jnp.exp(jax.nn.logsumexp(reward, axis=-1) + jax.nn.logsumexp(-reward, axis=-1))  # Z⁺Z⁻
    alpha = A**2 / (A**2 + zz)
    per_prompt = alpha[:, None, None] / A**2 + (1 - alpha)[:, None, None] * plus[:, :, None] * minus[:, None, :]
    total = jnp.sum(A**2 + zz)
    return ((A**2 + zz) / total)[:, None, None] * per_prompt, total


def population_loss(theta, W, inst: BanditInstance, beta):
    """L_W(θ): the exact DPO loss under pair measure W (S, A, A) with Bradley–Terry labels from r*."""
    u = inst.phi @ (theta - inst.theta0)  # (S, A)
    r = inst.phi @ inst.omega
    z = beta * (u[:, :, None] - u[:, None, :])
    p = jax.nn.sigmoid(r[:, :, None] - r[:, None, :])
    return jnp.sum(W * (p * dpo(z) + (1 - p) * dpo(-z)))


def sampler_step(theta, inst: BanditInstance, params: SamplerParams):
    """One exact-gradient step θ − η ∇L_W(θ) under the sampler of `params` (W held fixed)."""
    S, A, _ = inst.phi.shape
    beta = params.beta
    uniform = jnp.full((S, A, A), 1.0 / (S * A**2))
    w_r, n_r = mixture_pair_probs(inst.phi @ inst.omega)
    w_p, n_p = mixture_pair_probs(beta * (inst.phi @ (theta - inst.theta0)))
    W = jnp.select([params.sampler == 0, params.sampler == 1], [uniform, w_r], w_p)
    newton = jnp.where(params.sampler == 1, n_r, n_p) / (beta**2 * A) * params.step_scale
    eta = jnp.where(params.sampler == 0, params.eta, newton)
    W = jax.lax.stop_gradient(W)
    return theta - eta * jax.grad(population_loss)(theta, W, inst, beta)


@functools.lru_cache(maxsize=16)
def sampler_run(spec: SamplerSpec):
    """`jit(vmap(run))` over a leading axis of instances and params: (inst, params) → θ trajectory
    (batch, steps + 1, S·A) from θ_0 = θ_ref. Compiled once per spec."""

    def run(inst, params):
        def body(theta, _):
            nxt = sampler_step(theta, inst, params)
            return nxt, nxt

        _, traj = jax.lax.scan(body, inst.theta0, None, length=spec.steps)
        return jnp.concatenate([inst.theta0[None], traj])

    return jax.jit(jax.vmap(run))


def centred_error(traj, inst: BanditInstance, beta, A):
    """‖θ_n − θ*‖ per prompt centred (the policy ignores a per-prompt shift): (…, steps + 1, S·A)
    errors e_n and their norms."""
    star = np.asarray(inst.theta0) + np.asarray(inst.omega) / np.asarray(beta, dtype=float)[..., None]
    err = np.asarray(traj) - star[..., None, :]
    shaped = err.reshape(*err.shape[:-1], -1, A)
    centred = (shaped - shaped.mean(-1, keepdims=True)).reshape(err.shape)
    return centred, np.linalg.norm(centred, axis=-1)
