"""Figures of the audit's dynamics questions (Q5 Adam vs GD, Q6 after τ_1, Q7 β, Q9 flips), drawn
only from the arrays an audit item stored (its data.npz). Each `plot_q*` writes PDF + PNG + CSV of
the plotted numbers through `dpolab.figures.style.save` and returns the paths.

References:
    [IL] Im & Li, arXiv 2408.03459 (Lemma 4.1, Theorems 4.2–4.3, §1.6 closed forms).
    [rDPO] Chowdhury et al., arXiv 2403.00409 (THEORY §2).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402  (after dpolab.figures.style selected the Agg backend)
import numpy as np
from matplotlib import ticker  # noqa: E402

from dpolab.figures.style import PANEL_SIZE, figure_context, save
from dpolab.sims.risk import mean_ci
from dpolab.theory.im_li import LOG3

OPT_COLORS = {"gd": "C0", "adam": "C3"}
LOSS_COLORS = {"dpo": "C0", "rdpo": "C2", "cdpo": "C4"}
PRED_STYLE = dict(color="0.35", lw=0.9, ls=":")


def _plain_log_y(ax):
    """Log y axis labelled 0.1, 0.2, 0.5, 1, 2, ... instead of powers of ten."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def _plain_log_x(ax):
    """Log x axis labelled with plain numbers, no minor labels."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _k_axis(ax, Ks):
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ks, [f"{k:g}" for k in Ks])
    ax.minorticks_off()
    ax.set_xlabel("number of values $K$")


def plot_q5(data: dict, out_dir) -> list[Path]:
    """Mean train margin (log scale) and test error against K: GD and Adam, steps fixed (solid)
    or ∝ K (dashed), one column per regime; predictions dotted in the same colour."""
    Ks = data["K"]
    regimes, opts, scheds = data["regimes"], data["optimizers"], data["schedules"]
    rows = {k: [] for k in ("regime", "optimizer", "schedule", "K", "margin_mean", "margin_ci",
                            "margin_pred", "test_risk", "test_risk_ci", "risk_pred")}
    with figure_context():
        fig, axes = plt.subplots(2, len(regimes), squeeze=False,
                                 figsize=(PANEL_SIZE[0] * 0.9 * len(regimes) + 0.4, 2 * PANEL_SIZE[1] * 0.85))
        for r, regime in enumerate(regimes):
            ax_m, ax_r = axes[0, r], axes[1, r]
            for o, opt in enumerate(opts):
                for c, _ in enumerate(scheds):
                    style = dict(color=OPT_COLORS[str(opt)], ls="-" if c == 0 else "--",
                                 marker="o" if c == 0 else "s", ms=3.5, capsize=2, lw=1.2)
                    label = f"{'GD' if opt == 'gd' else 'Adam'}, steps {'fixed' if c == 0 else '∝ K'}"
                    m, mh = mean_ci(data["margin_mean"][r, o, c])
                    q, qh = mean_ci(data["test_risk"][r, o, c])
                    ax_m.errorbar(Ks, m, yerr=mh, label=label, **style)
                    ax_m.plot(Ks, data["margin_pred"][r, o, c], **(PRED_STYLE | {"color": style["color"]}))
                    ax_r.errorbar(Ks, q, yerr=qh, label=label, **style)
                    ax_r.plot(Ks, data["risk_pred"][r, o, c], **(PRED_STYLE | {"color": style["color"]}))
                    for key, val in (("regime", r), ("optimizer", o), ("schedule", c), ("K", Ks),
                                     ("margin_mean", m), ("margin_ci", mh),
                                     ("margin_pred", data["margin_pred"][r, o, c]), ("test_risk", q),
                                     ("test_risk_ci", qh), ("risk_pred", data["risk_pred"][r, o, c])):
                        rows[key].append(np.broadcast_to(np.asarray(val, dtype=float), Ks.shape))
            _plain_log_y(ax_m)
            ax_m.set_ylabel("mean train margin $\\bar r$")
            ax_m.set_title(f"({'ab'[r]}) {regime} regime (v = {data['v'][r]:.3g})")
            top = max(0.02, 1.15 * float(np.max(data["test_risk"][r].mean(axis=-1))),
                      1.15 * float(np.max(data["risk_pred"][r])))
            ax_r.set_ylim(-0.03 * top, top)
            ax_r.set_ylabel("test error (seen values)")
            ax_r.set_title(f"({'cd'[r]}) {regime} regime: test error")
            for ax in (ax_m, ax_r):
                _k_axis(ax, Ks)
        axes[0, 0].plot([], [], label="prediction (same colour)", **PRED_STYLE)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=3, bbox_to_anchor=(0.5, 0.0))
        return save(fig, out_dir, "q5_adam_vs_gd", {k: np.concatenate(v) for k, v in rows.items()})


REGIME_COLORS = ("C0", "C1", "C2")


def _tau_axis(ax, t):
    ax.set_xscale("log", base=2)
    ax.set_xticks(t[np.isin(t, 2.0 ** np.arange(8))], [f"{x:g}" for x in t[np.isin(t, 2.0 ** np.arange(8))]])
    ax.minorticks_off()
    ax.set_xlabel(r"$t/\tau_1$ (GD time $n\eta$, $\tau = 1$)")


def plot_q6(data: dict, out_dir) -> list[Path]:
    """Four panels against t/τ_1 (log scale), one colour per regime: (a) mean train margin with the
    band of the per-run smallest/largest margin and the noise-free curve, (b) fraction of training
    margins in [0, log 3], (c) mean loss and its noise-free value, (d) train and test error
    (test: pooled, Clopper–Pearson 95%) with the refined Theorem 4.3 bound at τ_1."""
    t = data["t_mult"]
    exit_t = float(data["exit_ratio_pred"])
    rows = {k: [] for k in ("regime", "t_over_tau1", "margin_mean", "margin_ci", "margin_min_mean",
                            "margin_max_mean", "margin_noise_free", "in_window", "in_window_ci",
                            "loss", "loss_noise_free", "train_error", "test_error", "test_cp_low",
                            "test_cp_high", "bound_refined")}
    with figure_context():
        fig, axes = plt.subplots(2, 2, figsize=(7.0, 5.6))
        (ax_m, ax_w), (ax_l, ax_e) = axes
        for r, regime in enumerate(data["regimes"]):
            col = REGIME_COLORS[r]
            lab = f"{regime} (K = {data['K'][r]:g}, Q = {data['Q'][r]:g}, v = {data['v'][r]:.2g})"
            m, mh = mean_ci(data["margin_mean"][r])
            lo, hi = data["margin_min"][r].mean(axis=1), data["margin_max"][r].mean(axis=1)
            ax_m.errorbar(t, m, yerr=mh, color=col, marker="o", ms=3, capsize=2, label=lab)
            ax_m.fill_between(t, lo, hi, color=col, alpha=0.15, lw=0)
            w, wh = mean_ci(data["in_window"][r])
            ax_w.errorbar(t, w, yerr=wh, color=col, marker="o", ms=3, capsize=2)
            loss = data["final_loss"][r].mean(axis=1)
            ax_l.plot(t, loss, color=col, marker="o", ms=3)
            train = 1 - data["train_accuracy"][r].mean(axis=1)
            n = data["n_test_pooled"][r]
            test = data["test_errors"][r] / n
            cp = data["test_risk_cp"][r]
            ax_e.errorbar(t, test, yerr=[test - cp[:, 0], cp[:, 1] - test], color=col, marker="o",
                          ms=3, capsize=2, label=f"test error, {regime} (CP95)")
            ax_e.plot(t, train, color=col, ls="--", marker="s", ms=2.5, label=f"train error, {regime}")
            if data["bounds"][r, 1] < 1:
                ax_e.axhline(data["bounds"][r, 1], color=col, lw=0.9, ls="-.",
                             label=f"refined Thm 4.3 bound at $\\tau_1$ ({regime})")
            for key, val in (("regime", r), ("t_over_tau1", t), ("margin_mean", m), ("margin_ci", mh),
                             ("margin_min_mean", lo), ("margin_max_mean", hi),
                             ("margin_noise_free", data["margin_pred"]), ("in_window", w),
                             ("in_window_ci", wh),
                             ("loss", loss), ("loss_noise_free", data["loss_pred"]), ("train_error", train),
                             ("test_error", test), ("test_cp_low", cp[:, 0]), ("test_cp_high", cp[:, 1]),
                             ("bound_refined", data["bounds"][r, 1])):
                rows[key].append(np.broadcast_to(np.asarray(val, dtype=float), t.shape))
        ax_m.plot(t, data["margin_pred"], label="noise-free GD (exact recursion)", **PRED_STYLE)
        ax_m.axhline(LOG3, color="k", lw=0.8, ls="--", label="window top log 3")
        ax_l.plot(t, data["loss_pred"], label="noise-free loss softplus$(-r)$", **PRED_STYLE)
        ax_l.axhline(math.log(4 / 3), color="k", lw=0.8, ls="--", label=r"$\log(4/3)$ (loss at $r=\log 3$)")
        for ax in axes.flat:
            ax.axvline(exit_t, color="0.5", lw=0.8, ls=(0, (1, 3)))
            _tau_axis(ax, t)
        ax_w.axvline(np.nan, color="0.5", lw=0.8, ls=(0, (1, 3)),
                     label=f"noise-free exit $t_\\times = {exit_t:.2f}\\,\\tau_1$")
        ax_m.set_ylabel("train margin (mean; band: min–max)")
        ax_m.set_title("(a) margins")
        ax_w.set_ylabel(r"fraction of margins in $[0, \log 3]$")
        ax_w.set_title("(b) margins inside the Thm 4.2 window")
        ax_w.legend(loc="lower left")
        _plain_log_y(ax_l)
        ax_l.set_ylabel("mean training loss")
        ax_l.set_title("(c) loss")
        ax_l.legend(loc="lower left")
        ax_e.set_yscale("symlog", linthresh=1e-4)
        ax_e.set_ylim(bottom=0)
        ax_e.set_ylabel("error (symlog axis, linear below $10^{-4}$)")
        ax_e.set_title("(d) train / test error")
        ax_m.legend(loc="upper left", fontsize=6.5)
        handles, labels = ax_e.get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=6.5, bbox_to_anchor=(0.5, 0.0))
        return save(fig, out_dir, "q6_after_tau1", {k: np.concatenate(v) for k, v in rows.items()})


BETA_MARKERS = ("o", "s", "^", "D", "v", "P")


def plot_q7(data: dict, out_dir) -> list[Path]:
    """(a) GD mean margin against s = β²t/(Kτ) for every (β, K) with the noise-free flow; (b) Adam
    on the same axes; (c) Adam against βt with the sign-descent estimate; (d) GD at a fixed step
    size: relative deviation from the flow against the per-step gain h = 2ηβ²/K, with the
    noise-free Euler recursion."""
    from dpolab.figures.style import k_palette

    Ks, betas, s = data["K"], data["betas"], data["s"]
    pal = k_palette(Ks)
    rows = {k: [] for k in ("beta", "K", "s", "beta_t", "gd_margin", "gd_ci", "adam_margin", "adam_ci",
                            "adam_estimate")}
    with figure_context():
        fig, axes = plt.subplots(2, 2, figsize=(7.0, 5.8))
        (ax_g, ax_a), (ax_bt, ax_d) = axes
        for b, beta in enumerate(betas):
            for k, K in enumerate(Ks):
                col, mk = pal[K if float(K).is_integer() else K], BETA_MARKERS[b % len(BETA_MARKERS)]
                g, gh = mean_ci(data["gd_margin_mean"][b, k])
                a, ah = mean_ci(data["adam_margin_mean"][b, k])
                bt = beta * s * K / beta**2  # βt with t = sK/β² (τ = 1)
                ax_g.errorbar(s, g, yerr=gh, color=col, marker=mk, ls="none", ms=4, mfc="none", capsize=2)
                ax_a.errorbar(s, a, yerr=ah, color=col, marker=mk, ls="none", ms=4, mfc="none", capsize=2)
                ax_bt.errorbar(bt, a, yerr=ah, color=col, marker=mk, ls="none", ms=4, mfc="none", capsize=2)
                ax_bt.plot(bt, data["adam_pred"][b, k], color=col, lw=0.8, ls=":")
                for key, val in (("beta", beta), ("K", K), ("s", s), ("beta_t", bt), ("gd_margin", g),
                                 ("gd_ci", gh), ("adam_margin", a), ("adam_ci", ah),
                                 ("adam_estimate", data["adam_pred"][b, k])):
                    rows[key].append(np.broadcast_to(np.asarray(val, dtype=float), s.shape))
        for ax in (ax_g, ax_a):
            ax.plot(data["s_dense"], data["flow_dense"], color="k", lw=1.0,
                    label=r"noise-free flow $r + e^r = 1 + 2s$")
            ax.set_xlabel(r"$s = \beta^2 t/(K\tau)$")
        for K in Ks:
            ax_g.plot([], [], color=pal[K if float(K).is_integer() else K], lw=4, label=f"K = {K:g}")
        for b, beta in enumerate(betas):
            ax_g.plot([], [], color="0.3", marker=BETA_MARKERS[b % len(BETA_MARKERS)], ls="none",
                      mfc="none", label=f"β = {beta:g}")
        ax_g.set_ylabel("mean train margin")
        ax_g.set_title("(a) GD: collapse on $s$")
        ax_g.legend(loc="upper left", fontsize=6.5, ncol=2)
        _plain_log_y(ax_a)
        ax_a.set_ylabel("mean train margin")
        ax_a.set_title("(b) Adam on the same axes: no collapse")
        ax_a.legend(loc="upper left", fontsize=6.5)
        _plain_log_x(ax_bt)
        _plain_log_y(ax_bt)
        ax_bt.plot([], [], color="0.3", lw=0.8, ls=":", label=r"sign-descent estimate $2\beta t(1+\dots)$")
        ax_bt.legend(loc="upper left", fontsize=6.5)
        ax_bt.set_xlabel(r"$\beta t$ (Adam's scale, $t = n\eta$)")
        ax_bt.set_ylabel("mean train margin")
        ax_bt.set_title(r"(c) Adam against $\beta t$")
        dev, dh = mean_ci(data["B_margin_mean"] / data["B_flow"] - 1)
        ax_d.errorbar(data["B_h"], dev, yerr=dh, color="C0", marker="o", ls="none", capsize=2,
                      label=f"GD, η = {data['B_eta']:.3g}, K = {data['B_K']:g} (β labelled)")
        for i, (h, y, beta) in enumerate(zip(data["B_h"], dev, data["B_betas"])):
            last = i == len(dev) - 1
            ax_d.annotate(f"β={beta:g}", (h, y), textcoords="offset points", xytext=(-5 if last else -2, 6),
                          fontsize=6.5, ha="right")
        ax_d.plot(data["B_h_dense"], data["B_dense"] / data["B_flow"] - 1, color="k", lw=1.0,
                  label="noise-free Euler recursion")
        ax_d.axhline(data["tol"], color="0.5", ls="--", lw=0.8, label=f"{data['tol']:.0%} deviation")
        ax_d.axvline(data["B_h_star"], color="0.5", ls=":", lw=0.8)
        _plain_log_x(ax_d)
        ax_d.set_xlabel(r"per-step gain $h = 2\eta\beta^2/K$")
        ax_d.set_ylabel(f"margin / flow − 1 at s = {data['B_s']:.2f}")
        ax_d.set_title("(d) GD at a fixed step size: discretisation")
        ax_d.legend(loc="upper left", fontsize=6.5)
        fig.tight_layout()
        table = {k: np.concatenate(v) for k, v in rows.items()}
        paths = save(fig, out_dir, "q7_beta", table)
    from dpolab.figures.style import write_csv

    paths.append(write_csv(Path(out_dir) / "q7_beta_fixed_eta.csv", {
        "beta": data["B_betas"], "steps": data["B_steps"], "h": data["B_h"], "deviation_mean": dev,
        "deviation_ci": dh, "recursion_deviation": data["B_recursion"] / data["B_flow"] - 1}))
    return paths


def plot_q9(data: dict, out_dir) -> list[Path]:
    """(a) clean test margin against ε at the first and last time (theorem regime) with the
    noise-free predictions; (b) DPO margin against s at each ε with its flow and saturation;
    (c) mean per-value test error against ε (v = 0.3) with the first-order model; (d) mean and
    worst-value test error against K at the largest ε and t = τ_1, with the model."""
    losses, eps, Ks, tm = [str(x) for x in data["losses"]], data["eps"], data["K"], data["t_mult"]
    rows = {k: [] for k in ("loss", "t_mult", "eps", "margin", "margin_ci", "margin_pred", "risk",
                            "risk_ci", "risk_model")}
    worst_rows = {k: [] for k in ("loss", "K", "worst_risk", "worst_ci", "mean_risk", "mean_ci",
                                  "model_mean", "model_worst")}
    pool = lambda x: x.reshape(x.shape[:-2] + (-1,))  # noqa: E731  (K, S) -> K·S
    names = {"dpo": "DPO", "rdpo": "rDPO", "cdpo": "cDPO"}
    with figure_context():
        fig, axes = plt.subplots(2, 2, figsize=(7.0, 6.4))
        (ax_m, ax_s), (ax_r, ax_w) = axes
        for l, loss in enumerate(losses):
            col = LOSS_COLORS.get(loss, "C7")
            for j in (0, len(tm) - 1):
                ls = "-" if j == 0 else "--"
                m, mh = mean_ci(pool(data["test_margin_mean"][l, :, :, 0, j]))
                q, qh = mean_ci(pool(data["test_risk"][l, :, :, 1, j]))
                lab = f"{names.get(loss, loss)}, t = {tm[j]:g}τ$_1$"
                ax_m.errorbar(eps, m, yerr=mh, color=col, ls=ls, marker="o", ms=3, capsize=2, label=lab)
                ax_m.plot(eps, data["margin_pred"][l, :, j], **(PRED_STYLE | {"color": col}))
                ax_r.errorbar(eps, q, yerr=qh, color=col, ls=ls, marker="o", ms=3, capsize=2)
                for key, val in (("loss", l), ("t_mult", tm[j]), ("eps", eps), ("margin", m),
                                 ("margin_ci", mh), ("margin_pred", data["margin_pred"][l, :, j]),
                                 ("risk", q), ("risk_ci", qh),
                                 ("risk_model", data["risk_model"][:, :, 0].mean(axis=1))):
                    rows[key].append(np.broadcast_to(np.asarray(val, dtype=float), eps.shape))
        d = losses.index("dpo")  # at τ_1 the three losses coincide (same data, same direction)
        w, wh = mean_ci(data["test_risk_worst"][d, -1, :, 1, 0])
        a, ah = mean_ci(data["test_risk"][d, -1, :, 1, 0])
        ax_w.errorbar(Ks, w, yerr=wh, color=LOSS_COLORS["dpo"], marker="o", ms=3, capsize=2,
                      label="measured (DPO): worst value")
        ax_w.errorbar(Ks, a, yerr=ah, color=LOSS_COLORS["dpo"], marker="s", ms=3, capsize=2, ls=":",
                      mfc="none", label="measured (DPO): mean")
        for key, val in (("loss", d), ("K", Ks), ("worst_risk", w), ("worst_ci", wh), ("mean_risk", a),
                         ("mean_ci", ah), ("model_mean", data["risk_model"][-1, :, 0]),
                         ("model_worst", data["risk_model"][-1, :, 1])):
            worst_rows[key].append(np.broadcast_to(np.asarray(val, dtype=float), Ks.shape))
        ax_r.plot(eps, data["risk_model"][:, :, 0].mean(axis=1), color="k", lw=1.0,
                  label="first-order model, t = τ$_1$")
        ax_w.plot(Ks, data["risk_model"][-1, :, 1], color="k", lw=1.0, marker="x",
                  label="model: worst value")
        ax_w.plot(Ks, data["risk_model"][-1, :, 0], color="k", lw=1.0, ls=":", marker="x",
                  label="model: mean")
        ax_m.plot([], [], label="noise-free prediction", **PRED_STYLE)
        for e, ep in enumerate(eps):
            c = plt.cm.plasma(0.85 * e / max(1, len(eps) - 1))
            ax_s.plot(data["s_dense"], data["dpo_flow_dense"][e], color=c, lw=1.0, label=f"ε = {ep:g}")
            m = pool(data["test_margin_mean"][d, e, :, 0, :].transpose(1, 0, 2)).mean(axis=-1)
            ax_s.plot(data["s"], m, "o", color=c, ms=3.5, mfc="none")
            if np.isfinite(data["dpo_saturation"][e]):
                ax_s.axhline(data["dpo_saturation"][e], color=c, lw=0.7, ls="--")
        ax_m.set_xlabel("flip rate ε")
        ax_m.set_ylabel("clean test margin (theorem regime)")
        ax_m.set_title("(a) margins and noise-free predictions")
        ax_s.set_xlabel(r"$s = \beta^2 t/(K\tau)$")
        ax_s.set_ylabel("DPO clean test margin")
        ax_s.set_title(r"(b) DPO: flow (lines), runs (o), $\log\frac{1-\varepsilon}{\varepsilon}$ (dashed)")
        ax_s.legend(loc="upper left", fontsize=6.5, ncol=2)
        ax_r.set_xlabel("flip rate ε")
        ax_r.set_ylabel(f"test error, mean over values (v = {data['v'][1]:g})")
        ax_r.set_title("(c) test error per value")
        ax_r.legend(loc="upper left", fontsize=6.5)
        _k_axis(ax_w, Ks)
        ax_w.set_xlim(Ks[0] / 1.5, Ks[-1] * 1.5)
        ax_w.set_ylim(top=ax_w.get_ylim()[1] * 1.2)  # room for the legend
        ax_w.set_ylabel(f"test error at ε = {eps[-1]:g}, t = τ$_1$")
        ax_w.set_title("(d) worst value vs mean (rDPO, cDPO: same at τ$_1$)")
        ax_w.legend(loc="upper left", fontsize=6.5)
        handles, labels = ax_m.get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=(len(handles) + 1) // 2, fontsize=6.5,
                   bbox_to_anchor=(0.5, 0.0))
        paths = save(fig, out_dir, "q9_flips", {k: np.concatenate(v) for k, v in rows.items()})
    from dpolab.figures.style import write_csv

    paths.append(write_csv(Path(out_dir) / "q9_flips_worst_value.csv",
                           {k: np.concatenate(v) for k, v in worst_rows.items()}))
    return paths
