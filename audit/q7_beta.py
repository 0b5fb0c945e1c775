"""Audit Q7: sensitivity to β. Do margins collapse on s = β²t/(Kτ), and where does that break?

Theory. The GD recursion r(n+1) = r(n) + (ηβ²/N) C σ(−r(n)) (THEORY §1.2) contains β and η only
through ηβ², and the loss weights σ(−r) only through r. So two GD runs on the same data with the
same ηβ² and step count have the SAME margins at every step, whatever β: the collapse on β²t is
exact up to rounding (Part A; a pass/fail check). Across K it holds up to noise and cross-pair
terms (the noise-free recursion, `dpolab.audit.q5_adam.noise_free_recursion`, is the same for every K at
the same h = 2ηβ²/K). At a FIXED step size η the per-step margin gain h = 2ηβ²/K grows as β², so
reaching the same s takes n = 2s/h steps and the margins follow the Euler discretisation of the
flow instead of the flow (Part B: the recursion at (h, n) predicts the deviation exactly for
v → 0; GD never diverges here since r ↦ r + hσ(−r) is increasing for h < 4). Adam breaks the time
scale altogether (Part C): its sign-descent step moves the margin ≈ 2βη per step, so its margins
depend on βt, not on β²t/K (Q5's estimate r ≈ 2βt·(1 + v(d−K−1)√(2/(π·2Q)))).

Sweeps ("im-li", distinct tokens, d = 5Q, v = 1/(32√Q)): Part A and C: for each β one sweep over
K × t_mult (η = t_mult·τ_1/steps ∝ 1/β²); the sweeps share their grid, hence their PRNG keys (point
i uses fold_in(root, i)), hence their data. Part B: fixed η, K = K_B, steps n_0/β², one sweep per β
(all at point 0: same data).

References:
    [IL] Im & Li, arXiv 2408.03459: Lemma 4.1, §1.6 time rescaling; THEORY §1.2, §1.6, §1.8.
"""
from __future__ import annotations

import math

import numpy as np

from dpolab.audit.common import per_point, sweep_spec
from dpolab.checks.result import CheckResult
from dpolab.sims.risk import fmt_ci, mean_ci
from dpolab.theory import im_li
from dpolab.theory.extensions import noise_free_recursion, sign_descent_margin

NAME = "q7-beta"
TITLE = "Q7. β sensitivity: do margins collapse on β²t/(Kτ) across β and K, and where does it break?"
#: Largest relative difference across β allowed for the exact GD collapse: float64 rounding over
#: ≤ 1024 steps accumulates ~1e-13 relative; any real β-dependence is O(1) (Adam: a factor β²).
EXACT_RTOL = 1e-9
#: Part B reports the largest h keeping the margin within this relative distance of the flow.
DISCRETISATION_TOL = 0.05
METRICS = ("margin_mean", "margin_min", "margin_max", "test_margin_mean", "nonfinite")
SETTINGS = {
    True: dict(Q=10, n_test=20, seeds=3, steps=16, Ks=(2,), betas=(0.6, 1.0, 1.7), t_mult=(1.0, 4.0),
               K_B=2, n0=16, betas_B=(1.0, 4.0), s_B_mult=4.0),
    False: dict(Q=50, n_test=50, seeds=6, steps=64, Ks=(1, 4, 16), betas=(0.3, 1.0, 3.0),
                t_mult=(0.5, 1.0, 2.0, 4.0), K_B=4, n0=1024, betas_B=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
                s_B_mult=4.0),
}


def euler_threshold(s_end, tol=DISCRETISATION_TOL, n_max=4096):
    """Fewest steps n (largest h = 2s/n) for which the noise-free GD margin at s = β²t/(Kτ)
    = s_end is within `tol` (relative) of the flow; returns (n, h)."""
    flow = float(im_li.dpo_noise_free(s_end, K=1, beta=1.0))
    for n in range(1, n_max + 1):
        if abs(noise_free_recursion(2 * s_end / n, n)[-1] / flow - 1) <= tol:
            return n, 2 * s_end / n
    return n_max, 2 * s_end / n_max


def adam_estimate(betas, Ks, t_mult, *, Q):
    """(B, K, T) sign-descent margin 2βt·(1 + v(d−K−1)√(2/(π·2Q))) at t = t_mult·τ_1(K, β), in the
    theorem regime (d = 5Q, v = 1/(32√Q), distinct tokens); see `dpolab.audit.q5_adam.predictions`."""
    b, K, tm = betas[:, None, None], Ks[None, :, None], t_mult[None, None, :]
    v = float(im_li.default_v(Q))
    t = tm * im_li.tau_1(K=K, beta=b)
    return sign_descent_margin(t, beta=b, v=v, d=im_li.default_d(Q), K=K, n_pair=2 * Q)


def compute(ctx) -> dict:
    """Parts A (GD), C (Adam) over β × K × t_mult, Part B (GD, fixed η) over β."""
    cfg = SETTINGS[ctx.quick]
    S, Ks, tm, betas = cfg["seeds"], cfg["Ks"], np.asarray(cfg["t_mult"]), cfg["betas"]
    base = {"Q": cfg["Q"], "n_test": cfg["n_test"], "steps": cfg["steps"]}
    out = {}
    for opt in ("gd", "adam"):
        runs = [ctx.sweep(f"{opt}-beta{b:g}", sweep_spec(S, base | {"optimizer": opt, "beta": b},
                                                         {"K": list(Ks), "t_mult": list(tm)},
                                                         quick=ctx.quick)) for b in betas]
        for m in METRICS:  # (B, K, T, S)
            out[f"{opt}_{m}"] = np.stack([per_point(c, m, S).reshape(len(Ks), len(tm), S) for c in runs])
    gd = out["gd_margin_mean"]
    ref = gd[betas.index(1.0) if 1.0 in betas else 0]
    rel = np.abs(gd - ref) / np.abs(ref)
    s_grid = tm * im_li.LOG3 / 5  # s = β²t/(Kτ) at t = t_mult·τ_1
    h_grid = 2 * s_grid / cfg["steps"]
    # Part B: fixed η; β = 1 reaches s_B in n0 steps
    s_B = cfg["s_B_mult"] * im_li.LOG3 / 5
    eta_B = s_B * cfg["K_B"] / cfg["n0"]
    steps_B = [int(round(cfg["n0"] / b**2)) for b in cfg["betas_B"]]
    part_b = [ctx.sweep(f"fixed-eta-beta{b:g}", sweep_spec(
        S, {"Q": cfg["Q"], "n_test": cfg["n_test"], "K": cfg["K_B"], "beta": b, "eta": eta_B, "steps": n},
        {}, quick=ctx.quick)) for b, n in zip(cfg["betas_B"], steps_B)]
    h_B = 2 * eta_B * np.asarray(cfg["betas_B"]) ** 2 / cfg["K_B"]
    n_star, h_star = euler_threshold(s_B)
    h_dense = np.geomspace(h_B.min(), 2 * s_B, 60)
    n_dense = np.maximum(1, np.round(2 * s_B / h_dense)).astype(int)
    collapse = {f"{opt}_collapse": collapse_scores(out[f"{opt}_margin_mean"], betas, Ks, tm)
                for opt in ("gd", "adam")}
    return {**out, **collapse, "gd_rel_spread_beta": rel.max(axis=0), "exact_rtol": np.float64(EXACT_RTOL),
            "gd_pred": noise_free_recursion(h_grid, cfg["steps"])[-1],
            "adam_pred": adam_estimate(np.asarray(betas), np.asarray(Ks), tm, Q=cfg["Q"]),
            "flow": im_li.dpo_noise_free(s_grid, K=1, beta=1.0),
            "s_dense": np.linspace(0, s_grid[-1], 100),
            "flow_dense": im_li.dpo_noise_free(np.linspace(0, s_grid[-1], 100), K=1, beta=1.0),
            "betas": np.asarray(betas), "K": np.asarray(Ks, dtype=float), "t_mult": tm, "s": s_grid,
            "B_betas": np.asarray(cfg["betas_B"]), "B_steps": np.asarray(steps_B, dtype=float),
            "B_h": h_B, "B_eta": np.float64(eta_B), "B_K": np.float64(cfg["K_B"]), "B_s": np.float64(s_B),
            **{f"B_{m}": np.stack([per_point(c, m, S)[0] for c in part_b]) for m in METRICS},
            "B_recursion": np.asarray([noise_free_recursion(h, n)[-1] for h, n in zip(h_B, steps_B)]),
            "B_flow": np.float64(im_li.dpo_noise_free(s_B, K=1, beta=1.0)),
            "B_n_star": np.float64(n_star), "B_h_star": np.float64(h_star),
            "B_h_dense": 2 * s_B / n_dense,
            "B_dense": np.asarray([noise_free_recursion(2 * s_B / n, n)[-1] for n in n_dense]),
            "Q": np.float64(cfg["Q"]), "steps": np.float64(cfg["steps"]), "seeds": np.float64(S),
            "tol": np.float64(DISCRETISATION_TOL)}


def render(data, ctx) -> list:
    """`q7_beta.*`: GD and Adam margins against s, Adam against βt, fixed-η discretisation."""
    from dpolab.figures.audit_dynamics import plot_q7

    return plot_q7(data, ctx.dir)


def exact_collapse(data):
    """(largest relative difference across β, whether it is within EXACT_RTOL)."""
    worst = float(np.max(data["gd_rel_spread_beta"]))
    return worst, worst <= float(data["exact_rtol"])


def adam_ratio(data):
    """Adam margin / sign-descent estimate 2βt(1 + …): (B, K, T) means and CI half-widths."""
    return mean_ci(data["adam_margin_mean"] / data["adam_pred"][..., None])


def goodman_kruskal_gamma(x, y):
    """γ = (C − D)/(C + D) over the pairs with distinct x (C, D: concordant, discordant pairs);
    γ = 1 exactly when y increases with x across every pair that x tells apart (ties in x, such
    as equal s for different β and K, are the collapse itself and are left out)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    upper = np.triu_indices(len(x), 1)
    prod = (np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :]))[upper]
    return float(((prod > 0).sum() - (prod < 0).sum()) / max(1, (prod != 0).sum()))


def collapse_scores(margins, betas, Ks, t_mult):
    """Per seed, γ (`goodman_kruskal_gamma`) between a time scale and the mean margin over every
    (β, K, t): s = β²t/(Kτ) = t_mult·log3/5 and βt = t_mult·K·log3/(5β) (τ = 1). A family of curves
    that collapses onto one increasing curve of a scale has γ = 1 on it.

    Args: margins (B, K, T, S). betas (B,), Ks (K,), t_mult (T,).
    Returns: (2, S) γ for (s, βt).
    """
    b, K, tm = np.meshgrid(np.asarray(betas, dtype=float), np.asarray(Ks, dtype=float), t_mult, indexing="ij")
    scales = [np.round(x, 12) for x in (tm * im_li.LOG3 / 5, tm * K * im_li.LOG3 / (5 * b))]
    flat = margins.reshape(-1, margins.shape[-1])
    return np.asarray([[goodman_kruskal_gamma(x.ravel(), flat[:, j]) for j in range(flat.shape[1])]
                       for x in scales])


def _join(values, fmt="g"):
    return ", ".join(f"{v:{fmt}}" for v in values)


def _section_a(data):
    Ks = data["K"]
    worst, ok = exact_collapse(data)
    lines = [f"**A. GD, exact collapse across β.** Largest relative difference of the mean margin "
             f"between β values at the same (K, s, seed): {worst:.2g} (tolerance "
             f"{data['exact_rtol']:.0e}: {'PASS' if ok else 'FAIL'}).", "",
             "Across K at the same s (mean margin ± 95% CI over seeds; noise-free GD recursion "
             "alongside):", "",
             "| s | noise-free | " + " | ".join(f"K = {k:g}" for k in Ks) + " |",
             "|---|---|" + "---|" * len(Ks)]
    for j, s in enumerate(data["s"]):
        cells = [fmt_ci(*mean_ci(data["gd_margin_mean"][0, k, j]), 4) for k in range(len(Ks))]
        lines.append(f"| {s:.3g} | {data['gd_pred'][j]:.4g} | " + " | ".join(cells) + " |")
    return lines + ["", f"Largest spread across K relative to the noise-free value: "
                    f"{k_spread(data):.2g}.", ""]


def k_spread(data):
    """Largest range over K of the seed-mean GD margin at equal s, relative to the noise-free one."""
    return float(np.max(np.ptp(data["gd_margin_mean"][0].mean(axis=-1), axis=0) / data["gd_pred"]))


def _span(margins):
    """Largest ratio max/min over (β, K) of the seed-mean margin at equal s."""
    m = margins.mean(axis=-1)
    return float(np.max(m.max(axis=(0, 1)) / m.min(axis=(0, 1))))


def _section_c(data):
    Ks, betas = data["K"], data["betas"]
    ratio, half = adam_ratio(data)
    gamma = {opt: [fmt_ci(*mean_ci(data[f"{opt}_collapse"][i]), 4) for i in (0, 1)]
             for opt in ("gd", "adam")}
    lines = [f"**C. Adam.** Same grid: at the same s the mean margins span a factor "
             f"{_span(data['adam_margin_mean']):.3g} across (β, K) (GD: "
             f"{_span(data['gd_margin_mean']):.3g}). Collapse test: Goodman–Kruskal γ between a time "
             "scale and the margin over all (β, K, t) (1: one increasing curve), per seed: GD "
             f"γ(s) = {gamma['gd'][0]}, γ(βt) = {gamma['gd'][1]}; Adam γ(s) = {gamma['adam'][0]}, "
             f"γ(βt) = {gamma['adam'][1]}. Measured / sign-descent estimate "
             "2βt(1 + v(d−K−1)√(2/(π·2Q))) at the first → last t:", "",
             "| β | " + " | ".join(f"K = {k:g}" for k in Ks) + " |", "|---|" + "---|" * len(Ks)]
    for b, beta in enumerate(betas):
        lines.append(f"| {beta:g} | " + " | ".join(
            f"{fmt_ci(ratio[b, k, 0], half[b, k, 0], 2)} → {fmt_ci(ratio[b, k, -1], half[b, k, -1], 2)}"
            for k in range(len(Ks))) + " |")
    return lines + [""]


def beta_limit(data):
    """The largest β at Part B's fixed η and K whose per-step gain stays ≤ h*."""
    return math.sqrt(data["B_h_star"] * data["B_K"] / (2 * data["B_eta"]))


def _section_b(data):
    lines = [f"**B. GD at a fixed step size** η = {data['B_eta']:.4g}, K = {data['B_K']:g}, run to "
             f"s = {data['B_s']:.3g} (flow value r = {data['B_flow']:.4g}); β grows, so the steps "
             "n = 2s/h shrink:", "",
             "| β | steps | h = 2ηβ²/K | mean margin | Euler recursion | rel. dev. from flow |",
             "|---|---|---|---|---|---|"]
    for i, beta in enumerate(data["B_betas"]):
        dev = mean_ci(data["B_margin_mean"][i] / data["B_flow"] - 1)
        lines.append(f"| {beta:g} | {data['B_steps'][i]:g} | {data['B_h'][i]:.3g} | "
                     f"{fmt_ci(*mean_ci(data['B_margin_mean'][i]), 4)} | "
                     f"{data['B_recursion'][i]:.4g} | {fmt_ci(*dev, 2)} |")
    bad = int(sum(data[k].sum() for k in ("gd_nonfinite", "adam_nonfinite", "B_nonfinite")))
    return lines + ["", f"The noise-free recursion stays within {data['tol']:.0%} of the flow at "
                    f"s = {data['B_s']:.3g} for n ≥ {data['B_n_star']:g} steps, i.e. h ≤ "
                    f"{data['B_h_star']:.3g}: at η = {data['B_eta']:.4g}, K = {data['B_K']:g} that is "
                    f"β ≤ {beta_limit(data):.3g}. Non-finite runs: {bad}.", ""]


def report(data) -> str:
    """The Q7 section of audit.md (every number from `data`)."""
    head = [f"## {TITLE}", "",
            f"Parts A/C: β ∈ {{{_join(data['betas'])}}}, K ∈ {{{_join(data['K'])}}}, t = t_mult·τ_1 "
            f"with t_mult ∈ {{{_join(data['t_mult'])}}} (s = β²t/(Kτ) = t_mult·log3/5), "
            f"{data['steps']:g} steps (η ∝ 1/β²), Q = {data['Q']:g}, {int(data['seeds'])} seeds, the "
            "same data for every β.", ""]
    return "\n".join(head + _section_a(data) + _section_c(data) + _section_b(data) + [
        f"![collapse on β²t/(Kτ), Adam, fixed step size]({NAME}/q7_beta.png)", "",
        "**Verdict:** " + verdict_text(data)])


def verdict_text(data) -> str:
    """GD: exact in β, K-spread, discretisation; Adam: the scale it does collapse on."""
    worst, ok = exact_collapse(data)
    ratio, _ = adam_ratio(data)
    dev = data["B_margin_mean"].mean(axis=-1) / data["B_flow"] - 1
    gd_s, adam_s, adam_bt = (fmt_ci(*mean_ci(data[k][i]), 4) for k, i in
                             (("gd_collapse", 0), ("adam_collapse", 0), ("adam_collapse", 1)))
    return (f"under GD the collapse across β is exact ({'within' if ok else 'NOT within'} "
            f"{data['exact_rtol']:.0e}; largest difference {worst:.2g}) and holds across K to "
            f"{k_spread(data):.2g} relative; at a fixed step size it fails through discretisation "
            f"(deviation from the flow {dev[0]:+.2g} at h = {data['B_h'][0]:.2g} up to {dev[-1]:+.2g} at "
            f"h = {data['B_h'][-1]:.2g}, {data['tol']:.0%} reached at h ≈ {data['B_h_star']:.2g}, as the "
            f"noise-free Euler recursion predicts); Adam does not collapse on s (γ(s) = {adam_s}) "
            f"but on βt (γ(βt) = {adam_bt}; GD: γ(s) = {gd_s}): its step "
            "moves the margin by ≈ 2βη whatever K; the sign-descent line 2βt(1 + …) holds early "
            f"(measured/estimate up to {ratio[..., 0].max():.2g}) and overshoots later (down to "
            f"{ratio[..., -1].min():.2g}), as Adam's RMS normaliser remembers larger past gradients.")


def finding(data) -> CheckResult:
    """Registry entry: the exact GD collapse across β is a sharp prediction (pass/fail)."""
    worst, ok = exact_collapse(data)
    return CheckResult(id=f"audit/{NAME}", reference="THEORY §1.2 (GD recursion in ηβ²), §1.6",
                       claim="under GD the margins depend on β and η only through ηβ² (collapse on β²t)",
                       predicted="identical margins across β at equal ηβ², same data",
                       measured={"max relative difference": worst}, tolerance=float(data["exact_rtol"]),
                       why=f"float64 rounding over ≤ {int(data['steps'])} steps is ~1e-13; "
                           + verdict_text(data), verdict="pass" if ok else "fail")
