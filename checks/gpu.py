"""Suite "gpu": the simulations in float32 on JAX's default device against float64 on the CPU.

Sweeps run in float32 on an accelerator. This check runs two representative simulations that way,
on `jax.devices()[0]` (the GPU where there is one, else the CPU: `measured` names both devices),
and the same simulations in float64 on the CPU, from the same inputs (drawn once in float64, then
rounded to float32 for the float32 run):

  im-li trainer    per-sample train and held-out margin trajectories of gradient descent
                   (`dpolab.sims.train.make_trainer` in its float32 mode, `TrainSpec.float32`),
                   within `dpolab.sims.blocks.margin_tolerance(float32, ...)` =
                   c · ε₃₂ · √d · (steps + 1) · max(1, max|r|): each step adds a length-d dot
                   product's rounding to margins of size max|r|;
  rDPO bandit fit  θ̂ of the projected Newton fit (`dpolab.sims.bandit.make_fit`, run with x64 off
                   as the sweep engine's float32 mode does), within
                   c · ε₃₂ · κ(H) · √n · max(1, ‖θ̂‖): the float32 optimum is the exact optimum of
                   a problem whose gradient is perturbed by ~ε₃₂·√n relative (inputs rounded, n
                   terms summed), and a minimiser moves by the condition number κ(H) of the
                   loss's Hessian at θ̂ times that perturbation (forward error ≤ κ · backward error).

c = `dpolab.sims.blocks.TOLERANCE_C`, ε₃₂ = 2⁻²³. Matrix products of the float32 runs are asked for
in true float32 (`jax.default_matmul_precision("float32")`): JAX's default on recent NVIDIA GPUs is
TensorFloat-32 (10 mantissa bits), whose error these tolerances would not allow.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from dpolab.checks.result import CheckResult, verdict

#: Sizes by quick: the trainer's value mixture (K values, Q samples per cluster, d = 5Q) and GD
#: steps to τ_1; the bandit's dimension, pairs and flip rate.
SIZES = {True: {"K": 4, "Q": 8, "steps": 60, "stride": 10, "bandit_d": 4, "n": 1000, "eps": 0.2},
         False: {"K": 16, "Q": 32, "steps": 400, "stride": 40, "bandit_d": 16, "n": 20000, "eps": 0.2}}


@contextlib.contextmanager
def float32_mode(device, *, x64: bool):
    """float32 runs: on `device`, with true float32 matrix products; `x64` False turns JAX's 64-bit
    types off (the sweep engine's float32 mode)."""
    import jax

    with jax.default_device(device), jax.default_matmul_precision("float32"), jax.enable_x64(x64):
        yield


def _to_float32(tree):
    """A pytree's floating leaves as float32 and integer leaves as int32 numpy arrays."""
    import jax

    def cast(x):
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.floating):
            return x.astype(np.float32)
        return x.astype(np.int32) if np.issubdtype(x.dtype, np.integer) else x
    return jax.tree.map(cast, tree)


def trainer_runs(quick: bool):
    """(float32 Trajectory on the default device, float64 Trajectory on the CPU, d, steps)."""
    import jax

    from dpolab.sims.config import DataSpec, TrainSpec, make_params
    from dpolab.sims.data import pair_sizes, sample_dataset
    from dpolab.sims.train import make_trainer
    from dpolab.theory import im_li

    s = SIZES[quick]
    spec = DataSpec(K=s["K"], Q=s["Q"], d=im_li.default_d(s["Q"]), n_test=s["Q"])
    params = make_params(beta=1.0, eta=im_li.tau_1(K=s["K"], beta=1.0) / s["steps"], v=im_li.default_v(s["Q"]))
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu), jax.enable_x64(True):
        key = jax.random.key(0)
        data, test = sample_dataset(key, spec, params, 0), sample_dataset(key, spec, params, 1)
        run64 = jax.jit(make_trainer(TrainSpec(steps=s["steps"], stride=s["stride"]), spec.n_pairs,
                                     pair_sizes=pair_sizes(spec)))
        high = jax.device_get(run64(data, test, params))
    inputs = jax.device_get((data, test, params))
    with float32_mode(jax.devices()[0], x64=True):
        run32 = jax.jit(make_trainer(TrainSpec(steps=s["steps"], stride=s["stride"], float32=True),
                                     spec.n_pairs, pair_sizes=pair_sizes(spec)))
        low = jax.device_get(run32(*jax.device_put(_to_float32(inputs), jax.devices()[0])))
    return low, high, spec.d, s["steps"]


def bandit_runs(quick: bool):
    """(float32 FitResult on the default device, float64 FitResult on the CPU, κ(H) at θ̂, n)."""
    import jax

    from dpolab.sims.bandit import BanditSpec, fit_loss, make_bandit_params, make_fit, make_instance, sample_pairs

    s = SIZES[quick]
    spec = BanditSpec(d=s["bandit_d"], n=s["n"], loss="rdpo")
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu), jax.enable_x64(True):
        params = make_bandit_params(beta=1.0, eps=s["eps"])
        inst = make_instance(jax.random.key(0), spec, params)
        data = sample_pairs(jax.random.key(1), spec, inst, params)
        high = jax.device_get(jax.jit(make_fit(spec))(data, inst, params))
        value = fit_loss(spec.loss)[0]
        objective = lambda th: jax.numpy.mean(value(params.beta * (data.x @ (th - inst.theta0)), params.eps))
        eig = np.linalg.eigvalsh(np.asarray(jax.hessian(objective)(jax.numpy.asarray(high.theta))))
    inputs = jax.device_get((data, inst, params))
    with float32_mode(jax.devices()[0], x64=False):
        low = jax.device_get(jax.jit(make_fit(spec))(*jax.device_put(_to_float32(inputs), jax.devices()[0])))
    return low, high, float(eig[-1] / eig[0]), spec.n


def trainer_agreement(low, high, d: int, steps: int) -> dict:
    """Largest |r₃₂ − r₆₄| over checkpoints and samples (train and held-out) against
    `margin_tolerance(float32)`."""
    import jax.numpy as jnp

    from dpolab.sims.blocks import margin_tolerance

    diff = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b))))
               for a, b in ((low.margins, high.margins), (low.test_margins, high.test_margins)))
    scale = float(max(np.max(np.abs(high.margins)), np.max(np.abs(high.test_margins))))
    tol = margin_tolerance(jnp.float32, steps=steps, d=d, scale=scale)
    finite = bool(np.all(np.isfinite(low.margins)) and np.all(np.isfinite(low.test_margins))
                  and np.all(np.asarray(low.nonfinite) < 0))
    return {"max_abs_diff": diff, "tolerance": tol, "max_abs_margin": scale, "d": d, "steps": steps, "finite": finite,
            "dtype": str(np.asarray(low.margins).dtype), "ok": finite and diff <= tol}


def bandit_agreement(low, high, kappa: float, n: int) -> dict:
    """‖θ̂₃₂ − θ̂₆₄‖ against c · ε₃₂ · κ(H) · √n · max(1, ‖θ̂₆₄‖); neither fit may diverge."""
    from dpolab.sims.blocks import TOLERANCE_C

    theta = np.asarray(high.theta)
    diff = float(np.linalg.norm(np.asarray(low.theta, np.float64) - theta))
    tol = TOLERANCE_C * float(np.finfo(np.float32).eps) * kappa * math.sqrt(n) * max(1.0, float(np.linalg.norm(theta)))
    sound = not bool(low.diverged) and not bool(high.diverged) and bool(np.all(np.isfinite(low.theta)))
    return {"theta_diff": diff, "tolerance": tol, "condition_number": kappa, "theta_norm": float(np.linalg.norm(theta)),
            "diverged": [bool(low.diverged), bool(high.diverged)], "dtype": str(np.asarray(low.theta).dtype),
            "ok": sound and diff <= tol}


def float32_agreement(quick):
    """The im-li trainer's margin trajectories and an rDPO bandit fit agree in float32 on the default
    device with float64 on the CPU, within float32 rounding's stated growth."""
    import jax

    from dpolab.sims.blocks import TOLERANCE_C

    trainer = trainer_agreement(*trainer_runs(quick))
    bandit = bandit_agreement(*bandit_runs(quick))
    devices = {"float32": str(jax.devices()[0]), "float64": str(jax.devices("cpu")[0]),
               "backend": jax.default_backend()}
    rnd = lambda x: float(f"{x:.3g}")  # noqa: E731
    return CheckResult(
        id="gpu/float32-agreement", reference="issue #14 (the GPU track); THEORY §1.2, §2 simulators",
        claim="float32 runs on JAX's default device reproduce the float64 CPU runs: the im-li trainer's "
              "per-sample margin trajectories and the rDPO bandit fit's θ̂, within float32 rounding",
        predicted={"trainer": "max |r32 − r64| ≤ c·ε32·√d·(steps+1)·max(1, max|r|)",
                   "bandit": "‖θ32 − θ64‖ ≤ c·ε32·κ(H)·√n·max(1, ‖θ‖)"},
        measured={"devices": devices, "matmul precision (float32 runs)": "float32",
                  "trainer": {k: rnd(v) if isinstance(v, float) else v for k, v in trainer.items()},
                  "bandit": {k: rnd(v) if isinstance(v, float) else v for k, v in bandit.items()}},
        tolerance={"trainer": trainer["tolerance"], "bandit": bandit["tolerance"]},
        why=f"c = {TOLERANCE_C:g}, ε32 = 2^-23 (float32's machine epsilon); trainer d = {trainer['d']} features "
            f"and {trainer['steps']} GD steps (each adds a length-d dot product's rounding); "
            "bandit κ(H) the condition number of the loss's Hessian at θ̂ and n the pairs summed (forward "
            "error ≤ κ · backward error); both runs start from the same float64 draws",
        verdict=verdict(trainer["ok"] and bandit["ok"]))


#: {check id: fn(quick) -> CheckResult}, in run order.
CHECKS = {"gpu/float32-agreement": float32_agreement}
