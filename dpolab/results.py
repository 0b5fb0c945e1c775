"""`dpolab.load(DIR)`: any dpolab output folder as one labelled `xarray.Dataset`.

- **sweep** (`dpolab sweep`): dims `point` × `seed`; each metric is a (point, seed) variable, each
  closed-form bound a (point,) variable, and the grid's parameters are coordinates on `point`, so
  `ds.sel(point=ds.K == 4)` or `ds.to_dataframe()` work at once. Read from `summary.csv`, which only
  a complete sweep has.
- **verify**: dim `check` (the check ids) with `verdict`, `claim`, `reference`, `seconds`; each
  stored array of a check (`results/*.npz`) is a variable `<check id>/<name>` with its own dims.
- **repro / audit**: dim `item` with `status`, `title`, `seconds`; each item's stored arrays
  (`<item>/data.npz`, checksummed) are variables `<item>/<name>`.

Provenance goes to `.attrs`: `kind`, `path`, and every manifest entry (nested entries as JSON text,
so the attrs stay writable to netCDF). `rows(ds)` turns a sweep Dataset back into one row per
(point, seed), the form the audit's statistics take.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dpolab.errors import InputError
from dpolab.store import load_record


def load(path):
    """The dpolab output folder `path` (sweep, verify, repro or audit) as an `xarray.Dataset`.

    Raises:
      InputError: `path` is not a dpolab output folder, or a sweep in it is not complete.
    """
    out = Path(path)
    if (out / "report.json").is_file():
        return _verify(out)
    manifest = _manifest(out)
    kind = manifest.get("kind")
    if kind == "sweep":
        return _sweep(out, manifest)
    if kind in ("repro", "audit"):
        return _items(out, manifest, kind)
    raise InputError(f"path={str(out)!r} is not allowed: it holds a {kind!r} output, not a sweep, verify, "
                     "repro or audit folder")


def _manifest(out: Path) -> dict:
    try:
        return json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"path={str(out)!r} is not allowed: no readable manifest.json or report.json there "
                         "(not a dpolab output folder)") from None


def _attrs(kind: str, out: Path, meta: dict, skip=()) -> dict:
    attrs = {"kind": kind, "path": str(out.resolve())}
    for k, v in meta.items():
        if k in skip or v is None:
            continue
        attrs[k] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v, default=float, sort_keys=True)
    return attrs


def _sweep(out: Path, manifest: dict):
    import xarray as xr

    from dpolab.sims.sweep.engine import read_summary
    from dpolab.sims.sweep.simulations import SIMULATIONS

    if manifest.get("status") != "complete" or not (out / "summary.csv").is_file():
        raise InputError(f"path={str(out)!r} is not allowed: the sweep there is not complete "
                         f"(status {manifest.get('status')!r}); finish it with `dpolab sweep ... --resume`")
    cols = read_summary(out / "summary.csv")
    sim = SIMULATIONS[manifest["spec"]["sweep"]["simulation"]]
    point, seed = cols["point"].astype(int), cols["seed"].astype(int)
    points, seeds = np.unique(point), np.unique(seed)
    if len(point) != len(points) * len(seeds):
        raise InputError(f"path={str(out)!r} is not allowed: summary.csv has {len(point)} rows, not "
                         f"{len(points)} points × {len(seeds)} seeds")
    order = np.lexsort((seed, point))  # rows by point, then seed
    grid = {name: col[order].reshape(len(points), len(seeds)) for name, col in cols.items()}
    data = {m: (("point", "seed"), grid[m]) for m in sim.metrics}
    bounds = [c for c in cols if c not in data and c not in ("point", "seed") and c not in sim.params]
    data |= {b: ("point", grid[b][:, 0]) for b in bounds}
    coords = {"point": points, "seed": seeds} | {p: ("point", grid[p][:, 0]) for p in sim.params if p in grid}
    return xr.Dataset(data, coords=coords, attrs=_attrs("sweep", out, manifest, skip=("chunks", "checksums")))


def rows(ds) -> dict[str, np.ndarray]:
    """A sweep Dataset (`load` of a sweep folder) as columns of one row per (point, seed), rows
    sorted by point, then seed (summary.csv's order): metrics, bounds and grid parameters alike."""
    n_seeds = ds.sizes["seed"]
    point, seed = np.meshgrid(ds["point"].values, ds["seed"].values, indexing="ij")
    out = {"point": point.ravel().astype(float), "seed": seed.ravel().astype(float)}
    for name in [*ds.coords, *ds.data_vars]:
        if name in ("point", "seed"):
            continue
        var = ds[name]
        if var.dims == ("point", "seed"):
            out[name] = var.values.ravel()
        else:
            out[name] = np.repeat(var.values, n_seeds)
    return out


def _arrays_as_variables(prefix: str, arrays: dict) -> dict:
    """{`prefix/name`: (dims, array)}: each array with dims of its own (`prefix/name/dim0`, ...)."""
    found = {}
    for name, value in arrays.items():
        value = np.asarray(value)
        found[f"{prefix}/{name}"] = (tuple(f"{prefix}/{name}/dim{i}" for i in range(value.ndim)), value)
    return found


def _verify(out: Path):
    import xarray as xr

    from dpolab.verify import result_stem

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    checks = report["checks"]
    ids = [c["id"] for c in checks]
    data = {field: ("check", [str(c.get(field)) for c in checks]) for field in ("verdict", "claim", "reference")}
    data["seconds"] = ("check", np.asarray([float(c.get("seconds") or 0.0) for c in checks]))
    for cid in ids:
        stem = out / "results" / (result_stem(cid) + ".npz")
        if stem.is_file():
            with np.load(stem, allow_pickle=False) as npz:
                data |= _arrays_as_variables(cid, {k: npz[k] for k in npz.files})
    return xr.Dataset(data, coords={"check": ids}, attrs=_attrs("verify", out, report["meta"]))


def _items(out: Path, manifest: dict, kind: str):
    import xarray as xr

    entries = manifest.get("items", {})
    names = list(entries)
    data = {"status": ("item", [entries[n]["status"] for n in names]),
            "title": ("item", [str(entries[n].get("title")) for n in names]),
            "seconds": ("item", np.asarray([float(entries[n].get("seconds") or 0.0) for n in names]))}
    for name in names:
        stored = load_record(out / name, "data")
        if stored is not None:
            data |= _arrays_as_variables(name, stored[0])
    return xr.Dataset(data, coords={"item": names}, attrs=_attrs(kind, out, manifest, skip=("items",)))


def sweep_rows(spec: dict, out) -> dict:
    """Runs, finishes or replaces the sweep of `spec` (a spec dict) in `out` and returns its summary
    read back through `dpolab.load`, one row per (point, seed) (`dpolab.results.rows`).

    A stored sweep of this very spec is finished (resumed chunk by chunk); one of another spec (an
    older version of the caller) is replaced; `prepare_out` still refuses folders dpolab did not write.
    """
    from dpolab.sims.sweep.run import run_spec
    from dpolab.sims.sweep.spec import parse_spec
    from dpolab.store import read_manifest

    out = Path(out)
    parsed = parse_spec(spec)
    earlier = out.exists() and any(out.iterdir())
    same = (read_manifest(out) or {}).get("key") == {"spec_hash": parsed.hash()}
    run_spec(parsed, out, resume=earlier and same, force=earlier and not same, quiet=True)
    return rows(load(out))
