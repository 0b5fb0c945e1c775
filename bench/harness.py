"""Benchmark harness: timing helpers, read-bandwidth probes, the host description and the table
(`format_table`). The suites and `run_suite` are in `dpolab.bench`."""
from __future__ import annotations

import math
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np

from dpolab.errors import InputError

# Fallback when the OS does not report a cache hierarchy (bytes).
_DEFAULT_LLC_BYTES = 64 * 2**20


def _check_repeats(field, value, lo):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise InputError(f"{field}={value!r} is not allowed: {field} must be an integer >= {lo}")


def time_fn(fn, *args, repeats: int = 3, warmup: int = 1) -> float:
    """Minimum wall-clock seconds of `fn(*args)` over `repeats` calls.

    Every call is waited on with `jax.block_until_ready` (a no-op for NumPy outputs), so
    asynchronous dispatch is not mistaken for speed. The minimum, not the mean, is reported: other
    processes on the machine only ever add time.

    Args:
      fn: the callable to time. args: its positional arguments.
      repeats: timed calls (>= 1). warmup: untimed calls first (>= 0), e.g. to trigger jit.
    Returns:
      The smallest of the `repeats` wall times, in seconds.
    """
    _check_repeats("repeats", repeats, 1)
    _check_repeats("warmup", warmup, 0)
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def last_level_cache_bytes() -> int:
    """Largest CPU cache size the OS reports (sysfs), or 64 MiB when it reports none."""
    root = "/sys/devices/system/cpu/cpu0/cache"
    sizes = []
    try:
        for entry in os.listdir(root):
            if not entry.startswith("index"):
                continue
            with open(os.path.join(root, entry, "size")) as f:
                text = f.read().strip().upper()
            units = {"K": 2**10, "M": 2**20, "G": 2**30}
            sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    except (OSError, ValueError):
        pass
    return max(sizes) if sizes else _DEFAULT_LLC_BYTES


def read_bandwidth(n_bytes: int, *, repeats: int = 3) -> dict[str, float]:
    """Streaming read bandwidth (GB/s, 1e9 B/s) of a float64 array of ~`n_bytes`, by method.

    Each method reads the array once per call; the best of `repeats` calls is kept. Methods:
    `numpy_sum` (one thread), `numpy_sum_threads` (one `sum` per core on a thread pool; NumPy
    releases the GIL), `numpy_gemv` (BLAS matrix-vector product, multi-threaded) and `jax_sum`
    (jitted `jnp.sum` on the default backend). Take the max as the machine's read bandwidth.
    For a DRAM figure, pass n_bytes >= 4× `last_level_cache_bytes()`.
    """
    n = max(int(n_bytes) // 8 // 1024, 1) * 1024
    out = {}
    x = np.ones(n)
    nbytes = x.nbytes
    gb = lambda seconds: nbytes / seconds / 1e9
    out["numpy_sum"] = gb(time_fn(np.sum, x, repeats=repeats))
    threads = max(os.cpu_count() or 1, 1)
    parts = np.array_split(x, threads)
    with ThreadPoolExecutor(threads) as pool:
        out["numpy_sum_threads"] = gb(time_fn(lambda chunks: list(pool.map(np.sum, chunks)), parts,
                                              repeats=repeats))
    del parts
    ones = np.ones(1024)
    out["numpy_gemv"] = gb(time_fn(np.dot, x.reshape(-1, 1024), ones, repeats=repeats))
    del x
    xj = jnp.ones(n, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    nbytes = xj.nbytes
    out["jax_sum"] = gb(time_fn(jax.jit(jnp.sum), xj, repeats=repeats))
    del xj
    return out


def gram_muladds_per_s(m: int, d: int, *, repeats: int = 3) -> float:
    """Best multiply-adds per second for the Gram matrix A Aᵀ of one float64 (m, d) block: the max
    of NumPy's BLAS (`a @ a.T`, which may use a symmetric kernel) and jitted JAX, counted as m²·d
    multiply-adds either way — a rate no Gram set-up on this machine beats."""
    a = np.random.default_rng(0).normal(size=(m, d))
    best = time_fn(lambda x: x @ x.T, a, repeats=repeats)
    aj = jnp.asarray(a)
    best = min(best, time_fn(jax.jit(lambda x: x @ x.T), aj, repeats=repeats))
    return m * m * d / best


def _fmt_s(x) -> str:
    return "-" if x is None else f"{x:.3e}"


def _fmt_x(x) -> str:
    return "-" if x is None else f"{x:,.1f}x"


def format_table(result: dict) -> str:
    """A readable table of a suite result (`run_suite`'s dict)."""
    cfg = result.get("config", {})
    steps = cfg.get("steps")
    described = (f"K={cfg.get('K')} Q={cfg.get('Q')} d={cfg.get('d')} N={cfg.get('N')} steps={steps} "
                 f"optimizer=gd loss=dpo vocab={cfg.get('vocab')}" if result.get("suite") == "im-li"
                 else ", ".join(f"{k}={v}" for k, v in cfg.items()))
    head = (f"dpolab bench: suite {result.get('suite', '?')}"
            f"{' (QUICK config: timings not meaningful)' if result.get('quick') else ''}\n"
            f"config: {described} | "
            f"backend={result.get('jax_backend')} precision={result.get('precision')}")
    targets = result.get("targets", {})
    meets = result.get("meets_targets", {})

    def verdict(key):
        if key not in meets:
            return ""
        return "yes" if meets[key] else "NO"

    rows = [("method", "s/step", f"s/{steps} steps", "fast is", "target", "met")]
    for row in result.get("table_rows", []):
        label, per_step, key = row["method"], row["s_per_step"], row.get("metric")
        total = None if per_step is None else per_step * steps
        value = result.get(key) if key else None
        if key and "ratio" in key:
            shown = "-" if value is None else f"{value:.2f}x floor"
            target = f"<= {targets[key]:g}x" if key in targets else ""
        else:
            shown = _fmt_x(value) if key else ""
            target = f">= {targets[key]:g}x" if key in targets else ""
        rows.append((label, _fmt_s(per_step), _fmt_s(total), shown, target,
                     verdict(key)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head, ""]
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    if result.get("suite") == "im-li":  # the other suites describe compile time in their notes
        lines.append(f"compile (lower + compile, excluded from s/step): {result['compile_s']:.3f} s")
    if "bandwidth_gb_s" in result:
        bw = result.get("bandwidth_methods_gb_s", {})
        lines.append(f"read bandwidth: {result['bandwidth_gb_s']:.2f} GB/s = max of "
                     + ", ".join(f"{k} {v:.2f}" for k, v in bw.items())
                     + f" (array {cfg.get('bandwidth_array_bytes', 0) / 2**30:.2f} GiB"
                     f", LLC {cfg.get('llc_bytes', 0) / 2**20:.0f} MiB)")
    if "bandwidth_working_set_gb_s" in result:
        lines.append(f"read bandwidth on a features-sized array (cache may help): "
                     f"{result['bandwidth_working_set_gb_s']:.2f} GB/s")
    for name, chk in result.get("checks", {}).items():
        lines.append(f"check {name}: max|Δmargin| = {chk['max_abs_diff']:.2e} after "
                     f"{chk['steps']} steps (< {chk['tol']:g}: {'ok' if chk['ok'] else 'FAILED'})")
    for i, note in enumerate(result.get("notes", []), 1):
        lines.append(f"[{i}] {note}")
    if "wall_s" in result:
        lines.append(f"suite wall time: {result['wall_s']:.1f} s")
    return "\n".join(lines)


def host() -> dict:
    """The machine a benchmark ran on: CPU model and count, JAX device, versions."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         model)
    except OSError:
        pass
    return dict(cpu=model, n_cpus=os.cpu_count(), device=str(jax.devices()[0].device_kind),
                jax=jax.__version__, numpy=np.__version__, python=platform.python_version())
