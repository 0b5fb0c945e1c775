"""Benchmarks: the speed of the fast paths against baselines and the memory floor.

A suite is a function `suite(*, quick: bool) -> dict` in one module of this package; `SUITES`
below is the catalogue. `run_suite(name, quick=...)` switches float64 on, runs it and returns its
result (a JSON-ready dict); the CLI (`dpolab bench`) is a thin shell over `run_suite` and
`dpolab.bench.harness.format_table`.
"""
from __future__ import annotations

import importlib
import time

from dpolab.errors import InputError

#: {suite: (module of dpolab.bench, function)}, the catalogue of benchmark suites.
SUITES: dict[str, tuple[str, str]] = {
    "im-li": ("im_li", "im_li_suite"),
    "rdpo": ("rdpo", "rdpo_suite"),
    "sweep": ("sweep", "sweep_suite"),
    "llm": ("llm", "llm_suite"),
    "e2e": ("e2e", "e2e_suite"),
}


def run_suite(name: str, *, quick: bool = False) -> dict:
    """Runs the benchmark suite `name` in float64 and returns its JSON-ready result.

    Args:
      name: a key of `SUITES` (e.g. "im-li").
      quick: a tiny configuration that runs in seconds (for tests); its timings mean little.
    Returns:
      The suite's result dict (see the suite's docstring for its keys).
    Raises:
      InputError: `name` is not a suite (raised before anything is computed).
    """
    if name not in SUITES:
        raise InputError(f"suite={name!r} is not allowed: suite must be one of "
                         f"{tuple(sorted(SUITES))}")
    import jax

    # Float64 is the benchmark's precision; the CLI does not switch it on itself.
    jax.config.update("jax_enable_x64", True)
    start = time.perf_counter()
    module, function = SUITES[name]
    result = getattr(importlib.import_module(f"dpolab.bench.{module}"), function)(quick=bool(quick))
    result["suite"] = name
    result["quick"] = bool(quick)
    result["wall_s"] = time.perf_counter() - start
    return result
