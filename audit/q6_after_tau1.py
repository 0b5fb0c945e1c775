"""Audit Q6: what happens after τ_1? Margins, loss, train and test error up to 64·τ_1.

Theorems 4.2–4.3 stop at τ_1 = Kτ·log3/(5β²). Past it nothing is claimed, but the noise-free
closed form r + e^r = 1 + 2β²t/(Kτ) (THEORY §1.6, `dpolab.theory.im_li.dpo_noise_free`) keeps
describing the mean margin: it reaches log 3 — the top of the theorem's window [0, log 3] — when
log 3 + 3 = 1 + 2β²t/(Kτ), i.e. at t× = K(2 + log 3)/(2β²) = τ_1·5(2 + log 3)/(2 log 3) ≈ 7.05·τ_1
for every K and β (`exit_time_ratio`). With noise the margins spread around that curve, so the
largest margin leaves the window earlier and the smallest later. The generalization bound is a
statement at τ_1 only; we ask whether the measured test error stays below it afterwards (the
refined bound is non-vacuous only from Q ≈ 90, so the theorem regime uses Q = 100).

Sweeps ("im-li", GD, η = t_mult·τ_1/steps): t_mult from 1 to 64 (dynamic: one compilation per
regime), `checkpoints` so that the Theorem 4.2 sandwich is also checked at the recorded times
≤ τ_1 of each run; the theorem regime (distinct tokens, d = 5Q, v = 1/(32√Q)) and the shared-token
regime (one Yes/No pair, v = 0.3: outside the theorem, Z = K).

References:
    [IL] Im & Li, arXiv 2408.03459: Theorem 4.2 (window at τ_1), Theorem 4.3 (bound at τ_1),
    §1.6 closed form; THEORY §1.4–1.6.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from dpolab.audit.common import per_point, sweep_spec
from dpolab.checks.result import CheckResult
from dpolab.sims.risk import clopper_pearson, fmt_ci, mean_ci
from dpolab.theory import im_li
from dpolab.theory.extensions import exit_time_ratio, noise_free_recursion

NAME = "q6-after-tau1"
TITLE = "Q6. After τ_1: do the margins leave [0, log 3] when the closed form says, and does the " \
        "test error stay below the bound?"
REGIMES = {"theorem": {"tokens": "distinct"}, "shared": {"tokens": "yes_no", "v": 0.3}}
SETTINGS = {
    True: dict(seeds=3, steps=16, checkpoints=1, t_mult=(1.0, 4.0, 16.0, 64.0),
               regimes={"theorem": dict(K=2, Q=10, n_test=20)}),
    False: dict(seeds=6, steps=256, checkpoints=64,
                t_mult=(1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 16.0, 32.0, 64.0),
                regimes={"theorem": dict(K=2, Q=100, n_test=200), "shared": dict(K=4, Q=50, n_test=100)}),
}
METRICS = ("margin_mean", "margin_min", "margin_max", "in_window", "final_loss", "train_accuracy",
           "test_risk", "test_margin_mean", "sandwich_frac", "nonfinite")


def crossing(x, y, level, *, falling):
    """First x where y crosses `level` (falling: from ≥ to <; else from ≤ to >), by linear
    interpolation in log x; NaN if it never does. x (n,) increasing, y (n,)."""
    y = np.asarray(y, dtype=float)
    past = y < level if falling else y > level
    if not past.any():
        return float("nan")
    j = int(np.argmax(past))
    if j == 0:
        return float(x[0])
    lx = np.log(np.asarray(x, dtype=float))
    frac = (level - y[j - 1]) / (y[j] - y[j - 1])
    return float(np.exp(lx[j - 1] + frac * (lx[j] - lx[j - 1])))


def compute(ctx) -> dict:
    """One sweep over t_mult per regime; metrics (R, T, S), noise-free predictions, crossings."""
    cfg = SETTINGS[ctx.quick]
    S, steps, tm = cfg["seeds"], cfg["steps"], np.asarray(cfg["t_mult"])
    regimes = list(cfg["regimes"])
    out = {m: [] for m in METRICS}
    bounds, errors, n_seen, crossings = [], [], [], []
    for regime in regimes:
        rc = cfg["regimes"][regime]
        v = REGIMES[regime].get("v", float(im_li.default_v(rc["Q"])))
        fixed = rc | {"tokens": REGIMES[regime]["tokens"], "v": v, "steps": steps,
                      "checkpoints": cfg["checkpoints"]}
        cols = ctx.sweep(regime, sweep_spec(S, fixed, {"t_mult": list(tm)}, quick=ctx.quick))
        for m in METRICS:
            out[m].append(per_point(cols, m, S))
        bounds.append([cols["bound_simplified"][0], cols["bound_refined"][0]])
        n = 2 * rc["K"] * rc["n_test"]
        n_seen.append(n)
        errors.append(np.rint(out["test_risk"][-1] * n).sum(axis=1))
        mm, iw = out["margin_max"][-1], out["in_window"][-1]
        crossings.append([[crossing(tm, mm[:, s], im_li.LOG3, falling=False) for s in range(S)],
                          [crossing(tm, iw[:, s], 0.5, falling=True) for s in range(S)],
                          [crossing(tm, out["margin_mean"][-1][:, s], im_li.LOG3, falling=False)
                           for s in range(S)],
                          [crossing(tm, out["margin_min"][-1][:, s], im_li.LOG3, falling=False)
                           for s in range(S)]])
    errors = np.asarray(errors)
    cp = np.asarray([[clopper_pearson(int(e), int(n) * S) for e in row]
                     for row, n in zip(errors, n_seen)])
    h = 2 * tm * im_li.LOG3 / (5 * steps)  # 2ηβ²/K with η = t_mult·τ_1/steps
    pred = noise_free_recursion(h, steps)[-1]
    return {**{m: np.asarray(v) for m, v in out.items()},
            "regimes": np.asarray(regimes), "t_mult": tm,
            "K": np.asarray([cfg["regimes"][r]["K"] for r in regimes], dtype=float),
            "Q": np.asarray([cfg["regimes"][r]["Q"] for r in regimes], dtype=float),
            "n_test": np.asarray([cfg["regimes"][r]["n_test"] for r in regimes], dtype=float),
            "v": np.asarray([REGIMES[r].get("v", float(im_li.default_v(cfg["regimes"][r]["Q"])))
                             for r in regimes]),
            "margin_pred": pred, "margin_flow": im_li.dpo_noise_free(tm * im_li.LOG3 / 5, K=1, beta=1.0),
            "loss_pred": np.logaddexp(0.0, -pred), "bounds": np.asarray(bounds),
            "test_errors": errors, "n_test_pooled": np.asarray(n_seen, dtype=float) * S,
            "test_risk_cp": cp, "crossings": np.asarray(crossings),
            "exit_ratio_pred": np.float64(exit_time_ratio()),
            # the noise-free curve interpolated on the same t grid (separates grid from physics)
            "exit_ratio_grid": np.float64(crossing(tm, pred, im_li.LOG3, falling=False)),
            "steps": np.float64(steps), "seeds": np.float64(S), "checkpoints": np.float64(cfg["checkpoints"]),
            "beta": np.float64(1.0)}


def render(data, ctx) -> list:
    """`q6_after_tau1.*`: margins, window fraction, loss and errors against t/τ_1."""
    from dpolab.figures.audit_dynamics import plot_q6

    return plot_q6(data, ctx.dir)


CROSSING_NAMES = ("largest margin > log 3", "in-window fraction < 1/2", "mean margin > log 3",
                  "smallest margin > log 3")


def _crossing_text(data, r):
    parts = []
    for name, vals in zip(CROSSING_NAMES, data["crossings"][r]):
        ok = np.isfinite(vals)
        if ok.sum() >= 2:
            parts.append(f"{name}: {fmt_ci(*mean_ci(vals[ok]))}·τ_1 ({int(ok.sum())} seeds)")
        else:
            parts.append(f"{name}: not within {data['t_mult'][-1]:g}·τ_1 in {int((~ok).sum())} of "
                         f"{len(vals)} seeds")
    return "; ".join(parts)


def _nan_mean(x):
    x = np.asarray(x, dtype=float)
    return f"{x[np.isfinite(x)].mean():.3g}" if np.isfinite(x).any() else "—"


def report(data) -> str:
    """The Q6 section of audit.md (every number from `data`)."""
    S = int(data["seeds"])
    lines = [f"## {TITLE}", "",
             f"GD with η = t_mult·τ_1/{data['steps']:g} steps (β = {data['beta']:g}; the sweep's "
             f"default), t_mult ∈ {{{', '.join(f'{t:g}' for t in data['t_mult'])}}}, {S} seeds per "
             "point; each run "
             f"records {data['checkpoints']:g} equally spaced checkpoint(s), used for the Theorem 4.2 "
             "sandwich at t ≤ τ_1. "
             f"Noise-free prediction: exit from the window at t×/τ_1 = 5(2 + log 3)/(2 log 3) = "
             f"{data['exit_ratio_pred']:.4g} (the noise-free GD curve interpolated on this t grid the way "
             f"the data are: {data['exit_ratio_grid']:.4g}). Means ± 95% CI over seeds; test error "
             "pooled over seeds with a Clopper–Pearson 95% interval.", ""]
    for r, regime in enumerate(data["regimes"]):
        simp, refined = data["bounds"][r]
        lines += [f"**{regime} regime** (K = {data['K'][r]:g}, Q = {data['Q'][r]:g}, "
                  f"v = {data['v'][r]:.3g}, {data['n_test_pooled'][r]:g} test samples per point; bound "
                  f"at τ_1: simplified {simp:.3g}, refined {refined:.3g}).", "",
                  "| t/τ_1 | mean margin | noise-free | min | max | in window | loss | noise-free loss | "
                  "train err. | test err. [CP95] | sandwich ≤ τ_1 |", "|---" * 11 + "|"]
        for j, t in enumerate(data["t_mult"]):
            lo, hi = data["test_risk_cp"][r, j]
            lines.append(
                f"| {t:g} | {fmt_ci(*mean_ci(data['margin_mean'][r, j]))} | "
                f"{data['margin_pred'][j]:.3g} | "
                f"{data['margin_min'][r, j].mean():.3g} | {data['margin_max'][r, j].mean():.3g} | "
                f"{fmt_ci(*mean_ci(data['in_window'][r, j]), 2)} | "
                f"{fmt_ci(*mean_ci(data['final_loss'][r, j]))} | "
                f"{data['loss_pred'][j]:.3g} | {fmt_ci(*mean_ci(1 - data['train_accuracy'][r, j]), 2)} | "
                f"{data['test_errors'][r, j] / data['n_test_pooled'][r]:.3g} [{lo:.2g}, {hi:.2g}] | "
                f"{_nan_mean(data['sandwich_frac'][r, j])} |")
        lines += ["", f"Leaving the window ({regime}): " + _crossing_text(data, r) + ".", ""]
    lines += [f"![margins, window, loss and errors after τ_1]({NAME}/q6_after_tau1.png)", "",
              f"Non-finite runs: {int(data['nonfinite'].sum())} of {data['nonfinite'].size}.", "",
              "**Verdict:** " + verdict_text(data)]
    return "\n".join(lines)


def _risk_at(data, r, j):
    lo, hi = data["test_risk_cp"][r, j]
    return f"{data['test_errors'][r, j] / data['n_test_pooled'][r]:.3g} [{lo:.2g}, {hi:.2g}]"


def verdict_text(data) -> str:
    """Where the mean margin leaves log 3 vs the closed form, and the error against the bound."""
    parts = []
    for r, regime in enumerate(data["regimes"]):
        mean_cross = data["crossings"][r, 2]
        ok = np.isfinite(mean_cross)
        when = (f"the mean margin passes log 3 at {fmt_ci(*mean_ci(mean_cross[ok]))}·τ_1"
                if ok.sum() >= 2 else f"the mean margin does not pass log 3 by {data['t_mult'][-1]:g}·τ_1")
        worst = int(np.argmax(data["test_risk_cp"][r, :, 1]))
        hi = data["test_risk_cp"][r, worst, 1]
        refined = data["bounds"][r, 1]
        rel = ("vacuous (≥ 1) here" if refined >= 1 else
               "and the test error stays below it at every t" if hi < refined
               else "and the test error is not resolved below it")
        parts.append(f"{regime}: {when} (closed form {data['exit_ratio_pred']:.3g}·τ_1, "
                     f"{data['exit_ratio_grid']:.3g}·τ_1 on this grid); the largest "
                     f"95% upper limit of the test error over all t is {hi:.3g} (at "
                     f"{data['t_mult'][worst]:g}·τ_1), the refined bound at τ_1 is {refined:.3g}, {rel}; "
                     f"from τ_1 to {data['t_mult'][-1]:g}·τ_1 the test error goes {_risk_at(data, r, 0)} → "
                     f"{_risk_at(data, r, -1)} and the train error "
                     f"{1 - data['train_accuracy'][r, 0].mean():.3g} → "
                     f"{1 - data['train_accuracy'][r, -1].mean():.3g}")
    return "; ".join(parts) + "."


def exit_agreement(data):
    """(mean, half-width, agrees) of the theorem regime's mean-margin exit time over seeds against
    the noise-free GD curve crossed on the same t grid (`exit_ratio_grid`): a 99.9% Student-t
    interval over the seeds (few seeds: t, not normal)."""
    r = list(data["regimes"]).index("theorem")
    x = np.asarray(data["crossings"][r, 2], dtype=float)
    if not np.all(np.isfinite(x)):
        return float("nan"), float("nan"), False
    half = stats.t.ppf(0.9995, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half), bool(abs(x.mean() - data["exit_ratio_grid"]) <= half + 1e-9)


def finding(data) -> CheckResult:
    """Registry entry: the exit time in the theorem regime is a sharp prediction (pass/fail); the
    test error after τ_1 (no theorem) is reported with it."""
    measured = {str(reg): {"mean-margin exit / tau_1": _nan_mean(data["crossings"][r, 2]),
                           "max test-error CP95 upper": round(float(data["test_risk_cp"][r, :, 1].max()), 4)}
                for r, reg in enumerate(data["regimes"])}
    mean, half, ok = exit_agreement(data)
    return CheckResult(id=f"audit/{NAME}", reference="[IL] Thm 4.2–4.3 (τ_1 only); THEORY §1.6",
                       claim="after τ_1 the mean margin follows r + e^r = 1 + 2β²t/(Kτ) and leaves "
                             f"[0, log 3] at ≈ {data['exit_ratio_pred']:.3g}·τ_1 (theorem regime)",
                       predicted={"exit / tau_1": round(float(data["exit_ratio_pred"]), 4),
                                  "on the run's t grid": round(float(data["exit_ratio_grid"]), 4)},
                       measured=measured | {"theorem exit (mean, 99.9% half-width)": [mean, half]},
                       tolerance="99.9% Student-t interval over seeds around the grid prediction",
                       why=verdict_text(data), verdict="pass" if ok else "fail")
