"""The sweep engine with real processes: validation, chunk independence, compile count,
interruption and resume, corrupted chunks, non-finite runs, several devices."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from dpolab.cli import main
from dpolab.sims.sweep import simulations as sweep_sims
from dpolab.sims.sweep.engine import plan
from dpolab.sims.sweep.run import run_sweep
from dpolab.sims.sweep.spec import load_spec

SPEC = """
[sweep]
simulation = "im-li"
seeds = {seeds}
chunk_size = {chunk}
precision = "float64"
[fixed]
Q = {Q}
beta = 1.0
steps = {steps}
[grid]
K = [1, 2]
v = [0.0, 0.01, 0.02]
"""


def write_spec(tmp_path, name="spec.toml", *, seeds=2, chunk=2, Q=10, steps=10, text=None):
    path = tmp_path / name
    path.write_text(text if text is not None else SPEC.format(seeds=seeds, chunk=chunk, Q=Q, steps=steps))
    return path


def rows(summary):
    with open(summary, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("text, key", [
    ('[sweep]\nsimulation = "im-li"\nfoo = 1', "sweep.foo"),
    ('[sweep]\nsimulation = "im-li"\n[fixed]\nbar = 1', "fixed.bar"),
    ('[sweep]\nsimulation = "im-li"\nseeds = "4"', "sweep.seeds"),
    ('[sweep]\nsimulation = "im-li"\n[grid]\nK = [1, 0]', "K"),
    ('[sweep]\nsimulation = "im-li"\n[fixed]\nK = 1\n[grid]\nK = [1, 2]', "grid.K"),
    ('[sweep]\nsimulation = "mystery"', "sweep.simulation"),
    ('[sweep]\nsimulation = "rdpo"\n[grid]\neps = [0.1, 0.5]', "eps"),
    ('[sweep]\nsimulation = "im-li"\n[extra]\nx = 1', "extra"),
    ('[sweep]\nsimulation = "im-li"\nprecision = "float16"', "sweep.precision"),
])
def test_bad_specs_name_the_key_before_any_work(tmp_path, capsys, text, key):
    spec = write_spec(tmp_path, text=text)
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{key}=" in err and "\n" not in err.strip()
    assert not out.exists()


def test_results_do_not_depend_on_chunk_size(tmp_path):
    one = run_sweep(write_spec(tmp_path, "a.toml", chunk=100), tmp_path / "a", quiet=True)
    many = run_sweep(write_spec(tmp_path, "b.toml", chunk=2), tmp_path / "b", quiet=True)
    assert len(list((tmp_path / "b" / "chunks").glob("*.npz"))) == 6
    assert one.read_bytes() == many.read_bytes()
    table = rows(one)
    assert len(table) == 6 * 2 and {r["K"] for r in table} == {"1", "2"}
    assert all(float(r["margin_min"]) > 0 for r in table)


def test_one_compilation_per_static_signature(tmp_path):
    spec_path = write_spec(tmp_path, Q=11, chunk=2)  # a Q no other test uses: fresh compilations
    spec = load_spec(spec_path)
    assert len(plan(spec)) == 6  # 2 static signatures (K) × 3 chunks of one point × 2 seeds
    before = sweep_sims.TRACES.get("im-li", 0)
    run_sweep(spec_path, tmp_path / "out", quiet=True)
    assert sweep_sims.TRACES["im-li"] - before == 2


def test_existing_results_are_never_overwritten_silently(tmp_path, capsys):
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--quiet"]) == 0
    first = (out / "summary.csv").read_bytes()
    assert main(["sweep", str(spec), "--out", str(out), "--quiet"]) == 2
    assert "--force" in capsys.readouterr().err
    other = write_spec(tmp_path, "other.toml", seeds=3)
    assert main(["sweep", str(other), "--out", str(out), "--resume", "--quiet"]) == 2
    assert "spec_hash=" in (err := capsys.readouterr().err) and "not allowed with --resume" in err
    assert main(["sweep", str(spec), "--out", str(out), "--resume", "--quiet"]) == 0
    assert (out / "summary.csv").read_bytes() == first
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["sweep", str(spec), "--out", str(mine), "--force", "--quiet"]) == 2
    assert (mine / "notes.txt").read_text() == "keep"


def _cli(*args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return [sys.executable, "-m", "dpolab.cli", *args], env


# The CLI in a child that holds still inside its third chunk (after two were written), so the
# SIGKILL lands mid-run however fast the machine or warm the compilation cache: polling for the
# first record and then killing raced the child, which could finish more chunks (or all) first.
HOLD_IN_THIRD_CHUNK = """
import pathlib, sys, time
from dpolab.cli import main
from dpolab.sims.sweep import run
held, compute, calls = pathlib.Path(sys.argv[1]), run.compute_chunk, []
def compute_then_hold(*args):
    calls.append(1)
    if len(calls) == 3:
        held.touch()
        time.sleep(600)
    return compute(*args)
run.compute_chunk = compute_then_hold
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_then_resume_gives_identical_results(tmp_path):
    spec = write_spec(tmp_path, seeds=4, chunk=4, Q=40, steps=200)
    reference = run_sweep(spec, tmp_path / "ref", quiet=True).read_bytes()
    out, held = tmp_path / "out", tmp_path / "held"
    cmd = [sys.executable, "-P", "-c", HOLD_IN_THIRD_CHUNK, str(held),
           "sweep", str(spec), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    deadline = time.time() + 300
    while not held.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert held.exists(), f"the child never reached its third chunk (exit {proc.returncode})"
    done = sorted(p.name for p in (out / "chunks").glob("*.json"))
    assert done == ["00000.json", "00001.json"], done  # killed mid-run, inside the third chunk
    assert not (out / "summary.csv").exists()
    assert main(["sweep", str(spec), "--out", str(out), "--resume", "--quiet"]) == 0
    assert (out / "summary.csv").read_bytes() == reference
    assert len(list((out / "chunks").glob("*.npz"))) == 6
    assert not list((out / "chunks").glob("*.tmp*"))


def test_corrupt_chunk_is_detected_and_recomputed(tmp_path):
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    reference = run_sweep(spec, out, quiet=True).read_bytes()
    victim = out / "chunks" / "00003.npz"
    stamp = victim.stat().st_mtime_ns
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    (out / "summary.csv").unlink()
    run_sweep(spec, out, resume=True, quiet=True)
    assert (out / "summary.csv").read_bytes() == reference
    assert victim.stat().st_mtime_ns != stamp
    others = [p for p in (out / "chunks").glob("*.npz") if p != victim]
    assert all(p.stat().st_mtime_ns < victim.stat().st_mtime_ns for p in others)  # only it redone


def test_nonfinite_point_is_flagged_and_the_sweep_completes(tmp_path):
    text = """
[sweep]
simulation = "im-li"
seeds = 2
chunk_size = 2
[fixed]
K = 2
Q = 5
loss = "ipo"
steps = 20
[grid]
eta = [0.1, 1e30]
"""
    table = rows(run_sweep(write_spec(tmp_path, text=text), tmp_path / "out", quiet=True))
    flags = {r["eta"]: r["nonfinite"] for r in table}
    assert flags == {"0.1": "False", "1e+30": "True"}


def test_grid_is_laid_over_several_devices(tmp_path):
    """Sharded over 4 virtual CPU devices the same sweep agrees to float64 rounding (bit-identity
    is not promised across device counts: XLA compiles a different per-device program)."""
    import numpy as np

    spec = write_spec(tmp_path, chunk=8)
    reference = rows(run_sweep(spec, tmp_path / "one", quiet=True))
    cmd, env = _cli("sweep", str(spec), "--out", str(tmp_path / "four"), "--quiet")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    subprocess.run(cmd, env=env, check=True)
    sharded = rows(tmp_path / "four" / "summary.csv")
    for a, b in zip(reference, sharded):
        assert a["point"] == b["point"] and a["nonfinite"] == b["nonfinite"]
        for key in ("margin_mean", "margin_min", "final_loss"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-12, abs=1e-15)
    with np.load(tmp_path / "four" / "chunks" / "00000.npz") as chunk:
        assert int(chunk["devices"]) == 4
    with np.load(tmp_path / "one" / "chunks" / "00000.npz") as chunk:
        assert int(chunk["devices"]) == 1


def test_float32_sweep_agrees_with_float64_to_float32_precision(tmp_path):
    text64 = SPEC.format(seeds=2, chunk=4, Q=10, steps=10)
    text32 = text64.replace('precision = "float64"', 'precision = "float32"')
    r64 = rows(run_sweep(write_spec(tmp_path, "a.toml", text=text64), tmp_path / "a", quiet=True))
    r32 = rows(run_sweep(write_spec(tmp_path, "b.toml", text=text32), tmp_path / "b", quiet=True))
    manifest = (tmp_path / "b" / "manifest.json").read_text()
    assert '"precision": "float32"' in manifest
    eps32 = 1.2e-7
    noise_free = [(a, b) for a, b in zip(r64, r32) if a["v"] == "0.0"]  # float32 draws differ
    assert len(noise_free) == 4
    for a, b in noise_free:
        for key in ("margin_mean", "margin_min", "final_loss"):
            # ~10 steps of O(1) float32 arithmetic over N = 2KQ ≤ 40 samples: a few hundred ulps
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e3 * eps32, abs=1e3 * eps32)
        assert float(b["margin_min"]) != float(a["margin_min"])  # really computed in float32
    assert all(b["nonfinite"] == "False" for b in r32)
