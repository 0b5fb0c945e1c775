"""Figures of the Im & Li synthetic reproductions (Figure 4, Theorems 4.2 and 4.3).

Each `plot_*(data, out_dir)` draws from the stored arrays of one `paper_repro` item only (keys
documented per function; "long" arrays are one row per plotted point) and writes PDF + PNG + CSV
of the plotted numbers with `dpolab.figures.style.save`. Nothing here imports jax or `sims`.

References:
    [IL] S. Im, S. Li, "Can DPO Learn Diverse Human Values? A Theoretical Scaling Law",
    arXiv 2408.03459: Theorem 4.2 (margin sandwich), Theorem 4.3 and Figure 4 (Q*).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402  (after dpolab.figures.style selected the Agg backend)
import numpy as np
from matplotlib import ticker  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from dpolab.figures.im_li import LABEL_MARGIN, LABEL_R_LOWER, LABEL_R_UPPER, LABEL_T, MARKERS, WINDOW
from dpolab.figures.style import PANEL_SIZE, figure_context, k_palette, save
from dpolab.theory.im_li import LOG3

#: Order of `sim_regime` codes in the Figure 4 data.
REGIME_LABELS = ("theorem regime: distinct tokens, d = 5Q, v = 1/(32√Q)",
                 "paper's regime: shared Yes/No tokens, v = {v:g}, d = {d:g}")
#: Codes of `bound_status` (dpolab.checks.generalization) stored by the Theorem 4.3 item.
STATUS = ("certified", "below resolution", "not certified", "violated")


def _plain_log_axis(axis):
    axis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


# ---- Figure 4 --------------------------------------------------------------------------------

def plot_samples_per_value(data: dict, out_dir) -> list[Path]:
    """Q needed for risk < threshold vs K: both bounds' Q*(K) and the simulated need.

    Reads theory_K, q_star_simplified, q_star_refined (NaN: no Q*), threshold, paper_v, paper_d,
    need_regime, need_K, need_Q (NaN: no grid Q passes), need_censored (1: the smallest grid Q
    already passes, so the need is ≤ it), sim_regime, sim_Q. Writes `fig4_samples_per_value.*`
    (CSV: one row per theory K plus simulated K; simulated columns NaN where not simulated).
    """
    K = np.asarray(data["theory_K"], float)
    simple, refined = np.asarray(data["q_star_simplified"]), np.asarray(data["q_star_refined"])
    thr = float(data["threshold"])
    Ks = np.union1d(K, data["need_K"])
    table = {"K": Ks, "q_star_simplified": _on(Ks, K, simple),
             "q_star_refined": _on(Ks, K, refined)}
    labels = [REGIME_LABELS[0],
              REGIME_LABELS[1].format(v=float(data["paper_v"]), d=float(data["paper_d"]))]
    with figure_context():
        fig, ax = plt.subplots(figsize=(5.6, 4.6), layout="constrained")
        ax.plot(K, simple, "-", color="C0", lw=1.6,
                label=f"Thm 4.3 simplified bound $2KQ^2e^{{-Q/45}} < {thr:g}$ (paper's Fig. 4)")
        ax.plot(K, refined, "--", color="C2", lw=1.6,
                label=f"refined bound < {thr:g} (reconstructed from the appendix; "
                      "$d = 5Q$, $v = 1/(32\\sqrt{Q})$, $l_b = 1/2$, $Z = 1$)")
        k10 = np.flatnonzero(K == 10)
        if k10.size and np.isfinite(simple[k10[0]]):
            ax.annotate(f"$Q^*(10) = {simple[k10[0]]:.0f}$", (10, simple[k10[0]]),
                        xytext=(10, -22), textcoords="offset points", ha="left", fontsize=8,
                        arrowprops=dict(arrowstyle="-", color="0.5", lw=0.6))
        q_top = float(np.nanmax(data["sim_Q"]))
        for r, color in enumerate(("C3", "C1")):
            name = ("theorem", "paper")[r]
            at = np.asarray(data["need_regime"]) == r
            k, q = np.asarray(data["need_K"])[at], np.asarray(data["need_Q"])[at]
            cens = (np.asarray(data["need_censored"])[at] > 0) & np.isfinite(q)
            exact, absent = np.isfinite(q) & ~cens, ~np.isfinite(q)
            smallest = "the smallest grid Q" + ("\n    with 5Q > K (d = 5Q > K needed)" * (r == 0))
            ax.plot(k, q, "-", color=color, lw=0.9, alpha=0.7)
            for mask, marker, y, text in (
                    (cens, "v", q, f"needed Q ≤ marker: passes already at {smallest}"),
                    (exact, "o", q, f"smallest grid Q with CP95 upper < {thr:g} (and above)"),
                    (absent, "^", np.full(len(q), 1.6 * q_top), f"no grid Q ≤ {q_top:g} suffices")):
                if mask.any():
                    ax.plot(k[mask], y[mask], marker, color=color, ms=6.5, mew=1.3,
                            mfc=color if marker == "o" else "none",
                            label=f"simulated, {labels[r]}:\n    {text}")
            table[f"q_needed_{name}"] = _on(Ks, k, q)
            table[f"censored_{name}"] = _on(Ks, k, cens.astype(float))
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_axis(ax.xaxis)
        _plain_log_axis(ax.yaxis)
        ax.set_xlabel(r"number of values $K$")
        ax.set_ylabel(f"samples per value $Q$ needed for risk < {thr:g}")
        ax.set_title(f"Fig. 4: samples per value for risk < {thr:g}, bound vs simulation")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=1, fontsize=7)
        return save(fig, out_dir, "fig4_samples_per_value", table)


def _on(grid, keys, values):
    """values (aligned with keys) placed on grid; NaN where a grid value has no key."""
    out = np.full(len(grid), np.nan)
    for k, v in zip(keys, values):
        out[np.flatnonzero(grid == k)] = v
    return out


def plot_simulated_risk(data: dict, out_dir) -> list[Path]:
    """The measured risks behind Figure 4's simulated points: pooled risk vs Q, one line per K.

    Reads sim_regime, sim_K, sim_Q, sim_d, sim_v, sim_errors, sim_n, sim_risk, sim_cp_low,
    sim_cp_high, threshold, paper_v, paper_d, paper_floor (one per simulated K, ascending). Writes
    `fig4_simulated_risk.*` (CSV: those columns and `q_to_infinity_limit`, the paper-regime floor
    of the row's K; NaN for the theorem regime).
    """
    cols = ("regime", "K", "Q", "d", "v", "errors", "n", "risk", "cp_low", "cp_high")
    table = {c: np.asarray(data[f"sim_{c}"], float) for c in cols}
    floors = dict(zip(np.unique(table["K"]), np.asarray(data["paper_floor"], float)))
    table["q_to_infinity_limit"] = np.where(table["regime"] == 1,
                                            [floors[k] for k in table["K"]], np.nan)
    thr = float(data["threshold"])
    colors = k_palette(table["K"])
    titles = ["(a) " + REGIME_LABELS[0],
              "(b) " + REGIME_LABELS[1].format(v=float(data["paper_v"]), d=float(data["paper_d"]))]
    with figure_context():
        fig, axes = plt.subplots(1, 2, figsize=(2 * PANEL_SIZE[0], PANEL_SIZE[1] + 0.5),
                                 layout="constrained")
        for r, ax in enumerate(axes):
            at = table["regime"] == r
            for K in np.unique(table["K"]):
                row = at & (table["K"] == K)
                q, risk, lo, hi = (table[c][row] for c in ("Q", "risk", "cp_low", "cp_high"))
                ax.errorbar(q, risk, yerr=[risk - lo, hi - risk], fmt="o-", color=colors[int(K)],
                            ms=4, capsize=2.5, lw=1.1, label=f"$K = {K:g}$")
            ax.axhline(thr, ls="--", color="0.3", lw=1.0, label=f"target risk {thr:g}")
            if r == 1:  # the large-Q limit of each K, drawn just right of the data
                x = 1.35 * table["Q"][at].max()
                for K, floor in zip(np.unique(table["K"][at]), data["paper_floor"]):
                    ax.plot([x], [floor], "<", color=colors[int(K)], ms=6)
                ax.plot([], [], "<", color="0.4", ms=6,
                        label=r"$Q \to \infty$ limit $\Phi(-1/(v\sqrt{K}))$ (THEORY §1.8)")
            ax.set_xscale("log", base=2)
            _plain_log_axis(ax.xaxis)
            ax.set_ylim(bottom=-0.02 * ax.get_ylim()[1])  # points at 0 stay visible
            ax.set_xlabel(r"samples per cluster $Q$")
            ax.set_ylabel(r"test risk $P(r \leq 0)$ at $\tau_1$ (pooled seeds)")
            ax.set_title(titles[r], fontsize=8)
        fig.legend(*axes[1].get_legend_handles_labels(), loc="outside lower center",
                   ncol=min(len(colors) + 2, 4))
        fig.suptitle("Measured risk behind Fig. 4's simulated points (bars: Clopper–Pearson 95%; "
                     "0 errors: bar up to the CP95 upper end)",
                     fontsize=9.5)
        return save(fig, out_dir, "fig4_simulated_risk", table)


# ---- Theorem 4.2 -----------------------------------------------------------------------------

def plot_sandwich_panels(data: dict, out_dir) -> list[Path]:
    """Theorem 4.2's sandwich, one panel per configuration that has rows in `sw_config`.

    Reads cfg_K, cfg_beta, cfg_tau_1, cfg_min_ratio_lower, cfg_max_ratio_upper and
    the long rows sw_config, sw_curve (sample index of seed 0; −1/−2: min/max over all seeds and
    samples), sw_t, sw_margin, sw_r_lower, sw_r_upper; Q, v, seeds. Writes `thm42_sandwich.*`
    (CSV: config, K, beta, tau_1, curve, t, margin, r_lower, r_upper).
    """
    configs = [int(c) for c in np.unique(data["sw_config"])]
    colors = k_palette([data["cfg_K"][c] for c in configs])
    row_config = np.asarray(data["sw_config"], int)
    table = {"config": data["sw_config"],
             **{k: np.asarray(data[f"cfg_{k}"])[row_config] for k in ("K", "beta", "tau_1")},
             **{k: data[f"sw_{k}"] for k in ("curve", "t", "margin", "r_lower", "r_upper")}}
    with figure_context():
        fig, axes = plt.subplots(1, len(configs), squeeze=False, layout="constrained",
                                 figsize=(PANEL_SIZE[0] * len(configs), PANEL_SIZE[1] + 0.9))
        for ax, c in zip(axes.flat, configs):
            K, beta, tau1 = (float(data[f"cfg_{k}"][c]) for k in ("K", "beta", "tau_1"))
            rows = np.asarray(data["sw_config"]) == c
            curve, t, r = (np.asarray(data[f"sw_{k}"])[rows] for k in ("curve", "t", "margin"))
            first = curve == curve[0]
            tt = t[first]
            samples = [np.column_stack([tt, r[curve == i]]) for i in np.unique(curve[curve >= 0])]
            label = f"$r_i(t)$, each of the {len(samples)} training samples (seed 0)"
            ax.add_collection(LineCollection(samples, colors=[colors[int(K)]], linewidths=0.4,
                                             alpha=0.3, label=label))
            ax.plot(tt, r[curve == -1], color="0.15", lw=0.8, ls="-.",
                    label=f"min / max over all {data['seeds']:g} seeds and samples")
            ax.plot(tt, r[curve == -2], color="0.15", lw=0.8, ls="-.")
            ax.plot(tt, np.asarray(data["sw_r_lower"])[rows][first], "--", color="C3", lw=1.3,
                    label=LABEL_R_LOWER)
            ax.plot(tt, np.asarray(data["sw_r_upper"])[rows][first], "--", color="C1", lw=1.3,
                    label=LABEL_R_UPPER)
            ax.plot([tau1, tau1], WINDOW, color="k", lw=2.2, solid_capstyle="butt",
                    label=r"window at $\tau_1$: $[\log 3/40,\ \log 3]$")
            ax.set_xlim(0.0, tau1 * 1.02)
            ax.set_ylim(0.0, 1.08 * LOG3)
            _zoom_near_tau1(ax, samples, colors[int(K)], tt, r[curve == -1], r[curve == -2], tau1)
            lo, hi = data["cfg_min_ratio_lower"][c], data["cfg_max_ratio_upper"][c]
            ax.set_title(f"$K = {K:g}$, $\\beta = {beta:g}$: $\\min r/r_L = {lo:.2f}$, "
                         f"$\\max r/r_U = {hi:.3f}$", fontsize=8.5)
            ax.set_xlabel(LABEL_T + r", up to $\tau_1$")
            ax.set_ylabel(LABEL_MARGIN)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        legend = fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=7)
        for handle, label in zip(legend.legend_handles, labels):  # faint in the plot, not the key
            if label.startswith("$r_i(t)$"):
                handle.set_alpha(0.9)
                handle.set_linewidth(1.0)
        fig.suptitle(r"Theorem 4.2: $\beta^2t/(8K\tau) \leq r_i(t) \leq 5\beta^2t/(K\tau)$ for "
                     r"$t \leq \tau_1$" + f"  ($Q = {data['Q']:g}$, $d = 5Q$, "
                     f"$v = 1/(32\\sqrt{{Q}})$, distinct tokens, GD)", fontsize=9.5)
        return save(fig, out_dir, "thm42_sandwich", table)


def _zoom_near_tau1(ax, samples, color, t, low, high, tau1):
    """Inset (upper left, above r_U) magnifying the last fifth of [0, τ_1]: the samples' spread."""
    keep = t >= 0.8 * tau1
    pad = 0.15 * max(float(high[keep].max() - low[keep].min()), 1e-12)
    inset = ax.inset_axes([0.1, 0.56, 0.36, 0.36])
    inset.add_collection(LineCollection([xy[keep] for xy in samples], colors=[color],
                                        linewidths=0.5, alpha=0.4))
    inset.plot(t[keep], low[keep], color="0.15", lw=0.8, ls="-.")
    inset.plot(t[keep], high[keep], color="0.15", lw=0.8, ls="-.")
    inset.set_xlim(float(t[keep][0]), float(t[keep][-1]))
    inset.set_ylim(float(low[keep].min()) - pad, float(high[keep].max()) + pad)
    inset.tick_params(labelsize=6)
    inset.set_title(r"zoom: last fifth before $\tau_1$", fontsize=6.5)


def plot_margin_collapse(data: dict, out_dir) -> list[Path]:
    """All configurations' margins against s = β²t/(Kτ) with the noise-free closed form.

    Reads cfg_K, cfg_beta, cfg_max_gap_closed_form, cl_config, cl_s, cl_mean, cl_min, cl_max,
    cl_closed_form, dense_s, dense_closed_form. Writes `thm42_collapse.*` (CSV: config, K, beta,
    s, margin_mean, margin_min, margin_max, closed_form, gap = mean − closed form).
    """
    config = np.asarray(data["cl_config"], int)
    K, beta = np.asarray(data["cfg_K"])[config], np.asarray(data["cfg_beta"])[config]
    mean, closed = np.asarray(data["cl_mean"]), np.asarray(data["cl_closed_form"])
    table = {"config": config, "K": K, "beta": beta, "s": data["cl_s"], "margin_mean": mean,
             "margin_min": data["cl_min"], "margin_max": data["cl_max"], "closed_form": closed,
             "gap": mean - closed}
    colors = k_palette(data["cfg_K"])
    styles = dict(zip(sorted(set(data["cfg_beta"])), ("-.", "-", "--", ":")))
    s_tau1 = LOG3 / 5
    with figure_context():
        fig, (ax, gap_ax) = plt.subplots(1, 2, figsize=(2 * PANEL_SIZE[0], PANEL_SIZE[1] + 0.7),
                                         layout="constrained", width_ratios=(1.25, 1))
        ax.plot(data["dense_s"], data["dense_closed_form"], color="k", lw=2.6, alpha=0.35,
                label=r"noise-free: $r + e^r = 1 + 2\beta^2t/(K\tau)$")
        for c in np.unique(config):
            rows = config == c
            k, b = float(data["cfg_K"][c]), float(data["cfg_beta"][c])
            s = np.asarray(data["cl_s"])[rows]
            label = f"$K = {k:g}$, $\\beta = {b:g}$"
            ax.fill_between(s, np.asarray(data["cl_min"])[rows], np.asarray(data["cl_max"])[rows],
                            color=colors[int(k)], alpha=0.12, lw=0)
            ax.plot(s, mean[rows], styles[b], color=colors[int(k)], lw=1.2,
                    marker=MARKERS[c % len(MARKERS)], mfc="none", ms=4.5,
                    markevery=(c % 4, 8), label=label)
            gap_ax.plot(s, (mean - closed)[rows], styles[b], color=colors[int(k)], lw=1.2,
                        marker=MARKERS[c % len(MARKERS)], mfc="none", ms=4.5, markevery=(c % 4, 8))
        ax.plot(data["dense_s"], np.asarray(data["dense_s"]) / 8, ":", color="C3", lw=1.1,
                label=r"$r_L = s/8$ ($r_U = 5s$: off scale)")
        for a in (ax, gap_ax):
            a.axvline(s_tau1, ls=":", color="0.45", lw=0.9)
            a.annotate(r"$\tau_1$", (s_tau1, 0.0), xycoords=("data", "axes fraction"),
                       xytext=(3, 3), textcoords="offset points", va="bottom", fontsize=8,
                       color="0.35")
            a.set_xlabel(r"$s = \beta^2 t/(K\tau)$")
            a.set_xlim(0.0, float(np.max(data["dense_s"])))
        gap_ax.axhline(0.0, color="k", lw=0.8, alpha=0.5)
        ax.set_ylim(bottom=0.0)
        ax.set_ylabel(r"training margin (mean; band: min…max)")
        gap_ax.set_ylabel("mean margin − noise-free closed form")
        ax.set_title("(a) margins collapse on $s$; line: closed form", fontsize=9)
        gap_ax.set_title("(b) gap to the closed form (noise, GD step), max "
                         f"{np.max(data['cfg_max_gap_closed_form']):.1e}", fontsize=9)
        ax.legend(loc="upper left", fontsize=6.5)
        return save(fig, out_dir, "thm42_collapse", table)


# ---- Theorem 4.3 -----------------------------------------------------------------------------

#: Legend entries of `plot_risk_vs_bounds` that do not depend on K: (Line2D keywords, label).
RISK_KEYS = (
    (dict(color="0.2", ls="-"), r"simplified bound $2KQ^2e^{-Q/45}$ (Thm 4.3)"),
    (dict(color="0.2", ls="--"),
     r"refined bound $2KQ^2\exp(-\epsilon^2/(2(1+l_b^2+dv^2+2\epsilon v)))$"
     "\n(reconstructed from the appendix proof)"),
    (dict(color="0.2", marker="v", ls="", mfc="none", mew=1.4, ms=7),
     "risk = 0 (no error in n): CP95 upper end drawn instead"),
    (dict(color="0.2", marker="o", ls="", ms=5), "risk > 0, bars: CP95"),
    (dict(color="0.4", ls=":"), "risk ≤ 1 always: a bound above is vacuous"),
)


def _status_summary(pt) -> str:
    """Legend title: what the statuses mean and how often each occurs per bound."""
    lines = ["certified: CP95 upper ≤ bound; below resolution: bound < CP95 upper of 0 errors in n"]
    for b in ("simplified", "refined"):
        counts = np.bincount(pt[f"status_{b}"].astype(int), minlength=len(STATUS))
        found = ", ".join(f"{STATUS[j]} at {c}" for j, c in enumerate(counts) if c)
        lines.append(f"{b} bound: {found} of {len(pt['K'])} (K, Q)")
    return "\n".join(lines)


def plot_risk_vs_bounds(data: dict, out_dir) -> list[Path]:
    """Monte-Carlo risk at τ_1 (CP95; CP upper end where risk = 0) and both bounds vs Q.

    Reads pt_K, pt_Q, pt_n, pt_errors, pt_risk, pt_cp_low, pt_cp_high, pt_bound_simplified,
    pt_bound_refined, pt_status_simplified, pt_status_refined (codes into `STATUS`), curve_K,
    curve_Q, curve_bound_simplified, curve_bound_refined. Writes `thm43_risk.*` (CSV: one row per
    (K, Q) of the curves; measured columns NaN where nothing was simulated; `plotted` is the risk,
    or the CP upper end where the risk is 0).
    """
    pt = {k[3:]: np.asarray(v, float) for k, v in data.items() if k.startswith("pt_")}
    cv = {k[6:]: np.asarray(v, float) for k, v in data.items() if k.startswith("curve_")}
    pt["plotted"] = np.where(pt["risk"] > 0, pt["risk"], pt["cp_high"])
    table = {k: cv[k] for k in ("K", "Q", "bound_simplified", "bound_refined")}
    for name in ("n", "errors", "risk", "cp_low", "cp_high", "plotted", "status_simplified",
                 "status_refined"):
        table[name] = np.full(len(cv["K"]), np.nan)
        for k, q, v in zip(pt["K"], pt["Q"], pt[name]):
            table[name][(cv["K"] == k) & (cv["Q"] == q)] = v
    Ks = np.unique(pt["K"])
    colors = k_palette(Ks)
    bottom = 10.0 ** (math.floor(math.log10(pt["plotted"].min())) - 2)
    with figure_context():
        fig, ax = plt.subplots(figsize=(5.8, 4.9), layout="constrained")
        for i, K in enumerate(Ks):
            color = colors[int(K)]
            c, p = cv["K"] == K, pt["K"] == K
            ax.plot(cv["Q"][c], cv["bound_simplified"][c], "-", color=color, lw=1.5)
            ax.plot(cv["Q"][c], cv["bound_refined"][c], "--", color=color, lw=1.5)
            dodge = 1.0 + 0.035 * (i - (len(Ks) - 1) / 2)  # equal CP ends would hide each other
            zero, err = p & (pt["risk"] == 0), p & (pt["risk"] > 0)
            ax.plot(pt["Q"][zero] * dodge, pt["cp_high"][zero], "v", color=color, ms=7,
                    mfc="none", mew=1.4)
            risk, lo, hi = pt["risk"][err], pt["cp_low"][err], pt["cp_high"][err]
            ax.errorbar(pt["Q"][err] * dodge, risk, yerr=[risk - lo, hi - risk], fmt="o",
                        color=color, ms=5, capsize=2.5)
        ax.axhline(1.0, ls=":", color="0.4", lw=1.0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_axis(ax.xaxis)
        ax.xaxis.set_major_locator(ticker.FixedLocator(np.unique(pt["Q"])))
        top = max(cv["bound_simplified"].max(), cv["bound_refined"].max(), 10.0)
        ax.set_ylim(bottom, 10.0 ** min(math.ceil(math.log10(top)), 5))
        ax.set_xlabel(r"samples per cluster $Q$ (theorem regime: $d = 5Q$, $v = 1/(32\sqrt{Q})$)")
        ax.set_ylabel(r"test risk $R(P) = P(r \leq 0)$ at $\tau_1$")
        n_lo, n_hi = int(pt["n"].min()), int(pt["n"].max())
        n_text = f"{n_hi:,}" if n_lo == n_hi else f"{n_lo:,}–{n_hi:,}"
        ax.set_title(f"Theorem 4.3: test risk at $\\tau_1$ ({n_text} fresh samples per point) "
                     "vs bounds", fontsize=9)
        handles = [Line2D([], [], label=label, **kw) for kw, label in RISK_KEYS]
        handles += [Line2D([], [], color=colors[int(K)], lw=4, label=f"$K = {K:g}$") for K in Ks]
        fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=7,
                   title=_status_summary(pt), title_fontsize=7)
        return save(fig, out_dir, "thm43_risk", table)
