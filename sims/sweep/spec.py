"""Sweep specifications (TOML): parsing and validation before any work.

```toml
[sweep]
simulation = "im-li"     # or "rdpo"
seeds = 4
chunk_size = 8           # grid points × seeds per chunk; optional
precision = "float64"    # or "float32"
root_seed = 0            # optional
[fixed]                  # any simulation parameter
Q = 50
[grid]                   # Cartesian product of these axes
K = [1, 2, 4]
v = [0.0, 0.01]
```
Unknown keys, wrong types and impossible values are rejected with the key named. `--set
TABLE.KEY=VALUE` overrides an entry from the command line (`apply_overrides`); the manifest of a
sweep records the effective spec.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path

import tomllib

from dpolab.errors import InputError
from dpolab.sims.sweep.simulations import SIMULATIONS

SWEEP_KEYS = {"simulation": str, "seeds": int, "chunk_size": int, "precision": str, "root_seed": int}
PRECISIONS = ("float64", "float32")
INT32 = (-2**31, 2**31 - 1)  # every integer of a spec is a JAX int32 (sizes, steps, seeds)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. `grid` maps axis name to a tuple of values (in file order)."""

    simulation: str
    seeds: int
    chunk_size: int
    precision: str
    root_seed: int
    fixed: tuple
    grid: tuple

    def as_json(self) -> dict:
        return {"sweep": {"simulation": self.simulation, "seeds": self.seeds,
                          "chunk_size": self.chunk_size, "precision": self.precision,
                          "root_seed": self.root_seed},
                "fixed": dict(self.fixed), "grid": {k: list(v) for k, v in self.grid}}

    def hash(self) -> str:
        """sha256 of the canonical JSON of everything that determines the results.

        chunk_size is left out: results do not depend on it (a test proves it)."""
        content = self.as_json()
        del content["sweep"]["chunk_size"]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def points(self) -> list[dict]:
        """Every grid point as a full parameter dict (defaults, then fixed, then the axes)."""
        sim = SIMULATIONS[self.simulation]
        base = {k: p.default for k, p in sim.params.items()} | dict(self.fixed)
        names = [k for k, _ in self.grid]
        return [base | dict(zip(names, combo)) for combo in itertools.product(*(v for _, v in self.grid))]


def _bad(key, value, allowed):
    raise InputError(f"{key}={value!r} is not allowed: {key} must be {allowed}")


def _typed(key, value, kind):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        _bad(key, value, f"of type {kind.__name__}")
    if kind is int and not INT32[0] <= value <= INT32[1]:
        _bad(key, value, "an int32: from -2**31 to 2**31 - 1")
    return value


def parse_spec(data: dict) -> SweepSpec:
    """Validates a parsed TOML document and returns a `SweepSpec` (every point is checked)."""
    unknown = set(data) - {"sweep", "fixed", "grid"}
    if unknown:
        name = sorted(unknown)[0]
        _bad(name, data[name], "absent: tables are [sweep], [fixed] and [grid]")
    sweep = data.get("sweep")
    if not isinstance(sweep, dict):
        _bad("sweep", sweep, "a [sweep] table")
    for key in sweep:
        if key not in SWEEP_KEYS:
            _bad(f"sweep.{key}", sweep[key], f"absent: allowed keys are {tuple(SWEEP_KEYS)}")
    sim_name = _typed("sweep.simulation", sweep.get("simulation"), str)
    if sim_name not in SIMULATIONS:
        _bad("sweep.simulation", sim_name, f"one of {tuple(SIMULATIONS)}")
    sim = SIMULATIONS[sim_name]
    seeds = _typed("sweep.seeds", sweep.get("seeds", 1), int)
    chunk = _typed("sweep.chunk_size", sweep.get("chunk_size", 8), int)
    precision = _typed("sweep.precision", sweep.get("precision", "float64"), str)
    root = _typed("sweep.root_seed", sweep.get("root_seed", 0), int)
    if seeds < 1:
        _bad("sweep.seeds", seeds, "an integer >= 1")
    if chunk < 1:
        _bad("sweep.chunk_size", chunk, "an integer >= 1")
    if precision not in PRECISIONS:
        _bad("sweep.precision", precision, f"one of {PRECISIONS}")

    def param(table, key, value):
        if key not in sim.params:
            _bad(f"{table}.{key}", value, f"a parameter of {sim_name}: {tuple(sim.params)}")
        return _typed(f"{table}.{key}", value, sim.params[key].kind)

    fixed = {k: param("fixed", k, v) for k, v in data.get("fixed", {}).items()}
    grid = {}
    for k, values in data.get("grid", {}).items():
        if not isinstance(values, list) or not values:
            _bad(f"grid.{k}", values, "a non-empty list")
        if k in fixed:
            _bad(f"grid.{k}", values, "absent: the key is also in [fixed]")
        grid[k] = tuple(param("grid", k, v) for v in values)
    spec = SweepSpec(sim_name, seeds, chunk, precision, root, tuple(sorted(fixed.items())),
                     tuple(grid.items()))
    for point in spec.points():
        try:
            sim.static(point)
            sim.dynamic(point)
        except ValueError as err:
            where = {k: point[k] for k, _ in spec.grid}
            raise InputError(f"{err} (at grid point {where})") from None
    return spec


def apply_overrides(data: dict, overrides=()) -> dict:
    """`data` (a parsed spec) with `TABLE.KEY=VALUE` overrides applied (`--set`), in order.

    TABLE is sweep, fixed or grid; VALUE is a TOML value (`4`, `0.5`, `[1, 2, 4]`, `"float32"`), a
    bare word being read as a string (`precision=float32`). A key set in [fixed] leaves [grid] and
    the other way round, so `--set fixed.K=4` pins an axis and `--set grid.v=[0,0.01]` sweeps one.
    """
    data = {table: dict(entries) if isinstance(entries, dict) else entries for table, entries in data.items()}
    for item in overrides:
        target, sep, text = item.partition("=")
        table, dot, key = target.strip().partition(".")
        if not sep or not dot or not key or table not in ("sweep", "fixed", "grid"):
            raise InputError(f"--set={item!r} is not allowed: --set must be TABLE.KEY=VALUE with TABLE one of "
                             "sweep, fixed, grid (e.g. --set grid.K=[1,2,4] or --set sweep.seeds=8)")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()  # a bare word: a string
        data.setdefault(table, {})[key] = value
        other = {"fixed": "grid", "grid": "fixed"}.get(table)
        if other and isinstance(data.get(other), dict):
            data[other].pop(key, None)
    return data


def load_spec(path, overrides=()) -> SweepSpec:
    """Reads and validates a sweep spec file, with `--set` overrides applied (`apply_overrides`)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"spec={str(path)!r} is not allowed: the file does not exist") from None
    except OSError as err:  # a folder, no permission, ...
        raise InputError(f"spec={str(path)!r} is not allowed: it cannot be read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise InputError(f"spec={str(path)!r} is not allowed: not UTF-8 text ({err.reason} at byte "
                         f"{err.start})") from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"spec={str(path)!r} is not allowed: not valid TOML ({err})") from None
    return parse_spec(apply_overrides(data, overrides))
