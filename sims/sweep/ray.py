"""The Ray backend of the sweep engine: one Ray task per chunk, results written by the driver.

Every chunk runs `dpolab.sims.sweep.engine.compute_chunk` (the local backend's function, with the same keys), so
the stored arrays and summary.csv are bit-identical to `--backend local`. Each task asks Ray for
one CPU, and its worker process is pinned to one free CPU of its node (`pin_to_one_cpu`, BLAS on
one thread), so n workers use n cores and never oversubscribe a node. The driver writes each chunk
as soon as it arrives, so an interrupted sweep continues with `--resume`. A worker that dies
mid-chunk (killed, out of memory, node lost) is retried on another worker up to `MAX_RETRIES`
times; an exception raised by the chunk itself is a bug and is raised at once, as the local backend
would.

Ray is an optional dependency (`pip install 'dpolab[distributed]'`); this module imports it only
when a sweep runs, and imports JAX only inside the tasks (after their environment is set).
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable

from dpolab import xla
from dpolab.errors import InputError

#: Environment of every chunk task: BLAS on one thread, the process pinned to one CPU (XLA's
#: thread-count flags, `--xla_cpu_multi_thread_eigen=false` and the like, do not limit its CPU
#: thread pool in jaxlib 0.10; the CPU affinity does, see `pin_to_one_cpu`).
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "DPOLAB_SWEEP_PIN_CPU": "1",
}
#: Times a chunk is re-run after its worker process died (exceptions are not retried).
MAX_RETRIES = 3
#: The task's name; a worker executing a chunk shows it in its process title (`ray::<name>`).
TASK_NAME = "dpolab_sweep_chunk"

_pinned_cpu: list = []  # [cpu, lock fd] once this worker process holds a CPU


def pin_to_one_cpu() -> int | None:
    """Pins this process to one CPU that no other sweep worker on this machine holds.

    XLA ignores thread-count flags on CPU but sizes its thread pool from the CPU affinity (and
    threads it starts inherit it), so a pinned worker computes on one core. CPUs are claimed with
    `flock` on per-CPU lock files, released when the worker process exits (or is killed). With no
    free CPU (more workers than cores) the affinity is left as it is.

    Returns:
      The CPU this process is pinned to, or None.
    """
    if _pinned_cpu:
        return _pinned_cpu[0]
    if not hasattr(os, "sched_setaffinity"):
        return None
    import fcntl

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    lock_dir = Path(tempfile.gettempdir()) / f"dpolab-sweep-cpus-{os.getuid()}"
    lock_dir.mkdir(exist_ok=True)
    for cpu in cpus:
        fd = os.open(lock_dir / f"cpu{cpu}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        for tid in os.listdir("/proc/self/task"):  # every thread, not only the calling one
            try:
                os.sched_setaffinity(int(tid), {cpu})
            except OSError:
                pass
        _pinned_cpu[:] = [cpu, fd]
        return cpu
    return None


def compute_chunk_timed(spec_json: dict, points: list[int]) -> tuple[dict, float]:
    """`dpolab.sims.sweep.engine.compute_chunk` and its wall time in seconds, measured where it runs.

    With `DPOLAB_SWEEP_PIN_CPU=1` (set for Ray workers) the process is first pinned to one CPU.
    """
    if os.environ.get("DPOLAB_SWEEP_PIN_CPU") == "1":
        pin_to_one_cpu()
    from dpolab.sims.sweep.engine import compute_chunk

    xla.enable_cache()  # a worker is a fresh process: it loads what the driver or a worker compiled

    start = time.perf_counter()
    result = compute_chunk(spec_json, points)
    return result, time.perf_counter() - start


def _check_workers(num_workers):
    if num_workers is None:
        return
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise InputError(f"num_workers={num_workers!r} is not allowed: num_workers must be None "
                         "or an integer >= 1")


def start_local_ray(num_cpus: int) -> None:
    """Starts a Ray instance on this machine only: no dashboard, no usage statistics."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with warnings.catch_warnings():
        # Ray starts its processes by fork + exec, which JAX's fork warning does not distinguish.
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                category=RuntimeWarning)
        # address="local": always a new local instance, never a cluster found through
        # $RAY_ADDRESS or a (possibly stale) /tmp/ray/ray_current_cluster
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=True)


def run_ray(spec, store, todo: Iterable[int], *, address: str | None = None,
            on_chunk: Callable[[int], None] | None = None, num_workers: int | None = None) -> None:
    """Computes chunks as Ray tasks, writing each to `store` as it arrives.

    Args:
      spec: the `SweepSpec`. store: its `SweepStore` (`store.plan[i]` are chunk i's points).
      todo: chunk ids to compute.
      address: an existing Ray cluster (`auto`, `HOST:6379`, `ray://HOST:10001`); None starts a
        local Ray with `num_workers` CPUs (default: every core) and shuts it down at the end. Ray
        already initialised in this process is used as it is and left running.
      on_chunk: called with the chunk id after each chunk is written.
      num_workers: at most this many chunks run at once (default: as many as the cluster's CPUs).
    Raises:
      ValueError: num_workers is not None or a positive integer (before Ray starts), or no Ray
        cluster answers at `address`.
      RuntimeError: a chunk's worker died more than `MAX_RETRIES` times (or its node was lost).
      Any exception a chunk raises. Either way the chunks written before are kept (`--resume`).
    """
    _check_workers(num_workers)
    todo = list(todo)
    if not todo:
        return
    import ray

    with connected(address, num_workers):
        _run_tasks(ray, spec, store, todo, on_chunk, num_workers)


#: Seconds to wait for a TCP answer at a cluster's HOST:PORT before calling it unreachable.
PROBE_TIMEOUT_S = 5.0


def probe(address: str) -> None:
    """Fails in seconds, with one line, when nothing answers at a `HOST:PORT` or
    `ray://HOST:PORT` address (`ray.init` would retry for minutes, then end the process itself).
    `auto` is left to `ray.init`, which fails at once when it finds no cluster."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"address={address!r} is not allowed: --address must be auto, HOST:PORT or "
                         "ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        raise InputError(f"address={address!r} is not allowed: nothing answers at {host}:{port} "
                         f"({err.strerror or type(err).__name__})") from None


@contextlib.contextmanager
def connected(address: str | None = None, num_workers: int | None = None):
    """Ray for the duration of the block: the cluster at `address` (probed first), or a new
    local instance with `num_workers` CPUs (default: every core). Shut down at the end only if
    this block started it; Ray already initialised in this process is used as it is."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address is not None:
        probe(address)
        try:
            ray.init(address=address, logging_level=logging.ERROR)
        except ConnectionError as err:
            raise InputError(f"address={address!r} is not allowed: no Ray cluster answers "
                             f"there ({err})") from None
    else:
        start_local_ray(num_workers or os.cpu_count() or 1)
    try:
        yield
    finally:
        ray.shutdown()


def _run_tasks(ray, spec, store, todo: list[int], on_chunk, num_workers) -> None:
    """The task loop of `run_ray`, on a connected Ray."""
    task = ray.remote(compute_chunk_timed).options(
        name=TASK_NAME, num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False,
        runtime_env={"env_vars": dict(WORKER_ENV) | (xla.quiet_loader_env() if xla.enable_cache() else {})})
    in_flight: dict = {}
    try:
        spec_ref = ray.put(spec.as_json())
        queue = list(reversed(todo))
        limit = num_workers or max(len(todo), 1)
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                i = queue.pop()
                in_flight[task.remote(spec_ref, store.plan[i])] = i
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                i = in_flight.pop(ref)
                try:
                    result, wall_s = ray.get(ref)
                except ray.exceptions.RayTaskError:
                    raise  # the chunk itself raised: a bug, as with the local backend
                except ray.exceptions.RayError as err:
                    raise RuntimeError(
                        f"chunk {i} was lost after {MAX_RETRIES} retries ({type(err).__name__}: "
                        "its worker or node kept dying); the chunks already written are kept: "
                        "rerun with --resume") from err
                store.write(i, result, wall_s)
                if on_chunk:
                    on_chunk(i)
    finally:
        for ref in in_flight:  # an error or an interrupt: stop the rest on a shared cluster too
            ray.cancel(ref, force=True)
