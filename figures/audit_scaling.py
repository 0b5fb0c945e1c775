"""Figures of the audit's sample-size questions: Q1 (is Θ(log K) observable?) and Q8 (unbalanced
values), drawn only from the arrays the audit item stored (its data.npz). Each `plot_*` writes
PDF + PNG + CSV of the plotted numbers through `dpolab.figures.style.save` and returns the paths.
CSV columns are numeric; a `regime` / `case` column is the index into the order documented in
each function.

References:
    [IL] S. Im, S. Li, arXiv 2408.03459: Theorem 4.2 (window at τ_1), Theorem 4.3 and the scaling
    law Q*(K) (Figure 4), §5 / App. E (persona experiments).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402  (after dpolab.figures.style selected the Agg backend)
import numpy as np
from matplotlib import ticker  # noqa: E402

from dpolab.figures.style import figure_context, k_palette, save
from dpolab.sims.risk import mean_ci
from dpolab.theory.im_li import LOG3

#: Q1 regimes in the order of the stored arrays, with their panel titles.
Q1_REGIMES = ("theorem", "distinct", "shared", "distinct_low_v", "distinct_worst")
BOUND_STYLE = {"simplified": dict(color="0.2", ls="--"), "refined": dict(color="0.2", ls=":")}
REGIME_STYLE = {"theorem": ("C0", "o"), "distinct": ("C2", "s"), "shared": ("C3", "^"),
                "distinct_low_v": ("C1", "D"), "distinct_worst": ("C5", "v"), "real": ("C4", "P")}


def _k_axis(ax, Ks):
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ks, [f"{k:g}" for k in Ks])
    ax.minorticks_off()
    ax.set_xlabel("number of values $K$")


def _q_axis(ax, Qs, label):
    ax.set_xscale("log", base=2)
    ax.set_xticks(Qs, [f"{q:g}" for q in Qs])
    ax.minorticks_off()
    ax.set_xlabel(label)


def q1_titles(data) -> dict:
    """Panel title of each Q1 regime (the fixed v values read from the data)."""
    v_dist, v_sh = data["v_fixed"]
    return {"theorem": "theorem regime: distinct tokens,\n" r"$v = 1/(32\sqrt{Q})$",
            "distinct": f"distinct tokens,\nfixed $v$ = {v_dist:g}",
            "shared": f"shared Yes/No pair,\nfixed $v$ = {v_sh:g}",
            "distinct_low_v": f"distinct tokens,\nfixed $v$ = {v_sh:g}",
            "distinct_worst": f"distinct tokens, $v$ = {v_dist:g}:\nworst of the K values",
            "real": "Gemma-3-270M features,\npersona sets (Adam)",
            "real_threshold": "(real: threshold = achievable error + "
                              f"{float(data.get('real_slack', np.nan)):g})"}


def plot_log_k(data: dict, out_dir) -> list[Path]:
    """Q1: risk vs Q per K for each regime (`q1_risk_vs_q`) and Q_emp(K) with Q*(K) of both
    bounds (`q1_q_emp`).

    Keys: Ks, Qs, threshold, v_fixed, `<regime>_{mean,lo,hi,threshold,q_emp,q_lo,q_hi,censored,
    grid}` for the regimes in `Q1_REGIMES` (and `real_*`, `real_Ks`, `real_Qs` when
    `real_available`), `qstar_simplified`, `qstar_refined`. CSV columns: `regime` 0–4 =
    Q1_REGIMES, 5 = real; in `q1_q_emp.csv` 6, 7 = Q*(K) of the simplified / refined bound.
    """
    titles = q1_titles(data)
    regimes = list(Q1_REGIMES) + (["real"] if int(data["real_available"]) else [])
    grid = {r: (data["Ks"], data["Qs"]) for r in Q1_REGIMES}
    if "real" in regimes:
        grid["real"] = (data["real_Ks"], data["real_Qs"])
    curves = {k: [] for k in ("regime", "K", "Q", "risk", "lo", "hi", "threshold")}
    palette = k_palette(np.concatenate([grid[r][0] for r in regimes]))
    with figure_context():
        fig, axes = plt.subplots(2, 3, figsize=(7.0, 5.0))
        for i, (ax, r) in enumerate(zip(axes.flat, regimes)):
            Ks, Qs = grid[r]
            for k, K in enumerate(Ks):
                m, lo, hi = data[f"{r}_mean"][k], data[f"{r}_lo"][k], data[f"{r}_hi"][k]
                ax.errorbar(Qs, m, yerr=[m - lo, hi - m], color=palette[int(K)], marker="o",
                            ms=2.5, lw=1, capsize=1.5)
                t = data[f"{r}_threshold"][k]
                if r == "real":
                    ax.axhline(t, color=palette[int(K)], lw=0.8, ls=":")
                curves["regime"] += [i] * len(Qs)
                for col, val in (("K", K), ("Q", Qs), ("risk", m), ("lo", lo), ("hi", hi),
                                 ("threshold", t)):
                    curves[col] += list(np.broadcast_to(val, len(Qs)))
            if r != "real":
                ax.axhline(float(data["threshold"]), color="0.3", lw=0.8, ls="--")
            _q_axis(ax, Qs, "$Q$ per cluster" if r != "real" else "$Q$ per label and persona")
            ax.set_title(titles[r], fontsize=7.5)
            ax.set_ylim(bottom=0)
            if i % 3 == 0:
                ax.set_ylabel("test risk $P(r \\leq 0)$, CP95")
        for ax in axes.flat[len(regimes):]:
            ax.axis("off")
        if "real" not in regimes:
            axes.flat[len(regimes)].text(0.5, 0.5, "real-embedding track\nnot run here", ha="center",
                                         va="center", fontsize=8, color="0.4")
        legend_ax = axes.flat[-1]
        handles = [plt.Line2D([], [], color=palette[int(K)], marker="o", ms=3, label=f"K = {K:g}")
                   for K in sorted(palette)]
        handles.append(plt.Line2D([], [], color="0.3", ls="--",
                                  label=f"threshold {float(data['threshold']):g}"))
        if "real" in regimes:
            handles.append(plt.Line2D([], [], color="0.5", ls=":",
                                      label="real: achievable error\n+ slack (per K)"))
        legend_ax.legend(handles=handles, loc="center", fontsize=7)
        fig.tight_layout()
        paths = save(fig, out_dir, "q1_risk_vs_q", {k: np.asarray(v, float) for k, v in curves.items()})
        fig, ax = plt.subplots(figsize=(6.6, 3.4))
        qrows = _draw_q_emp(ax, data, regimes, grid, titles)
        paths += save(fig, out_dir, "q1_q_emp", {k: np.asarray(v, float) for k, v in qrows.items()})
    return paths


def _draw_q_emp(ax, data, regimes, grid, titles) -> dict:
    """Draws Q_emp(K) of each regime and Q*(K) of both bounds; returns the plotted table."""
    qrows = {k: [] for k in ("regime", "K", "q_emp", "q_lo", "q_hi", "censored", "grid_rule")}
    Ks = data["Ks"]
    for j, bound in enumerate(("simplified", "refined")):
        q = data[f"qstar_{bound}"]
        ax.plot(Ks, q, marker="x", ms=4, label=f"$Q^*(K)$, {bound} Thm 4.3 bound",
                **BOUND_STYLE[bound])
        qrows["regime"] += [len(Q1_REGIMES) + 1 + j] * len(Ks)
        qrows["K"] += list(Ks)
        qrows["q_emp"] += list(q)
        for col in ("q_lo", "q_hi", "censored", "grid_rule"):
            qrows[col] += [np.nan] * len(Ks)
    offsets = np.linspace(-0.12, 0.12, len(regimes))
    for i, (off, r) in enumerate(zip(offsets, regimes)):
        color, marker = REGIME_STYLE[r]
        rk, qs = grid[r]
        x = rk * 2.0**off
        q, lo, hi = data[f"{r}_q_emp"], data[f"{r}_q_lo"], data[f"{r}_q_hi"]
        cens, top = data[f"{r}_censored"] > 0, ~np.isfinite(q)
        mid = ~cens & ~top
        y = np.where(top, qs[-1], q)
        lo_err = np.where(mid, y - np.minimum(lo, y), 0.0)
        hi_err = np.where(mid, np.where(np.isfinite(hi), hi, qs[-1] * 1.5) - y, 0.0)
        label = titles[r].replace("\n", " ") + ("\n" + titles["real_threshold"] if r == "real" else "")
        ax.errorbar(x[mid], y[mid], yerr=[lo_err[mid], np.maximum(hi_err[mid], 0)], color=color,
                    marker=marker, ls="-", lw=0.9, ms=4, capsize=2, label=label)
        ax.plot(x[cens], y[cens], ls="", marker=7, color=color, ms=6)   # ▼: ≤ smallest Q
        ax.plot(x[top], y[top], ls="", marker=6, color=color, ms=6)     # ▲: > largest Q
        qrows["regime"] += [i] * len(rk)
        qrows["K"] += list(rk)
        for col, key in (("q_emp", "q_emp"), ("q_lo", "q_lo"), ("q_hi", "q_hi"),
                         ("censored", "censored"), ("grid_rule", "grid")):
            qrows[col] += list(data[f"{r}_{key}"])
    ax.plot([], [], ls="", marker=7, color="0.4", label=r"▼ at $Q_{\min}$: already below")
    ax.plot([], [], ls="", marker=6, color="0.4",
            label=r"▲ at $Q_{\max}$: never below" "\n" r"(bar to 1.5 $Q_{\max}$: CI open above)")
    _k_axis(ax, Ks)
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    ax.set_ylabel("samples per value $Q_{emp}(K)$\n(95% bootstrap CI)")
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return qrows


def plot_unbalanced(data: dict, out_dir) -> list[Path]:
    """Q8: (a) minority and majority margins at τ_1 vs q_last with the share law and the v = 0
    recursion, (b) test risks at the noisy level, (c) per-value bounds at the minority's own Q.

    Keys: q_last, q_total, v (3 levels: 0, 1/(32√Q), noisy), minority_margin, majority_margin,
    minority_risk, majority_risk, own_risk, total_risk ((nq, 3, S) per seed), share_pred,
    majority_pred, recursion, bound_{simplified,refined}_own ((nq, 3)), Q. CSV: one row per q_last.
    """
    q, vs = data["q_last"], data["v"]
    table = {"q_last": q, "q_total": data["q_total"], "share_law": data["share_pred"],
             "recursion_v0": data["recursion"], "minority_margin_v0": data["minority_margin"][:, 0, 0]}
    with figure_context():
        fig, axes = plt.subplots(1, 3, figsize=(7.0, 2.7))
        ax = axes[0]
        ax.plot(q, data["share_pred"], color="0.2", lw=1, label="share law (minority)")
        ax.plot(q, data["majority_pred"], color="0.2", lw=1, ls="--", label="share law (majority)")
        ax.plot(q, data["recursion"], ls="", marker="x", color="k", ms=5, label="recursion, $v$ = 0")
        ax.plot(q, data["minority_margin"][:, 0, 0], ls="", marker="o", mfc="none", color="C0", ms=6,
                label="minority, $v$ = 0")
        for key, color, label in (("minority_margin", "C0", "minority"),
                                  ("majority_margin", "C3", "majority")):
            m, h = mean_ci(data[key][:, 1])
            ax.errorbar(q, m, yerr=h, ls="", marker="s", ms=3, color=color, capsize=2,
                        label=f"{label}, $v$ = {vs[1]:.3f}")
            table[f"{key}_v{vs[1]:.4f}"], table[f"{key}_v{vs[1]:.4f}_ci"] = m, h
        ax.axhline(LOG3 / 40, color="C1", lw=0.9, ls=":", label="Thm 4.2 floor")
        _q_axis(ax, q, r"minority $q_{\rm last}$ per cluster")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_ylabel(r"mean train margin at $\tau_1$")
        # room under the lowest line for a two-column legend (one column covered the Thm 4.2 floor)
        ax.set_ylim(min(data["share_pred"].min(), LOG3 / 40) / 15, 0.6)
        ax.legend(fontsize=5.0, loc="lower center", ncol=2, columnspacing=0.6, handletextpad=0.3, handlelength=1.2)
        ax = axes[1]
        j = 2
        for key, color, marker, label in (
                ("minority_risk", "C0", "o", "minority"), ("own_risk", "C2", "s", "balanced, own $Q$"),
                ("total_risk", "C4", "D", "balanced, equal total"),
                ("majority_risk", "C3", "^", f"majority ($Q$ = {int(data['Q'])})")):
            m, h = mean_ci(data[key][:, j])
            ax.errorbar(q, m, yerr=h, marker=marker, ms=3, lw=0.9, capsize=2, color=color, label=label)
            table[f"{key}_v{vs[j]:g}"], table[f"{key}_v{vs[j]:g}_ci"] = m, h
        _q_axis(ax, q, r"minority $q_{\rm last}$ per cluster")
        ax.set_ylabel(f"test risk at $v$ = {vs[j]:g} (95% CI)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=5.5)
        ax = axes[2]
        ax.plot(q, data["bound_simplified_own"][:, 1], color="0.2", ls="--", marker="x", ms=4,
                label="simplified, own $Q$")
        table["bound_simplified_own"] = data["bound_simplified_own"][:, 1]
        for jj, color in ((1, "C0"), (2, "C3")):
            ax.plot(q, data["bound_refined_own"][:, jj], color=color, ls=":", marker="x", ms=4,
                    label=f"refined, own $Q$, $v$ = {vs[jj]:.3g}")
            table[f"bound_refined_own_v{vs[jj]:.4g}"] = data["bound_refined_own"][:, jj]
        m, _ = mean_ci(data["minority_risk"][:, 2])
        ax.plot(q, np.maximum(m, 1e-4), color="C3", marker="o", ms=3, lw=0.9,
                label=f"measured minority risk, $v$ = {vs[2]:g}")
        ax.axhline(1.0, color="0.5", lw=0.8)
        ax.text(q[0], 1.4, "vacuous above 1", fontsize=6, color="0.4", va="bottom")
        _q_axis(ax, q, r"minority $q_{\rm last}$ per cluster")
        ax.set_yscale("log")
        ax.set_ylim(top=300 * max(data["bound_simplified_own"].max(), data["bound_refined_own"].max()))
        ax.set_ylabel("risk bound (Thm 4.3, $K$ = 1)")
        ax.legend(fontsize=5.5, loc="upper left")
        for letter, ax in zip("abc", axes):
            ax.set_title(f"({letter})", fontsize=8, loc="left")
        fig.tight_layout()
        return save(fig, out_dir, "q8_unbalanced", {k: np.asarray(v, float) for k, v in table.items()})
