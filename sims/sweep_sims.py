"""Simulations a sweep can run: their parameters, static/dynamic split, batch function, metrics.

Each simulation maps one grid point (a dict of parameters) to a *static* signature (what fixes
shapes and compilation) and *dynamic* arrays, and provides `batch(static)`: a pure function of
keys (P, S) and stacked dynamic parameters (P,) returning per-(point, seed) metrics (P, S). A
non-finite or diverged run is flagged in the metrics, never raised, so one bad grid point does not
stop a sweep.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sims import bandit
from sims.config import DataSpec, SimParams, TrainSpec, make_params
from sims.data import sample_dataset
from sims.train import make_trainer
from theory import im_li, rdpo

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
    "steps": Param(int, 50, True), "beta": Param(float, 1.0, False), "eta": Param(float, None, False),
    "v": Param(float, None, False), "lb": Param(float, 0.5, False), "eps": Param(float, 0.0, False),
    "delta": Param(float, 0.0, False),
}


def _im_li_static(p):
    spec = DataSpec(K=p["K"], Q=p["Q"], d=p["d"] or 5 * p["Q"], n_test=p["n_test"],
                    tokens=p["tokens"], Z=p["Z"], vocab=p["vocab"])
    return spec, TrainSpec(loss=p["loss"], optimizer=p["optimizer"], steps=p["steps"],
                           stride=max(p["steps"], 1))


def _im_li_dynamic(p):
    eta = p["eta"] if p["eta"] is not None else im_li.tau_1(K=p["K"], beta=p["beta"]) / max(p["steps"], 1)
    v = p["v"] if p["v"] is not None else 1 / (32 * math.sqrt(p["Q"]))
    params = make_params(beta=p["beta"], eta=eta, v=v, lb=p["lb"], eps=p["eps"], delta=p["delta"])
    return {k: float(getattr(params, k)) for k in ("beta", "eta", "eps", "v", "lb", "delta")}


def _im_li_batch(static):
    spec, train = static
    run = make_trainer(train, spec.n_pairs)

    def one(key, dyn):
        TRACES["im-li"] = TRACES.get("im-li", 0) + 1  # runs once per trace, not per call
        sim = _sim_params(dyn)
        traj = run(sample_dataset(key, spec, sim, 0), sample_dataset(key, spec, sim, 1), sim)
        final, test = traj.margins[-1], traj.test_margins[-1]
        return {"margin_mean": jnp.mean(final), "margin_min": jnp.min(final),
                "test_risk": jnp.mean(test <= 0), "final_loss": traj.loss[-1],
                "train_accuracy": traj.accuracy[-1], "nonfinite": traj.nonfinite[0] >= 0}

    return jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(0, 0))


def _sim_params(dyn):
    return SimParams(beta=dyn["beta"], eta=dyn["eta"], eps=dyn["eps"], v=dyn["v"], lb=dyn["lb"],
                     delta=dyn["delta"], ref_scale=jnp.ones_like(dyn["beta"]))


def _im_li_resolved(p):
    return p | _im_li_dynamic(p) | {"d": _im_li_static(p)[0].d}


def _im_li_bounds(p):
    d = p["d"] or 5 * p["Q"]
    v = p["v"] if p["v"] is not None else 1 / (32 * math.sqrt(p["Q"]))
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


SIMULATIONS = {
    "im-li": Simulation("im-li", IM_LI_PARAMS, _im_li_static, _im_li_dynamic, _im_li_batch,
                        _im_li_bounds, _im_li_resolved, ("margin_mean", "margin_min", "test_risk", "final_loss",
                                        "train_accuracy", "nonfinite")),
    "rdpo": Simulation("rdpo", RDPO_PARAMS, _rdpo_static, _rdpo_dynamic, _rdpo_batch, _rdpo_bounds,
                       lambda p: p | _rdpo_dynamic(p),
                       ("error_sigma", "error_l2", "final_loss", "grad_mapping", "diverged")),
}
