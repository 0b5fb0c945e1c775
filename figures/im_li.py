"""Figures for the Im & Li checks, drawn from the stored `results/<check>.npz` arrays only.

Each `plot_*(results_dir, out_dir)` reads one npz written by `dpolab verify` and returns the
paths it wrote (PDF, PNG and a CSV of the plotted numbers, see `dpolab.figures.style.save`).
`make_all` runs every plotter whose input exists.

References:
    [IL] Im & Li, "On the generalization of preference learning with DPO": Lemma 4.1 (gradient
    flow), Theorem 4.2 (margin sandwich, window at τ_1), Theorem 4.3 / Figure 4 (Q*).
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

from dpolab.figures.style import FIGSIZE, PANEL_SIZE, figure_context, k_palette, save
from dpolab.theory.im_li import LOG3, MARGIN_WINDOW, tau_1

#: Theorem 4.2's window for every training margin at τ_1: [log 3 / 40, log 3].
WINDOW = MARGIN_WINDOW
#: npz stem (check id with "/" → "__") read by each figure.
INPUTS = {
    "sandwich": "im-li__thm4.2-sandwich",
    "margin_collapse": "im-li__thm4.2-sandwich",
    "q_star": "im-li__q-star-table",
    "shared_tokens": "im-li__shared-token-risk",
    "gd_to_flow": "im-li__gd-to-flow",
}
MARKERS = ("o", "s", "^", "D", "v", "P")
_TAG = re.compile(r"^K(?P<K>\d+)_beta(?P<beta>[0-9.eE+-]+)_t$")
LABEL_R_LOWER = r"$r_L(t) = \beta^2 t/(8K\tau)$ (Thm 4.2 lower)"
LABEL_R_UPPER = r"$r_U(t) = 5\beta^2 t/(K\tau)$ (upper)"
LABEL_WINDOW = r"window at $\tau_1$: $[\log 3/40,\ \log 3]$"
LABEL_T = r"$t$ (GD time $n\eta$, $\tau = 1$)"
LABEL_MARGIN = r"reward margin $r_i(t)$"


def _npz_path(results_dir, name: str) -> Path:
    """The npz for figure `name`, in results_dir or (for a verify --out folder) results_dir/results."""
    stem = INPUTS[name] + ".npz"
    direct = Path(results_dir) / stem
    nested = Path(results_dir) / "results" / stem
    return nested if not direct.exists() and nested.exists() else direct


def _load(results_dir, name: str) -> dict:
    with np.load(_npz_path(results_dir, name), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def sandwich_configs(data: dict) -> list[tuple[str, int, float]]:
    """The (tag, K, β) configurations in a sandwich npz, sorted by (β descending, K ascending).

    Args:
        data: {key: array} with keys f"{tag}_t", f"{tag}_margins", ... and tag = f"K{K}_beta{β:g}".
    """
    out = []
    for key in data:
        m = _TAG.match(key)
        if m:
            out.append((key[:-2], int(m["K"]), float(m["beta"])))
    return sorted(out, key=lambda c: (-c[2], c[1]))


def plot_sandwich(results_dir, out_dir) -> list[Path]:
    """Theorem 4.2's sandwich: each training margin r_i(t) between r_L(t) and r_U(t), per config.

    Reads `im-li__thm4.2-sandwich.npz` ({tag}_t (C,), {tag}_margins (C, N) of one seed,
    {tag}_r_lower (C,), {tag}_r_upper (C,)). Writes `sandwich.*` (one panel per tag; CSV in long
    format: config, K, beta, t, margin_mean, margin_min, margin_max, r_lower, r_upper) and
    `margin_collapse.*` (see `plot_margin_collapse`).

    Returns:
        the paths written.
    """
    data = _load(results_dir, "sandwich")
    configs = sandwich_configs(data)
    if not configs:
        raise ValueError(f"{_npz_path(results_dir, 'sandwich')}: no '<tag>_t' arrays found")
    colors = k_palette([K for _, K, _ in configs])
    cols = {k: [] for k in ("config", "K", "beta", "t", "margin_mean", "margin_min", "margin_max",
                            "r_lower", "r_upper")}
    with figure_context():
        n = len(configs)
        ncols = min(n, 2 if n == 4 else 3)
        nrows = math.ceil(n / ncols)
        fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                                 figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows + 0.9))
        for idx, (tag, K, beta) in enumerate(configs):
            ax = axes.flat[idx]
            t = data[f"{tag}_t"]
            r = data[f"{tag}_margins"].reshape(len(t), -1)   # (C, N)
            r_lo, r_up = data[f"{tag}_r_lower"], data[f"{tag}_r_upper"]
            color = colors[K]
            ax.add_collection(LineCollection([np.column_stack([t, r[:, i]]) for i in range(r.shape[1])],
                                             colors=[color], linewidths=0.5, alpha=0.25,
                                             label=f"$r_i(t)$, all N = {r.shape[1]} training samples (one seed)"))
            ax.plot(t, r.mean(axis=1), color=color, lw=1.2, label=r"mean margin $\bar r(t)$")
            ax.plot(t, r_lo, "--", color="C3", lw=1.3, label=LABEL_R_LOWER)
            ax.plot(t, r_up, "--", color="C1", lw=1.3, label=LABEL_R_UPPER)
            for y in WINDOW:
                ax.axhline(y, ls=":", color="0.35", lw=1.0, label=LABEL_WINDOW if y == WINDOW[0] else None)
            tau1 = tau_1(K=K, beta=beta)
            if t.min() <= tau1 <= t.max() * 1.0001:
                ax.axvline(tau1, ls=":", color="0.6", lw=0.8)
                ax.annotate(r"$\tau_1$", (tau1, 1.0), xytext=(-3, -3), textcoords="offset points",
                            ha="right", va="top", fontsize=8, color="0.4",
                            xycoords=("data", "axes fraction"))
            top = 1.2 * max(float(np.nanmax(r)), LOG3)
            ax.set_xlim(float(t.min()), float(t.max()))
            ax.set_ylim(min(0.0, float(np.nanmin(r))), top)
            if np.nanmax(r_up) > top:
                ax.annotate(r"$r_U$ leaves the frame" + "\n(max %.3g at t = %.3g)" % (np.nanmax(r_up), t[-1]),
                            xy=(0.03, 0.97), xycoords="axes fraction", ha="left", va="top",
                            fontsize=7, color="C1")
            ax.set_title(f"$K = {K}$, $\\beta = {beta:g}$")
            ax.set_xlabel(LABEL_T)
            ax.set_ylabel(LABEL_MARGIN)
            for k, v in (("config", idx), ("K", K), ("beta", beta)):
                cols[k].append(np.full(len(t), v, dtype=float))
            for k, v in (("t", t), ("margin_mean", r.mean(1)), ("margin_min", r.min(1)),
                         ("margin_max", r.max(1)), ("r_lower", r_lo), ("r_upper", r_up)):
                cols[k].append(np.asarray(v, dtype=float))
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        legend = fig.legend(handles, labels, loc="outside lower center", ncol=3)
        for handle, label in zip(legend.legend_handles, labels):   # faint in the plot, not in the key
            if label.startswith("$r_i(t)$"):
                handle.set_alpha(0.8)
                handle.set_linewidth(1.0)
        fig.suptitle(r"Theorem 4.2: $\beta^2t/(8K\tau) \leq r_i(t) \leq 5\beta^2t/(K\tau)$ for "
                     r"$t \leq \tau_1 = K\tau\log 3/(5\beta^2)$", fontsize=10)
        paths = save(fig, out_dir, "sandwich", {k: np.concatenate(v) for k, v in cols.items()})
    return paths + plot_margin_collapse(results_dir, out_dir)


def plot_margin_collapse(results_dir, out_dir) -> list[Path]:
    """Mean training margin vs s = β²t/(Kτ): Theorem 4.2's time scale makes the configs collapse.

    Reads `im-li__thm4.2-sandwich.npz`; writes `margin_collapse.*` (CSV: config, K, beta, s,
    margin_mean).

    Returns:
        the paths written.
    """
    data = _load(results_dir, "margin_collapse")
    configs = sandwich_configs(data)
    colors = k_palette([K for _, K, _ in configs])
    betas = sorted({b for _, _, b in configs}, reverse=True)
    styles = dict(zip(betas, ["-", "--", "-.", ":"] * len(betas)))
    cols = {k: [] for k in ("config", "K", "beta", "s", "margin_mean")}
    with figure_context():
        fig, ax = plt.subplots(figsize=FIGSIZE)
        s_max = 0.0
        for idx, (tag, K, beta) in enumerate(configs):
            t = data[f"{tag}_t"]
            s = beta**2 * t / K   # τ = 1
            mean = data[f"{tag}_margins"].reshape(len(t), -1).mean(axis=1)
            # hollow markers at staggered points keep exactly collapsed curves distinguishable
            ax.plot(s, mean, styles[beta], color=colors[K], lw=1.4, marker=MARKERS[idx % len(MARKERS)],
                    mfc="none", ms=5, markevery=(idx % 3, max(1, len(t) // 8)),
                    label=f"$K = {K}$, $\\beta = {beta:g}$")
            s_max = max(s_max, float(s.max()))
            for k, v in (("config", np.full(len(t), idx)), ("K", np.full(len(t), K)),
                         ("beta", np.full(len(t), beta)), ("s", s), ("margin_mean", mean)):
                cols[k].append(np.asarray(v, dtype=float))
        grid = np.linspace(0.0, s_max, 2)
        ax.plot(grid, grid / 8, "--", color="C3", lw=1.0, label=r"$r_L = s/8$ (Thm 4.2 lower)")
        ax.axvline(LOG3 / 5, ls=":", color="0.5", lw=0.9, label=r"$s$ at $\tau_1$: $\log 3/5$")
        ax.set_xlabel(r"$s = \beta^2 t/(K\tau)$  (Thm 4.2 time scale)")
        ax.set_ylabel(r"mean reward margin $\bar r(t)$")
        ax.set_title(r"Mean margins collapse on $s = \beta^2 t/(K\tau)$")
        ax.set_xlim(0.0, 1.04 * s_max)   # keeps the τ_1 line (at s_max) visible
        ax.set_ylim(bottom=0.0)
        ax.legend(loc="upper left")
        fig.tight_layout()
        return save(fig, out_dir, "margin_collapse", {k: np.concatenate(v) for k, v in cols.items()})


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


#: Figure name → plotter. `margin_collapse` is also written by `plot_sandwich`; make_all runs it once.
FIGURES = {
    "sandwich": plot_sandwich,
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
