"""One script per paper figure or table; `dpolab repro` runs them (see `sims.experiments`).

Every module states at its top which figure/table it reproduces, what differs from the paper
(model, scale) and why. Items run in this order; `--only` takes their NAMEs.
"""
from __future__ import annotations

#: Module names, in the order `dpolab repro` runs them.
MODULES = (
    "fig4_samples_per_value",
    "fig5_training_curves",
    "thm42_sandwich",
    "thm43_risk",
    "fig3_cosines",
    "tables_full_ft",
    "rdpo_noise",
    "chen_ranking",
    "mixture_error",
)


def items() -> dict:
    """{NAME: module} of every reproduction item, in run order."""
    from sims.experiments import load_items

    return load_items("paper_repro", MODULES)


def run_repro(*, out, quick=False, only=None, force=False, resume=False, persona_dir=None,
              hh_path=None, cache_dir=None, progress=None):
    """Regenerates the selected items into `out`; returns (manifest, out). See `run_items`."""
    from sims.experiments import run_items

    return run_items("repro", items(), out=out, quick=quick, only=only, force=force, resume=resume,
                     persona_dir=persona_dir, hh_path=hh_path, cache_dir=cache_dir, progress=progress)
