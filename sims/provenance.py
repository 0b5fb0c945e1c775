"""Provenance of stored results: versions, backend, precision, git commit; atomic writes."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path


def environment() -> dict:
    """Package versions, JAX backend and precision, git commit: the manifest of a run."""
    import jax

    versions = {}
    for name in ("dpolab", "jax", "jaxlib", "optax", "numpy", "scipy", "matplotlib"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"versions": versions, "jax_backend": jax.default_backend(),
            "precision": "float64" if jax.config.jax_enable_x64 else "float32",
            "git_commit": commit, "python": platform.python_version()}


def write_atomic(path: Path, data: str | bytes) -> None:
    """Writes `data` to `path` through a temporary file and a rename (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
