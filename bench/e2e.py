"""Suite "e2e": whole commands timed as a user runs them, cold and warm.

Each command runs twice in a fresh interpreter (`python -m dpolab.cli ...`) with its own empty
persistent compilation cache (`$DPOLAB_XLA_CACHE`, see `dpolab.xla`): *cold* is the first run (every
program compiled), *warm* the second (every program it compiled loaded from the cache), into new
output folders both times. Wall time is measured around the process (interpreter start and imports
included); the compile seconds and program counts are the ones the command wrote to its manifest
(`report.json` for verify, `manifest.json` for repro/audit).

Commands: `verify --quick`, `verify`, `repro --quick`, `audit --quick` (the issue #13 set); the
quick configuration of this suite runs only `verify --quick --suite ranking` (seconds; for tests).
Keys (stable): `<name>_s` (warm wall seconds), `<name>_cold_s`, `compile_share` and
`compile_share_cold` ({name: compile seconds / (wall seconds × processes)}: verify runs its checks
in `--jobs` worker processes), `runs` (every run's record).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

from dpolab.bench.harness import host

#: {name: the command's arguments}: what a user runs.
COMMANDS = {
    "verify_quick": ["verify", "--quick"],
    "verify": ["verify"],
    "repro_quick": ["repro", "--quick"],
    "audit_quick": ["audit", "--quick"],
}
QUICK_COMMANDS = {"verify_quick_ranking": ["verify", "--quick", "--suite", "ranking"]}
#: warm wall-time targets in seconds (issue #13), and verify's cold target.
TARGETS = {"verify_s": 180.0, "verify_cold_s": 300.0, "repro_quick_s": 45.0, "audit_quick_s": 45.0}


def run_command(args: list[str], out: Path, cache: Path) -> dict:
    """Runs `dpolab ARGS --out OUT` in a fresh interpreter with the compilation cache at `cache`.

    Returns:
      {wall_s, exit_code, compile_s, programs, cache_hits, processes} (the last four from the
      manifest; compile seconds add up over the `processes` that ran checks).
    """
    env = dict(os.environ, DPOLAB_XLA_CACHE=str(cache))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dpolab.cli", *args, "--out", str(out)], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # 1: verify ran and a check failed; still a timed run
        raise RuntimeError(f"dpolab {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    report = out / "report.json"
    compiled = (json.loads(report.read_text())["meta"] if report.exists()
                else json.loads((out / "manifest.json").read_text()))["xla"]
    return dict(wall_s=wall, exit_code=proc.returncode, compile_s=compiled["compile_s"],
                programs=compiled["programs"], cache_hits=compiled["cache_hits"],
                processes=compiled.get("processes", 1))


def _share(run: dict) -> float:
    """The share of the processes' time spent compiling."""
    return run["compile_s"] / (run["wall_s"] * run["processes"])


def e2e_suite(*, quick: bool = False) -> dict:
    commands = QUICK_COMMANDS if quick else COMMANDS
    runs, result = {}, {}
    with tempfile.TemporaryDirectory(prefix="dpolab-e2e-") as tmp:
        for name, args in commands.items():
            cache = Path(tmp) / f"cache-{name}"  # empty: the cold run compiles everything
            for state in ("cold", "warm"):
                runs[f"{name}_{state}"] = run_command(args, Path(tmp) / f"{name}-{state}", cache)
            result[f"{name}_s"] = runs[f"{name}_warm"]["wall_s"]
            result[f"{name}_cold_s"] = runs[f"{name}_cold"]["wall_s"]
    share = {state: {name: _share(runs[f"{name}_{state}"]) for name in commands} for state in ("cold", "warm")}
    targets = {k: v for k, v in TARGETS.items() if k in result}
    rows = [dict(method=f"{' '.join(commands[name])} ({state})", s_per_step=runs[f"{name}_{state}"]["wall_s"],
                 metric=None) for name in commands for state in ("cold", "warm")]
    notes = [f"{' '.join(commands[n])}: cold {runs[n + '_cold']['wall_s']:.1f} s "
             f"(compilation {share['cold'][n]:.0%}, {runs[n + '_cold']['programs']} programs), warm "
             f"{runs[n + '_warm']['wall_s']:.1f} s (compilation {share['warm'][n]:.0%}, "
             f"{runs[n + '_warm']['cache_hits']} of {runs[n + '_warm']['programs']} programs from the cache)"
             for n in commands]
    notes += [f"target {k} <= {v:g} s: {'met' if result[k] <= v else 'NOT met'} ({result[k]:.1f} s)"
              for k, v in targets.items()]
    return dict(result, compile_share=share["warm"], compile_share_cold=share["cold"], runs=runs,
                targets=targets, meets_targets={k: result[k] <= v for k, v in targets.items()},
                config=dict(steps=1, commands={n: " ".join(a) for n, a in commands.items()}),
                host=host(), jax_backend=jax.default_backend(), precision="float64", table_rows=rows,
                notes=notes)
