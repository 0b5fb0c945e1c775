"""A sweep before and while it runs: `dpolab sweep plan SPEC` and `dpolab sweep status DIR`.

- `describe_plan(spec, calibrate)`: grid points, seeds, runs, chunks, the distinct static signatures
  (each is one XLA compilation of the batch function), and with `calibrate` an estimated wall time:
  the first chunk of each signature is run twice in this process (the first call compiles), so
  estimate = Σ over signatures (first-call time + (chunks − 1) × second-call time). It runs on the
  local backend's devices; a Ray run spreads the same chunks over its workers.
- `sweep_status(out)`: each chunk of the stored plan is done (whole, for the points and seeds the
  plan gives it), corrupt (files there but damaged or for other points) or missing; the rate and
  ETA come from the done chunks' own wall times.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from dpolab.errors import InputError
from dpolab.sims.sweep.engine import compute_chunk, plan
from dpolab.sims.sweep.simulations import SIMULATIONS
from dpolab.sims.sweep.spec import SweepSpec, parse_spec
from dpolab.store import load_record


def describe_plan(spec: SweepSpec, *, calibrate: bool = True) -> dict:
    """What running `spec` means (see the module docstring); JSON-ready."""
    sim = SIMULATIONS[spec.simulation]
    points = spec.points()
    chunks = plan(spec)
    by_signature: dict = {}
    for chunk in chunks:
        by_signature.setdefault(sim.static(points[chunk[0]]), []).append(chunk)
    info = {"simulation": spec.simulation, "points": len(points), "seeds": spec.seeds,
            "runs": len(points) * spec.seeds, "chunks": len(chunks), "signatures": len(by_signature),
            "chunks_per_signature": [len(c) for c in by_signature.values()]}
    if calibrate:
        estimate, first_s, again_s = 0.0, [], []
        for group in by_signature.values():
            times = []
            for _ in range(2):  # the first call compiles the signature, the second only runs
                start = time.perf_counter()
                compute_chunk(spec.as_json(), group[0])
                times.append(time.perf_counter() - start)
            first_s.append(times[0])
            again_s.append(times[1])
            estimate += times[0] + (len(group) - 1) * times[1]
        info |= {"estimated_s": estimate, "calibration_first_call_s": first_s, "calibration_chunk_s": again_s}
    return info


def format_plan(info: dict) -> str:
    lines = [f"{info['simulation']}: {info['points']} grid points x {info['seeds']} seeds = {info['runs']} runs "
             f"in {info['chunks']} chunks; {info['signatures']} static signatures (one compilation each)"]
    if "estimated_s" in info:
        lines.append(f"estimated wall time on the local backend: {info['estimated_s']:.1f} s (calibrated on the "
                     f"first chunk of each signature: first call {sum(info['calibration_first_call_s']):.1f} s, "
                     f"one chunk after that {max(info['calibration_chunk_s']):.2f} s at most)")
    return "\n".join(lines)


def sweep_status(out) -> dict:
    """Done, corrupt and missing chunks of the sweep in `out`, with rate and ETA; JSON-ready."""
    out = Path(out)
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    if manifest.get("kind") != "sweep":
        raise InputError(f"dir={str(out)!r} is not allowed: it holds no sweep (no sweep manifest.json)")
    spec = parse_spec(manifest["spec"])
    chunks = plan(spec)
    done, corrupt, missing, wall = [], [], [], []
    for i, points in enumerate(chunks):
        stem = f"{i:05d}"
        record = load_record(out / "chunks", stem, expect={"points": points, "seeds": spec.seeds})
        if record is not None:
            done.append(i)
            wall.append(float(record[1].get("wall_s") or 0.0))
        elif any((out / "chunks" / f"{stem}.{ext}").exists() for ext in ("npz", "json")):
            corrupt.append(i)
        else:
            missing.append(i)
    per_chunk = sum(wall) / len(wall) if wall else None
    left = len(corrupt) + len(missing)
    return {"status": manifest.get("status"), "chunks": len(chunks), "done": len(done), "corrupt": corrupt,
            "missing": missing, "chunk_s": per_chunk,
            "eta_s": None if per_chunk is None else left * per_chunk}


def format_status(info: dict) -> str:
    line = (f"{info['done']}/{info['chunks']} chunks done, {len(info['corrupt'])} corrupt, "
            f"{len(info['missing'])} missing (manifest status {info['status']!r})")
    if info["chunk_s"] is not None:
        line += f"; {info['chunk_s']:.2f} s per chunk, ETA {info['eta_s']:.0f} s on one worker"
    if info["corrupt"]:
        line += f"; corrupt chunks {info['corrupt'][:10]}: --resume recomputes them"
    return line
