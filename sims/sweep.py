"""The sweep engine: a plan of chunks, pure chunk computation, a resumable result store.

- Plan: grid points are grouped by static signature (what fixes shapes); each group is cut into
  chunks of `max(1, chunk_size // seeds)` points, the last padded by repeating its final point,
  so a sweep compiles once per distinct static signature.
- Keys: point i uses fold_in(key(root_seed), i) and seed s fold_in(that, s): results do not
  depend on chunking or backend.
- Store: `DIR/chunks/NNNNN.npz` (named arrays, no pickle) then `NNNNN.json` (its sha256, points,
  wall time) — the JSON is written last, atomically, so a chunk counts as done only when whole.
  `--resume` recomputes every chunk whose JSON is missing or whose npz fails its checksum.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from sims.provenance import environment, sha256, write_atomic
from sims.sweep_sims import SIMULATIONS
from sims.sweep_spec import SweepSpec, parse_spec


def plan(spec: SweepSpec) -> list[list[int]]:
    """Chunks as lists of point indices (each chunk has one static signature)."""
    sim = SIMULATIONS[spec.simulation]
    groups: dict = {}
    for i, point in enumerate(spec.points()):
        groups.setdefault(sim.static(point), []).append(i)
    per_chunk = max(1, spec.chunk_size // spec.seeds)
    return [idx[j:j + per_chunk] for idx in groups.values() for j in range(0, len(idx), per_chunk)]


def _mesh_sharding(n_points):
    devices = jax.local_devices()
    if len(devices) < 2:
        return None, n_points
    padded = -(-n_points // len(devices)) * len(devices)
    mesh = jax.sharding.Mesh(np.asarray(devices), ("points",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("points")), padded


def compute_chunk(spec_json: dict, points: list[int]) -> dict[str, np.ndarray]:
    """Runs one chunk (pure: the same arrays whoever runs it). Picklable arguments for workers.

    Returns:
      dict with `point` (P,) indices, `devices` (how many the points were laid over) and each
      metric as a (P, S) array.
    """
    spec = parse_spec(spec_json)
    sim = SIMULATIONS[spec.simulation]
    all_points = spec.points()
    chosen = [all_points[i] for i in points]
    per_chunk = max(1, spec.chunk_size // spec.seeds)
    with jax.enable_x64(spec.precision == "float64"):
        sharding, width = _mesh_sharding(per_chunk)
        index = list(points) + [points[-1]] * (width - len(points))
        dyn_rows = [sim.dynamic(all_points[i]) for i in index]
        dyn = {k: jnp.asarray([row[k] for row in dyn_rows]) for k in dyn_rows[0]}
        root = jax.random.key(spec.root_seed)
        keys = jax.vmap(lambda i: jax.vmap(lambda s: jax.random.fold_in(jax.random.fold_in(root, i), s))(
            jnp.arange(spec.seeds)))(jnp.asarray(index))
        if sharding is not None:
            keys, dyn = jax.device_put((keys, dyn), sharding)
        out = _jitted(sim.name, sim.static(chosen[0]))(keys, dyn)
        result = {k: np.asarray(v)[: len(points)] for k, v in out.items()}
    result["point"] = np.asarray(points)
    result["devices"] = np.asarray(1 if sharding is None else len(jax.local_devices()))
    return result


_JITS: dict = {}


def _jitted(name, static):
    """One jitted batch function per (simulation, static signature)."""
    key = (name, static)
    if key not in _JITS:
        _JITS[key] = jax.jit(SIMULATIONS[name].batch(static))
    return _JITS[key]


class SweepStore:
    """The output directory of one sweep (see the module docstring for the layout)."""

    def __init__(self, out: Path, spec: SweepSpec, *, resume: bool, force: bool, backend: str):
        self.out, self.spec = Path(out), spec
        self.chunks = self.out / "chunks"
        manifest = self.out / "manifest.json"
        if self.out.exists() and any(self.out.iterdir()):
            if resume:
                old = json.loads(manifest.read_text()) if manifest.exists() else {}
                if old.get("spec_hash") != spec.hash():
                    raise ValueError(f"out={str(out)!r} is not allowed with --resume: it holds a "
                                     "different sweep (spec hash differs) or no sweep")
            elif force and manifest.exists():
                shutil.rmtree(self.out)
            else:
                raise ValueError(f"out={str(out)!r} is not allowed: the directory exists and is not "
                                 "empty (--resume continues a sweep, --force replaces an earlier one)")
        self.chunks.mkdir(parents=True, exist_ok=True)
        self.plan = plan(spec)
        self.manifest = dict(environment(), spec=spec.as_json(), spec_hash=spec.hash(),
                             backend=backend, precision=spec.precision,
                             chunks={f"{i:05d}": pts for i, pts in enumerate(self.plan)},
                             status="running")
        write_atomic(manifest, json.dumps(self.manifest, indent=1))

    def done(self, chunk_id: int) -> bool:
        """Whether the chunk is stored whole (its JSON exists and the npz matches its checksum)."""
        meta, arrays = self._paths(chunk_id)
        if not meta.exists() or not arrays.exists():
            return False
        try:
            return json.loads(meta.read_text())["sha256"] == sha256(arrays.read_bytes())
        except (ValueError, KeyError):
            return False

    def pending(self) -> list[int]:
        return [i for i in range(len(self.plan)) if not self.done(i)]

    def write(self, chunk_id: int, result: dict, wall_s: float) -> None:
        meta, arrays = self._paths(chunk_id)
        buf = io.BytesIO()
        np.savez(buf, **result)
        data = buf.getvalue()
        write_atomic(arrays, data)
        write_atomic(meta, json.dumps({"chunk": chunk_id, "points": self.plan[chunk_id],
                                       "seeds": self.spec.seeds, "sha256": sha256(data),
                                       "wall_s": wall_s}))

    def _paths(self, chunk_id):
        return self.chunks / f"{chunk_id:05d}.json", self.chunks / f"{chunk_id:05d}.npz"

    def finish(self, wall_s: float) -> Path:
        """Merges every chunk into summary.csv (one row per grid point and seed)."""
        sim = SIMULATIONS[self.spec.simulation]
        with jax.enable_x64(self.spec.precision == "float64"):  # the values the chunks used
            points = [sim.resolved(p) for p in self.spec.points()]
        rows = {}
        for i in range(len(self.plan)):
            with np.load(self._paths(i)[1]) as data:
                for j, p in enumerate(data["point"]):
                    for s in range(self.spec.seeds):
                        rows[(int(p), s)] = {m: data[m][j, s].item() for m in sim.metrics}
        params = list(sim.params)
        bounds = {i: sim.bounds(points[i]) for i in range(len(points))}  # float64 closed forms
        header = ["point", "seed"] + params + list(sim.metrics) + list(next(iter(bounds.values())))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        for (i, s), metrics in sorted(rows.items()):
            values = [points[i][k] for k in params] + [metrics[m] for m in sim.metrics]
            writer.writerow([i, s] + [_cell(v) for v in values + list(bounds[i].values())])
        write_atomic(self.out / "summary.csv", buf.getvalue())
        self.manifest.update(status="complete", wall_s=wall_s,
                             checksums={f"{i:05d}": json.loads(self._paths(i)[0].read_text())["sha256"]
                                        for i in range(len(self.plan))})
        write_atomic(self.out / "manifest.json", json.dumps(self.manifest, indent=1))
        return self.out / "summary.csv"


def _cell(v):
    if isinstance(v, float):
        return repr(v)
    return "" if v is None else v


def run_local(spec: SweepSpec, store: SweepStore, chunk_ids: Iterable[int],
              on_chunk: Callable[[int], None] | None = None) -> None:
    """Computes chunks in this process (all local devices), writing each as it finishes."""
    spec_json = spec.as_json()
    for i in chunk_ids:
        start = time.perf_counter()
        result = compute_chunk(spec_json, store.plan[i])
        store.write(i, result, time.perf_counter() - start)
        if on_chunk:
            on_chunk(i)


BACKENDS = ("local", "ray")


def run_sweep(spec_path, out, *, backend="local", address=None, resume=False, force=False,
              quiet=False) -> Path:
    """Runs (or resumes) the sweep of a TOML spec file; see `run_spec`."""
    from sims.sweep_spec import load_spec

    return run_spec(load_spec(spec_path), out, backend=backend, address=address, resume=resume,
                    force=force, quiet=quiet)


def run_spec(spec: SweepSpec, out, *, backend="local", address=None, resume=False, force=False,
             quiet=False) -> Path:
    """Runs (or resumes) a validated sweep and returns the path of its summary.csv.

    Everything is validated before any work: the spec (every grid point), the backend name and the
    output directory (never overwritten without `force`; `resume` needs the same spec).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not allowed: backend must be one of {BACKENDS}")
    if address is not None and backend != "ray":
        raise ValueError(f"address={address!r} is not allowed: --address needs --backend ray")
    store = SweepStore(Path(out), spec, resume=resume, force=force, backend=backend)
    todo = store.pending()
    start = time.perf_counter()
    with progress_bar(len(store.plan), len(store.plan) - len(todo), quiet=quiet) as bar:
        if backend == "ray":
            from sims.sweep_ray import run_ray

            run_ray(spec, store, todo, address=address, on_chunk=lambda i: bar.update(1))
        else:
            run_local(spec, store, todo, on_chunk=lambda i: bar.update(1))
    missing = store.pending()
    if missing:
        raise RuntimeError(f"chunks {missing} did not complete; rerun with --resume")
    return store.finish(time.perf_counter() - start)


def read_summary(path) -> dict[str, np.ndarray]:
    """The columns of a summary.csv: numeric and boolean columns as float64 arrays (empty cells
    NaN, True/False as 1/0), the others (e.g. `tokens`) as string arrays."""
    as_number = {"": np.nan, "True": 1.0, "False": 0.0}
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    columns = {}
    for j, name in enumerate(header):
        cells = [r[j] for r in body]
        try:
            columns[name] = np.asarray([as_number[c] if c in as_number else float(c) for c in cells])
        except ValueError:
            columns[name] = np.asarray(cells)
    return columns


def progress_bar(total, initial, *, quiet):
    """A tqdm bar over chunks with rate and ETA; silent when not a terminal or when quiet."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="chunk", disable=quiet or not sys.stderr.isatty(),
                desc="sweep")
