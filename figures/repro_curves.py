"""Figures of the Im & Li training curves (Figs 5, 7, 8) and persona cosine matrices (Figs 3, 6).

Drawn from stored arrays only (the items in `paper_repro` pass them in). Curves are per K and
seed with shape (nK, S, C) (C checkpoints); the figure shows the mean over seeds with a ±1 SD
band, training solid, held-out dashed, colour light → dark in K (`dpolab.figures.style.k_palette`).

References:
    [IL] S. Im, S. Li, arXiv 2408.03459: Figure 5 (reward margins), Figures 7–8 (loss and
    accuracy), Figures 3 and 6 (cosine similarity of persona embeddings, App. E).
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402  (after dpolab.figures.style selected the Agg backend)
import numpy as np
from matplotlib.lines import Line2D  # noqa: E402

from dpolab.figures.style import figure_context, k_palette, save

#: Stored curve names, in CSV column order: train/held-out mean margin, mean loss, accuracy.
CURVES = ("train_margin", "test_margin", "train_loss", "test_loss", "train_accuracy", "test_accuracy")
#: Figure rows: (curve stem, y-axis label).
ROWS = (("margin", r"mean reward margin $\bar r$"),
        ("loss", r"mean DPO loss $\ell(r)$"),
        ("accuracy", r"accuracy: fraction with $r > 0$"))


def seed_summary(curves):
    """Mean and sample SD over the seed axis.

    Args:
        curves: (..., S, C) one curve per seed.

    Returns:
        (mean, sd), each (..., C); sd is 0 when S = 1 (no spread to estimate).
    """
    curves = np.asarray(curves, dtype=np.float64)
    sd = curves.std(axis=-2, ddof=1) if curves.shape[-2] > 1 else np.zeros_like(curves[..., 0, :])
    return curves.mean(axis=-2), sd


def curve_table(K, step, runs: dict, extra: dict | None = None) -> dict:
    """Long-format table of seed-averaged curves: one row per (K, checkpoint).

    Args:
        K: (nK,) numbers of values. step: (C,) optimiser step of each checkpoint.
        runs: {curve name: (nK, S, C)} for the names in `CURVES` present.
        extra: optional {column: (nK, C)} written as is (e.g. a closed-form reference curve).

    Returns:
        {column: 1-D array}: K, step, n_seeds, then `<curve>_mean`, `<curve>_sd` per curve.
    """
    K, step = np.asarray(K), np.asarray(step)
    n_seeds = next(iter(runs.values())).shape[1]
    table = {"K": np.repeat(K, len(step)), "step": np.tile(step, len(K)),
             "n_seeds": np.full(len(K) * len(step), n_seeds)}
    for name in (c for c in CURVES if c in runs):
        mean, sd = seed_summary(runs[name])
        table[f"{name}_mean"], table[f"{name}_sd"] = mean.ravel(), sd.ravel()
    for name, values in (extra or {}).items():
        table[name] = np.asarray(values, dtype=np.float64).ravel()
    return table


def _draw_column(axes, column, colours):
    K, step, runs = column["K"], np.asarray(column["step"]), column["runs"]
    for row, (stem, _) in zip(axes, ROWS):
        for i, k in enumerate(K):
            colour = colours[int(k)]
            for split, style in (("train", "-"), ("test", "--")):
                mean, sd = seed_summary(runs[f"{split}_{stem}"][i])
                row.plot(step, mean, style, color=colour, lw=1.3)
                if split == "train":
                    row.fill_between(step, mean - sd, mean + sd, color=colour, alpha=0.18, lw=0)
            reference = column.get("reference")
            if stem == "margin" and reference is not None:
                row.plot(step, reference[i], ":", color="0.2", lw=0.9)
        if stem == "loss":
            row.axhline(math.log(2), color="0.55", lw=0.8, ls=(0, (1, 2)))


def _note(ax, text):
    ax.axis("off")
    wrapped = "\n".join(textwrap.fill(line, 30) for line in text.splitlines())
    ax.text(0.5, 0.5, wrapped, ha="center", va="center", fontsize=7.5, color="0.3",
            transform=ax.transAxes, bbox={"boxstyle": "round", "fc": "0.96", "ec": "0.8"})


def plot_training_curves(columns: list[dict], out_dir, name: str, table: dict | None = None) -> list[Path]:
    """Margin, loss and accuracy vs optimiser step (rows) for several settings (columns).

    Args:
        columns: per column a dict with `title` and either `runs` ({curve: (nK, S, C)} for every
            name in `CURVES`), `K` (nK,), `step` (C,) and optionally `reference` ((nK, C) a
            closed-form margin drawn dotted), or `note` (a reason shown in an empty column).
        out_dir, name, table: as in `dpolab.figures.style.save`.

    Returns:
        The paths written (PDF, PNG[, CSV]).
    """
    all_k = sorted({int(k) for c in columns if c.get("runs") for k in c["K"]})
    colours = k_palette(all_k)
    with figure_context():
        fig, axes = plt.subplots(len(ROWS), len(columns), squeeze=False, sharex="col",
                                 figsize=(2.3 * len(columns) + 0.2, 2.0 * len(ROWS) + 0.6))
        for j, column in enumerate(columns):
            axes[0, j].set_title(column["title"], fontsize=8.5)
            if column.get("runs") is None:
                for i in range(len(ROWS)):
                    _note(axes[i, j], column["note"] if i == 1 else "")
                continue
            _draw_column(axes[:, j], column, colours)
            axes[-1, j].set_xlabel("optimiser step $n$")
        for i, (_, label) in enumerate(ROWS):
            axes[i, 0].set_ylabel(label)
        handles = [Line2D([], [], color=colours[k], lw=2, label=f"K = {k}") for k in all_k]
        handles += [Line2D([], [], color="0.3", ls="-", label="train (mean ± 1 SD over seeds)"),
                    Line2D([], [], color="0.3", ls="--", label="held-out")]
        if any(c.get("reference") is not None for c in columns if c.get("runs")):
            handles.append(Line2D([], [], color="0.2", ls=":", lw=0.9,
                                  label=r"noise-free flow: $r + e^r = 1 + 2\beta^2 t/K$"))
        handles.append(Line2D([], [], color="0.55", ls=(0, (1, 2)), label=r"$\log 2$ (loss at $r = 0$)"))
        fig.legend(handles=handles, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.01))
        fig.tight_layout(rect=(0, 0.09, 1, 1))
        return save(fig, out_dir, name, table)


def cosine_long_table(before, after) -> dict:
    """{i, j, before, after}: one row per entry (row-major) of two (P, P) cosine matrices."""
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    i, j = np.indices(before.shape)
    return {"i": i.ravel(), "j": j.ravel(), "before": before.ravel(), "after": after.ravel()}


def plot_cosine_matrices(before, after, labels, titles, out_dir, name: str,
                         table: dict | None = None) -> list[Path]:
    """Two heatmaps side by side with one colour bar on [−1, 1]: cosines before / after centring.

    Args:
        before, after: (P, P) cosine matrices. labels: P persona labels (rows of the left panel;
            both panels number the personas 1..P). titles: the two panel titles.
        out_dir, name, table: as in `dpolab.figures.style.save`.
    """
    n = len(labels)
    numbers = [str(i + 1) for i in range(n)]
    with figure_context():
        # 7 in wide (a full paper width) including the persona labels and the colour bar
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.3), layout="constrained")
        for ax, matrix, title in zip(axes, (before, after), titles):
            image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_xticks(range(n), numbers, fontsize=6)
            ax.set_xlabel("persona")
            ax.grid(False)
        axes[0].set_yticks(range(n), [f"{t}  {s}" for s, t in zip(numbers, labels)], fontsize=6)
        axes[1].set_yticks(range(n), numbers, fontsize=6)
        bar = fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.03, shrink=0.85)
        bar.set_label("cosine similarity")
        return save(fig, out_dir, name, table)
