"""The README's gallery: PNGs copied from a full `dpolab repro` run, never drawn by hand.

`make gallery` runs `dpolab repro --style screen --width text` into `build/repro` and then
`python -m dpolab.paper_repro.gallery build/repro docs/gallery`, which copies the figures below.
A quick run (its figures say "quick run"), a run with a skipped or missing item, or a figure the
item did not render is refused, so the gallery always shows a complete full-size run.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from dpolab.errors import InputError

#: {figure stem: the repro item that renders it}, in the README's order.
GALLERY = {
    "fig4_samples_per_value": "fig4-samples-per-value",
    "fig5_training_curves": "fig5-training-curves",
    "thm42_sandwich": "thm42-sandwich",
    "thm43_risk": "thm43-risk",
    "rdpo_vs_n": "rdpo-noise",
    "chen_threshold": "chen-ranking",
    "thm42_collapse": "thm42-sandwich",
    "fig3_cosines": "fig3-cosines",
}


def sources(repro_out) -> dict[str, Path]:
    """{gallery file name: the PNG of a full repro run in `repro_out`}.

    Raises:
      InputError: `repro_out` is not a finished full-size repro run that rendered every figure.
    """
    out = Path(repro_out)
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"repro_out={str(out)!r} is not allowed: no readable manifest.json there "
                         "(run `dpolab repro --out DIR` first)") from None
    if manifest.get("kind") != "repro" or manifest.get("quick", True):
        raise InputError(f"repro_out={str(out)!r} is not allowed: the gallery comes from a full-size "
                         f"repro run, not a {'quick ' if manifest.get('quick') else ''}"
                         f"{manifest.get('kind')!r} run")
    found = {}
    for stem, item in GALLERY.items():
        entry = manifest.get("items", {}).get(item, {})
        png = f"{item}/{stem}.png"
        if entry.get("status") != "done" or png not in entry.get("files", []):
            why = entry.get("reason") or f"status {entry.get('status')!r}, files {entry.get('files')}"
            raise InputError(f"repro_out={str(out)!r} is not allowed: item {item!r} did not render "
                             f"{stem}.png ({why})")
        found[f"{stem}.png"] = out / png
    return found


def copy_gallery(repro_out, dest) -> list[Path]:
    """Copies the gallery's PNGs from the repro run `repro_out` into `dest`; returns the copies."""
    found = sources(repro_out)  # everything checked before the first copy
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(src, dest / name)) for name, src in found.items()]


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m dpolab.paper_repro.gallery REPRO_OUT DEST", file=sys.stderr)
        return 2
    try:
        copied = copy_gallery(*args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"gallery: {len(copied)} figures copied into {args[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
