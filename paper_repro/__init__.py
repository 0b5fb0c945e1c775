"""One script per paper figure or table; `dpolab repro` runs them (see `dpolab.items`).

Every module states at its top which figure/table it reproduces, what differs from the paper
(model, scale) and why. Items run in this order; `--only` takes their NAMEs.
"""
from __future__ import annotations

import importlib

#: The catalogue: one module of this package per item, in the order they run.
ITEMS = (
    "fig4_samples_per_value",
    "fig5_training_curves",
    "thm42_sandwich",
    "thm43_risk",
    "fig3_cosines",
    "tables_full_ft",
    "rdpo_noise",
    "chen_ranking",
    "mixture_error",
    "hidden_context",
    "sampler_rates",
    "likelihood_displacement",
    "learning_order",
)


def items() -> dict:
    """{NAME: module} of every reproduction item, in catalogue order."""
    modules = [importlib.import_module(f"dpolab.paper_repro.{name}") for name in ITEMS]
    return {m.NAME: m for m in modules}


def run_repro(*, out, quick=False, only=None, force=False, resume=False, persona_dir=None,
              hh_path=None, backbone=None, progress=None):
    """Regenerates the selected items into `out`; returns (manifest, out). See `run_items`."""
    from dpolab.items import run_items

    return run_items("repro", items(), out=out, quick=quick, only=only, force=force, resume=resume,
                     persona_dir=persona_dir, hh_path=hh_path, backbone=backbone, progress=progress)
