"""Figures of three reproduction items: Im & Li's full fine-tuning tables, Chen et al.'s ranking
accuracy, and the single-Bradley–Terry mixture error. Drawn only from the arrays handed in.

Every `plot_*` writes PDF + PNG (+ CSV of the plotted numbers) through `dpolab.figures.style.save` and
returns the paths.

References:
    [IL] Im & Li, arXiv 2408.03459, Tables 1–2. [CR] Chen et al., arXiv 2405.19534, Cor. 3.3,
    Theorem 4.1, Prop. 2.6. THEORY.md §1.8, §3, §4.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402  (after dpolab.figures.style selected the Agg backend)
import numpy as np

from dpolab.figures.style import PANEL_SIZE, figure_context, k_palette, save, write_csv
from dpolab.sims.risk import mean_ci

MODEL_COLORS = ("C0", "C3")


def plot_full_ft_tables(table: dict, fits: dict, out_dir) -> list[Path]:
    """Test error (points, linear and log₂ K fits) and train reward margin against K, per model.

    Args:
        table: {model: {"K", "test_error", "train_margin": (4,) arrays}} (the reported numbers).
        fits: {model: {"K": fit, "log2K": fit, "reported_r2": float}}, fit = dict with slope,
            intercept, r2, slope_stderr (test error regressed on K, resp. log₂ K).
        out_dir: folder.

    Returns:
        paths of tables_full_ft.{pdf,png,csv} and tables_full_ft_fits.csv. Models are coded by
        their order in `table` (column ``model``).
    """
    models = list(table)
    rows = {k: [] for k in ("model", "K", "test_error", "train_margin", "linear_fit",
                            "log2K_fit")}
    with figure_context():
        fig, (ax_e, ax_m) = plt.subplots(1, 2, figsize=(2 * PANEL_SIZE[0] * 0.9, PANEL_SIZE[1]))
        grid = np.linspace(1, 8, 200)
        for i, model in enumerate(models):
            K, err, margin = (np.asarray(table[model][k]) for k in ("K", "test_error", "train_margin"))
            lin, log = fits[model]["K"], fits[model]["log2K"]
            color = MODEL_COLORS[i % len(MODEL_COLORS)]
            ax_e.plot(K, err, "o", color=color, label=f"{model} (reported)")
            ax_e.plot(grid, lin["slope"] * grid + lin["intercept"], "-", color=color, lw=1.2,
                      label=f"linear in K: $R^2$ = {lin['r2']:.3f} "
                            f"(paper {fits[model]['reported_r2']:.2f})")
            ax_e.plot(grid, log["slope"] * np.log2(grid) + log["intercept"], ":", color=color,
                      lw=1.2, label=f"linear in log$_2$K: $R^2$ = {log['r2']:.3f}")
            ax_m.plot(K, margin, "o-", color=color, label=model)
            for key, value in (("model", np.full(len(K), i)), ("K", K), ("test_error", err),
                               ("train_margin", margin),
                               ("linear_fit", lin["slope"] * K + lin["intercept"]),
                               ("log2K_fit", log["slope"] * np.log2(K) + log["intercept"])):
                rows[key].append(value)
        for ax in (ax_e, ax_m):
            ax.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
            ax.set_xlabel("number of values $K$")
        ax_e.set_ylabel("test error (full fine-tuning)")
        ax_e.set_title("(a) test error vs $K$ with least-squares fits")
        handles, labels = ax_e.get_legend_handles_labels()
        ax_m.set_ylabel("train reward margin")
        ax_m.set_title("(b) train reward margin vs $K$")
        ax_m.legend(loc="center left")
        fig.tight_layout(rect=(0, 0.17, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=2, bbox_to_anchor=(0.5, 0.0))
        paths = save(fig, out_dir, "tables_full_ft", {k: np.concatenate(v) for k, v in rows.items()})
    fit_table = {"model": np.arange(len(models))}
    for key in ("slope", "intercept", "r2", "slope_stderr"):
        fit_table[key] = np.array([fits[m]["K"][key] for m in models])
    fit_table["reported_r2"] = np.array([fits[m]["reported_r2"] for m in models])
    for key in ("slope", "intercept", "r2"):
        fit_table[f"log2K_{key}"] = np.array([fits[m]["log2K"][key] for m in models])
    paths.append(write_csv(Path(out_dir) / "tables_full_ft_fits.csv", fit_table))
    return paths


def plot_mixture_error(data: dict, out_dir) -> list[Path]:
    """E_irr vs disagreement angle φ (both weightings), and per weighting the subgroup loss of the
    single BT fit with its Pinsker bound, the diversity term and the sampled fits.

    Args:
        data: arrays of `dpolab.paper_repro.mixture_error.compute`: phi_deg (F,), sample_phi_deg (G,),
            weights (W, 2), n, seeds, and per weighting i: e_irr_i, subgroup_loss_i,
            pinsker_bound_i, diversity_i, triangle_defect_i, disagreement_fraction_i (F,),
            sampled_single_i, sampled_mixture_i (G, seeds).
        out_dir: folder.

    Returns:
        paths of mixture_error.{pdf,png,csv} and mixture_error_sampled.csv.
    """
    phi, sphi, weights = data["phi_deg"], data["sample_phi_deg"], data["weights"]
    n = int(data["n"])
    keys = ("e_irr", "subgroup_loss", "pinsker_bound", "diversity", "triangle_defect",
            "disagreement_fraction")
    table = {k: [] for k in ("weights_index", "w1", "phi_deg") + keys}
    sampled = {k: [] for k in ("weights_index", "phi_deg", "single_mean", "single_ci95",
                               "single_min", "mixture_mean", "mixture_ci95")}
    styles = ("-", "--")
    with figure_context():
        fig, axes = plt.subplots(1, 1 + len(weights), figsize=(7.2, 2.9))
        for i, w in enumerate(weights):
            wl = f"$w$ = ({w[0]:g}, {w[1]:g})"
            axes[0].plot(phi, data[f"e_irr_{i}"], styles[i % 2], color="k", label=f"$w_1$ = {w[0]:g}")
            ax = axes[1 + i]
            ax.plot(phi, data[f"subgroup_loss_{i}"], "-", color="C0",
                    label=r"subgroup loss of BT fit $\hat r$ = $E_{irr}$ + $D$")
            ax.plot(phi, data[f"diversity_{i}"], "-.", color="C2",
                    label=r"$D = \Sigma_k\, w_k\,\mathrm{KL}(a_k\|P)$ (no single model removes it)")
            ax.plot(phi, data[f"pinsker_bound_{i}"], "--", color="C3",
                    label=r"Pinsker bound $2\,\mathbb{E}\,\mathrm{Var}_k(a_k)$")
            ax.plot(phi, data[f"e_irr_{i}"], ":", color="k", label=r"$E_{irr}$ (BT misspecification)")
            single, s_ci = mean_ci(data[f"sampled_single_{i}"])
            multi, m_ci = mean_ci(data[f"sampled_mixture_{i}"])
            ax.errorbar(sphi, single, s_ci, fmt="o", color="C0", ms=3.5, capsize=2,
                        label=f"single-BT MLE, n = {n} (mean, 95% CI)")
            ax.errorbar(sphi, multi, m_ci, fmt="s", color="C1", ms=3.0, capsize=2,
                        label=f"2-component MLE, n = {n}")
            ax.set_title(f"({'bc'[i]}) subgroup loss, {wl}")
            ax.set_ylabel("KL (nats per pair)")
            for key in keys:
                table[key].append(data[f"{key}_{i}"])
            table["weights_index"].append(np.full(len(phi), i))
            table["w1"].append(np.full(len(phi), w[0]))
            table["phi_deg"].append(phi)
            for key, value in (("weights_index", np.full(len(sphi), i)), ("phi_deg", sphi),
                               ("single_mean", single), ("single_ci95", s_ci),
                               ("single_min", data[f"sampled_single_{i}"].min(axis=1)),
                               ("mixture_mean", multi), ("mixture_ci95", m_ci)):
                sampled[key].append(value)
        axes[0].set_title(r"(a) $E_{irr}$ of one BT model")
        axes[0].set_ylabel(r"$E_{irr}$ (nats per pair)")
        axes[0].legend(loc="upper left")
        for ax in axes:
            ax.set_xlabel(r"disagreement angle $\varphi$ (degrees)")
            ax.set_xticks([0, 45, 90, 135, 180])
        handles, labels = axes[1].get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0.2, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=2, bbox_to_anchor=(0.5, 0.0))
        paths = save(fig, out_dir, "mixture_error", {k: np.concatenate(v) for k, v in table.items()})
    paths.append(write_csv(Path(out_dir) / "mixture_error_sampled.csv",
                           {k: np.concatenate(v) for k, v in sampled.items()}))
    return paths


def plot_ranking_accuracy(data: dict, out_dir) -> list[Path]:
    """Ranking accuracy vs β: reference model, idealized R* (Cor. 3.3), fitted DPO per n.

    Args:
        data: arrays of `dpolab.paper_repro.chen_ranking.compute`: betas (B,), ns (N,),
            reference_accuracy, idealized_accuracy (B,), optimum_accuracy (B,),
            achieved_accuracy (B, N, seeds).
        out_dir: folder.

    Returns:
        paths of chen_ranking.{pdf,png,csv}.
    """
    betas, ns, achieved = data["betas"], data["ns"], data["achieved_accuracy"]
    mean, ci = mean_ci(achieved)
    colors = k_palette(ns)
    reference = np.full(len(betas), float(data["reference_accuracy"]))
    table = {"beta": betas, "reference_accuracy": reference,
             "idealized_accuracy": data["idealized_accuracy"],
             "optimum_accuracy": data["optimum_accuracy"]}
    with figure_context():
        fig, ax = plt.subplots(figsize=(4.8, 4.0))
        ax.axhline(float(data["reference_accuracy"]), color="0.5", ls="--",
                   label=r"reference $\pi_{ref}$ (no training)")
        ax.plot(betas, data["idealized_accuracy"], "-", color="k", lw=1.8,
                label=r"idealized $R^*$ (Cor. 3.3) = optimum $\theta^*$")
        for j, n in enumerate(ns):
            shift = 1.0 + 0.04 * (j - (len(ns) - 1) / 2)  # spread markers so bars do not overlap
            ax.errorbar(betas * shift, mean[:, j], ci[:, j], fmt="o", ms=3.5, capsize=2,
                        color=colors[int(n)], label=f"DPO fit, n = {int(n)}")
            table[f"achieved_mean_n{int(n)}"] = mean[:, j]
            table[f"achieved_ci95_n{int(n)}"] = ci[:, j]
        ax.set_xscale("log")
        ax.set_xlabel(r"KL strength $\beta$")
        ax.set_ylabel(f"ranking accuracy (all {int(data['eval_pairs'])} pairs)")
        ax.set_title(f"Idealized vs achieved ranking accuracy (bandit; fits: mean and 95% CI "
                     f"over {achieved.shape[-1]} seeds)", fontsize=8)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2)
        paths = save(fig, out_dir, "chen_ranking", table)
    return paths


def plot_ranking_threshold(data: dict, out_dir) -> list[Path]:
    """Per-pair DPO loss vs c = log π_ref(y_l)/π_ref(y_w) with Theorem 4.1's −log σ(βc).

    Args:
        data: threshold_beta, threshold_n, threshold_c (P,), threshold_loss (P,),
            threshold_correct (P,) bool, threshold_mismatches, pairs_checked.
        out_dir: folder.

    Returns:
        paths of chen_threshold.{pdf,png,csv}.
    """
    beta = float(data["threshold_beta"])
    c, loss, ok = data["threshold_c"], data["threshold_loss"], data["threshold_correct"].astype(bool)
    grid = np.linspace(c.min(), c.max(), 300)
    with figure_context():
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        ax.scatter(c[ok], loss[ok], s=5, color="C2", alpha=0.6, lw=0,
                   label=r"ranked right ($\pi_\theta(y_w) \geq \pi_\theta(y_l)$)")
        ax.scatter(c[~ok], loss[~ok], s=5, color="C3", alpha=0.6, lw=0, label="ranked wrong")
        ax.plot(grid, np.logaddexp(0.0, -beta * grid), "k-", lw=1.4,
                label=r"Thm 4.1 threshold $-\log\sigma(\beta c)$")
        neg = grid[grid <= 0]
        ax.plot(neg, np.full(len(neg), 0.6), ":", color="0.3", lw=1.4,
                label=r"Prop. 2.6: $L \leq 0.6$, $c \leq 0$ ⇒ right")
        ax.set_xlabel(r"$c = \log \pi_{ref}(y_l)/\pi_{ref}(y_w)$")
        ax.set_ylabel(r"per-pair DPO loss $L$")
        ax.set_title(f"Theorem 4.1 on one fit (β = {beta:g}, n = {int(data['threshold_n'])})\n"
                     f"mismatches: {int(data['threshold_mismatches'])} / {int(data['pairs_checked'])}",
                     fontsize=8)  # two lines: one was wider than the figure and was cut
        ax.legend(loc="upper left", markerscale=2.5)
        paths = save(fig, out_dir, "chen_threshold",
                     {"c": c, "loss": loss, "ranked_right": ok.astype(float),
                      "threshold": np.logaddexp(0.0, -beta * c)})
    return paths
