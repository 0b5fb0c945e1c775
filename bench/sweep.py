"""Suite "sweep": sweep throughput, one local process against Ray with 1 and with 2 workers.

One representative Im & Li grid (K ∈ {1, 2, 4, 8}, Q = 50, d = 5Q, DPO with plain GD for 50
steps, a v × β grid, 8 seeds, float64) is run three times, each from a cold start so that every
compilation is paid and counted:

1. local: `dpolab sweep --backend local` in a fresh process (one process, XLA free to use every
   core);
2. Ray with 1 worker and with 2 workers: a local Ray with that many CPUs, started apart (its start
   is reported, not counted), then `dpolab.sims.sweep.ray.run_ray` (each worker pinned to one thread);
   the wall time includes starting the workers, importing JAX in them and every compilation.

Throughput is sample-steps per second: Σ over grid points and seeds of N·steps ÷ wall, N = 2KQ
training samples. Scaling efficiency = Ray-2 throughput ÷ local throughput. Compile share = XLA
lower + compile time of every static signature (timed on a fresh `jax.jit` in this process) times
the compilations a run does (one per signature locally, one per signature and worker with Ray) ÷
(workers × wall). The three runs must store bit-identical arrays (equal work), or the suite raises.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dpolab.errors import InputError

# Targets of the issue: printed beside the measurements, never asserted.
TARGETS = {
    "scaling_efficiency": 0.9,       # Ray with 2 workers ≥ 0.9× the local process's throughput
    "compile_share_local": 0.05,     # compilation ≤ 5% of the wall time (sweeps ≥ 1 minute; issue #13)
}


@dataclasses.dataclass(frozen=True)
class SweepBench:
    """Settings of the "sweep" suite (an Im & Li grid; every axis a tuple of values).

    Attributes:
      K, v, beta: grid axes (K is static: one compilation per value). Q, steps: fixed.
      seeds: seeds per grid point. chunk_size: point-seeds per chunk.
      workers: Ray worker counts to run (each a local Ray with that many CPUs).
    """

    K: tuple = (1, 2, 4, 8)
    Q: int = 50
    v: tuple = (0.0, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05)
    beta: tuple = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0)
    seeds: int = 8
    steps: int = 50
    chunk_size: int = 32
    workers: tuple = (1, 2)

    def __post_init__(self):
        for field in ("Q", "seeds", "steps", "chunk_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{field}={value!r} is not allowed: {field} must be an "
                                 "integer >= 1")
        for field in ("K", "v", "beta", "workers"):
            if not isinstance(getattr(self, field), tuple) or not getattr(self, field):
                raise InputError(f"{field}={getattr(self, field)!r} is not allowed: {field} "
                                 "must be a non-empty tuple")
        if 2 not in self.workers:
            raise InputError(f"workers={self.workers!r} is not allowed: workers must include 2 "
                             "(the scaling efficiency is Ray-2 ÷ local)")

    def spec(self) -> dict:
        """The sweep spec (the parsed form of its TOML)."""
        return {"sweep": {"simulation": "im-li", "seeds": self.seeds, "chunk_size": self.chunk_size,
                          "precision": "float64"},
                "fixed": {"Q": self.Q, "steps": self.steps},
                "grid": {"K": list(self.K), "v": list(self.v), "beta": list(self.beta)}}


FULL = SweepBench()
QUICK = SweepBench(K=(1,), Q=10, v=(0.0, 0.01, 0.02, 0.03), beta=(1.0,), seeds=2, steps=5,
                   chunk_size=2, workers=(2,))


def _toml(spec: dict) -> str:
    lines = []
    for table, values in spec.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def sample_steps(spec) -> int:
    """Σ over grid points and seeds of N·steps, N = 2KQ training samples."""
    return sum(2 * p["K"] * p["Q"] * p["steps"] * spec.seeds for p in spec.points())


def compile_seconds(spec) -> dict:
    """XLA lower + compile seconds of each static signature's chunk function (fresh `jax.jit`).

    Returns:
      {signature label: seconds}, the label being "K=<K>" for the Im & Li grid.
    """
    from dpolab.sims.sweep.simulations import SIMULATIONS

    sim = SIMULATIONS[spec.simulation]
    width = max(1, spec.chunk_size // spec.seeds)
    firsts = {}
    for point in spec.points():
        firsts.setdefault(sim.static(point), point)
    out = {}
    with jax.enable_x64(spec.precision == "float64"):
        for static, point in firsts.items():
            dyn = {k: jnp.full((width,), v) for k, v in sim.dynamic(point).items()}
            keys = jax.random.split(jax.random.key(0), width * spec.seeds)
            keys = keys.reshape(width, spec.seeds)
            fn = jax.jit(sim.batch(static))
            start = time.perf_counter()
            fn.lower(keys, dyn).compile()
            out[f"K={point['K']}"] = time.perf_counter() - start
    return out


def _chunk_walls(out: Path) -> dict[int, float]:
    return {int(p.stem): json.loads(p.read_text())["meta"]["wall_s"]
            for p in (out / "chunks").glob("*.json")}


def _arrays(out: Path) -> dict:
    arrays = {}
    for path in sorted((out / "chunks").glob("*.npz")):
        with np.load(path) as data:
            arrays[path.stem] = {k: data[k] for k in data.files}
    return arrays


def _same_arrays(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for chunk in a:
        if a[chunk].keys() != b[chunk].keys():
            return False
        for k in a[chunk]:
            x, y = a[chunk][k], b[chunk][k]
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                return False
    return True


def _run_local(spec_path: Path, out: Path) -> float:
    """`dpolab sweep --backend local` in a fresh process; its wall time (run_sweep's clock)."""
    env = dict(os.environ, JAX_ENABLE_X64="1" if jax.config.jax_enable_x64 else "0")
    subprocess.run([sys.executable, "-m", "dpolab.cli", "sweep", str(spec_path), "--out", str(out),
                    "--quiet"], check=True, capture_output=True, env=env)
    return json.loads((out / "manifest.json").read_text())["wall_s"]


def _run_ray(spec_path: Path, out: Path, workers: int) -> tuple[float, float]:
    """A local Ray with `workers` CPUs, then the sweep: (Ray start s, sweep wall s)."""
    import ray

    from dpolab.sims.sweep.engine import SweepStore
    from dpolab.sims.sweep.ray import run_ray, start_local_ray
    from dpolab.sims.sweep.spec import load_spec

    if ray.is_initialized():
        raise RuntimeError("the sweep benchmark starts its own local Ray, but Ray is already "
                           "initialised in this process")
    spec = load_spec(spec_path)
    store = SweepStore(out, spec, resume=False, force=False, backend="ray")
    start = time.perf_counter()
    start_local_ray(workers)
    ray_start_s = time.perf_counter() - start
    try:
        start = time.perf_counter()
        run_ray(spec, store, store.pending(), num_workers=workers)
        wall_s = time.perf_counter() - start
    finally:
        ray.shutdown()
    store.finish(wall_s)
    return ray_start_s, wall_s


def sweep_suite(*, quick: bool = False, bench: SweepBench | None = None) -> dict:
    """Runs the "sweep" benchmark and returns a JSON-ready dict.

    Args:
      quick: use `QUICK` (one signature, 4 tiny chunks, local and Ray with 2 workers only: seconds
        plus Ray's start) instead of `FULL` (4 signatures × 96 points × 8 seeds, about a minute
        per run).
      bench: explicit settings (overrides `quick`).
    Returns:
      dict with, among others: runs ({"local", "ray_1", "ray_2"}: wall_s, sample_steps_per_s,
      workers, ...), sample_steps, scaling_efficiency, ray_parallel_efficiency,
      compile_share_local, compile_share_ray_2, compile_s_per_signature, equal_work, config,
      targets, meets_targets, notes, table_rows.
    Raises:
      RuntimeError: the runs did not store bit-identical arrays, or Ray is already initialised.
    """
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise RuntimeError("the sweep benchmark needs Ray: pip install -e '.[distributed]'")
    from dpolab.sims.sweep.engine import plan
    from dpolab.sims.sweep.spec import parse_spec

    b = bench if bench is not None else (QUICK if quick else FULL)
    spec = parse_spec(b.spec())
    chunks = plan(spec)
    work = sample_steps(spec)
    load_before = os.getloadavg()[0]
    runs, arrays = {}, {}
    with tempfile.TemporaryDirectory(prefix="dpolab-bench-sweep-") as tmp:
        tmp = Path(tmp)
        spec_path = tmp / "spec.toml"
        spec_path.write_text(_toml(b.spec()))
        wall = _run_local(spec_path, tmp / "local")
        runs["local"] = dict(workers=1, wall_s=wall, chunk_walls_s=_chunk_walls(tmp / "local"))
        arrays["local"] = _arrays(tmp / "local")
        summary = (tmp / "local" / "summary.csv").read_bytes()
        summaries_identical = True
        for n in b.workers:
            ray_start_s, wall = _run_ray(spec_path, tmp / f"ray_{n}", n)
            runs[f"ray_{n}"] = dict(workers=n, wall_s=wall, ray_start_s=ray_start_s,
                                    chunk_walls_s=_chunk_walls(tmp / f"ray_{n}"))
            arrays[f"ray_{n}"] = _arrays(tmp / f"ray_{n}")
            summaries_identical &= (tmp / f"ray_{n}" / "summary.csv").read_bytes() == summary
    identical = all(_same_arrays(arrays["local"], arrays[k]) for k in arrays)
    if not identical:
        raise RuntimeError("equal-work check failed: the Ray runs stored different arrays from the "
                           "local run")
    compile_s = compile_seconds(spec)
    load_after = os.getloadavg()[0]

    # compilations per signature: one locally; with Ray, one per worker that gets a chunk of it
    per_signature = {}
    points = spec.points()
    for chunk in chunks:
        label = f"K={points[chunk[0]]['K']}"
        per_signature[label] = per_signature.get(label, 0) + 1
    for run in runs.values():
        run["sample_steps_per_s"] = work / run["wall_s"]
        run["compilations"] = sum(min(run["workers"], c) for c in per_signature.values())
        run["compile_s"] = sum(compile_s[k] * min(run["workers"], c)
                               for k, c in per_signature.items())
        run["compile_share"] = run["compile_s"] / (run["workers"] * run["wall_s"])
    # cross-check of the local compile cost: a signature's first chunk minus its others' median
    local_walls = runs["local"]["chunk_walls_s"]
    first_chunk_overhead = {}
    for label in per_signature:
        ids = [i for i, c in enumerate(chunks) if f"K={points[c[0]]['K']}" == label]
        if len(ids) >= 2:
            rest = statistics.median(local_walls[i] for i in ids[1:])
            first_chunk_overhead[label] = local_walls[ids[0]] - rest
    t_local = runs["local"]["sample_steps_per_s"]
    result = dict(
        runs=runs,
        sample_steps=work,
        scaling_efficiency=runs["ray_2"]["sample_steps_per_s"] / t_local,
        compile_share_local=runs["local"]["compile_share"],
        compile_share_ray_2=runs["ray_2"]["compile_share"],
        compile_s=sum(compile_s.values()),
        compile_s_per_signature=compile_s,
        first_chunk_overhead_s_local=first_chunk_overhead,
        local_wall_at_least_1_min=runs["local"]["wall_s"] >= 60,
        load_average_1min=dict(before=load_before, after=load_after, cpus=os.cpu_count()),
        config=dict(K=",".join(map(str, b.K)), Q=b.Q, d=5 * b.Q,
                    N="-".join(dict.fromkeys(str(2 * k * b.Q) for k in (min(b.K), max(b.K)))),
                    steps=b.steps, vocab=64, v=list(b.v), beta=list(b.beta), seeds=b.seeds,
                    chunk_size=b.chunk_size, points=len(points), chunks=len(chunks),
                    signatures=len(per_signature), workers=list(b.workers), loss="dpo",
                    optimizer="gd"),
        host=dict(cpus=os.cpu_count(), python=sys.version.split()[0], jax=jax.__version__,
                  ray=__import__("ray").__version__),
        jax_backend=jax.default_backend(),
        precision=spec.precision,
        targets=dict(TARGETS),
        equal_work=dict(identical_arrays=identical, identical_summaries=bool(summaries_identical)),
    )
    for n in b.workers:
        if n != 2:
            result[f"ray_{n}_vs_local"] = runs[f"ray_{n}"]["sample_steps_per_s"] / t_local
    if 1 in b.workers:
        result["ray_parallel_efficiency"] = (runs["ray_2"]["sample_steps_per_s"]
                                             / (2 * runs["ray_1"]["sample_steps_per_s"]))
    result["meets_targets"] = {
        "scaling_efficiency": result["scaling_efficiency"] >= TARGETS["scaling_efficiency"],
        "compile_share_local": result["compile_share_local"] <= TARGETS["compile_share_local"]}
    result["table_rows"] = [
        dict(method="local: one process, XLA on all cores [1]",
             s_per_step=runs["local"]["wall_s"] / b.steps, metric=None)]
    for n in b.workers:
        result["table_rows"].append(dict(
            method=f"Ray: {n} worker{'s' if n > 1 else ''}, 1 core each [2]",
            s_per_step=runs[f"ray_{n}"]["wall_s"] / b.steps,
            metric="scaling_efficiency" if n == 2 else f"ray_{n}_vs_local"))
    result["notes"] = _notes(result, b)
    return result


def _notes(r: dict, b: SweepBench) -> list[str]:
    runs, cfg = r["runs"], r["config"]
    thr = ", ".join(f"{name} {run['sample_steps_per_s']:.3e}" for name, run in runs.items())
    met = lambda key: "yes" if r["meets_targets"][key] else "NO"
    ray_starts = ", ".join(f"{n} worker(s) {runs[f'ray_{n}']['ray_start_s']:.1f} s"
                           for n in b.workers)
    notes = [
        "local: `dpolab sweep --backend local` in a fresh process; wall = run_sweep's clock "
        "(compilations included, interpreter start and imports not).",
        f"Ray: a local Ray with n CPUs started apart (start not counted: {ray_starts}), then "
        "run_ray (each worker pinned to one core); wall includes starting the workers, importing "
        "JAX in them and compiling.",
        f"grid: {cfg['points']} points (K ∈ {{{cfg['K']}}} × {len(b.v)} v × {len(b.beta)} β) "
        f"× {b.seeds} seeds = {cfg['points'] * b.seeds} runs in {cfg['chunks']} chunks, "
        f"{r['sample_steps']:.3e} sample-steps; time columns: s/step = sweep wall ÷ {b.steps}, so "
        f"'s/{b.steps} steps' is the wall time of the whole sweep. Here compilation is INCLUDED "
        "in it: the 'compile' line above is every signature's XLA lower + compile, once.",
        f"throughput (sample-steps/s): {thr}. 'fast is' = throughput ÷ local's; Ray 2 workers ÷ "
        f"local = scaling efficiency {r['scaling_efficiency']:.2f} (target >= "
        f"{TARGETS['scaling_efficiency']:g}: {met('scaling_efficiency')})"
        + (f"; Ray 2 ÷ (2 × Ray 1) = {r['ray_parallel_efficiency']:.2f}"
           if "ray_parallel_efficiency" in r else "") + ".",
        "compile (XLA lower + compile on a fresh jit, per signature): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in r["compile_s_per_signature"].items())
        + f"; compile share of wall: local {r['compile_share_local']:.1%} (target <= "
        f"{TARGETS['compile_share_local']:.0%}: {met('compile_share_local')}"
        + ("" if r["local_wall_at_least_1_min"] else
           f"; the target is for sweeps >= 1 minute and this one took "
           f"{runs['local']['wall_s']:.0f} s") + f"), Ray 2 workers {r['compile_share_ray_2']:.1%}"
        f" (each worker compiles each signature it meets).",
    ]
    if r["first_chunk_overhead_s_local"]:
        notes.append("local first chunk of each signature minus the median of its other chunks "
                     "(compile + first-call warm-up): "
                     + ", ".join(f"{k} {v:.2f} s"
                                 for k, v in r["first_chunk_overhead_s_local"].items())
                     + ".")
    load = r["load_average_1min"]
    notes.append(f"equal work: every chunk's arrays bit-identical across the runs "
                 f"({'yes' if r['equal_work']['identical_arrays'] else 'NO'}); summary.csv "
                 f"byte-identical ({'yes' if r['equal_work']['identical_summaries'] else 'NO'}). "
                 f"Load average (1 min) before/after: {load['before']:.2f}/{load['after']:.2f} on "
                 f"{load['cpus']} CPUs (other work on the machine slows every run).")
    return notes
