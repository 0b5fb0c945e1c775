"""Suite `gpu` (`checks/gpu.py`): float32 on JAX's default device against float64 on the CPU. This
machine has no GPU, so the check compares float32 with float64 on the CPU and must say so; its
tolerances are the decision boundary (a drift of twice a tolerance fails, half of one passes), and a
float32 run that diverges or goes non-finite fails. The mutant `train.float32-mode-bfloat16`
(`dpolab.mutants`) turns it red through the real trainer."""
import jax
import numpy as np
import pytest

from dpolab.checks import gpu
from dpolab.verify import SUITES, checks_of


@pytest.fixture(scope="module")
def runs():
    return {"trainer": gpu.trainer_runs(True), "bandit": gpu.bandit_runs(True)}


def test_float32_agreement_passes_on_this_machine_and_names_its_devices():
    assert "gpu" in SUITES and list(checks_of("gpu")) == ["gpu/float32-agreement"]
    result = gpu.float32_agreement(True)
    assert result.verdict == "pass", result.measured
    devices = result.measured["devices"]
    assert devices["float32"] == str(jax.devices()[0]) and devices["float64"] == str(jax.devices("cpu")[0])
    assert devices["backend"] == jax.default_backend()
    for part in ("trainer", "bandit"):
        assert result.measured[part]["dtype"] == "float32" and result.measured[part]["ok"] is True


def test_the_float32_runs_really_ran_in_float32(runs):
    """The differences are float32 rounding: far above float64's, far below the tolerances."""
    from dpolab.sims.blocks import margin_tolerance

    low, high, d, steps = runs["trainer"]
    trainer = gpu.trainer_agreement(low, high, d, steps)
    tol64 = margin_tolerance(np.float64, steps=steps, d=d, scale=trainer["max_abs_margin"])
    assert tol64 < trainer["max_abs_diff"] < trainer["tolerance"] / 10, trainer
    bandit = gpu.bandit_agreement(*runs["bandit"])
    assert 1e-10 < bandit["theta_diff"] < bandit["tolerance"] / 10, bandit
    assert np.asarray(runs["bandit"][0].theta).dtype == np.float32


@pytest.mark.parametrize("factor, ok", [(2.0, False), (0.5, True)])
def test_a_trainer_drift_past_the_tolerance_fails(runs, factor, ok):
    low, high, d, steps = runs["trainer"]
    tol = gpu.trainer_agreement(low, high, d, steps)["tolerance"]
    drift = np.zeros_like(np.asarray(low.margins))
    drift[-1, 0] = factor * tol  # one sample at the last checkpoint
    moved = low._replace(margins=np.asarray(high.margins, np.float32) + drift)
    assert gpu.trainer_agreement(moved, high, d, steps)["ok"] is ok


@pytest.mark.parametrize("factor, ok", [(2.0, False), (0.5, True)])
def test_a_bandit_drift_past_the_tolerance_fails(runs, factor, ok):
    low, high, kappa, n = runs["bandit"]
    tol = gpu.bandit_agreement(low, high, kappa, n)["tolerance"]
    theta = np.asarray(high.theta).copy()
    theta[0] += factor * tol
    assert gpu.bandit_agreement(low._replace(theta=theta.astype(np.float32)), high, kappa, n)["ok"] is ok


def test_a_diverged_or_non_finite_float32_run_fails(runs):
    low, high, kappa, n = runs["bandit"]
    assert gpu.bandit_agreement(low._replace(diverged=np.bool_(True)), high, kappa, n)["ok"] is False
    t_low, t_high, d, steps = runs["trainer"]
    for field in ("margins", "test_margins"):
        bad = np.asarray(getattr(t_low, field)).copy()
        bad[3, 1] = np.nan
        assert gpu.trainer_agreement(t_low._replace(**{field: bad}), t_high, d, steps)["ok"] is False, field


def test_the_check_goes_red_when_the_float32_run_drifts(monkeypatch):
    """Through the registered check: the float32 trainer run 1% off fails it."""
    real_runs = gpu.trainer_runs

    def drifting(quick):
        low, high, d, steps = real_runs(quick)
        return low._replace(margins=np.asarray(low.margins) * np.float32(1.01)), high, d, steps

    monkeypatch.setattr(gpu, "trainer_runs", drifting)
    result = checks_of("gpu")["gpu/float32-agreement"](True)
    assert result.verdict == "fail" and result.measured["trainer"]["ok"] is False
