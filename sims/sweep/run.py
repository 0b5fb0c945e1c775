"""Running a sweep: validate everything, then compute the pending chunks on a backend.

`run_spec` (a parsed spec) and `run_sweep` (a TOML file, the CLI) drive the engine
(`dpolab.sims.sweep.engine`): the local backend computes chunks in this process, the Ray backend
(`dpolab.sims.sweep.ray`) on workers; both write through the same store.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, Iterable

from dpolab.errors import InputError
from dpolab.sims.sweep.engine import SweepStore, compute_chunk
from dpolab.sims.sweep.spec import SweepSpec, load_spec


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
              quiet=False, overrides=()) -> Path:
    """Runs (or resumes) the sweep of a TOML spec file with `--set` overrides (`overrides`: a list of
    TABLE.KEY=VALUE texts); returns the path of its summary.csv."""
    return run_spec(load_spec(spec_path, overrides), out, backend=backend, address=address, resume=resume,
                    force=force, quiet=quiet)


def run_spec(spec: SweepSpec, out, *, backend="local", address=None, resume=False, force=False,
             quiet=False) -> Path:
    """Runs (or resumes) a validated sweep; returns the path of its summary.csv (`dpolab.load` of
    `out` reads it as a Dataset).

    Everything is validated before any work: the spec (every grid point), the backend name and the
    output directory (never overwritten without `force`; `resume` needs the same spec).
    """
    if backend not in BACKENDS:
        raise InputError(f"backend={backend!r} is not allowed: backend must be one of {BACKENDS}")
    if address is not None and backend != "ray":
        raise InputError(f"address={address!r} is not allowed: --address needs --backend ray")
    if address is not None:  # reach the cluster before the output folder is made
        from dpolab.sims.sweep.ray import connected

        session = connected(address)
    else:
        session = contextlib.nullcontext()
    with session:
        store = SweepStore(Path(out), spec, resume=resume, force=force, backend=backend)
        todo = store.pending()
        start = time.perf_counter()
        with progress_bar(len(store.plan), len(store.plan) - len(todo), quiet=quiet) as bar:
            if backend == "ray":
                from dpolab.sims.sweep.ray import run_ray

                run_ray(spec, store, todo, address=address, on_chunk=lambda i: bar.update(1))
            else:
                run_local(spec, store, todo, on_chunk=lambda i: bar.update(1))
    missing = store.pending()
    if missing:
        raise RuntimeError(f"chunks {missing} did not complete; rerun with --resume")
    return store.finish(time.perf_counter() - start)


def progress_bar(total, initial, *, quiet):
    """Progress over chunks (`dpolab.progress`): a bar on a terminal, plain lines otherwise."""
    from dpolab.progress import Progress

    return Progress(desc="sweep", unit="chunk", quiet=quiet).reset(total, initial)

