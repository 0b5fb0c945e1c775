"""Figure of the hidden-context item: Borda count vs expected utility, the intensity sweep, and the
exact-vs-in-order picture. Drawn only from the arrays handed in.

References:
    [DPL] Siththaranjan et al., ICLR 2024, arXiv 2312.08358, Sec. 3; `dpolab.theory.hidden_context`.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402  (after dpolab.figures.style selected the Agg backend)
import numpy as np

from dpolab.figures.style import figure_context, save, write_csv
from dpolab.sims.risk import mean_ci


def plot_hidden_context(data: dict, out_dir) -> list[Path]:
    """Three panels: (a) EU, Borda and BT fit on the 1-D example, (b) τ(r̂, EU) and E_irr vs the
    reward scale λ, (c) ΔBC vs Δr̂ for uniform and non-uniform comparison designs.

    Args:
        data: arrays of `dpolab.paper_repro.hidden_context.compute`: positions, eu, borda, fit (M,),
            sampled_fit (seeds, M), n, scales, tau_fit_eu, e_irr (S,), uniform_d_borda,
            uniform_d_fit (U,), nonuniform_d_borda, nonuniform_d_fit (V,).
        out_dir: folder.

    Returns:
        paths of hidden_context.{pdf,png,csv}, hidden_context_sweep.csv, hidden_context_pairs.csv.
    """
    pos, n = data["positions"], int(data["n"])
    sampled, s_ci = mean_ci(data["sampled_fit"].T)
    M = pos.size
    with figure_context():
        fig, axes = plt.subplots(1, 3, figsize=(7.8, 3.0))
        ax = axes[0]
        ax.plot(pos, data["eu"], "s--", color="C3", ms=3, label="expected utility EU (centred)")
        ax.plot(pos, data["borda"] - (M - 1) / 2, "^-", color="C2", ms=3, label=r"Borda BC $-$ (M$-$1)/2")
        ax.plot(pos, data["fit"], "o-", color="C0", ms=3, label=r"population BT fit $\hat r$")
        ax.errorbar(pos, sampled, s_ci, fmt="x", color="k", ms=4, capsize=2, label=f"BT MLE, n = {n} (95% CI)")
        ax.set_xlabel("item position $a$")
        ax.set_ylabel("score (nats)")
        ax.set_title("(a) 70%: r = 8a; 30%: r = −40a", fontsize="small")
        ax.legend(fontsize="x-small", loc="upper right")
        ax = axes[1]
        ax.semilogx(data["scales"], data["tau_fit_eu"], "-", color="C0", label=r"Kendall $\tau(\hat r$, EU)")
        ax.set_xlabel(r"reward scale $\lambda$ (rewards $\lambda r_k$)")
        ax.set_ylabel(r"$\tau$")
        ax.set_ylim(-1.1, 1.1)
        twin = ax.twinx()
        twin.semilogx(data["scales"], data["e_irr"], ":", color="k", label=r"$E_{irr}$")
        twin.set_ylabel(r"$E_{irr}$ (nats per pair)")
        ax.set_title("(b) BT vs EU as intensity grows", fontsize="small")
        lines = ax.get_lines() + twin.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize="x-small", loc="center left")
        ax = axes[2]
        nb, nf = data["nonuniform_d_borda"], data["nonuniform_d_fit"]
        against = np.sign(nb) * np.sign(nf) < 0
        ax.plot(data["uniform_d_borda"], data["uniform_d_fit"], ".", color="C0", ms=2,
                label="uniform pairs (exact)")
        ax.plot(nb[~against], nf[~against], ".", color="C1", ms=2, label="non-uniform pairs")
        ax.plot(nb[against], nf[against], "x", color="C3", ms=4,
                label=f"non-uniform, against Borda ({int(against.sum())}/{nb.size})")
        ax.axhline(0, color="0.5", lw=0.5)
        ax.axvline(0, color="0.5", lw=0.5)
        ax.set_xlabel(r"$BC(a) - BC(b)$")
        ax.set_ylabel(r"$\hat r_a - \hat r_b$")
        ax.set_xlim(-1.0, 1.0)
        ax.set_ylim(-1.5, 1.5)
        ax.set_title("(c) Borda order, zoomed to |ΔBC| ≤ 1", fontsize="small")
        ax.legend(fontsize="x-small", loc="lower right")
        fig.tight_layout()
        table = {"position": pos, "eu": data["eu"], "borda": data["borda"], "fit": data["fit"],
                 "sampled_mean": sampled, "sampled_ci95": s_ci}
        paths = save(fig, out_dir, "hidden_context", table)
    out_dir = Path(out_dir)
    paths.append(write_csv(out_dir / "hidden_context_sweep.csv", {
        "scale": data["scales"], "tau_fit_eu": data["tau_fit_eu"], "e_irr": data["e_irr"]}))
    uni, non = data["uniform_d_borda"], data["nonuniform_d_borda"]
    paths.append(write_csv(out_dir / "hidden_context_pairs.csv", {
        "nonuniform": np.r_[np.zeros(uni.size), np.ones(non.size)], "d_borda": np.r_[uni, non],
        "d_fit": np.r_[data["uniform_d_fit"], data["nonuniform_d_fit"]]}))
    return paths
