"""The theory audit: the open questions the papers leave, answered with experiments.

`dpolab audit` runs one module per question (see `dpolab.items` for the item protocol; audit
questions also provide `report(data) -> str`, a markdown section whose every number comes from the
stored data, and `finding(data) -> CheckResult` for the registry) and writes `audit.md`.
"""
from __future__ import annotations

import importlib

#: The catalogue: one module of this package per question, in the order they run.
QUESTIONS = (
    "q1_log_k",
    "q2_unseen",
    "q3_nonorthogonal",
    "q4_noise",
    "q5_adam",
    "q6_after_tau1",
    "q7_beta",
    "q8_unbalanced",
    "q9_flips",
)


def items() -> dict:
    """{NAME: module} of every audit question, in catalogue order."""
    modules = [importlib.import_module(f"dpolab.audit.{name}") for name in QUESTIONS]
    return {m.NAME: m for m in modules}


def run_audit(*, out, quick=False, only=None, force=False, resume=False, persona_dir=None,
              hh_path=None, backbone=None, progress=None):
    """Runs the selected questions into `out`, then writes `out/audit.md` from the stored results.

    Returns (manifest, out); see `dpolab.items.run_items`.
    """
    from dpolab.items import run_items

    questions = items()
    manifest, out = run_items("audit", questions, out=out, quick=quick, only=only, force=force,
                              resume=resume, persona_dir=persona_dir, hh_path=hh_path,
                              backbone=backbone, progress=progress)
    write_report(questions, manifest, out)
    return manifest, out


def write_report(questions: dict, manifest: dict, out) -> None:
    """audit.md: a header (mode, time, commit), then each question's section from its stored data."""
    from pathlib import Path

    from dpolab.store import load_record, write_atomic

    out = Path(out)
    lines = ["# dpolab theory audit", "",
             f"Mode: {'quick' if manifest['quick'] else 'full'}; git {manifest.get('git_commit')}; "
             f"JAX {manifest.get('versions', {}).get('jax')} on {manifest.get('jax_backend')}, "
             f"{manifest.get('precision')}; this run's wall time {manifest.get('wall_s')} s "
             "(questions loaded from an earlier run's store count 0 s)."
             + _model_line(manifest.get("model")), "",
             "Every number below is read from the stored results in this folder "
             "(`<question>/data.npz`, figures and CSVs beside it).", ""]
    for name, entry in manifest["items"].items():
        if entry["status"] == "skipped":
            lines += [f"## {entry['title']}", "", f"Not run here: {entry['reason']}.", ""]
            continue
        data, _ = load_record(out / name, "data")  # the checksummed record the runner just wrote
        lines += [questions[name].report(data).rstrip(), ""]
    write_atomic(out / "audit.md", "\n".join(lines))


def _model_line(model: dict | None) -> str:
    """The header's sentence on the model real features come from (`Backbone.provenance`)."""
    if not model:
        return ""
    return (f" Real features (where a question uses them): {model['model']} (revision "
            f"{model['revision'][:12]}), {model['dtype']}, on {model['device']}.")
