"""Tests for the Ray backend of the sweep engine: bit-identical results to the local backend, a
worker killed mid-chunk (the chunk is retried and the sweep completes unchanged), workers pinned
to distinct CPUs, argument and address errors, and the quick "sweep" benchmark. Skipped when Ray
is not installed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from dpolab.bench import harness, run_suite  # noqa: E402
from dpolab.cli import main  # noqa: E402
from dpolab.sims.sweep import ray as sweep_ray  # noqa: E402

# One static signature (one compilation per worker, a few seconds), four one-point chunks.
SPEC = """\
[sweep]
simulation = "im-li"
seeds = 2
chunk_size = 2
precision = "float64"
[fixed]
Q = 10
K = 2
steps = 10
[grid]
v = [0.0, 0.01]
beta = [0.5, 1.0]
"""
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def local_summary(spec_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    assert main(["sweep", str(spec_path), "--out", str(out), "--quiet"]) == 0
    return (out / "summary.csv").read_bytes()


def test_ray_backend_gives_a_byte_identical_summary(spec_path, local_summary, tmp_path):
    out = tmp_path / "ray"
    assert main(["sweep", str(spec_path), "--out", str(out), "--backend", "ray", "--quiet"]) == 0
    assert (out / "summary.csv").read_bytes() == local_summary
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "ray" and manifest["status"] == "complete"
    # the local Ray this sweep started is shut down again
    import ray

    assert not ray.is_initialized()


def test_an_existing_cluster_is_used_and_left_running(spec_path, local_summary, tmp_path):
    """`--address` joins a Ray cluster started outside dpolab (`ray start --head`), which keeps
    running afterwards. The head runs with --block in its own process group, so the test stops
    exactly that cluster (not `ray stop`, which would stop every Ray on the machine)."""
    import random

    ray_bin = Path(sys.executable).parent / "ray"
    port = random.randint(20000, 40000)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    head = subprocess.Popen([str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=2",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--block"],
                            env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.time() + 90
        while subprocess.run([str(ray_bin), "status", f"--address={address}"], env=env,
                             capture_output=True, timeout=60).returncode != 0:
            assert time.time() < deadline, "the Ray head did not come up"
            time.sleep(1)
        out = tmp_path / "cluster"
        assert main(["sweep", str(spec_path), "--out", str(out), "--backend", "ray",
                     "--address", address, "--quiet"]) == 0
        assert (out / "summary.csv").read_bytes() == local_summary
        assert head.poll() is None  # the cluster outlives the sweep
        assert subprocess.run([str(ray_bin), "status", f"--address={address}"], env=env,
                              capture_output=True, timeout=60).returncode == 0
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        marker = Path("/tmp/ray/ray_current_cluster")  # `ray start` leaves it; ours only
        if marker.exists() and marker.read_text().strip().endswith(f":{port}"):
            marker.unlink()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_num_workers_is_checked_before_ray_starts(bad):
    import ray

    with pytest.raises(ValueError, match="num_workers"):
        sweep_ray.run_ray(None, None, [0], num_workers=bad)
    assert not ray.is_initialized()


def test_an_address_without_a_cluster_is_one_line_and_exit_code_2(spec_path, tmp_path, monkeypatch,
                                                                  capsys):
    import ray

    def no_cluster(*args, **kwargs):  # what ray.init raises when nothing listens (checked by hand)
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", no_cluster)
    argv = ["sweep", str(spec_path), "--out", str(tmp_path / "o"), "--backend", "ray",
            "--address", "auto", "--quiet"]
    assert main(argv) == 2
    assert "address='auto' is not allowed: no Ray cluster answers there" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before the output folder is made


def _closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:{closed}", "nothing answers at 127.0.0.1:"),  # the port is picked in the test: test ids
    ("ray://127.0.0.1:{closed}", "nothing answers at 127.0.0.1:"),  # must be equal on every xdist worker
    ("127.0.0.1", "--address must be auto, HOST:PORT or ray://HOST:PORT"),
    ("head:port", "--address must be auto, HOST:PORT or ray://HOST:PORT"),
])
def test_an_unreachable_address_fails_in_seconds_and_writes_nothing(spec_path, tmp_path, capsys, address,
                                                                     message):
    # ray.init itself retries such an address for minutes and then ends the process (checked by
    # hand: 5 min, a half-made folder left behind); the probe answers before any folder is made
    start = time.perf_counter()
    address = address.format(closed=_closed_port())
    argv = ["sweep", str(spec_path), "--out", str(tmp_path / "o"), "--backend", "ray", "--address", address,
            "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
    assert time.perf_counter() - start < 2 * sweep_ray.PROBE_TIMEOUT_S


PIN_AND_HOLD = """
import os, sys
from dpolab.sims.sweep.ray import pin_to_one_cpu
cpu = pin_to_one_cpu()
print(cpu, sorted(os.sched_getaffinity(0)), flush=True)
sys.stdin.read()  # hold the CPU until the test closes stdin
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and two CPUs")
def test_workers_pin_themselves_to_distinct_cpus(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))  # lock files of this test only
    first, second = (subprocess.Popen([sys.executable, "-c", PIN_AND_HOLD], cwd=REPO, env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                     for _ in range(2))
    try:
        lines = [proc.stdout.readline().split(maxsplit=1) for proc in (first, second)]
    finally:
        for proc in (first, second):
            proc.communicate("", timeout=30)
    (cpu_a, aff_a), (cpu_b, aff_b) = lines
    assert cpu_a != cpu_b and aff_a == f"[{cpu_a}]\n" and aff_b == f"[{cpu_b}]\n"


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process /proc shows."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry)] = (ppid, cmdline)
    return table


def _chunk_workers(root: int) -> list[int]:
    """Descendants of `root` executing a chunk (Ray titles a busy worker `ray::<task name>`)."""
    table = _processes()

    def descends(pid):
        seen = set()
        while pid in table and pid not in seen:
            seen.add(pid)
            pid = table[pid][0]
            if pid == root:
                return True
        return False

    title = f"ray::{sweep_ray.TASK_NAME}"
    return [pid for pid, (_, cmd) in table.items() if cmd.startswith(title) and descends(pid)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_killed_mid_chunk_is_retried_and_the_summary_is_unchanged(
        spec_path, local_summary, tmp_path):
    out = tmp_path / "ray"
    # x64 on in the driver as in this process (conftest), so summary.csv is formatted alike
    env = dict(os.environ, JAX_ENABLE_X64="1")
    driver = subprocess.Popen(
        [sys.executable, "-m", "dpolab.cli", "sweep", str(spec_path), "--out", str(out),
         "--backend", "ray", "--quiet"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 60
        while killed is None and time.monotonic() < deadline and driver.poll() is None:
            for pid in _chunk_workers(driver.pid):
                # a worker's first chunk compiles for seconds: it is killed in the middle of it
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed, done_at_kill = pid, len(list((out / "chunks").glob("*.json")))
                break
            time.sleep(0.05)
        stdout, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert killed is not None, "no Ray worker was seen executing a chunk"
    assert done_at_kill < 4, "the kill came after every chunk was written"
    assert driver.returncode == 0, stderr[-3000:]
    assert (out / "summary.csv").read_bytes() == local_summary
    assert "summary:" in stdout


def test_quick_sweep_bench_runs_every_backend_and_reports_ratios():
    r = run_suite("sweep", quick=True)
    assert r["suite"] == "sweep" and r["precision"] == "float64"
    runs = r["runs"]
    assert set(runs) == {"local", "ray_2"}  # the quick config skips Ray with 1 worker
    for run in runs.values():
        assert run["wall_s"] > 0 and run["sample_steps_per_s"] > 0
        assert run["sample_steps_per_s"] == pytest.approx(r["sample_steps"] / run["wall_s"])
    assert r["scaling_efficiency"] == pytest.approx(runs["ray_2"]["sample_steps_per_s"]
                                                    / runs["local"]["sample_steps_per_s"])
    assert r["compile_share_local"] > 0 and r["compile_s"] > 0
    assert r["equal_work"] == {"identical_arrays": True, "identical_summaries": True}
    assert set(r["meets_targets"]) == set(r["targets"])
    table = harness.format_table(r)
    for word in ("local", "Ray", "compile", "sample-steps/s"):
        assert word in table
    json.loads(json.dumps(r))
