"""XLA compilation: the persistent compilation cache (on by default) and a meter of compile time.

Most of a short dpolab run is XLA compiling programs it compiled on the last run too. `enable_cache()`
turns on JAX's persistent compilation cache, so a program compiled once is loaded from disk by
every later process (the CLI, the tests, the mutation harness's fresh processes, Ray workers).

Where: `$DPOLAB_XLA_CACHE` when set (a directory, or `off` to disable), else
`$XDG_CACHE_HOME/dpolab/xla` (default `~/.cache/dpolab/xla`), in a subfolder keyed by the jaxlib
version and the host CPU's instruction-set features. JAX's own cache key covers the program, the
compile options, the backend and jaxlib, but not the host CPU's features: the subfolder makes sure
an executable is only ever loaded on a CPU with the features it was compiled for (a cache folder in
a home directory shared between machines could otherwise hand one CPU code for another).

The XLA:CPU loader logs two C++ error lines per loaded program on some CPUs, because it counts
LLVM *tuning* attributes (`+prefer-no-gather`, `+prefer-no-scatter`) as required host features
(openxla/xla#44565, jax-ml/jax#38445): the executable loads and runs correctly. With the folder
keyed by the CPU's features that mismatch cannot be a real one, so while the cache is on, XLA's C++
log is limited to fatal messages (`TF_CPP_MIN_LOG_LEVEL=3`) unless the user has set
`TF_CPP_MIN_LOG_LEVEL` to another level than JAX's default 1 (0 shows everything) or a GPU/TPU
plugin is installed. XLA reads the level when jaxlib is loaded: `enable_cache()` is called before
`import jax` (the CLI, the tests and the harness do; Ray workers get it in their environment).
If the folder cannot be created or written, the run goes on without the cache and says so once.

`stats()` counts what this process compiled (programs, seconds, how many were loaded from the cache);
`since(before)` is the difference, for a command's summary and manifest.

Every compiled program JAX keeps in memory holds about a dozen memory mappings (its code and data
sections), and Linux caps the mappings of one process (`vm.max_map_count`, 65,530 by default). A
process that runs thousands of programs (a test worker, a long `verify`) reaches the cap: the next
program then fails to load, and on jaxlib 0.10 the error it raises crashes the process in the C++
unwinder (a segfault, seen in a test worker holding 65,350 mappings). `relieve()`, called between
checks, items and tests, drops JAX's in-memory program caches once this process holds more than half
the cap; programs needed again are reloaded from the persistent cache.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path

ENV = "DPOLAB_XLA_CACHE"
#: the cache's size cap: JAX evicts the least recently used entries beyond it.
MAX_BYTES = 2 * 1024**3

_state: dict = {"enabled": None, "listening": False, "quieted": False}
_counts = {"programs": 0, "compile_s": 0.0, "cache_hits": 0, "trace_s": 0.0}
_workers: set[int] = set()  # pids of the worker processes whose compilations were added (`add`)


def cpu_features() -> str:
    """The host CPU's instruction-set flags as one sorted string (`/proc/cpuinfo` where there is
    one; else the platform's machine and processor names)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def cpu_key() -> str:
    """A short hash of `cpu_features()`: what names this host's instruction set in keys."""
    return hashlib.sha256(cpu_features().encode()).hexdigest()[:12]


def cache_dir() -> Path | None:
    """The folder this host's cache lives in, or None when `$DPOLAB_XLA_CACHE` is `off`."""
    base = os.environ.get(ENV, "").strip()
    if base.lower() in ("off", "0", "no", "false"):
        return None
    if not base:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dpolab" / "xla"
    return Path(base).expanduser() / f"jaxlib-{importlib.metadata.version('jaxlib')}-{platform.machine()}-{cpu_key()}"


def enable_cache() -> Path | None:
    """Turns the persistent compilation cache on (once per process) and starts the meter.

    Returns:
      The cache folder, or None when it is off or unusable (the run goes on without it).
    """
    if _state["enabled"] is None:
        _state["enabled"] = _usable(cache_dir()) or False
        if _state["enabled"]:
            quiet = quiet_loader_env()
            os.environ.update(quiet)  # before jax is loaded: XLA reads it then
            _state["quieted"] = bool(quiet)
            import jax

            jax.config.update("jax_compilation_cache_dir", str(_state["enabled"]))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
            if importlib.util.find_spec("filelock"):  # JAX needs it to evict (and locks writers with it)
                jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    _listen()
    return _state["enabled"] or None


def _usable(folder: Path | None) -> Path | None:
    """`folder`, created, when this process can write in it; else None (and one line on stderr)."""
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return folder
    except OSError as err:
        print(f"dpolab: the XLA compilation cache is off: {folder} is not writable ({err.strerror}); "
              f"set {ENV} to a writable folder or to 'off'", file=sys.stderr)
        return None


def quiet_loader_env() -> dict:
    """{"TF_CPP_MIN_LOG_LEVEL": "3"} where the loader's line should be hidden (see the module's
    docstring), else {}. XLA reads the level once, when jaxlib is loaded: set it before `import jax`
    (this process: `enable_cache` does; worker processes: pass it in their environment)."""
    # `import jax` sets the level to "1" when it is unset: "1" is JAX's default, not a user's choice;
    # once `enable_cache` has set "3" here, workers are owed the same (Ray's runtime_env asks after it)
    if _state.get("quieted"):
        return {"TF_CPP_MIN_LOG_LEVEL": "3"}
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1") == "1" and not accelerator_plugin():
        return {"TF_CPP_MIN_LOG_LEVEL": "3"}
    return {}


def accelerator_plugin() -> bool:
    """Whether a JAX GPU or TPU plugin is installed (told without starting a backend: XLA reads its
    log level once, when it starts)."""
    names = (d.metadata["Name"] or "" for d in importlib.metadata.distributions())
    return any(n.lower().replace("_", "-").startswith(("jax-cuda", "jax-rocm", "libtpu")) for n in names)


def _listen():
    """Registers the compile-time listeners (once per process)."""
    if _state["listening"]:
        return
    from jax import monitoring

    def on_duration(event: str, seconds: float, **_):
        if event == "/jax/core/compile/backend_compile_duration":  # compile, or load from the cache
            _counts["programs"] += 1
            _counts["compile_s"] += seconds
        elif event in ("/jax/core/compile/jaxpr_trace_duration",
                       "/jax/core/compile/jaxpr_to_mlir_module_duration"):
            _counts["trace_s"] += seconds

    def on_event(event: str, **_):
        if event == "/jax/compilation_cache/cache_hits":
            _counts["cache_hits"] += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)
    _state["listening"] = True


def stats() -> dict:
    """What this process has compiled so far: programs, cache_hits, compile_s (XLA compile or
    cache load), trace_s (tracing and lowering), cache (the folder or None)."""
    _listen()
    folder = _state["enabled"]
    return dict(_counts, cache=str(folder) if folder else None, workers=frozenset(_workers))


def mappings() -> tuple[int, int] | None:
    """(memory mappings this process holds, the kernel's per-process cap), or None where the
    kernel does not say (not Linux)."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            held = sum(1 for _ in maps)
        return held, int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return None


def relieve(share: float = 0.5) -> bool:
    """Drops JAX's in-memory caches of compiled programs (and collects their executables) when this
    process holds more than `share` of its memory-mapping cap (see the module's docstring). Cheap
    when it does nothing (one read of /proc/self/maps). Returns whether it dropped them."""
    held = mappings()
    if held is None or held[0] <= share * held[1]:
        return False
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
    return True


def add(delta: dict, worker: int) -> None:
    """Counts what worker process `worker` (its pid) compiled for this one (a `since` delta): its
    programs, cache hits and seconds. A delta over a span in which workers worked covers them all
    (`processes`: how many; their compile seconds add up)."""
    _counts["programs"] += delta["programs"]
    _counts["cache_hits"] += delta["cache_hits"]
    _counts["compile_s"] += delta["compile_s"]
    _workers.add(worker)


def since(before: dict) -> dict:
    """`stats()` now minus `before` (the counters only), rounded for a manifest; `processes`: the
    worker processes that compiled for this one in between (`add`), else 1 (this one)."""
    now = stats()
    delta = {k: now[k] - before[k] for k in _counts}
    return {"programs": delta["programs"], "cache_hits": delta["cache_hits"],
            "compile_s": round(delta["compile_s"] + delta["trace_s"], 2), "cache": now["cache"],
            "processes": max(1, len(now["workers"] - before["workers"]))}


def summary(delta: dict, wall_s: float) -> str:
    """One line: wall time, the share of it spent compiling (of the processes' time together when
    workers ran), and what came from the cache."""
    processes = delta.get("processes", 1)
    share = delta["compile_s"] / (wall_s * processes) if wall_s > 0 else 0.0
    where = f"cache {delta['cache']}" if delta["cache"] else f"cache off (${ENV})"
    over = f" in {processes} processes" if processes > 1 else ""
    return (f"{wall_s:.1f} s, of which compilation {delta['compile_s']:.1f} s{over} ({share:.0%}): "
            f"{delta['programs']} programs, {delta['cache_hits']} loaded from the {where}")
