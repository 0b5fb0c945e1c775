"""The one plotting style of dpolab: theme, palettes, presets and a deterministic `save`.

Every figure is drawn inside `figure_context()` (which applies `apply_style()` and restores the
caller's rcParams afterwards) and written with `save`, which produces PDF + PNG (+ CSV of the
plotted numbers) that are byte-identical across reruns on the same software stack.

Presets (`--style`, `--width` on verify, repro and audit): inside `preset(style, width)` every
figure is drawn with the style's font sizes and line widths (`STYLES`) and saved at the given width
in inches (`WIDTHS`: a 3.25 in column, a 6.75 in text width), its height scaled with it, so the
fonts print at their nominal size when the PDF is included at that width. Inside `marked(text)`
every figure carries a small note in its lower right corner (quick runs say so on every figure).
Text in PDFs is embedded TrueType (Type 42) under every preset.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are written to files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

#: Width × height in inches of a single-panel figure (one column of a two-column paper ≈ 3.4 in).
FIGSIZE = (4.8, 3.4)
#: Width × height in inches of one panel inside a multi-panel figure.
PANEL_SIZE = (4.0, 3.3)
PNG_DPI = 150
#: Sequential palette: light for small K, dark for large K.
K_PALETTE = "crest"
#: How the CSV tables are written: repr-exact float64, so a rerun gives identical bytes.
CSV_FLOAT_FORMAT = "%.17g"
#: `--style`: rcParams over the house theme. "screen" is the theme as is (figures read on a screen
#: at their natural 4.8-7 in); "paper" is for print at a column or text width (8 pt labels, 7 pt
#: ticks, thinner lines).
STYLES = {
    "screen": {},
    "paper": {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
              "ytick.labelsize": 7, "legend.fontsize": 6.5, "lines.linewidth": 1.0, "lines.markersize": 3.0,
              "axes.linewidth": 0.6, "grid.linewidth": 0.4, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
              "savefig.pad_inches": 0.02},
}
#: `--width`: named widths in inches (a two-column paper's column and full text width).
WIDTHS = {"column": 3.25, "text": 6.75}
#: the allowed range of a width given in inches.
WIDTH_RANGE = (1.0, 20.0)
_preset = {"style": "screen", "width": None, "mark": None}


def parse_width(text) -> float | None:
    """The width in inches of a `--width` value: a name of `WIDTHS`, a number of inches in
    `WIDTH_RANGE`, or None (each figure's natural width).

    Raises:
      InputError: naming the flag, the value and what is allowed.
    """
    if text is None or text in WIDTHS:
        return WIDTHS.get(text)
    try:
        inches = float(text)
    except ValueError:
        inches = math.nan
    if not WIDTH_RANGE[0] <= inches <= WIDTH_RANGE[1]:  # NaN and ±inf fail this too
        from dpolab.errors import InputError

        raise InputError(f"--width={text!r} is not allowed: width must be one of {tuple(WIDTHS)} or a "
                         f"number of inches in [{WIDTH_RANGE[0]:g}, {WIDTH_RANGE[1]:g}]")
    return inches


@contextlib.contextmanager
def preset(style: str = "screen", width: float | None = None):
    """Inside it, every figure is drawn in `style` and saved `width` inches wide (None: as drawn)."""
    if style not in STYLES:
        from dpolab.errors import InputError

        raise InputError(f"--style={style!r} is not allowed: style must be one of {tuple(STYLES)}")
    before = dict(_preset)
    _preset.update(style=style, width=width)
    try:
        yield
    finally:
        _preset.update(before)


def apply_style() -> None:
    """Sets the house theme globally: seaborn "ticks" + grid, font sizes, mathtext (no LaTeX).

    Prefer `figure_context()`, which restores the previous rcParams afterwards.
    """
    sns.set_theme(context="paper", style="ticks", rc={"axes.grid": True})
    plt.rcParams.update({
        "text.usetex": False,          # mathtext only: no TeX installation needed
        "mathtext.fontset": "dejavusans",
        "font.family": "DejaVu Sans",
        "font.size": 9,
        "axes.titlesize": 9.5,
        "axes.labelsize": 9,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "legend.fontsize": 7.5,
        "legend.frameon": False,
        "grid.color": "0.9",
        "grid.linewidth": 0.6,
        "lines.linewidth": 1.5,
        "lines.markersize": 4.5,
        "figure.figsize": FIGSIZE,
        "figure.dpi": 100,
        "savefig.dpi": PNG_DPI,
        "savefig.bbox": "tight",
        "pdf.fonttype": 42,            # embed TrueType: editable text in the PDF
        "svg.hashsalt": "dpolab",      # deterministic ids should anyone save SVG
    })
    plt.rcParams.update(STYLES[_preset["style"]])


@contextlib.contextmanager
def figure_context():
    """Context in which the house style is active; the caller's rcParams are restored on exit."""
    with matplotlib.rc_context():
        apply_style()
        yield


def k_palette(Ks) -> dict:
    """Maps each distinct K (sorted ascending) to an RGB colour, light → dark.

    Args:
        Ks: iterable of numbers of values K (repeats allowed).

    Returns:
        dict {K: (r, g, b)}; a single K gets the palette's middle colour.
    """
    keys = sorted({_as_key(k) for k in Ks})
    if not keys:
        return {}
    if len(keys) == 1:
        return {keys[0]: tuple(sns.color_palette(K_PALETTE, 3)[1])}
    return dict(zip(keys, map(tuple, sns.color_palette(K_PALETTE, len(keys)))))


def _as_key(k):
    k = float(k)
    return int(k) if k.is_integer() else k


def write_csv(path, table: dict) -> Path:
    """Writes equal-length 1-D columns as CSV (header = keys, values `%.17g`, NaN as "nan").

    Args:
        path: output file. table: {column name: 1-D array-like}, all of the same length.

    Returns:
        the path written.

    Raises:
        ValueError: a column is not 1-D, lengths differ, or a name contains a comma/newline.
    """
    if not table:
        raise ValueError("table: need at least one column")
    cols = {}
    for name, col in table.items():
        if "," in name or "\n" in name:
            raise ValueError(f"table: column name {name!r} may not contain ',' or a newline")
        arr = np.asarray(col, dtype=np.float64) + 0.0   # + 0.0 turns -0.0 into 0.0
        if arr.ndim != 1:
            raise ValueError(f"table[{name!r}]: need a 1-D column, got shape {arr.shape}")
        cols[name] = arr
    lengths = {name: len(c) for name, c in cols.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"table: columns must have equal lengths, got {lengths}")
    path = Path(path)
    np.savetxt(path, np.column_stack(list(cols.values())), fmt=CSV_FLOAT_FORMAT, delimiter=",",
               header=",".join(cols), comments="")
    return path


def read_csv(path) -> dict:
    """Reads a CSV written by `write_csv` back into {column name: float64 array}."""
    path = Path(path)
    header = path.read_text().splitlines()[0].split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return {name: data[:, i] for i, name in enumerate(header)}


def save(fig, out_dir, name: str, table: dict | None = None) -> list[Path]:
    """Writes `name.pdf`, `name.png` (150 dpi) and, given a table, `name.csv`; closes `fig`.

    Timestamps and software strings are left out of the PDF/PNG metadata so reruns are
    byte-identical.

    Args:
        fig: a matplotlib Figure. out_dir: folder (created if missing). name: file stem.
        table: {column: 1-D array} of the plotted numbers, equal lengths (see `write_csv`).

    Returns:
        list of the paths written, in the order pdf, png[, csv].
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.pdf", out_dir / f"{name}.png"]
    try:
        _apply_preset(fig)
        fig.savefig(paths[0], format="pdf", metadata={"CreationDate": None, "ModDate": None,
                                                      "Producer": None, "Creator": None})
        fig.savefig(paths[1], format="png", dpi=PNG_DPI, metadata={"Software": None})
        if table is not None:
            paths.append(write_csv(out_dir / f"{name}.csv", table))
    finally:
        plt.close(fig)
    return paths


@contextlib.contextmanager
def marked(mark: str | None):
    """Inside it, every figure saved carries `mark` small in its lower right corner (None: nothing);
    the runners use it so a quick run says so on each figure (`dpolab.items.render`, verify)."""
    before = _preset["mark"]
    _preset["mark"] = mark
    try:
        yield
    finally:
        _preset["mark"] = before


def _apply_preset(fig) -> None:
    """Resizes `fig` to the preset's width (aspect kept, laid out again) and writes its mark."""
    width, mark = _preset["width"], _preset["mark"]
    if width is not None:
        w0, h0 = fig.get_size_inches()
        fig.set_size_inches(width, h0 * width / w0)
        if fig.get_layout_engine() is None:
            fig.set_layout_engine("constrained")
    if mark:
        fig.text(0.995, 0.005, mark, ha="right", va="bottom", fontsize=6, color="0.45")
