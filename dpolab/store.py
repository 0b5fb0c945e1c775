"""Where results live: provenance, atomic writes, the one checksummed store and the one
output-folder policy.

- A *record* is `STEM.npz` (named arrays, no pickle) and then `STEM.json` (its metadata and the
  npz's sha256), written last and atomically: a record exists only when both are whole and agree.
  Verify's checks, sweep chunks, repro/audit items and cached real-data features are records.
- `prepare_out(out, kind, ...)` is the policy of every command that writes a folder (verify, sweep,
  repro, audit, llm train/diagnose): a fresh or empty folder is used; an earlier run of the same
  kind is finished with `--resume` (only when it was made with the same key) or replaced with
  `--force` (only when every file in it is one such a run writes, `OUTPUTS`); anything else is
  refused. Nothing a user wrote is ever overwritten or deleted.
"""
from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np

from dpolab.errors import InputError


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
    """Writes `data` to `path` through a temporary file and a rename (never half-written; the
    temporary name is per process, so two writers of one file never write into each other's)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_record(directory: Path, stem: str, arrays: dict, meta: dict) -> dict[str, np.ndarray]:
    """Writes `arrays` to `directory/STEM.npz`, then `STEM.json` ({"meta", "sha256"}) last.

    Returns:
      The arrays as numpy arrays (what a later `load_record` gives back).
    """
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    raw = buf.getvalue()
    write_atomic(Path(directory) / f"{stem}.npz", raw)
    write_atomic(Path(directory) / f"{stem}.json",
                 json.dumps({"meta": meta, "sha256": sha256(raw)}, default=float, ensure_ascii=False))
    return arrays


def load_record(directory: Path, stem: str, expect: dict | None = None) -> tuple[dict, dict] | None:
    """(arrays, meta) of a whole record, or None when it is missing, damaged (checksum) or was
    written with other values of the `expect` entries of its metadata."""
    meta_path, npz_path = Path(directory) / f"{stem}.json", Path(directory) / f"{stem}.npz"
    if not meta_path.exists() or not npz_path.exists():
        return None
    try:
        info = json.loads(meta_path.read_text(encoding="utf-8"))
        meta, digest = info["meta"], info["sha256"]
    except (ValueError, KeyError, TypeError):
        return None
    if any(meta.get(k) != v for k, v in (expect or {}).items()):
        return None
    raw = npz_path.read_bytes()
    if sha256(raw) != digest:
        return None
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}, meta


def read_manifest(out: Path) -> dict | None:
    """`out/manifest.json`, or None when there is none (or it is not readable JSON)."""
    path = Path(out) / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_manifest(out: Path, manifest: dict) -> None:
    write_atomic(Path(out) / "manifest.json", json.dumps(manifest, indent=1, default=float))


# "_features/*", "_hh/*": features that runs before 2026-12-08 kept in their folder (now in the
# shared feature cache, `Backbone.feature_cache`), so `--force` still replaces such a folder
_ITEMS = ("_features/*", "_hh/*", "*/data.npz", "*/data.json", "*/sweeps/*", "*/*.pdf", "*/*.png", "*/*.csv")

#: What a run of each kind writes in its folder (fnmatch patterns of paths relative to it; a `*`
#: spans subfolders): `--force` deletes a folder only when every file in it matches these.
OUTPUTS = {
    "verify": ("report.json", "report.md", "checks/*.npz", "checks/*.json", "results/*.npz",
               "figures/*"),
    "sweep": ("summary.*", "chunks/[0-9]*.npz", "chunks/[0-9]*.json"),
    "repro": _ITEMS,
    "audit": _ITEMS + ("audit.md",),
    "llm-train": ("summary.csv", "K*_seed*.npz"),
    "diagnose": ("report.json", "report.md", "features.npz", "features.json", "diagnosis.*", "diagnosis_twin.csv",
                 "twin/*"),
    "bench": ("bench.json", "bench.md"),
}
_ALWAYS = ("manifest.json", "*.tmp", "*.tmp-*")  # every kind: its manifest, a write cut short


def _foreign_file(out: Path, kind: str) -> str | None:
    """The first file (or link) under `out` that a run of `kind` does not write, or None."""
    patterns = _ALWAYS + OUTPUTS.get(kind, ())
    for root, dirs, files in os.walk(out):
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        for name in sorted(files + links):
            rel = Path(root, name).relative_to(out).as_posix()
            if name in links or not any(fnmatch.fnmatchcase(rel, pat) for pat in patterns):
                return rel
    return None


def _check_out_path(out: Path) -> None:
    """Refuses an `out` that is a file or lies below one (before anything is written)."""
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"out={str(out)!r} is not allowed: {str(parent)!r} is a file, not a "
                                 "folder; choose another --out")
            return


def prepare_out(out, kind: str, *, force: bool, resume: bool, key: dict,
                resumable: bool = True) -> dict:
    """Makes `out` ready for a run of `kind` and returns its manifest (the earlier run's when
    resuming, else a fresh `{"kind", "key"}`).

    Args:
      out: the output folder. kind: the command ("verify", "sweep", "repro", ...).
      force: replace an earlier run of this kind (never a folder dpolab did not write).
      resume: continue an earlier run of this kind; it must have been made with the same `key`.
      key: what the stored results depend on (e.g. {"quick": True}, {"spec_hash": ...}).
      resumable: False for commands that cannot resume (then `--resume` is never offered).
    Raises:
      InputError naming `out` (or the key field that differs) when the folder may not be used.
    """
    out = Path(out)
    _check_out_path(out)
    old = read_manifest(out)
    if out.exists() and any(out.iterdir()):
        if old is None or old.get("kind") != kind:
            raise InputError(f"out={str(out)!r} is not allowed: it exists, is not empty and is not a "
                             f"dpolab {kind} directory; choose another --out")
        if force:
            foreign = _foreign_file(out, kind)
            if foreign is not None:
                raise InputError(f"out={str(out)!r} is not allowed with --force: it holds {foreign!r}, "
                                 f"which dpolab {kind} did not write; move it away or choose another --out")
            shutil.rmtree(out)
            old = None
        elif not resume or not resumable:
            hint = "--resume finishes it, --force replaces it" if resumable else "--force replaces it"
            raise InputError(f"out={str(out)!r} is not allowed: it holds an earlier {kind} run ({hint})")
        elif old.get("key") != key:
            stored = old.get("key") or {}
            field = next((k for k in key if stored.get(k) != key[k]), next(iter(key), "key"))
            raise InputError(f"{field}={key.get(field)!r} is not allowed with --resume here: {out} "
                             f"holds a run with {field}={stored.get(field)!r}")
    elif resume:
        raise InputError(f"out={str(out)!r} is not allowed with --resume: nothing to resume there")
    made = not out.exists()
    manifest = old or {"kind": kind, "key": key}
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(out, manifest)
    except OSError as err:
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # no half-made folder
        raise InputError(f"out={str(out)!r} is not allowed: it cannot be written ({err.strerror or err})"
                         ) from None
    return manifest
