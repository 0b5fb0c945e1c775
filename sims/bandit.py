"""Log-linear contextual bandit with noisy preferences, and projected fits of the DPO family
(THEORY §2, Chowdhury et al. 2024).

π_θ(a|s) ∝ exp(θᵀφ(s,a)) with ‖φ‖ ≤ L; reference π_sft = π_{θ_0}; true reward r* = ω*ᵀφ, so
the KL-regularised optimum is θ* = θ_0 + ω*/β. Pairs (a, a') are two distinct actions drawn from
π_sft (Gumbel top-2), labelled by Bradley–Terry with p = σ(r*(a) − r*(a')) and flipped
independently with probability ε. A fit minimises the mean pairwise loss of z = β(θ − θ_0)ᵀx over
the ball Θ_B = {‖θ‖ ≤ B}: damped projected Newton steps, then projected Nesterov steps (optax)
until the projected-gradient mapping vanishes.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpolab.errors import InputError
from dpolab.theory.losses import debias, debias_weight, get_loss, ipo, ipo_weight

FEATURES = ("sphere", "gaussian")
FIT_LOSSES = ("dpo", "cdpo", "rdpo", "ipo", "ripo")


def fit_loss(name):
    """(value, weight, curvature bound in z) of a fitting loss; "ripo" is debias(ipo)."""
    if name not in FIT_LOSSES:
        raise InputError(f"loss={name!r} is not allowed: loss must be one of {FIT_LOSSES}")
    if name == "ripo":
        return (lambda z, e: debias(ipo, z, e)), (lambda z, e: debias_weight(ipo_weight, z, e)), 2.0
    loss = get_loss(name)
    return loss.value, loss.weight, (2.0 if name == "ipo" else 0.25)


@dataclasses.dataclass(frozen=True)
class BanditSpec:
    """Static shape of a bandit experiment.

    Attributes:
      S: number of contexts. A: actions per context (≥ 2). d: feature dimension.
      n: preference pairs per dataset. features: "sphere" (‖φ‖ = L) or "gaussian" (N(0, L²/d·I)
        clipped to ‖φ‖ ≤ L). loss: one of FIT_LOSSES. steps: the most projected-gradient steps
        after the Newton phase (used only when the optimum is on the boundary or not reached).
    """

    S: int = 16
    A: int = 6
    d: int = 4
    n: int = 1000
    features: str = "sphere"
    loss: str = "rdpo"
    steps: int = 400

    def __post_init__(self):
        for field, lo in (("S", 1), ("A", 2), ("d", 1), ("n", 1), ("steps", 0)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise InputError(f"{field}={value!r} is not allowed: {field} must be an integer >= {lo}")
        if self.features not in FEATURES:
            raise InputError(f"features={self.features!r} is not allowed: features must be one of {FEATURES}")
        fit_loss(self.loss)


class BanditParams(NamedTuple):
    """Dynamic parameters: beta (> 0), eps (flip rate in [0, 1/2)), L (feature norm bound), B
    (radius of Θ_B; inf = unconstrained), sft_scale (‖θ_0‖: larger skews π_sft, worse coverage),
    reward_scale (‖ω*‖: small = weak preferences, p ≈ 1/2)."""

    beta: jnp.ndarray
    eps: jnp.ndarray
    L: jnp.ndarray
    B: jnp.ndarray
    sft_scale: jnp.ndarray
    reward_scale: jnp.ndarray


def make_bandit_params(*, beta=1.0, eps=0.0, L=1.0, B=np.inf, sft_scale=0.5, reward_scale=1.0):
    """Validated `BanditParams` (scalars or arrays); θ* must lie inside Θ_B."""
    checks = {"beta": lambda x: x > 0, "eps": lambda x: (x >= 0) & (x < 0.5), "L": lambda x: x > 0,
              "B": lambda x: x > 0, "sft_scale": lambda x: x >= 0, "reward_scale": lambda x: x >= 0}
    allowed = {"beta": "> 0", "eps": "in [0, 1/2)", "L": "> 0", "B": "> 0 (inf: unconstrained)",
               "sft_scale": ">= 0", "reward_scale": ">= 0"}
    values = dict(beta=beta, eps=eps, L=L, B=B, sft_scale=sft_scale, reward_scale=reward_scale)
    for field, value in values.items():
        arr = np.asarray(value, dtype=float)
        if np.any(np.isnan(arr)) or not np.all(checks[field](arr)):
            raise InputError(f"{field}={value!r} is not allowed: {field} must be {allowed[field]}")
    worst = np.asarray(sft_scale) + np.asarray(reward_scale) / np.asarray(beta)
    if np.any(worst > np.asarray(B)):
        raise InputError(f"B={B!r} is not allowed: B must be >= ‖θ_0‖ + ‖ω*‖/β = {np.max(worst):.4g} "
                         "so that θ* lies in Θ_B")
    return BanditParams(**{k: jnp.asarray(v, dtype=float) for k, v in values.items()})


class BanditInstance(NamedTuple):
    """phi: (S, A, d) features. theta0: (d,) reference parameter. omega: (d,) true reward ω*."""

    phi: jnp.ndarray
    theta0: jnp.ndarray
    omega: jnp.ndarray

    def theta_star(self, beta):
        return self.theta0 + self.omega / beta


def _unit(key, shape):
    z = jax.random.normal(key, shape)
    return z / jnp.linalg.norm(z, axis=-1, keepdims=True)


def make_instance(key, spec: BanditSpec, params: BanditParams) -> BanditInstance:
    """Features, θ_0 and ω* from a key (directions random, norms from params)."""
    k_phi, k_theta, k_omega = jax.random.split(key, 3)
    if spec.features == "sphere":
        phi = params.L * _unit(k_phi, (spec.S, spec.A, spec.d))
    else:
        phi = params.L * jax.random.normal(k_phi, (spec.S, spec.A, spec.d)) / jnp.sqrt(spec.d)
        norm = jnp.linalg.norm(phi, axis=-1, keepdims=True)
        phi = phi * jnp.minimum(1.0, params.L / norm)
    return BanditInstance(phi=phi, theta0=params.sft_scale * _unit(k_theta, (spec.d,)),
                          omega=params.reward_scale * _unit(k_omega, (spec.d,)))


class PreferenceData(NamedTuple):
    """x: (n, d) φ(s, a_w) − φ(s, a_l) in the observed orientation. p: (n,) clean probability that
    the observed winner is preferred. flipped: (n,) bool. state: (n,) context index. pair: (n,)
    the observed (s, a_w, a_l) numbered as `pair_index` numbers it, so that x is
    `pair_rows(inst)[pair]`; None for data not drawn from an instance (the fit then reads x)."""

    x: jnp.ndarray
    p: jnp.ndarray
    flipped: jnp.ndarray
    state: jnp.ndarray
    pair: jnp.ndarray | None = None


def pair_index(s, a, b, A):
    """Row of the ordered pair (s, a, b), a ≠ b, in `pair_rows`: (s·A + a)·(A − 1) + b − [b > a]."""
    return (s * A + a) * (A - 1) + b - (b > a)


def pair_rows(inst: BanditInstance) -> jnp.ndarray:
    """(S·A·(A − 1), d) φ(s, a) − φ(s, b) for every ordered pair of distinct actions."""
    A = inst.phi.shape[1]
    a, b = np.nonzero(~np.eye(A, dtype=bool))  # row-major: a, then b ≠ a increasing
    return (inst.phi[:, a] - inst.phi[:, b]).reshape(-1, inst.phi.shape[-1])


def grouped(spec: "BanditSpec") -> bool:
    """The fit's path rule: read the data as counts over the S·A·(A − 1) ordered pairs (the
    sufficient statistic: a row's loss depends on its pair only) when there are fewer of them
    than rows, else read the n rows. Same objective, summed in another order (agreement to rounding is
    tested); the counts are shared-row products that stay in cache, the rows are not."""
    return spec.S * spec.A * (spec.A - 1) < spec.n


def sample_pairs(key, spec: BanditSpec, inst: BanditInstance, params: BanditParams) -> PreferenceData:
    """n pairs: s uniform, two distinct actions from π_sft(·|s), BT label, flip with prob ε."""
    k_s, k_a, k_y, k_f = jax.random.split(key, 4)
    state = jax.random.randint(k_s, (spec.n,), 0, spec.S)
    logits = inst.phi[state] @ inst.theta0
    gumbel = logits + jax.random.gumbel(k_a, logits.shape)
    # the two largest perturbed logits (Gumbel top-2: two draws without replacement); two argmaxes,
    # not a sort of every row: the same indices (first among ties, as a stable sort), 3× cheaper
    a = jnp.argmax(gumbel, axis=1)
    b = jnp.argmax(jnp.where(jnp.arange(spec.A) == a[:, None], -jnp.inf, gumbel), axis=1)
    diff = inst.phi[state, a] - inst.phi[state, b]
    p_a = jax.nn.sigmoid(diff @ inst.omega)
    a_wins = jax.random.uniform(k_y, (spec.n,)) < p_a
    flipped = jax.random.uniform(k_f, (spec.n,)) < params.eps
    observed_a = a_wins ^ flipped
    sign = jnp.where(observed_a, 1.0, -1.0)
    winner, loser = jnp.where(observed_a, a, b), jnp.where(observed_a, b, a)
    return PreferenceData(x=sign[:, None] * diff, p=jnp.where(observed_a, p_a, 1 - p_a),
                          flipped=flipped, state=state, pair=pair_index(state, winner, loser, spec.A))


class FitResult(NamedTuple):
    """theta: (d,) fitted parameter. loss: final empirical loss. grad_mapping: ‖G(θ)‖, the
    projected-gradient mapping norm (0 at a constrained optimum). polish_steps: projected-gradient
    steps used after the Newton phase. diverged: the iterate went non-finite, or it did not
    converge while ‖θ − θ_0‖ kept growing (the loss is unbounded below on Θ_B = R^d).
    on_boundary: ‖θ‖ ≥ B(1 − 1e-9)."""

    theta: jnp.ndarray
    loss: jnp.ndarray
    grad_mapping: jnp.ndarray
    polish_steps: jnp.ndarray
    diverged: jnp.ndarray
    on_boundary: jnp.ndarray


def project(theta, radius):
    """Euclidean projection onto {‖θ‖ ≤ radius} (radius may be inf)."""
    norm = jnp.linalg.norm(theta)
    return theta * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-300))


NEWTON_STEPS = 50
MAX_MARGIN_STEP = 10.0


def make_fit(spec: BanditSpec, *, tol=1e-10):
    """Factory: `fit(data, inst, params, n_active=spec.n) -> FitResult` (pure, vmappable).

    Only the first `n_active` pairs are used (a dynamic count, so one compilation serves every
    sample size up to spec.n). Phase 1: damped Newton steps projected onto Θ_B (no margin moves by
    more than MAX_MARGIN_STEP per step; backtracking until the objective decreases; at most
    NEWTON_STEPS, stopping when a step no longer lowers it, or after the full step taken once the
    Newton decrement gᵀH⁻¹g ≈ 2(f − f*) is below what f resolves, 2e-13·(1 + |f|), where the
    line search could no longer tell steps apart): the exact optimum in a few steps when it is
    interior. Each point is visited by one pass over the rows (objective, gradient and Hessian
    together; a trial the line search accepts is not evaluated again). Phase 2: projected Nesterov
    steps of size 1/ℓ_s (ℓ_s = β²·c·λ_max(XᵀX/n), c the loss's curvature bound) until the
    projected-gradient mapping is < tol·(1 + ‖θ − θ_0‖) or spec.steps steps were taken (optimum
    on the boundary, or divergence).
    """
    value, weight, curvature = fit_loss(spec.loss)
    second = jax.grad(lambda z, e: -weight(z, e))  # d²loss/dz²

    def fit(data: PreferenceData, inst: BanditInstance, params: BanditParams, n_active=None):
        n = spec.n if n_active is None else n_active
        # each row's share of the mean loss: 1/n for the first n rows (or its pair's count / n)
        x, share = data.x, (jnp.arange(data.x.shape[0]) < n) / n
        # Σ_k share_k·c_k·x_k x_kᵀ: as a product with the rows' outer products when the rows are
        # the pairs (shared by every fit of a vmapped batch), else as Xᵀ diag(share·c) X
        second_moment = lambda c: (x.T * (share * c)) @ x
        if data.pair is not None and grouped(spec):
            x = pair_rows(inst)
            share = jax.ops.segment_sum(share, data.pair, num_segments=x.shape[0])
            outer = x[:, :, None] * x[:, None, :]
            second_moment = lambda c: jnp.tensordot(share * c, outer, axes=1)
        beta, eps = params.beta, params.eps
        margins = lambda theta: beta * (x @ (theta - inst.theta0))

        def value_grad(theta):
            """One pass over the rows: the objective and its gradient at θ."""
            z = margins(theta)
            return jnp.sum(share * value(z, eps)), -beta * ((share * weight(z, eps)) @ x)

        def at(theta):
            """One pass over the rows: the objective, its gradient and its Hessian at θ."""
            z = margins(theta)
            curv = jax.vmap(second, in_axes=(0, None))(z, eps)
            hess = beta**2 * second_moment(curv) + 1e-12 * jnp.eye(x.shape[1])
            return jnp.sum(share * value(z, eps)), -beta * ((share * weight(z, eps)) @ x), hess

        def newton_step(carry):
            theta, f, g, hess, _, k = carry
            direction = jnp.linalg.solve(hess, g)
            # Newton decrement λ² = gᵀH⁻¹g ≈ 2(f − f*): once it is below what f can resolve, the
            # line search cannot tell steps apart; the full step is then the last one needed
            final = g @ direction <= 2e-13 * (1 + jnp.abs(f))
            # trust region: no margin moves by more than MAX_MARGIN_STEP in one Newton step
            largest = beta * jnp.max(jnp.abs(x @ direction) * (share > 0))
            direction = direction * jnp.minimum(1.0, MAX_MARGIN_STEP / jnp.maximum(largest, 1e-300))

            def shorter(c):  # backtrack until the projected step lowers the objective
                t = c[0] / 2
                trial = project(theta - t * direction, params.B)
                return (t, trial, *at(trial))

            first = project(theta - direction, params.B)
            t, trial, f_trial, g_trial, h_trial = jax.lax.while_loop(
                lambda c: ~final & (c[2] >= f) & (c[0] > 2.0**-12), shorter, (1.0, first, *at(first)))
            moved = final | (f_trial < f)
            keep = lambda new, old: jnp.where(moved, new, old)
            return (keep(trial, theta), keep(f_trial, f), keep(g_trial, g), keep(h_trial, hess),
                    ~final & moved & (f - f_trial > 1e-15 * (1 + jnp.abs(f))), k + 1)

        def newton_continue(carry):
            return carry[4] & (carry[5] < NEWTON_STEPS)

        smooth = beta**2 * curvature * jnp.linalg.eigvalsh(second_moment(1.0))[-1]
        lr = 1.0 / jnp.maximum(smooth, 1e-300)
        opt = optax.sgd(1.0, momentum=0.9, nesterov=True)

        def mapping(theta, g):  # g: the gradient at θ
            return jnp.linalg.norm(theta - project(theta - lr * g, params.B)) / lr

        def not_done(carry):
            theta, _, g, _, k = carry
            small = mapping(theta, g) < tol * (1 + jnp.linalg.norm(theta - inst.theta0))
            return (k < spec.steps) & ~small & jnp.all(jnp.isfinite(theta))

        def polish(carry):
            theta, _, g, state, k = carry
            updates, state = opt.update(lr * g, state)
            theta = project(optax.apply_updates(theta, updates), params.B)
            return (theta, *value_grad(theta), state, k + 1)

        start = project(inst.theta0, params.B)
        after_newton, f, g = jax.lax.while_loop(newton_continue, newton_step, (start, *at(start), True, 0))[:3]
        theta, f, g, _, k = jax.lax.while_loop(not_done, polish, (after_newton, f, g, opt.init(after_newton), 0))
        gmap = mapping(theta, g)
        growing = jnp.linalg.norm(theta - inst.theta0) > 1.01 * jnp.linalg.norm(after_newton - inst.theta0)
        converged = gmap < tol * (1 + jnp.linalg.norm(theta - inst.theta0))
        diverged = ~jnp.all(jnp.isfinite(theta)) | (~converged & growing)
        return FitResult(theta=theta, loss=f, grad_mapping=gmap, polish_steps=k,
                         diverged=diverged,
                         on_boundary=jnp.linalg.norm(theta) >= params.B * (1 - 1e-9))

    return fit


@functools.lru_cache(maxsize=64)
def bandit_experiment(spec: BanditSpec):
    """`jit(vmap(experiment))` over seeds: (instance, data_keys (S,), params, n_active) →
    (FitResult, PreferenceData), each with a leading seed axis. Compiled once per spec."""
    fit = make_fit(spec)

    def one(inst, data_key, params, n_active):
        data = sample_pairs(data_key, spec, inst, params)
        return fit(data, inst, params, n_active), data

    return jax.jit(jax.vmap(one, in_axes=(None, 0, None, None)))


def run_bandit(spec: BanditSpec, params: BanditParams, seeds, *, n_active=None, instance=None,
               instance_seed=0):
    """Fits one dataset per seed (the first `n_active` of spec.n pairs) on a fixed instance.

    Args:
      instance: a `BanditInstance`; default `make_instance(key(instance_seed), spec, params)`.
    Returns:
      (fits, data, instance); fits and data carry a leading seed axis.
    """
    if instance is None:
        instance = make_instance(jax.random.key(instance_seed), spec, params)
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(1), s))(jnp.asarray(seeds))
    n = spec.n if n_active is None else n_active
    if not 1 <= n <= spec.n:
        raise InputError(f"n_active={n_active!r} is not allowed: n_active must be in [1, {spec.n}]")
    fits, data = bandit_experiment(spec)(instance, keys, params, jnp.asarray(n))
    return fits, data, instance
