"""Every Im & Li figure: one plotter per figure, for `dpolab repro` and `dpolab verify` alike.

Each `plot_*(data, out_dir)` draws from stored arrays only (keys documented per function; "long"
arrays are one row per plotted point) and writes PDF + PNG + CSV of the plotted numbers with
`dpolab.figures.style.save`. `dpolab verify` keeps its results as `results/<check>.npz`;
`make_all(results_dir, out_dir)` draws the figures whose input exists there (the Theorem 4.2
check's arrays are reshaped by `thm42_from_check` for the same two plotters the repro item uses).
Nothing here imports JAX or the simulations.

References:
    [IL] S. Im, S. Li, "Can DPO Learn Diverse Human Values? A Theoretical Scaling Law",
    arXiv 2408.03459: Lemma 4.1 (gradient flow), Theorem 4.2 (margin sandwich, window at τ_1),
    Theorem 4.3 and Figure 4 (Q*).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from statistics import NormalDist

import matplotlib.pyplot as plt  # noqa: E402  (after dpolab.figures.style selected the Agg backend)
import numpy as np
from matplotlib import ticker  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from dpolab.figures.style import FIGSIZE, PANEL_SIZE, figure_context, k_palette, save
from dpolab.theory.im_li import LOG3, MARGIN_WINDOW, default_d, default_v, dpo_noise_free, r_lower, r_upper, tau_1

#: Theorem 4.2's window for every training margin at τ_1: [log 3 / 40, log 3].
WINDOW = MARGIN_WINDOW
MARKERS = ("o", "s", "^", "D", "v", "P")
LABEL_R_LOWER = r"$r_L(t) = \beta^2 t/(8K\tau)$ (Thm 4.2 lower)"
LABEL_R_UPPER = r"$r_U(t) = 5\beta^2 t/(K\tau)$ (upper)"
LABEL_T = r"$t$ (GD time $n\eta$, $\tau = 1$)"
LABEL_MARGIN = r"reward margin $r_i(t)$"
#: Order of `sim_regime` codes in the Figure 4 data.
REGIME_LABELS = ("theorem regime: distinct tokens, d = 5Q, v = 1/(32√Q)",
                 "paper's regime: shared Yes/No tokens, v = {v:g}, d = {d:g}")
#: Codes of `bound_status` (dpolab.checks.generalization) stored by the Theorem 4.3 item.
STATUS = ("certified", "below resolution", "not certified", "violated")
#: npz stem (check id with "/" → "__") that each verify figure reads.
INPUTS = {
    "thm42": "im-li__thm4.2-sandwich",
    "q_star": "im-li__q-star-table",
    "shared_tokens": "im-li__shared-token-risk",
    "gd_to_flow": "im-li__gd-to-flow",
}
_TAG = re.compile(r"^K(?P<K>\d+)_beta(?P<beta>[0-9.eE+-]+)_t$")


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


# ---- inputs stored by `dpolab verify` ----------------------------------------------------------

def _npz_path(results_dir, name: str) -> Path:
    """The npz for figure `name`, in results_dir or (for a verify --out folder) results_dir/results."""
    stem = INPUTS[name] + ".npz"
    direct = Path(results_dir) / stem
    nested = Path(results_dir) / "results" / stem
    return nested if not direct.exists() and nested.exists() else direct


def _load(results_dir, name: str) -> dict:
    with np.load(_npz_path(results_dir, name), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def thm42_from_check(check: dict) -> dict:
    """The Theorem 4.2 check's arrays in the layout of the thm42-sandwich item (see
    `plot_sandwich_panels` and `plot_margin_collapse`), so one plotter draws both.

    Args:
        check: {tag}_t (C,), {tag}_margins (C, N) of seed 0, {tag}_min / {tag}_max (C,) over all
            seeds and samples, for tag = f"K{K}_beta{β:g}"; Q and seeds. Every configuration is a
            sandwich panel (ordered by β descending, K ascending) and a collapse curve.
    """
    configs = sorted(((key[:-2], int(m["K"]), float(m["beta"])) for key in check
                      if (m := _TAG.match(key))), key=lambda c: (-c[2], c[1]))
    if not configs:
        raise ValueError("the Theorem 4.2 check stored no '<tag>_t' arrays")
    per = {k: [] for k in ("K", "beta", "tau_1", "min_ratio_lower", "max_ratio_upper", "max_gap_closed_form")}
    sw = {k: [] for k in ("config", "curve", "t", "margin", "r_lower", "r_upper")}
    cl = {k: [] for k in ("config", "s", "mean", "min", "max", "closed_form")}
    for idx, (tag, K, beta) in enumerate(configs):
        t, r = np.asarray(check[f"{tag}_t"], float), np.asarray(check[f"{tag}_margins"], float)
        low, high = np.asarray(check[f"{tag}_min"], float), np.asarray(check[f"{tag}_max"], float)
        r_l, r_u = r_lower(t, K=K, beta=beta), r_upper(t, K=K, beta=beta)
        closed = dpo_noise_free(t, K=K, beta=beta)
        lines = [r[:, i] for i in range(r.shape[1])] + [low, high]
        curve = np.concatenate([np.arange(r.shape[1]), [-1, -2]])
        for key, value in (("config", np.full(len(t) * len(lines), idx)), ("curve", np.repeat(curve, len(t))),
                           ("t", np.tile(t, len(lines))), ("margin", np.concatenate(lines)),
                           ("r_lower", np.tile(r_l, len(lines))), ("r_upper", np.tile(r_u, len(lines)))):
            sw[key].append(np.asarray(value, float))
        for key, value in (("config", np.full(len(t), idx)), ("s", beta**2 * t / K), ("mean", r.mean(axis=1)),
                           ("min", low), ("max", high), ("closed_form", closed)):
            cl[key].append(np.asarray(value, float))
        inside = t > 0
        for key, value in (("K", K), ("beta", beta), ("tau_1", tau_1(K=K, beta=beta)),
                           ("min_ratio_lower", np.min(low[inside] / r_l[inside])),
                           ("max_ratio_upper", np.max(high[inside] / r_u[inside])),
                           ("max_gap_closed_form", np.max(np.abs(r.mean(axis=1) - closed)))):
            per[key].append(float(value))
    s_max = max(float(np.max(s)) for s in cl["s"])
    s_dense = np.linspace(0.0, s_max, 241)
    Q = float(check["Q"])
    return {**{f"cfg_{k}": np.asarray(v) for k, v in per.items()},
            **{f"sw_{k}": np.concatenate(v) for k, v in sw.items()},
            **{f"cl_{k}": np.concatenate(v) for k, v in cl.items()},
            "dense_s": s_dense, "dense_closed_form": dpo_noise_free(s_dense, K=1, beta=1.0),
            "Q": np.float64(Q), "seeds": np.float64(check["seeds"]), "v": np.float64(default_v(Q)),
            "d": np.float64(default_d(Q))}


def plot_thm42_check(results_dir, out_dir) -> list[Path]:
    """Theorem 4.2's sandwich panels and margin collapse from the verify check's stored arrays."""
    data = thm42_from_check(_load(results_dir, "thm42"))
    return plot_sandwich_panels(data, out_dir) + plot_margin_collapse(data, out_dir)


def plot_q_star(results_dir, out_dir) -> list[Path]:
    """Q*(K) for the simplified and refined bounds, with a 45·log K reference through K = 10.

    Reads `im-li__q-star-table.npz` (K, q_star_simplified, q_star_refined; NaN where no Q*).
    Writes `q_star.*` (CSV: K, q_star_simplified, q_star_refined, reference_45logK).

    Returns:
        the paths written.
    """
    d = _load(results_dir, "q_star")
    K = np.asarray(d["K"], dtype=float)
    simple = np.asarray(d["q_star_simplified"], dtype=float)
    refined = np.asarray(d["q_star_refined"], dtype=float)
    anchor = int(np.argmin(np.abs(np.log(K) - math.log(10.0))))  # K = 10 when present
    ref = 45.0 * np.log(K) + (simple[anchor] - 45.0 * math.log(K[anchor]))
    with figure_context():
        fig, ax = plt.subplots(figsize=FIGSIZE)
        ax.plot(K, simple, "o-", color="C0", label=r"simplified: $2KQ^2e^{-Q/45} < 0.05$ (Thm 4.3)")
        ax.plot(K, refined, "s-", color="C2", label="refined bound (appendix, reconstructed)")
        ax.plot(K, ref, "--", color="0.45", lw=1.0,
                label=f"$45\\,\\log K$ + const (through $K = {K[anchor]:g}$)")
        if np.isfinite(simple[anchor]):
            ax.annotate(f"$Q^*({K[anchor]:g}) = {simple[anchor]:.0f}$", (K[anchor], simple[anchor]),
                        xytext=(8, -14), textcoords="offset points", fontsize=8,
                        arrowprops=dict(arrowstyle="-", color="0.5", lw=0.6))
        ax.set_xscale("log")
        ax.set_xlabel(r"number of values $K$")
        ax.set_ylabel(r"samples per value $Q^*$ (bound < 0.05)")
        ax.set_title(r"$Q^*(K)$: smallest $Q \geq 40$ with risk bound < 0.05")
        ax.legend(loc="upper left")
        fig.tight_layout()
        return save(fig, out_dir, "q_star", {"K": K, "q_star_simplified": simple,
                                             "q_star_refined": refined, "reference_45logK": ref})


def _infer_v(K, rough):
    """v from rough = Φ(−1/(v√K)) (median over the finite points), or None if none is usable."""
    vs = [-1.0 / (NormalDist().inv_cdf(p) * math.sqrt(k)) for k, p in zip(K, rough) if 0.0 < p < 0.5]
    return float(np.median(vs)) if vs else None


def plot_shared_tokens(results_dir, out_dir) -> list[Path]:
    """Test risk at τ_1 vs K with shared Yes/No tokens vs distinct tokens (CP95 error bars).

    Reads `im-li__shared-token-risk.npz` (K (n,), risk_shared / risk_distinct (n, 3) = [risk,
    CP95 low, CP95 high], rough_prediction (n,) = Φ(−1/(v√K))). Writes `shared_tokens.*`.

    Returns:
        the paths written.
    """
    d = _load(results_dir, "shared_tokens")
    K = np.asarray(d["K"], dtype=float)
    shared, distinct = np.asarray(d["risk_shared"], float), np.asarray(d["risk_distinct"], float)
    rough = np.asarray(d["rough_prediction"], float)
    v = _infer_v(K, rough)
    with figure_context():
        fig, ax = plt.subplots(figsize=FIGSIZE)
        for arr, dodge, color, marker, label in (
                (shared, 0.96, "C3", "o", "shared Yes/No tokens (paper's experiments)"),
                (distinct, 1.04, "C0", "s", "distinct tokens per value")):
            yerr = np.clip(np.stack([arr[:, 0] - arr[:, 1], arr[:, 2] - arr[:, 0]]), 0.0, None)
            ax.errorbar(K * dodge, arr[:, 0], yerr=yerr, fmt=marker + "-", color=color, capsize=2.5,
                        lw=1.2, label=label)
        rough_label = r"rough prediction $\Phi(-1/(v\sqrt{K}))$" + (f", $v = {v:.3g}$" if v else "")
        if v is not None:
            grid = np.geomspace(K.min(), K.max(), 200)
            ax.plot(grid, [NormalDist().cdf(-1.0 / (v * math.sqrt(k))) for k in grid], "--",
                    color="0.4", lw=1.0, label=rough_label)
            ax.plot(K, rough, "x", color="0.4", ms=4)
        else:
            ax.plot(K, rough, "x--", color="0.4", lw=1.0, label=rough_label)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_xlabel(r"number of values $K$")
        ax.set_ylabel(r"test risk $P(r \leq 0)$ at $\tau_1$")
        ax.set_title("Shared vs distinct answer tokens (error bars: CP 95%)")
        ax.legend(loc="upper left")
        fig.tight_layout()
        return save(fig, out_dir, "shared_tokens", {
            "K": K, "risk_shared": shared[:, 0], "shared_cp95_low": shared[:, 1],
            "shared_cp95_high": shared[:, 2], "risk_distinct": distinct[:, 0],
            "distinct_cp95_low": distinct[:, 1], "distinct_cp95_high": distinct[:, 2],
            "rough_prediction": rough})


def plot_gd_to_flow(results_dir, out_dir) -> list[Path]:
    """Lemma 4.1: max |r^GD − r^flow| vs step size η on log-log axes, with a slope-1 reference.

    Reads `im-li__gd-to-flow.npz` (eta (n,), max_error (n,)). The reference line c·η has the
    least-squares c at fixed slope 1. Writes `gd_to_flow.*` (CSV: eta, max_error,
    slope1_reference).

    Returns:
        the paths written.
    """
    d = _load(results_dir, "gd_to_flow")
    eta, err = np.asarray(d["eta"], float), np.asarray(d["max_error"], float)
    ok = (eta > 0) & (err > 0)
    ref = eta * math.exp(float(np.mean(np.log(err[ok]) - np.log(eta[ok])))) if ok.any() else np.full_like(eta, np.nan)
    slope = float(np.polyfit(np.log(eta[ok]), np.log(err[ok]), 1)[0]) if ok.sum() >= 2 else float("nan")
    order = np.argsort(eta)
    with figure_context():
        fig, ax = plt.subplots(figsize=FIGSIZE)
        ax.plot(eta[order], err[order], "o", color="C0", ms=6,
                label=f"measured (fitted log-log slope {slope:.3f})")
        ax.plot(eta[order], ref[order], "--", color="0.25", lw=1.0,
                label=r"slope 1 reference $c\,\eta$ (least-squares $c$)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):   # 1-2-5 ticks as plain numbers: the range is ~1 decade
            axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
            axis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(r"GD step size $\eta$")
        ax.set_ylabel(r"$\max_i\,|r_i^{\mathrm{GD}}(t) - r_i^{\mathrm{flow}}(t)|$ at fixed $t$")
        ax.set_title(r"Lemma 4.1: GD $\to$ gradient flow at rate $O(\eta)$")
        ax.legend(loc="upper left")
        fig.tight_layout()
        return save(fig, out_dir, "gd_to_flow", {"eta": eta, "max_error": err, "slope1_reference": ref})


#: Figure name → plotter of a verify results folder (`make_all`).
FIGURES = {
    "thm42": plot_thm42_check,
    "q_star": plot_q_star,
    "shared_tokens": plot_shared_tokens,
    "gd_to_flow": plot_gd_to_flow,
}


def make_all(results_dir, out_dir) -> list[Path]:
    """Runs every plotter in `FIGURES` whose input npz exists; silently skips the others.

    Args:
        results_dir: folder holding `<check id with / → __>.npz` (or a `verify --out` folder
            holding results/). out_dir: folder for the figures (created if needed).

    Returns:
        the paths written, in `FIGURES` order.
    """
    written = []
    for name, plot in FIGURES.items():
        if _npz_path(results_dir, name).exists():
            written += plot(results_dir, out_dir)
    return written
