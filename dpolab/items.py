"""The runner behind `dpolab repro` and `dpolab audit`: compute once, store, render from the store.

An *item* (one paper figure/table in `paper_repro/`, one audit question in `audit/`) is a module
with
    NAME: str                          the name `--only` selects
    TITLE: str                         one line (what it reproduces / asks)
    compute(ctx) -> dict[str, array]   every number the item shows; deterministic in its seeds
    render(data, ctx) -> list[Path]    figures (PDF + PNG) and CSVs drawn from the stored numbers only
    settings(ctx) -> dict (optional)   anything else the stored numbers depend on (a data file ...)
and, for audit questions, `report(data) -> str` (a markdown section built from the stored numbers).

Store: each item's numbers are one record of `dpolab.store` (`OUT/<NAME>/data.npz`, then
`data.json` with the settings they were computed with and the npz's sha256, written last): an item
counts as computed only when both are whole, so an interrupted run resumes at the first unfinished
item (`--resume`), and an item's own sweeps resume chunk by chunk. The folder follows
`dpolab.store.prepare_out`. Rendering is cheap and always redone from the stored numbers.
A part that needs what this machine lacks (the `llm` extra, the persona data) raises `Unavailable`
and the item is recorded as skipped with the reason; nothing is faked. Real features come from the
run's `Backbone` (`--model/--device/--dtype/--batch-size/--cache-dir`), validated before the folder
is touched; every item's settings hold its model key (a changed model recomputes), features are kept
per model in the feature cache shared by every run (`Backbone.feature_cache`:
`<cache>/features/<model>-<revision>-<dtype>/`), and the manifest records the model.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from dpolab import xla
from dpolab.errors import InputError
from dpolab.sims.llm.backbone import Backbone, feature_key
from dpolab.store import environment, load_record, prepare_out, save_record, write_manifest


class Unavailable(Exception):
    """Raised by `compute` when a needed optional package or data set is missing here."""


@dataclasses.dataclass
class Context:
    """What an item may use. `dir` is the item's own folder (created by the runner)."""

    kind: str
    quick: bool
    out: Path
    dir: Path
    persona_dir: str | None = None
    hh_path: str | None = None
    backbone: Backbone = dataclasses.field(default_factory=Backbone)
    model: dict | None = None  # backbone.provenance(), computed once per run

    def real_unavailable(self) -> str | None:
        """Why the real-embedding track cannot run here (missing extra or persona data), or None."""
        from dpolab.sims.llm.model import real_track_unavailable

        if self.persona_dir is not None:
            os.environ.setdefault("DPOLAB_PERSONA_DIR", str(self.persona_dir))
        return real_track_unavailable()

    def require_real(self) -> None:
        """Raises `Unavailable` with the reason when the real-embedding track cannot run here."""
        reason = self.real_unavailable()
        if reason:
            raise Unavailable(reason)

    def features(self, names, limit):
        """{persona: PersonaFeatures} of the given personas (first `limit` statements each).

        Hidden states are extracted once into the feature cache (`Backbone.feature_cache`), where
        every item of this run and later runs of any command reuse them while the model, the data
        and the limit are unchanged."""
        from dpolab.sims.llm.commands import load_persona_features
        from dpolab.sims.llm.extract import extract

        self.require_real()
        with self.backbone.feature_cache(f"limit{limit}") as store:
            extract(self.persona_dir, list(names), limit, store, progress=False, **self.backbone.options())
            stored = load_persona_features(store)
        return {n: stored[n] for n in names}

    def sweep(self, name: str, spec: dict) -> dict[str, np.ndarray]:
        """Runs (or resumes) a sweep of the sweep engine into `dir/sweeps/<name>`; returns its
        summary read back through `dpolab.load`, one row per (point, seed) (`dpolab.results.rows`)."""
        from dpolab.results import sweep_rows

        return sweep_rows(spec, self.dir / "sweeps" / name)


def select(items: dict, only: str | None) -> list[str]:
    """The item names to run: all, or those listed (comma-separated) in `only`."""
    if not only:
        return list(items)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in items]
    if unknown or not wanted:
        raise InputError(f"only={only!r} is not allowed: only must name items from {tuple(items)}")
    return [n for n in items if n in wanted]


def run_items(kind: str, items: dict, *, out, quick=False, only=None, force=False, resume=False,
              persona_dir=None, hh_path=None, backbone: Backbone | None = None,
              progress=None) -> tuple[dict, Path]:
    """Computes (or loads) and renders the selected items; returns (manifest, out).

    `backbone`: the model real features come from (default: the packaged Gemma in float32); the
    manifest's `model` records it (`Backbone.provenance`). `progress`: a `dpolab.progress.Progress`,
    told the number of items and each as it starts and ends.

    Each item's entry in `out/manifest.json`: status ("done" or "skipped"), reason, seconds of
    compute (0 when loaded from the store), and the files it rendered (relative to `out`).
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    names = select(items, only)
    backbone = backbone or Backbone()
    model = backbone.provenance()  # every flag checked before the folder is touched
    out = Path(out)
    manifest = prepare_out(out, kind, force=force, resume=resume, key={"quick": quick})
    manifest.setdefault("quick", quick)
    manifest.setdefault("items", {})
    manifest["model"] = model
    start, compiled = time.perf_counter(), xla.stats()
    if progress:
        progress.reset(len(names))
    for name in names:
        if progress:
            progress.start(name)
        module = items[name]
        ctx = Context(kind=kind, quick=quick, out=out, dir=out / name, persona_dir=persona_dir,
                      hh_path=hh_path, backbone=backbone, model=model)
        ctx.dir.mkdir(parents=True, exist_ok=True)
        # where the real-embedding track becomes (un)available or its model changes, items are recomputed
        settings = {"quick": quick, "real": ctx.real_unavailable() is None and feature_key(model)}
        if hasattr(module, "settings"):  # what else the item's numbers depend on (e.g. a data file)
            settings |= module.settings(ctx)
        stored = load_record(ctx.dir, "data", expect={"settings": settings})
        data = stored[0] if stored else None
        t0 = time.perf_counter()
        entry = {"title": module.TITLE}
        if data is None:
            try:
                data = save_record(ctx.dir, "data", module.compute(ctx), {"settings": settings})
            except Unavailable as why:
                manifest["items"][name] = entry | {"status": "skipped", "reason": str(why), "files": []}
                write_manifest(out, manifest)
                if progress:
                    progress.update(1)
                continue
        files = render(module, data, ctx)
        entry |= {"status": "done", "reason": None, "seconds": round(time.perf_counter() - t0, 1),
                  "files": sorted(str(Path(f).relative_to(out)) for f in files)}
        manifest["items"][name] = entry
        write_manifest(out, manifest)
        xla.relieve()
        if progress:
            progress.update(1)
    manifest.update(environment(), wall_s=round(time.perf_counter() - start, 1), xla=xla.since(compiled))
    write_manifest(out, manifest)
    return manifest, out


def render(module, data: dict, ctx: Context) -> list[Path]:
    """`module.render(data, ctx)`, with every figure of a quick run marked "quick run"."""
    from dpolab.figures.style import marked

    with marked("quick run" if ctx.quick else None):
        return module.render(data, ctx)


def summary_lines(manifest: dict) -> list[str]:
    """One line per item: name, status, seconds, number of files or the reason it was skipped."""
    lines = []
    for name, e in manifest["items"].items():
        if e["status"] == "skipped":
            lines.append(f"  SKIPPED {name:28} {e['reason']}")
        else:
            lines.append(f"  done    {name:28} {e['seconds']:7.1f} s  {len(e['files'])} files")
    return lines
