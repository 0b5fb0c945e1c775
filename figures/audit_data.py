"""Figures of the audit's data-model questions: unseen values (Q2), non-orthogonal values (Q3),
anisotropic noise (Q4).

Each `plot_*(data, out_dir)` draws from one audit item's stored arrays only (keys documented per
function; `pt_*` arrays hold one entry per sweep grid point) and writes PDF + PNG + CSV of the
plotted numbers with `dpolab.figures.style.save`. Nothing here imports jax or `sims`.

References:
    [IL] S. Im, S. Li, "Can DPO Learn Diverse Human Values? A Theoretical Scaling Law",
    arXiv 2408.03459: Lemma 4.1, Theorem 4.2 (sandwich), Theorem 4.3 (risk bounds), App. C/E.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402  (after dpolab.figures.style selected the Agg backend)
import numpy as np
from matplotlib.lines import Line2D  # noqa: E402

from dpolab.figures.im_li import MARKERS
from dpolab.figures.style import figure_context, save

#: Floor at which exact zeros are drawn on log axes (the legend says so).
LOG_FLOOR = 1e-6


def _cos_colors(values) -> dict:
    cmap = plt.get_cmap("viridis")
    vals = sorted(set(np.round(np.asarray(values, float), 12)))
    return {v: cmap(0.85 * i / max(len(vals) - 1, 1)) for i, v in enumerate(vals)}


def _key_legend(ax, colors, Ks, *, title_colors=r"$\rho$", loc="upper left", extra=()):
    handles = [Line2D([], [], ls="", marker="o", color=c, label=f"{title_colors} = {v:g}")
               for v, c in colors.items()]
    handles += [Line2D([], [], ls="", marker=MARKERS[i % len(MARKERS)], color="0.35", mfc="none",
                       label=f"K = {int(k)}") for i, k in enumerate(Ks)]
    ax.legend(handles=list(handles) + list(extra), loc=loc, ncol=2, fontsize=6.5,
              handletextpad=0.3, columnspacing=0.8)


def _identity(ax, lo, hi, label):
    ax.plot([lo, hi], [lo, hi], ls="--", color="0.5", lw=1, label=label, zorder=0)


def plot_unseen(data: dict, out_dir) -> list[Path]:
    """Q2: unseen values' risk, mean margin and spread against the mean-field prediction, and the
    held-out recursion's error against the rounding bound.

    Reads pt_K, pt_tokens (0 new tokens, 1 shared Yes/No), pt_v, pt_cos, pt_unseen_risk(_lo/_hi),
    pt_mf_risk, pt_unseen_margin(_lo/_hi), pt_mf_margin, pt_sd_measured, pt_mf_sd, pt_rec_err,
    pt_rec_tol, pt_test_risk, pt_mf_test_risk, seeds, Q. Writes `q2_unseen.*` (CSV: one row per
    grid point).
    """
    K, tok, v, cos = (np.asarray(data[k], float) for k in ("pt_K", "pt_tokens", "pt_v", "pt_cos"))
    shared = tok == 1
    colors, Ks = _cos_colors(cos), sorted(set(K))
    mark = {k: MARKERS[i % len(MARKERS)] for i, k in enumerate(Ks)}
    table = {"K": K, "shared_tokens": tok, "v": v, "concept_cos": cos,
             **{k[3:]: np.asarray(data[k], float) for k in (
                 "pt_unseen_risk", "pt_unseen_risk_lo", "pt_unseen_risk_hi", "pt_mf_risk",
                 "pt_unseen_margin", "pt_unseen_margin_lo", "pt_unseen_margin_hi", "pt_mf_margin",
                 "pt_sd_measured", "pt_mf_sd", "pt_rec_err", "pt_rec_tol", "pt_test_risk",
                 "pt_mf_test_risk")}}
    with figure_context():
        fig, axes = plt.subplots(2, 2, figsize=(7.0, 6.2), layout="constrained")
        ax = axes[0, 0]
        _identity(ax, 0, 1, "measured = mean-field")
        for i in np.flatnonzero(shared):
            r, lo, hi = (table[k][i] for k in ("unseen_risk", "unseen_risk_lo", "unseen_risk_hi"))
            ax.errorbar(table["mf_risk"][i], r, yerr=[[r - lo], [hi - r]], ls="", marker=mark[K[i]],
                        color=colors[round(cos[i], 12)], mfc="none", ms=4, elinewidth=0.8)
        new = ~shared
        new_handle = ax.errorbar(table["mf_risk"][new], table["unseen_risk"][new], ls="", marker="x",
                                 color="k", ms=7, label="new tokens (all K, v, ρ): r̃ ≡ 0, a tie")
        ax.set(xlabel="mean-field risk $\\Phi(-E/\\sqrt{\\mathrm{Var}})$",
               ylabel="unseen-value test risk P($\\tilde r \\leq 0$)",
               title="(a) unseen risk (shared Yes/No; CP95)", xlim=(-0.04, 1.04), ylim=(-0.04, 1.08))
        _key_legend(ax, colors, Ks, extra=[new_handle], loc="upper left")
        ax = axes[0, 1]
        m, lo, hi, mf = (table[k][shared] for k in ("unseen_margin", "unseen_margin_lo",
                                                    "unseen_margin_hi", "mf_margin"))
        span = (min(mf.min(), lo.min()), max(mf.max(), hi.max()))
        _identity(ax, *span, "measured = mean-field")
        for j, i in enumerate(np.flatnonzero(shared)):
            ax.errorbar(mf[j], m[j], yerr=[[m[j] - lo[j]], [hi[j] - m[j]]], ls="", marker=mark[K[i]],
                        color=colors[round(cos[i], 12)], mfc="none", ms=4, elinewidth=0.8)
        ax.set(xlabel="mean-field mean margin $\\bar r\\,E_u/E_{train}$",
               ylabel="mean unseen margin (mean ± 95% CI, seeds)",
               title="(b) unseen mean margin (shared Yes/No)")
        ax.legend(loc="upper left")
        ax = axes[1, 0]
        ok = shared & np.isfinite(table["sd_measured"])
        lo_, hi_ = table["mf_sd"][ok].min() / 1.5, table["mf_sd"][ok].max() * 1.5
        _identity(ax, lo_, hi_, "measured = mean-field")
        for i in np.flatnonzero(ok):
            ax.plot(table["mf_sd"][i], table["sd_measured"][i], ls="", marker=mark[K[i]], mfc="none",
                    color=colors[round(cos[i], 12)], ms=4)
        ax.set(xscale="log", yscale="log", xlabel="mean-field sd $\\bar r\\sqrt{\\mathrm{Var}}/E_{train}$",
               ylabel="sd of unseen margins (recursion, pooled)",
               title="(c) unseen margin spread (shared Yes/No)")
        ax.legend(loc="upper left")
        ax = axes[1, 1]
        ratio = table["rec_err"] / table["rec_tol"]
        has = np.isfinite(ratio)
        for t, color, _label in ((0, "C0", "new tokens"), (1, "C3", "shared Yes/No")):
            for k in Ks:
                sel = has & (tok == t) & (K == k)
                ax.plot(v[sel], np.maximum(ratio[sel], LOG_FLOOR), ls="", marker=mark[k], mfc="none",
                        color=color, ms=4)
        ax.axhline(1.0, color="k", lw=1, label="rounding bound 4·steps·ε·ηβ²·max Σ|C̃| (fail above)")
        handles = [Line2D([], [], ls="", marker="s", color=c, label=n)
                   for c, n in (("C0", "new tokens"), ("C3", "shared Yes/No"))]
        handles += [Line2D([], [], color="k", lw=1, label="rounding bound (fail above)")]
        ax.set(xscale="log", yscale="log", ylim=(LOG_FLOOR / 3, 10), xlabel="noise scale $v$",
               ylabel="max |recorded − recursion| / bound",
               title=f"(d) held-out recursion (exact zeros at {LOG_FLOOR:g})")
        ax.legend(handles=handles + [Line2D([], [], ls="", marker=mark[k], color="0.35", mfc="none",
                                            label=f"K = {int(k)}") for k in Ks],
                  loc="upper left", ncol=2, fontsize=6.5)
        return save(fig, out_dir, "q2_unseen", table)


def _stack(data, sweeps, fields):
    """Rows of several sweeps' per-point arrays, with a `sweep` column (index into `sweeps`)."""
    present = [s for s in sweeps if f"{s}_K" in data]
    table = {"sweep": np.concatenate([np.full(len(data[f"{s}_K"]), sweeps.index(s), float)
                                      for s in present])}
    for f in fields:
        table[f] = np.concatenate([np.asarray(data[f"{s}_{f}"], float) for s in present])
    return table


def _risk_vs_bound(ax, bound, lo, hi, n):
    """Upper CP95 end of the test risk against the refined bound; violations in red."""
    up = np.maximum(hi, LOG_FLOOR)
    violated = lo > bound
    lim = (min(bound.min(), up.min()) / 3, max(bound.max(), 1.0) * 3)
    ax.axvspan(1.0, lim[1], color="0.92", lw=0, label="vacuous bound (≥ 1)")
    ax.plot(lim, lim, ls="--", color="0.4", lw=1, label="risk = bound")
    ax.plot(bound[~violated], up[~violated], ls="", marker="o", mfc="none", ms=4, color="C0",
            label="CP95 upper end of test risk")
    ax.plot(bound[violated], up[violated], ls="", marker="x", ms=6, color="C3",
            label="violated (CP95 lower end > bound)")
    ax.set(xscale="log", yscale="log", xlim=lim, ylim=(LOG_FLOOR / 3, 1.5),
           xlabel="refined Thm 4.3 bound (reconstructed)", ylabel="test risk (CP95 upper end)")
    ax.legend(loc="lower right", fontsize=6.5)
    return {"violated": violated.astype(float)}


def _heatmap(ax, data, shared, title):
    sel = data["cos_shared"] == shared
    Ks, rhos = np.unique(data["cos_K"][sel]), np.unique(data["cos_rho"][sel])
    grid, fail = np.full((len(Ks), len(rhos)), np.nan), np.zeros((len(Ks), len(rhos)), bool)
    for i in np.flatnonzero(sel):
        a, b = np.searchsorted(Ks, data["cos_K"][i]), np.searchsorted(rhos, data["cos_rho"][i])
        grid[a, b], fail[a, b] = data["cos_sandwich"][i], data["cos_mf_sandwich"][i] == 0
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
    for (a, b), val in np.ndenumerate(grid):
        ax.text(b, a, f"{val:.2g}", ha="center", va="center", fontsize=6,
                color="k" if val > 0.6 else "w")
        if fail[a, b]:
            ax.add_patch(plt.Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, ec="C3", lw=1.6))
    ax.set_xticks(range(len(rhos)), [f"{r:g}" for r in rhos], rotation=60)
    ax.set_yticks(range(len(Ks)), [f"{int(k)}" for k in Ks])
    ax.set(xlabel=r"concept cosine $\rho$", ylabel="K (trained values)", title=title)
    ax.grid(False)
    return im


def plot_nonorthogonal(data: dict, out_dir) -> list[Path]:
    """Q3: Theorem 4.2's sandwich over ρ × K (both token modes) with the mean-field boundary, the
    appendix's δ tilt, and the test risk over ρ × v and against the refined bound.

    Reads `<sweep>_<field>` per-point arrays of the sweeps cos, delta, cos_v (bounds: optional),
    fields K, shared, rho, delta, v, sandwich(_lo/_hi), in_window, mf_sandwich, mf_window,
    test_risk(_lo/_hi), n_test_total, mf_test_risk, bound_refined, bound_simplified; delta_cap.
    Writes `q3_sandwich.*` and `q3_risk.*` (CSVs: one row per grid point, `sweep` = index in
    (cos, delta, cos_v, bounds)).
    """
    sweeps = ["cos", "delta", "cos_v", "bounds"]
    paths = []
    with figure_context():
        fig, axes = plt.subplots(1, 3, figsize=(7.0, 2.9), layout="constrained",
                                 gridspec_kw={"width_ratios": [1, 1, 1.15]})
        im = _heatmap(axes[0], data, 1, "(a) shared Yes/No tokens")
        fig.legend(handles=[plt.Rectangle((0, 0), 1, 1, fill=False, ec="C3", lw=1.6,
                                          label="mean field (margins on the K/m curve, m = 1 + (K−1)ρ) "
                                                "predicts the sandwich breaks")],
                   loc="outside lower left", fontsize=6.5)
        _heatmap(axes[1], data, 0, "(b) new tokens per value")
        fig.colorbar(im, ax=axes[:2], shrink=0.8, label="sandwich_frac (mean over seeds)")
        ax = axes[2]
        cap = float(data["delta_cap"])
        for j, (s, name) in enumerate(((1, "shared"), (0, "new"))):
            for i, k in enumerate(np.unique(data["delta_K"])):
                sel = (data["delta_shared"] == s) & (data["delta_K"] == k)
                ax.plot(data["delta_delta"][sel], data["delta_sandwich"][sel], marker=MARKERS[i],
                        ls="-" if s else ":", color=f"C{j}", mfc="none", label=f"{name}, K = {int(k)}")
        ax.axvline(cap, color="0.3", lw=1, ls="--", label=f"App. C allowance δ ≤ {cap:.2g}")
        ax.set(xscale="symlog", xlim=(0, 1.2), ylim=(-0.05, 1.1), xlabel=r"tilt $\delta$ (App. C)",
               ylabel="sandwich_frac", title=r"(c) tilt $\delta$ ($\rho$ = 0)")
        ax.set_xscale("symlog", linthresh=cap)
        ax.legend(fontsize=6.5, loc="lower center")
        table = _stack(data, sweeps, ("K", "shared", "rho", "delta", "v", "sandwich", "sandwich_lo",
                                      "sandwich_hi", "in_window", "mf_sandwich", "mf_window"))
        paths += save(fig, out_dir, "q3_sandwich", table)

        fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.1), layout="constrained")
        ax = axes[0]
        vs = np.unique(data["cos_v_v"])
        colors = {v: plt.get_cmap("viridis")(0.85 * i / max(len(vs) - 1, 1)) for i, v in enumerate(vs)}
        for v in vs:
            for s in (1, 0):
                sel = (data["cos_v_v"] == v) & (data["cos_v_shared"] == s)
                r, lo, hi = (data[f"cos_v_test_risk{x}"][sel] for x in ("", "_lo", "_hi"))
                ax.errorbar(data["cos_v_rho"][sel], r, yerr=[r - lo, hi - r], ls="-" if s else "",
                            marker="o" if s else "s", mfc=colors[v] if s else "none", color=colors[v],
                            ms=4, elinewidth=0.8, label=f"v = {v:g}" if s else None)
                if s:
                    ax.plot(data["cos_v_rho"][sel], data["cos_v_mf_test_risk"][sel], ls="--", lw=1,
                            color=colors[v])
        handles, _ = ax.get_legend_handles_labels()
        handles += [Line2D([], [], ls="--", color="0.4", lw=1, label="mean field Φ(−E/√Var)"),
                    Line2D([], [], ls="", marker="s", mfc="none", color="0.4", label="new tokens")]
        ax.legend(handles=handles, fontsize=6.5, loc="upper right")
        ax.set(xlabel=r"concept cosine $\rho$", ylabel="seen-value test risk (CP95)",
               title=f"(a) test risk, K = {int(data['cos_v_K'][0])} (filled: shared Yes/No)")
        rows = _stack(data, sweeps, ("K", "shared", "rho", "delta", "v", "test_risk", "test_risk_lo",
                                     "test_risk_hi", "n_test_total", "mf_test_risk",
                                     "bound_simplified", "bound_refined"))
        rows |= _risk_vs_bound(axes[1], rows["bound_refined"], rows["test_risk_lo"],
                               rows["test_risk_hi"], rows["n_test_total"])
        axes[1].set_title("(b) risk vs refined bound, all grid points")
        paths += save(fig, out_dir, "q3_risk", rows)
    return paths


def plot_noise(data: dict, out_dir) -> list[Path]:
    """Q4: the calibrated noise spectrum, and test risk / sandwich against v for isotropic and
    spiked noise, with the mean field and the refined bound.

    Reads cal_spectrum (real relative variances, empty without the real track), model_spectrum,
    cal_source, cal_rank, cal_share, cal_v_cal, v_theorem, and `<sweep>_<field>` per-point arrays
    of the sweeps spike, yes_no, rank, share (those present), fields noise_rank, noise_share, v,
    shared, test_risk(_lo/_hi), n_test_total, mf_test_risk, sandwich(_lo/_hi), bound_refined.
    Writes `q4_noise.*` (CSV: one row per grid point, `sweep` = index in (spike, yes_no, rank,
    share)).
    """
    sweeps = ["spike", "yes_no", "rank", "share"]
    rows = _stack(data, sweeps, ("K", "shared", "noise_rank", "noise_share", "v", "sandwich",
                                 "sandwich_lo", "sandwich_hi", "in_window", "test_risk",
                                 "test_risk_lo", "test_risk_hi", "n_test_total", "mf_test_risk",
                                 "bound_simplified", "bound_refined"))
    rank, share = int(data["cal_rank"]), float(data["cal_share"])
    with figure_context():
        fig, axes = plt.subplots(2, 2, figsize=(7.0, 5.8), layout="constrained")
        ax = axes[0, 0]
        real = np.asarray(data["cal_spectrum"], float)
        model = np.asarray(data["model_spectrum"], float)
        shares = [model / model.sum()]
        if real.size:  # share of the total variance per axis; axes beyond the sample rank dropped
            real = real[real > 1e-12 * real.max()] / real.sum()
            shares.append(real)
            ax.plot(np.arange(1, real.size + 1), real, color="k", marker=".", ms=3,
                    label=f"real within-cluster, d = {data['cal_spectrum'].size} (nonzero axes)")
        ax.plot(np.arange(1, model.size + 1), shares[0], color="C3", ls="--",
                label=f"spike: rank {rank}, share {share:.2f}, d = {model.size}")
        ax.axhline(1.0 / model.size, color="C0", lw=1, label=f"isotropic (theorem), d = {model.size}")
        src = "real embeddings" if str(data["cal_source"]) == "real" else "fallback: paper App. E r_eff"
        low = min(x.min() for x in shares)
        ax.set(xscale="log", yscale="log", ylim=(low / 100, None), xlabel="principal axis (sorted)",
               ylabel="share of total noise variance", title=f"(a) noise spectrum ({src})")
        ax.legend(fontsize=6.5, loc="lower left")
        for ax, metric, title in ((axes[0, 1], "test_risk", "(b) test risk at τ_1 (CP95)"),
                                  (axes[1, 0], "sandwich", "(c) Thm 4.2 sandwich (mean ± 95% CI)")):
            styles = [("spike", 0, 0, "C0", "isotropic, new tokens"),
                      ("spike", 0, rank, "C3", f"spike r = {rank}, new tokens"),
                      ("yes_no", 1, 0, "C0", "isotropic, shared Yes/No"),
                      ("yes_no", 1, rank, "C3", f"spike r = {rank}, shared Yes/No")]
            for s in ("rank", "share"):
                if f"{s}_K" in data:
                    for rk, sh in sorted(set(zip(data[f"{s}_noise_rank"], data[f"{s}_noise_share"]))):
                        styles.append((s, 0, (rk, sh), None, f"spike r = {int(rk)}, share {sh:.2f}"))
            for i, (s, shared, which, color, label) in enumerate(styles):
                if f"{s}_K" not in data:
                    continue
                if isinstance(which, tuple):
                    sel = (data[f"{s}_noise_rank"] == which[0]) & (data[f"{s}_noise_share"] == which[1])
                else:
                    sel = (data[f"{s}_noise_rank"] == which) & (data[f"{s}_shared"] == shared)
                v = data[f"{s}_v"][sel]
                y, lo, hi = (data[f"{s}_{metric}{x}"][sel] for x in ("", "_lo", "_hi"))
                ax.errorbar(v, y, yerr=[y - lo, hi - y], marker=MARKERS[i % len(MARKERS)], ms=4,
                            ls="-" if shared == 0 else ":", color=color or f"C{i}", mfc="none",
                            elinewidth=0.8, label=label)
                if metric == "test_risk" and color is not None:
                    ax.plot(v, data[f"{s}_mf_{metric}"][sel], ls="--", lw=0.9, color=color)
            if np.isfinite(float(data["cal_v_cal"])):
                ax.axvline(float(data["cal_v_cal"]), color="0.3", lw=1, ls="-.",
                           label=f"calibrated v = {float(data['cal_v_cal']):.3g}")
            ax.axvline(float(data["v_theorem"]), color="0.6", lw=1, ls=":",
                       label=f"Thm 4.2's v = 1/(32√Q) = {float(data['v_theorem']):.3g}")
            ax.set(xscale="log", xlabel="noise scale $v$ (average per coordinate)", title=title,
                   ylabel="test risk" if metric == "test_risk" else "sandwich_frac")
        axes[0, 1].plot([], [], ls="--", lw=0.9, color="0.4", label="mean field Φ(−E/√Var)")
        axes[0, 1].legend(fontsize=6, loc="upper left")
        axes[1, 0].legend(fontsize=6, loc="lower left")
        rows |= _risk_vs_bound(axes[1, 1], rows["bound_refined"], rows["test_risk_lo"],
                               rows["test_risk_hi"], rows["n_test_total"])
        axes[1, 1].set_title("(d) risk vs refined bound, all grid points")
        return save(fig, out_dir, "q4_noise", rows)
