"""The device check (`scripts/gpu_check.sh` → `dpolab.bench.gpu_check`): its pieces on the CPU, and
the whole script at toy sizes (`slow`). It has not been run on a GPU yet (bench/RESULTS.md)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpolab.bench import gpu_check
from dpolab.sims.sweep.spec import parse_spec

ROOT = Path(__file__).parents[1]


def test_cross_check_agreement_goes_red_on_a_real_difference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 0.1, 64), rng.normal(1.0, 0.1, 16)
    same = gpu_check.agreement({"m": a}, {"m": b}, ["m"])["m"]
    assert same["agree"] and same["tolerance"] > same["diff"]
    se = np.sqrt(a.var(ddof=1) / 64 + b.var(ddof=1) / 16)
    shifted = gpu_check.agreement({"m": a + 6 * se}, {"m": b}, ["m"])["m"]  # past Z999 ≈ 3.3 SE
    assert not shifted["agree"]
    exact = gpu_check.agreement({"m": np.full(4, 2.0)}, {"m": np.full(4, 2.0 * (1 + 5e-4))}, ["m"])["m"]
    assert exact["agree"]  # within the float32 allowance (1e-3 relative)
    assert not gpu_check.agreement({"m": np.full(4, 2.0)}, {"m": np.full(4, 2.01)}, ["m"])["m"]["agree"]


def test_sweep_specs_are_valid_and_full_size_is_the_issues():
    for size in ("small", "full"):
        for precision in ("float32", "float64"):
            spec = parse_spec(gpu_check.sweep_spec(size, precision))  # validates every grid point
            assert spec.precision == precision
    full = parse_spec(gpu_check.sweep_spec("full", "float32"))
    assert max(p["K"] for p in full.points()) == 1024 and full.seeds == 64 and dict(full.fixed)["d"] == 4096
    sub = parse_spec(gpu_check.sweep_spec("full", "float64", K=[64], seeds=16))
    assert sub.points()[0] == full.points()[0]  # the cross-check's point 0 is the sweep's point 0


def test_run_writes_the_report_and_skips_stages_past_the_budget(tmp_path, monkeypatch):
    for name in ("verify", "float32", "sweep", "real"):
        monkeypatch.setattr(gpu_check, f"stage_{name}", lambda *a, name=name: {"ok": True, "seconds": 1.0})
    report = gpu_check.run(tmp_path, small=True, device="cpu")
    assert report["ok"] and set(report["stages"]) == {"verify", "float32", "sweep", "real"}
    assert json.loads((tmp_path / "gpu_check.json").read_text())["ok"] is True
    late = gpu_check.run(tmp_path / "late", small=True, device="cpu", budget_s=-1)
    assert not late["ok"] and all("skipped" in s for s in late["stages"].values())
    assert "skipped: past the -1 s budget" in (tmp_path / "late" / "gpu_check.md").read_text()
    full = gpu_check.run(tmp_path / "full", small=False, device="cpu")  # JAX on the CPU is not a GPU run
    assert not full["ok"] and full["stages"]["sweep"]["ok"] is False


@pytest.mark.slow
def test_the_script_runs_at_toy_sizes_on_the_cpu(tmp_path):
    env = dict(os.environ, GPU_CHECK_SMALL="1", GPU_CHECK_DEVICE="cpu", GPU_CHECK_SKIP_INSTALL="1",
               PYTHON=sys.executable)
    proc = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["ok"] and report["stages"]["real"]["errors"] == {} and "hh" in report["stages"]["real"]["seconds"]
    assert all(r["agree"] for r in report["stages"]["sweep"]["cross_check"]["metrics"].values())
    assert report["stages"]["verify"]["verdicts"]["fail"] == 0
    float32 = report["stages"]["float32"]
    assert float32["verdict"] == "pass" and float32["measured"]["devices"]["float32"] == "cpu:0"
    assert "trainer margins" in (tmp_path / "gpu_check.md").read_text()


def test_the_float32_stage_runs_the_registered_check_and_needs_a_gpu_at_full_size(monkeypatch):
    from dpolab.checks import gpu

    small = gpu_check.stage_float32(small=True)
    assert small["ok"] and small["verdict"] == "pass" and small["measured"]["devices"]["backend"] == "cpu"
    monkeypatch.setitem(gpu.SIZES, False, gpu.SIZES[True])  # the full-size rule at the quick size
    assert gpu_check.stage_float32(small=False)["ok"] is False  # JAX on the CPU is not a GPU run
    real_runs = gpu.bandit_runs

    def drifting(quick):
        low, *rest = real_runs(quick)
        return (low._replace(theta=low.theta * 1.01), *rest)

    monkeypatch.setattr(gpu, "bandit_runs", drifting)
    assert gpu_check.stage_float32(small=True)["ok"] is False  # a failing check fails the stage
