"""Figure of the likelihood-displacement item, drawn only from the arrays handed in.

References:
    Razin et al., ICLR 2025, arXiv 2410.08847; `dpolab.theory.displacement`; THEORY.md §1.1, §2.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402  (after dpolab.figures.style selected the Agg backend)
import numpy as np

from dpolab.figures.style import figure_context, save, write_csv

LOSS_NAMES = ("DPO", "rDPO")


def plot_likelihood_displacement(data: dict, out_dir, *, structures) -> list[Path]:
    """(a, b) mean log-prob changes of y_w, y_l vs t per flip rate for DPO and rDPO; (c) displaced
    fraction vs t; (d) closed-form displaced fraction at r = 0 vs K per token structure.

    Args:
        data: arrays of `dpolab.paper_repro.likelihood_displacement.compute`: t (C,), flips (F,), Ks (k,),
            chosen, rejected, clean_chosen, flipped_chosen, displaced, margin (2, F, C), frac_at_zero
            (S, k, seeds), K_traj, beta.
        out_dir: folder. structures: the S structure names, in `frac_at_zero`'s order.

    Returns:
        paths of likelihood_displacement.{pdf,png,csv} and likelihood_displacement_structure.csv.
    """
    t, flips, Ks = data["t"], data["flips"], data["Ks"]
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(flips)))
    table = {k: [] for k in ("loss", "flip", "t", "chosen", "rejected", "clean_chosen", "flipped_chosen",
                             "displaced", "margin")}
    with figure_context():
        fig, axes = plt.subplots(2, 2, figsize=(7.2, 5.6))
        for i, name in enumerate(LOSS_NAMES):
            ax = axes[0, i]
            for f, flip in enumerate(flips):
                ax.plot(t, data["chosen"][i, f], "-", color=colors[f], label=f"ε = {flip:g}")
                ax.plot(t, data["rejected"][i, f], "--", color=colors[f])
                axes[1, 0].plot(t, data["displaced"][i, f], "-" if i == 0 else ":", color=colors[f],
                                label=f"{name}, ε = {flip:g}")
                for key, col in (("loss", np.full(len(t), i)), ("flip", np.full(len(t), flip)), ("t", t)):
                    table[key].append(col)
                for key in ("chosen", "rejected", "clean_chosen", "flipped_chosen", "displaced", "margin"):
                    table[key].append(data[key][i, f])
            ax.axhline(0.0, color="0.6", lw=0.8)
            ax.set_xlabel("time $t = n\\eta$")
            ax.set_ylabel(r"mean $\log\pi_t(y) - \log\pi_0(y)$")
            ax.set_title(f"({'ab'[i]}) {name}: $y_w$ (solid), $y_l$ (dashed)")
            ax.legend(loc="lower left", fontsize="small")
        ax = axes[1, 0]
        ax.set_xlabel("time $t = n\\eta$")
        ax.set_ylabel("fraction displaced")
        ax.set_title(f"(c) chain K = {int(data['K_traj'])}: DPO solid, rDPO dotted")
        ax.legend(fontsize="x-small", ncol=2)
        ax = axes[1, 1]
        mean = data["frac_at_zero"].mean(axis=2)
        for s, structure in enumerate(structures):
            ax.plot(Ks, mean[s], "o-", label=structure)
        ax.set_xscale("log", base=2)
        ax.set_xticks(Ks, [f"{int(k)}" for k in Ks])
        ax.set_xlabel("number of values $K$")
        ax.set_ylabel("fraction displaced at $r = 0$")
        ax.set_title("(d) closed form vs token structure")
        ax.legend(fontsize="small")
        fig.tight_layout()
        paths = save(fig, out_dir, "likelihood_displacement", {k: np.concatenate(v) for k, v in table.items()})
    S, k, seeds = data["frac_at_zero"].shape
    structure_table = {"structure": np.repeat(np.arange(S), k), "K": np.tile(Ks, S),
                       "fraction_mean": mean.ravel(), "fraction_min": data["frac_at_zero"].min(2).ravel(),
                       "fraction_max": data["frac_at_zero"].max(2).ravel(), "seeds": np.full(S * k, seeds)}
    paths.append(write_csv(Path(out_dir) / "likelihood_displacement_structure.csv", structure_table))
    return paths
