"""Figures of the rDPO reproduction item, drawn only from the arrays handed in.

`plot_vs_n`: estimation error and sub-optimality gap against n, one column per loss;
`plot_noise_factor`: (1−2ε)·error of rDPO against ε (flat iff the noise factor is 1/(1−2ε)) with
the raw errors of DPO/cDPO/rDPO; `plot_hh`: held-out accuracy on HH-RLHF against ε, or a visible
note saying why that panel was not run. Each writes PDF + PNG (+ CSV) through `dpolab.figures.style.save`.

References:
    [rDPO] Chowdhury, Kini, Natarajan, ICML 2024, arXiv 2403.00409; THEORY.md §2.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402  (after dpolab.figures.style selected the Agg backend)
import numpy as np
from matplotlib import ticker  # noqa: E402

from dpolab.figures.style import figure_context, k_palette, save
from dpolab.sims.risk import Z95, mean_ci

LOSSES = ("dpo", "cdpo", "rdpo")
LOSS_LABELS = {"dpo": "DPO", "cdpo": "cDPO", "rdpo": "rDPO"}
LOSS_COLORS = {"dpo": "C0", "cdpo": "C1", "rdpo": "C2"}
LOSS_MARKERS = {"dpo": "o", "cdpo": "s", "rdpo": "^"}


def rmse_ci(errors, axis=-1):
    """RMSE over `axis` and its 95% interval [lo, hi] by the delta method on the mean square.

    Args:
        errors: array of non-negative errors; `axis` holds the seeds (≥ 2).

    Returns:
        (rmse, lo, hi), arrays with `axis` removed; lo = √max(MSE − z·SE, 0), hi = √(MSE + z·SE),
        SE = sd(e²)/√seeds, z = Z95.
    """
    sq = np.asarray(errors, dtype=np.float64) ** 2
    mse = sq.mean(axis=axis)
    se = sq.std(axis=axis, ddof=1) / np.sqrt(sq.shape[axis])
    return np.sqrt(mse), np.sqrt(np.maximum(mse - Z95 * se, 0.0)), np.sqrt(mse + Z95 * se)


def _reference_line(ax, ns, anchor, slope, label, style):
    ax.plot(ns, anchor * (ns / ns[0]) ** slope, style, color="0.35", lw=1.0, label=label)


def _n_label(n):
    return f"{n / 1000:g}k" if n >= 1000 else f"{n:g}"


def _n_axis(ax, ns):
    """Log x-axis with a tick at every other n (plain labels, no minor labels)."""
    ax.set_xscale("log")
    shown = ns[::-1][::2][::-1]  # every other n, always including the largest
    ax.xaxis.set_major_locator(ticker.FixedLocator(shown))
    ax.xaxis.set_major_formatter(ticker.FixedFormatter([_n_label(n) for n in shown]))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def plot_vs_n(data: dict, out_dir) -> list[Path]:
    """Σ̂-norm RMSE (top) and mean J-gap (bottom) against n for DPO, cDPO, rDPO, one colour per ε
    (strong-preference regime).

    Args:
        data: arrays of `dpolab.paper_repro.rdpo_noise.compute`: ns (N,), eps (E,), reward_scales,
            error_<loss>, jgap_<loss>, rgap_<loss> (E, seeds, N), asymptotic_rmse_rdpo (E, N).
        out_dir: folder.

    Returns:
        paths of rdpo_vs_n.{pdf,png,csv} (CSV: one row per loss (0 DPO, 1 cDPO, 2 rDPO), ε, n).
    """
    ns, eps = np.asarray(data["ns"], dtype=float), data["eps"]
    colors = list(k_palette(eps).values())  # ascending ε, light → dark
    table = {k: [] for k in ("loss", "eps", "n", "rmse", "rmse_lo", "rmse_hi", "jgap_mean",
                             "jgap_ci95", "rgap_mean", "asymptotic_rmse_rdpo")}
    with figure_context():
        fig, axes = plt.subplots(2, 3, figsize=(7.2, 5.0), sharex=True)
        for c, loss in enumerate(LOSSES):
            rmse, lo, hi = rmse_ci(data[f"error_{loss}"], axis=1)
            gap, gap_ci = mean_ci(data[f"jgap_{loss}"], axis=1)
            rgap = data[f"rgap_{loss}"].mean(axis=1)
            for e, eps_ in enumerate(eps):
                label = f"ε = {eps_:g}"
                axes[0, c].errorbar(ns, rmse[e], [rmse[e] - lo[e], hi[e] - rmse[e]], fmt="o-",
                                    ms=3, lw=1.1, capsize=1.5, color=colors[e], label=label)
                axes[1, c].errorbar(ns, gap[e], gap_ci[e], fmt="o-", ms=3, lw=1.1, capsize=1.5,
                                    color=colors[e], label=label)
                if loss == "rdpo":
                    axes[0, c].plot(ns, data["asymptotic_rmse_rdpo"][e], "--", lw=0.9,
                                    color=colors[e])
                for key, value in (("loss", np.full(len(ns), c)), ("eps", np.full(len(ns), eps_)),
                                   ("n", ns), ("rmse", rmse[e]), ("rmse_lo", lo[e]),
                                   ("rmse_hi", hi[e]), ("jgap_mean", gap[e]),
                                   ("jgap_ci95", gap_ci[e]), ("rgap_mean", rgap[e]),
                                   ("asymptotic_rmse_rdpo", data["asymptotic_rmse_rdpo"][e])):
                    table[key].append(value)
            half = r"slope $n^{-1/2}$ (the bounds' rate)"
            _reference_line(axes[0, c], ns, rmse[0, 0] * 1.6, -0.5, half, ":")
            _reference_line(axes[1, c], ns, gap[0, 0] * 2.0, -0.5, half, ":")
            _reference_line(axes[1, c], ns, gap[0, 0] * 0.5, -1.0, r"slope $n^{-1}$", "-.")
            axes[0, c].set_title(LOSS_LABELS[loss])
            axes[1, c].set_xlabel("pairs $n$")
            for ax in axes[:, c]:
                ax.set_yscale("log")
                _n_axis(ax, ns)
        axes[0, 2].plot([], [], "--", color="0.35", lw=0.9,
                        label=r"rDPO asymptotic $\sqrt{\mathrm{tr}(\hat\Sigma H^{-1}VH^{-1})/n}$")
        axes[0, 0].set_ylabel(r"RMSE $\|\hat\theta-\theta^*\|_{\hat\Sigma}$")
        axes[1, 0].set_ylabel(r"mean gap $J(\pi^*)-J(\pi_{\hat\theta})$")
        legend = {}
        for ax in (axes[0, 2], axes[1, 2]):
            for h, lab in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(lab, h)
        fig.suptitle(f"Log-linear bandit, ‖ω*‖ = {data['reward_scales'][0]:g}, "
                     f"{int(data['seeds'])} seeds per point, 95% CIs", fontsize=9)
        fig.tight_layout(rect=(0, 0.12, 1, 1))
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=4,
                   bbox_to_anchor=(0.5, 0.0))
        return save(fig, out_dir, "rdpo_vs_n", {k: np.concatenate(v) for k, v in table.items()})


def noise_factor_table(data: dict) -> dict:
    """Per regime (0 strong at the largest n of the n sweep, 1 weak) and ε: every loss's RMSE with
    its 95% interval, rDPO's (1−2ε)·RMSE and interval, and (1−2ε)·its asymptotic RMSE."""
    eps = np.asarray(data["eps"], dtype=float)
    scale = 1.0 - 2.0 * eps
    errors = {0: {loss: data[f"error_{loss}"][:, :, -1] for loss in LOSSES},
              1: {loss: data[f"error_weak_{loss}"] for loss in LOSSES}}
    pred = {0: data["asymptotic_rmse_rdpo"][:, -1], 1: data["asymptotic_rmse_weak_rdpo"]}
    table = {k: [] for k in ("regime", "reward_scale", "eps")}
    for r in (0, 1):
        cols = {"regime": np.full(len(eps), r),
                "reward_scale": np.full(len(eps), data["reward_scales"][r]), "eps": eps}
        for loss in LOSSES:
            cols[f"{loss}_rmse"], cols[f"{loss}_lo"], cols[f"{loss}_hi"] = rmse_ci(errors[r][loss])
        for key in ("rmse", "lo", "hi"):
            cols[f"rdpo_scaled_{key}"] = scale * cols[f"rdpo_{key}"]
        cols["rdpo_scaled_asymptotic"] = scale * pred[r]
        for key, value in cols.items():
            table.setdefault(key, []).append(value)
    return {k: np.concatenate(v) for k, v in table.items()}


def plot_noise_factor(data: dict, out_dir) -> list[Path]:
    """Per regime, at the largest n: rDPO's (1−2ε)·RMSE (flat iff the error grows as 1/(1−2ε))
    with the asymptotic prediction, and the raw RMSE of every loss, against ε.

    Returns:
        paths of rdpo_noise_factor.{pdf,png,csv} (the CSV is `noise_factor_table`).
    """
    table = noise_factor_table(data)
    n = int(data["ns"][-1])
    with figure_context():
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.0))
        for r, ax in enumerate(axes):
            row = table["regime"] == r
            eps = table["eps"][row]
            col = {k: v[row] for k, v in table.items()}
            ax.errorbar(eps, col["rdpo_scaled_rmse"], [col["rdpo_scaled_rmse"] - col["rdpo_scaled_lo"],
                        col["rdpo_scaled_hi"] - col["rdpo_scaled_rmse"]], fmt="D-", ms=4, lw=1.8,
                        capsize=2.5, color="k", label=r"rDPO $(1-2\varepsilon)\cdot$RMSE")
            ax.plot(eps, col["rdpo_scaled_asymptotic"], "--", color="0.4", lw=1.2,
                    label=r"$(1-2\varepsilon)\cdot$asymptotic (sandwich) RMSE")
            for loss in LOSSES:
                rmse = col[f"{loss}_rmse"]
                ax.errorbar(eps, rmse, [rmse - col[f"{loss}_lo"], col[f"{loss}_hi"] - rmse],
                            fmt=LOSS_MARKERS[loss] + "-", ms=3.5, lw=1.0, capsize=2,
                            color=LOSS_COLORS[loss], alpha=0.6, label=f"{LOSS_LABELS[loss]} RMSE")
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_xlabel(r"flip rate $\varepsilon$")
            ax.set_ylabel(r"RMSE $\|\hat\theta-\theta^*\|_{\hat\Sigma}$")
            seeds = int(data["seeds"] if r == 0 else data["seeds_weak"])
            kind = "strong" if r == 0 else "weak"
            ax.set_title(f"{kind} preferences, ‖ω*‖ = {data['reward_scales'][r]:g}, n = {n}, "
                         f"{seeds} seeds", fontsize=8.5)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0.14, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=3, bbox_to_anchor=(0.5, 0.0))
        return save(fig, out_dir, "rdpo_noise_factor", table)


def plot_hh(data: dict, out_dir) -> list[Path]:
    """Held-out accuracy on clean HH-RLHF labels against ε for DPO/cDPO/rDPO (mean, 95% CI over
    split seeds); where the panel was not run, a figure that states the stored reason instead.

    Returns:
        paths of rdpo_hh.{pdf,png} (+ .csv with the numbers when the panel ran).
    """
    reason = str(data.get("hh_unavailable", "HH-RLHF panel not run: no result stored"))
    with figure_context():
        fig, ax = plt.subplots(figsize=(4.8, 3.2))
        if reason:
            ax.axis("off")
            ax.text(0.5, 0.5, reason, ha="center", va="center", wrap=True, fontsize=8)
            return save(fig, out_dir, "rdpo_hh")
        eps = np.asarray(data["eps"], dtype=float)
        acc = data["hh_accuracy"]
        table = {"eps": eps}
        for i, loss in enumerate(LOSSES):
            mean, ci = mean_ci(acc[i], axis=1)
            ax.errorbar(eps + 0.006 * (i - 1), mean, ci, fmt=LOSS_MARKERS[loss] + "-", ms=4,
                        capsize=2, color=LOSS_COLORS[loss], label=LOSS_LABELS[loss])
            table[f"{loss}_accuracy"], table[f"{loss}_ci95"] = mean, ci
        ax.axhline(0.5, color="0.5", ls=":", lw=1.0, label="chance")
        ax.set_xlabel(r"flip rate $\varepsilon$ (training labels)")
        ax.set_ylabel("held-out accuracy (clean labels)")
        ax.set_title(f"HH-RLHF harmless-base, Gemma-3-270M features: {int(data['hh_pairs'])} pairs\n"
                     f"({int(data['hh_test_pairs'])} held out per split, {acc.shape[2]} random "
                     "splits; mean, 95% CI)", fontsize=8)
        ax.legend(loc="lower left", ncol=4)
        return save(fig, out_dir, "rdpo_hh", table)
