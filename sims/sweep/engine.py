"""The sweep engine: a plan of chunks, pure chunk computation, a resumable result store.

- Plan: grid points are grouped by static signature (what fixes shapes); each group is cut into
  the fewest chunks of at most `max(1, chunk_size // seeds)` points, as equal as possible (sizes
  differ by at most one). Every chunk of a group is padded (by repeating its last point) to the
  group's largest chunk, rounded up to the device count, so a sweep compiles once per distinct
  static signature and an oversized `chunk_size` costs nothing.
- Keys: point i uses fold_in(key(root_seed), i) and seed s fold_in(that, s): results do not
  depend on chunking or backend.
- Store: each chunk is a record of `dpolab.store` (`DIR/chunks/NNNNN.npz`, then `NNNNN.json` with
  its sha256, points and wall time, written last): a chunk counts as done only when whole and when
  it holds the points the plan gives it now. `--resume` recomputes every other chunk.
- Results: `finish` writes `summary.csv` (and `summary.parquet` where pyarrow is installed);
  `dpolab.load` reads them back as a labelled Dataset.

The drivers (`run_spec`, the local and Ray backends) are in `dpolab.sims.sweep.run`.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dpolab.sims.sweep.simulations import SIMULATIONS
from dpolab.sims.sweep.spec import SweepSpec, parse_spec
from dpolab.store import environment, load_record, prepare_out, save_record, sha256, write_atomic, write_manifest


def plan(spec: SweepSpec) -> list[list[int]]:
    """Chunks as lists of point indices (each chunk has one static signature)."""
    sim = SIMULATIONS[spec.simulation]
    groups: dict = {}
    for i, point in enumerate(spec.points()):
        groups.setdefault(sim.static(point), []).append(i)
    per_chunk = max(1, spec.chunk_size // spec.seeds)
    chunks = []
    for idx in groups.values():
        n = -(-len(idx) // per_chunk)  # the fewest chunks; their sizes differ by at most one
        chunks += [idx[j * len(idx) // n:(j + 1) * len(idx) // n] for j in range(n)]
    return chunks


def batch_width(spec: SweepSpec, signature) -> int:
    """The largest chunk of the points with this static signature (`plan` cuts them into
    `n` chunks of `ceil(size / n)` or one point fewer): every chunk of the group is padded to it,
    so the group compiles once."""
    sim = SIMULATIONS[spec.simulation]
    size = sum(sim.static(p) == signature for p in spec.points())
    n = -(-size // max(1, spec.chunk_size // spec.seeds))
    return -(-size // n)


def point_key(root_seed, point, seed):
    """The PRNG key of grid point `point`, seed `seed`: fold_in(fold_in(key(root_seed), point), seed).

    The one key schedule of every sweep (so results do not depend on chunking or backend); code
    that re-creates a sweep's data (the audit) calls this too. Works under jit/vmap.
    """
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(root_seed), point), seed)


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
    with jax.enable_x64(spec.precision == "float64"):
        sharding, width = _mesh_sharding(batch_width(spec, sim.static(chosen[0])))
        index = list(points) + [points[-1]] * (width - len(points))
        dyn_rows = [sim.dynamic(all_points[i]) for i in index]
        dyn = {k: jnp.asarray([row[k] for row in dyn_rows]) for k in dyn_rows[0]}
        keys = jax.vmap(lambda i: jax.vmap(lambda s: point_key(spec.root_seed, i, s))(
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
        prepare_out(self.out, "sweep", force=force, resume=resume, key={"spec_hash": spec.hash()})
        self.chunks.mkdir(parents=True, exist_ok=True)
        self.plan = plan(spec)
        self.manifest = dict(environment(), kind="sweep", key={"spec_hash": spec.hash()},
                             spec=spec.as_json(), spec_hash=spec.hash(), backend=backend,
                             precision=spec.precision,
                             chunks={f"{i:05d}": pts for i, pts in enumerate(self.plan)},
                             status="running")
        write_manifest(self.out, self.manifest)

    def _load(self, chunk_id: int):
        """(arrays, meta) of a whole chunk computed for the points the plan gives it, or None."""
        return load_record(self.chunks, f"{chunk_id:05d}",
                           expect={"points": self.plan[chunk_id], "seeds": self.spec.seeds})

    def done(self, chunk_id: int) -> bool:
        """Whether the chunk is stored whole, for the points and seeds of this plan."""
        return self._load(chunk_id) is not None

    def pending(self) -> list[int]:
        return [i for i in range(len(self.plan)) if not self.done(i)]

    def write(self, chunk_id: int, result: dict, wall_s: float) -> None:
        save_record(self.chunks, f"{chunk_id:05d}", result,
                    {"chunk": chunk_id, "points": self.plan[chunk_id], "seeds": self.spec.seeds,
                     "wall_s": wall_s})

    def finish(self, wall_s: float) -> Path:
        """Merges every chunk into summary.csv (one row per grid point and seed), only when the
        verified chunks cover the whole grid; returns its path."""
        sim = SIMULATIONS[self.spec.simulation]
        with jax.enable_x64(self.spec.precision == "float64"):  # the values the chunks used
            points = [sim.resolved(p) for p in self.spec.points()]
        rows, checksums = {}, {}
        for i in range(len(self.plan)):
            stored = self._load(i)
            if stored is None:
                raise RuntimeError(f"chunk {i:05d} in {self.chunks} changed or vanished after it was "
                                   "computed (another writer?); rerun with --resume")
            data = stored[0]
            checksums[f"{i:05d}"] = sha256((self.chunks / f"{i:05d}.npz").read_bytes())
            for j, p in enumerate(data["point"]):
                for s in range(self.spec.seeds):
                    rows[(int(p), s)] = {m: data[m][j, s].item() for m in sim.metrics}
        missing = {(i, s) for i in range(len(points)) for s in range(self.spec.seeds)} - set(rows)
        if missing or len(rows) != len(points) * self.spec.seeds:
            raise RuntimeError(f"the stored chunks miss {len(missing)} of {len(points) * self.spec.seeds} "
                               f"(point, seed) rows although each is whole; no summary.csv written; rerun with --force")
        params = list(sim.params)
        bounds = {i: sim.bounds(points[i]) for i in range(len(points))}  # float64 closed forms
        header = ["point", "seed"] + params + list(sim.metrics) + list(next(iter(bounds.values())))
        body = []
        for (i, s), metrics in sorted(rows.items()):
            values = [points[i][k] for k in params] + [metrics[m] for m in sim.metrics]
            body.append([str(c) for c in [i, s] + [_cell(v) for v in values + list(bounds[i].values())]])
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        write_atomic(self.out / "summary.csv", buf.getvalue())
        _write_parquet(self.out / "summary.parquet", _columns(header, body))
        self.manifest.update(status="complete", wall_s=wall_s, checksums=checksums)
        write_manifest(self.out, self.manifest)
        return self.out / "summary.csv"


def _write_parquet(path: Path, columns: dict) -> None:
    """summary.parquet beside summary.csv: the same columns (as `read_summary` gives them), for
    pandas/polars/DuckDB users; written only where pyarrow is installed (the `data` extra)."""
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), buf)
    write_atomic(path, buf.getvalue().to_pybytes())


def _cell(v):
    if isinstance(v, float):
        return repr(v)
    return "" if v is None else v


def read_summary(path) -> dict[str, np.ndarray]:
    """The columns of a summary.csv: numeric and boolean columns as float64 arrays (empty cells
    NaN, True/False as 1/0), the others (e.g. `tokens`) as string arrays."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return _columns(rows[0], rows[1:])


def _columns(header: list[str], body: list[list[str]]) -> dict[str, np.ndarray]:
    """The CSV's text cells as arrays (the one conversion `finish` and `read_summary` share)."""
    as_number = {"": np.nan, "True": 1.0, "False": 0.0}
    columns = {}
    for j, name in enumerate(header):
        cells = [r[j] for r in body]
        try:
            columns[name] = np.asarray([as_number[c] if c in as_number else float(c) for c in cells])
        except ValueError:
            columns[name] = np.asarray(cells)
    return columns
