"""Figure of the learning-order item (`dpolab.paper_repro.learning_order`), drawn from stored arrays.

References:
    Im & Li 2024 (ICML), arXiv 2403.18742; `dpolab.theory.learning_order` (our closed form).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402  (after dpolab.figures.style selected the Agg backend)
import numpy as np
from scipy import stats

from dpolab.figures.style import figure_context, save, write_csv


def plot_learning_order(data: dict, out_dir) -> list[Path]:
    """(a) coupled noise-free mean margins: GD vs mean field; (b) noisy values: realized vs
    predicted crossing time per seed, coloured by κ; (c) personas: realized vs predicted time.

    Args:
        data: arrays of `compute`: norms (K,), level, noise, coupled_t (C,), coupled_sim,
            coupled_mf (C, K), coupled_pred, coupled_cross (K,), noisy_pred, noisy_cross, noisy_d
            (S, K), real_unavailable (str) and, when it is empty, real_pred, real_cross, real_d (P,).
        out_dir: folder.
    Returns:
        paths of learning_order.{pdf,png,csv} (+ learning_order_real.csv).
    """
    norms, level = data["norms"], float(data["level"])
    reason = str(data["real_unavailable"])
    K, S = len(norms), data["noisy_pred"].shape[0]
    with figure_context():
        fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.3))
        ax = axes[0]
        for k in range(K):
            ax.plot(data["coupled_t"], data["coupled_sim"][:, k], color=f"C{k}", label=f"κ = {norms[k]:g}")
            ax.plot(data["coupled_t"], data["coupled_mf"][:, k], ":", color="k", lw=1)
            ax.axvline(data["coupled_pred"][k], color=f"C{k}", lw=0.6, ls="--")
        ax.axhline(level, color="grey", lw=0.6)
        ax.set(title="(a) noise-free, shared Yes/No, ρ = 0.3\nGD (lines), mean field (dotted)",
               xlabel="time t = nη (τ = 1)", ylabel="mean margin of the value")
        ax.legend(loc="lower right")
        ax = axes[1]
        for k in range(K):
            ax.plot(data["noisy_pred"][:, k], data["noisy_cross"][:, k], "o", ms=3, color=f"C{k}",
                    label=f"κ = {norms[k]:g}")
        lim = [0, 1.05 * float(np.nanmax(data["noisy_cross"][np.isfinite(data["noisy_cross"])]))]
        ax.plot(lim, lim, "k-", lw=0.6)
        ax.set(title=f"(b) v = {float(data['noise']):g}, own tokens, {S} seeds",
               xlabel=f"predicted crossing time of m = {level:g}", ylabel="GD crossing time")
        ax = axes[2]
        if reason:
            ax.text(0.5, 0.5, f"real track unavailable here:\n{reason}", ha="center", va="center",
                    wrap=True, transform=ax.transAxes, fontsize=7)
            ax.set_axis_off()
        else:
            pred, cross = data["real_pred"], data["real_cross"]
            rho = stats.spearmanr(pred, cross).statistic
            ax.plot(pred, cross, "o", ms=4, color="C3")
            hi = 1.05 * float(np.max(np.concatenate([pred, cross])[np.isfinite(np.concatenate([pred, cross]))]))
            ax.plot([0, hi], [0, hi], "k-", lw=0.6)
            ax.set(title=f"(c) Gemma-3-270M personas ({len(pred)}), Yes/No\nSpearman ρ = {rho:.2f}",
                   xlabel="predicted crossing time", ylabel="GD crossing time")
        fig.tight_layout()
        seed, value = np.repeat(np.arange(S), K), np.tile(np.arange(K), S)
        table = {"seed": seed, "value": value, "kappa": norms[value],
                 "distinguishability": data["noisy_d"].ravel(), "predicted_time": data["noisy_pred"].ravel(),
                 "gd_time": data["noisy_cross"].ravel()}
        paths = save(fig, out_dir, "learning_order", table)
    paths.append(write_csv(Path(out_dir) / "learning_order_coupled.csv",
                           {"value": np.arange(K), "kappa": norms, "predicted_time": data["coupled_pred"],
                            "gd_time": data["coupled_cross"]}))
    if not reason:
        paths.append(write_csv(Path(out_dir) / "learning_order_real.csv",
                               {"persona": np.arange(len(data["real_pred"])),
                                "distinguishability": data["real_d"], "predicted_time": data["real_pred"],
                                "gd_time": data["real_cross"]}))
    return paths
