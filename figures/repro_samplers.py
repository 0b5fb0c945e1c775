"""Figure of the `sampler-rates` item: exact-gradient DPO's convergence under three samplers.
Drawn only from the arrays handed in (`dpolab.paper_repro.sampler_rates.compute`).

References:
    Shi, Zhou & Du, ICLR 2025, arXiv 2409.19605; `dpolab.theory.samplers`.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402  (after dpolab.figures.style selected the Agg backend)
import numpy as np

from dpolab.figures.style import figure_context, k_palette, save, write_csv

SAMPLER_LABELS = ("uniform", "Mix-R", "Mix-P")
SAMPLER_COLORS = ("C0", "C3", "C2")
#: panel (c) leaves out errors at float64's floor (θ* rounded: ≈ 1e-15 here).
FLOOR = 1e-13


def plot_sampler_rates(data: dict, out_dir) -> list[Path]:
    """(a) uniform ‖e_n‖ with ρⁿ per reward scale, (b) the three samplers on one instance, (c) log‖e_{n+1}‖
    vs log‖e_n‖, (d) steps to the target error vs reward scale.

    Args:
        data: scales (K,), beta, samplers (3,), errors (3, K, seeds, steps + 1), rho_pred, rho_fit (K, seeds),
            steps_to_target (3, K, seeds), target.
        out_dir: folder.

    Returns:
        paths of sampler_rates.{pdf,png,csv} and sampler_rates_errors.csv.
    """
    scales, errors, target = data["scales"], data["errors"], float(data["target"])
    n_samplers, K, seeds, T = errors.shape
    steps = np.arange(T)
    shown = [k for k, s in enumerate(scales) if s in (1.0, 1.5, 2.0)]
    one = int(np.flatnonzero(scales == 1.0)[0])
    colors = k_palette(scales[shown])
    with figure_context():
        fig, ax = plt.subplots(1, 4, figsize=(13.0, 3.2))
        for k in shown:
            e, rho = errors[0, k, 0], data["rho_pred"][k, 0]
            ax[0].semilogy(steps, e, color=colors[scales[k]],
                           label=f"scale {scales[k]:g}: ρ = {rho:.4f}, fit {data['rho_fit'][k, 0]:.4f}")
            anchor = int(np.argmax(e <= 1e-5)) if np.any(e <= 1e-5) else 0
            ax[0].semilogy(steps, e[anchor] * rho ** (steps - anchor), ":", color="k", lw=0.8)
        ax[0].set_ylim(1e-16, 1e2)
        ax[0].set_title("(a) uniform sampler; dotted: predicted ρⁿ")
        ax[0].set_xlabel("step n")
        ax[0].set_ylabel(r"$\|\theta_n - \theta^*\|$ (centred)")
        ax[0].legend(loc="upper right", fontsize="x-small")
        for i in range(n_samplers):
            e = errors[i, one, 0]
            ax[1].semilogy(steps[:40], e[:40], "o-", ms=2.5, color=SAMPLER_COLORS[i], label=SAMPLER_LABELS[i])
            ok = np.isfinite(e[:-1]) & np.isfinite(e[1:]) & (e[1:] > FLOOR)  # above float64's floor
            ax[2].loglog(e[:-1][ok], e[1:][ok], "o", ms=3, color=SAMPLER_COLORS[i], label=SAMPLER_LABELS[i])
        grid = np.logspace(-8, 0, 10)
        ax[2].loglog(grid, 0.8 * grid, "--", color="0.5", lw=0.8, label="slope 1 (linear)")
        ax[2].loglog(grid, 0.3 * grid**2, "-.", color="0.2", lw=0.8, label="slope 2 (quadratic)")
        ax[1].set_title(f"(b) three samplers, reward scale {scales[one]:g}")
        ax[1].set_xlabel("step n")
        ax[1].set_ylabel(r"$\|\theta_n - \theta^*\|$")
        ax[1].legend(fontsize="x-small")
        ax[2].set_title("(c) order of convergence")
        ax[2].set_xlabel(r"$\|e_n\|$")
        ax[2].set_ylabel(r"$\|e_{n+1}\|$")
        ax[2].legend(fontsize="x-small")
        table = {k: [] for k in ("sampler", "reward_scale", "seed", "rho_pred", "rho_fit", "steps_to_target")}
        for i in range(n_samplers):
            hit = data["steps_to_target"][i]
            med = np.array([np.nanmedian(h) if np.isfinite(h).any() else np.nan for h in hit])
            ax[3].plot(scales, med, "o-", color=SAMPLER_COLORS[i], label=SAMPLER_LABELS[i])
            missed = np.isnan(hit).sum(axis=1)
            for k in np.flatnonzero(missed):
                ax[3].annotate(f"{missed[k]}/{seeds} not", (scales[k], T - 1), fontsize=6, color=SAMPLER_COLORS[i],
                               ha="center", va="bottom")
            for k in range(K):
                for s in range(seeds):
                    for key, value in (("sampler", i), ("reward_scale", scales[k]), ("seed", s),
                                       ("rho_pred", data["rho_pred"][k, s] if i == 0 else np.nan),
                                       ("rho_fit", data["rho_fit"][k, s] if i == 0 else np.nan),
                                       ("steps_to_target", hit[k, s])):
                        table[key].append(value)
        ax[3].set_yscale("log")
        ax[3].set_title(f"(d) steps to ‖e‖ ≤ {target:g} from π_ref (median)")
        ax[3].set_xlabel("reward scale (r* ~ scale·N(0, I))")
        ax[3].set_ylabel("steps")
        ax[3].legend(fontsize="x-small")
        fig.tight_layout()
        paths = save(fig, out_dir, "sampler_rates", {k: np.array(v, dtype=float) for k, v in table.items()})
    flat = {"sampler": np.repeat(np.arange(n_samplers), K * seeds * T),
            "reward_scale": np.tile(np.repeat(scales, seeds * T), n_samplers),
            "seed": np.tile(np.repeat(np.arange(seeds), T), n_samplers * K),
            "step": np.tile(steps, n_samplers * K * seeds), "error": errors.reshape(-1)}
    paths.append(write_csv(Path(out_dir) / "sampler_rates_errors.csv", flat))
    return paths
