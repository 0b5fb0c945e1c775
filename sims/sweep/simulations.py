"""Simulations a sweep can run: their parameters, static/dynamic split, batch function, metrics.

Each simulation maps one grid point (a dict of parameters) to a *static* signature (what fixes
shapes and compilation) and *dynamic* arrays, and provides `batch(static)`: a pure function of
keys (P, S) and stacked dynamic parameters (P,) returning per-(point, seed) metrics (P, S). A
non-finite or diverged run is flagged in the metrics, never raised, so one bad grid point does not
stop a sweep.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dpolab.errors import InputError
from dpolab.sims import bandit
from dpolab.sims.config import DataSpec, SimParams, TrainSpec, make_params
from dpolab.sims.data import low_rank_spectrum, pair_sizes, sample_dataset
from dpolab.sims.train import make_trainer
from dpolab.theory import im_li, rdpo

#: Trace counter per simulation (a test checks a sweep compiles once per static signature).
TRACES: dict[str, int] = {}


@dataclasses.dataclass(frozen=True)
class Param:
    kind: type
    default: Any
    static: bool


@dataclasses.dataclass(frozen=True)
class Simulation:
    name: str
    params: dict[str, Param]
    static: Callable[[dict], Any]          # point -> hashable static signature (validates)
    dynamic: Callable[[dict], dict]        # point -> dict of floats (validated)
    batch: Callable[[Any], Callable]       # static -> f(keys (P,S), dyn {name: (P,)}) -> metrics
    bounds: Callable[[dict], dict]         # point -> closed-form values (host)
    resolved: Callable[[dict], dict]       # point with defaults derived from others filled in
    metrics: tuple[str, ...]


# ---- Im & Li margin dynamics -----------------------------------------------------------------

IM_LI_PARAMS = {
    "K": Param(int, 4, True), "Q": Param(int, 50, True), "d": Param(int, None, True),
    "n_test": Param(int, 50, True), "tokens": Param(str, "distinct", True), "Z": Param(int, 1, True),
    "vocab": Param(int, 64, True), "loss": Param(str, "dpo", True), "optimizer": Param(str, "gd", True),
    "steps": Param(int, 50, True), "checkpoints": Param(int, 1, True),
    "unseen": Param(int, 0, True), "q_last": Param(int, None, True),
    "noise_rank": Param(int, 0, True), "noise_share": Param(float, 0.9, True),
    "beta": Param(float, 1.0, False), "eta": Param(float, None, False), "t_mult": Param(float, 1.0, False),
    "v": Param(float, None, False), "lb": Param(float, 0.5, False), "eps": Param(float, 0.0, False),
    "delta": Param(float, 0.0, False), "concept_cos": Param(float, 0.0, False),
    "flip": Param(float, 0.0, False),
}
"""K values are trained; `unseen` more values (own concept directions; their own new tokens when
tokens="distinct", the shared pair when "yes_no") appear only in the test set. `q_last`: Q of the
last trained value (default Q: balanced). `noise_rank` > 0: anisotropic noise, a rank-`noise_rank`
spike carrying `noise_share` of the variance (`dpolab.sims.data.low_rank_spectrum`). `checkpoints`: how
many equal intervals of the run are recorded (the sandwich metric uses them). η defaults to
t_mult·τ_1/steps (the run ends at t_mult·τ_1)."""


def _im_li_static(p):
    K, d = p["K"], p["d"] or im_li.default_d(p["Q"])
    total = K + p["unseen"]
    if p["unseen"] < 0:
        raise InputError(f"unseen={p['unseen']!r} is not allowed: unseen must be an integer >= 0")
    spectrum = None
    if p["noise_rank"]:
        spectrum = low_rank_spectrum(d, p["noise_rank"], p["noise_share"])
    q = (p["Q"],) * (K - 1) + (p["q_last"] or p["Q"],) + (1,) * p["unseen"]
    spec = DataSpec(K=total, Q=q, d=d, n_test=p["n_test"], tokens=p["tokens"], Z=p["Z"],
                    vocab=p["vocab"], noise_spectrum=spectrum)
    steps = max(p["steps"], 1)
    if p["checkpoints"] < 1 or steps % p["checkpoints"]:
        raise InputError(f"checkpoints={p['checkpoints']!r} is not allowed: checkpoints must be a "
                         f"positive divisor of steps={steps}")
    train = TrainSpec(loss=p["loss"], optimizer=p["optimizer"], steps=p["steps"],
                      stride=steps // p["checkpoints"])
    return spec, train, K


def _im_li_dynamic(p):
    tau_1 = im_li.tau_1(K=p["K"], beta=p["beta"])
    eta = p["eta"] if p["eta"] is not None else p["t_mult"] * tau_1 / max(p["steps"], 1)
    v = p["v"] if p["v"] is not None else im_li.default_v(p["Q"])
    params = make_params(beta=p["beta"], eta=eta, v=v, lb=p["lb"], eps=p["eps"], delta=p["delta"],
                         concept_cos=p["concept_cos"], flip=p["flip"])
    d = p["d"] or im_li.default_d(p["Q"])
    if p["concept_cos"] > 0 and d < p["K"] + p["unseen"] + 2:
        raise InputError(f"concept_cos={p['concept_cos']!r} is not allowed with d={d}: a shared "
                         "concept direction needs d >= K + unseen + 2")
    return {k: float(getattr(params, k)) for k in _IM_LI_DYNAMIC} | {"tau_1": tau_1}


_IM_LI_DYNAMIC = ("beta", "eta", "eps", "v", "lb", "delta", "concept_cos", "flip")


def _value_means(x, value, n_values):
    """(n_values,) mean of x over the samples of each value (NaN for a value with none)."""
    total = jax.ops.segment_sum(x, value, num_segments=n_values)
    count = jax.ops.segment_sum(jnp.ones_like(x), value, num_segments=n_values)
    return total / count


def _im_li_batch(static):
    spec, train, K = static
    train_counts = spec.q_per_value[:K] + (0,) * (spec.K - K)
    run = make_trainer(train, spec.n_pairs, pair_sizes=pair_sizes(spec, train_counts))
    seen_mask = np.arange(spec.K) < K

    def one(key, dyn):
        TRACES["im-li"] = TRACES.get("im-li", 0) + 1  # runs once per trace, not per call
        sim = _sim_params(dyn)
        data = sample_dataset(key, spec, sim, 0, per_cluster=train_counts)
        test = sample_dataset(key, spec, sim, 1)
        traj = run(data, test, sim)
        final, test_r = traj.margins[-1], traj.test_margins[-1]
        risk_by_value = _value_means((test_r <= 0).astype(final.dtype), test.value, spec.K)
        seen = test.value < K
        n_seen = jnp.sum(seen)
        # Theorem 4.2 sandwich at every recorded checkpoint with 0 < t <= τ_1 (τ = 1)
        t = traj.t[:, None]
        rate = sim.beta**2 * t / K
        inside = (traj.margins >= im_li.R_LOWER * rate) & (traj.margins <= im_li.R_UPPER * rate)
        checked = (t > 0) & (t <= dyn["tau_1"] * (1 + 1e-12))
        n_checked = jnp.sum(checked)
        sandwich = jnp.mean(jnp.all(inside | ~checked, axis=0))
        unseen = ~seen
        w_lo, w_hi = im_li.MARGIN_WINDOW  # Theorem 4.2's window at τ_1
        return {"margin_mean": jnp.mean(final), "margin_min": jnp.min(final),
                "margin_max": jnp.max(final), "in_window": jnp.mean((final >= w_lo) & (final <= w_hi)),
                "margin_mean_last": _value_means(final, data.value, spec.K)[K - 1],
                "test_risk": jnp.sum((test_r <= 0) & seen) / n_seen,
                "test_risk_worst": jnp.max(jnp.where(seen_mask, risk_by_value, -jnp.inf)),
                "test_risk_last": risk_by_value[K - 1],
                "test_margin_mean": jnp.sum(jnp.where(seen, test_r, 0.0)) / n_seen,
                "unseen_risk": jnp.sum((test_r <= 0) & unseen) / jnp.sum(unseen),
                "unseen_margin_mean": jnp.sum(jnp.where(unseen, test_r, 0.0)) / jnp.sum(unseen),
                "sandwich_frac": jnp.where(n_checked > 0, sandwich, jnp.nan),
                "final_loss": traj.loss[-1], "train_accuracy": traj.accuracy[-1],
                "nonfinite": traj.nonfinite[0] >= 0}

    return jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(0, 0))


def _sim_params(dyn):
    ones = jnp.ones_like(dyn["beta"])
    return SimParams(beta=dyn["beta"], eta=dyn["eta"], eps=dyn["eps"], v=dyn["v"], lb=dyn["lb"],
                     delta=dyn["delta"], ref_scale=ones, concept_cos=dyn["concept_cos"],
                     flip=dyn["flip"])


def _im_li_resolved(p):
    dyn = _im_li_dynamic(p)
    dyn.pop("tau_1")
    return p | dyn | {"d": _im_li_static(p)[0].d, "q_last": p["q_last"] or p["Q"]}


def _im_li_bounds(p):
    d = p["d"] or im_li.default_d(p["Q"])
    v = p["v"] if p["v"] is not None else im_li.default_v(p["Q"])
    Z = {"distinct": 1, "yes_no": p["K"]}.get(p["tokens"], min(p["Z"], p["K"]))
    return {"tau_1": im_li.tau_1(K=p["K"], beta=p["beta"]),
            "bound_simplified": float(im_li.bound_simplified(K=p["K"], Q=p["Q"])),
            "bound_refined": float(im_li.bound_refined(K=p["K"], Q=p["Q"], d=d, v=v, lb=p["lb"], Z=Z))}


# ---- rDPO on the log-linear bandit -------------------------------------------------------------

RDPO_PARAMS = {
    "S": Param(int, 32, True), "A": Param(int, 8, True), "d": Param(int, 4, True),
    "n": Param(int, 4000, True), "loss": Param(str, "rdpo", True), "steps": Param(int, 400, True),
    "features": Param(str, "sphere", True), "beta": Param(float, 1.0, False),
    "eps": Param(float, 0.1, False), "L": Param(float, 1.0, False), "B": Param(float, 8.0, False),
    "sft_scale": Param(float, 0.5, False), "reward_scale": Param(float, 1.5, False),
    "delta": Param(float, 0.05, False),
}
_RDPO_DYNAMIC = ("beta", "eps", "L", "B", "sft_scale", "reward_scale")


def _rdpo_static(p):
    return bandit.BanditSpec(S=p["S"], A=p["A"], d=p["d"], n=p["n"], features=p["features"],
                             loss=p["loss"], steps=p["steps"])


def _rdpo_dynamic(p):
    params = bandit.make_bandit_params(**{k: p[k] for k in _RDPO_DYNAMIC})
    rdpo.bounds_summary(n=p["n"], d=p["d"], eps=p["eps"], beta=p["beta"], L=p["L"], B=p["B"],
                        delta=p["delta"])  # validates δ
    return {k: float(getattr(params, k)) for k in _RDPO_DYNAMIC}


def _rdpo_batch(spec):
    fit = bandit.make_fit(spec)

    def one(key, dyn):
        TRACES["rdpo"] = TRACES.get("rdpo", 0) + 1
        params = bandit.BanditParams(**dyn)
        k_inst, k_data = jax.random.split(key)
        inst = bandit.make_instance(k_inst, spec, params)
        data = bandit.sample_pairs(k_data, spec, inst, params)
        res = fit(data, inst, params)
        err = res.theta - inst.theta_star(params.beta)
        sigma = jnp.sqrt(jnp.mean((data.x @ err) ** 2))
        return {"error_sigma": sigma, "error_l2": jnp.linalg.norm(err), "final_loss": res.loss,
                "grad_mapping": res.grad_mapping, "diverged": res.diverged}

    return jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(0, 0))


def _rdpo_bounds(p):
    s = rdpo.bounds_summary(n=p["n"], d=p["d"], eps=p["eps"], beta=p["beta"], L=p["L"], B=p["B"],
                            delta=p["delta"])
    return {k: s[k] for k in ("gamma", "rate", "noise_factor", "estimation_bound")}


IM_LI_METRICS = ("margin_mean", "margin_min", "margin_max", "in_window", "margin_mean_last",
                 "test_risk", "test_risk_worst", "test_risk_last", "test_margin_mean",
                 "unseen_risk", "unseen_margin_mean", "sandwich_frac", "final_loss",
                 "train_accuracy", "nonfinite")
SIMULATIONS = {
    "im-li": Simulation("im-li", IM_LI_PARAMS, _im_li_static, _im_li_dynamic, _im_li_batch,
                        _im_li_bounds, _im_li_resolved, IM_LI_METRICS),
    "rdpo": Simulation("rdpo", RDPO_PARAMS, _rdpo_static, _rdpo_dynamic, _rdpo_batch, _rdpo_bounds,
                       lambda p: p | _rdpo_dynamic(p),
                       ("error_sigma", "error_l2", "final_loss", "grad_mapping", "diverged")),
}
