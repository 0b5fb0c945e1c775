"""Audit Q5: does the 1/K ordering of margins (and of test risk) at a fixed step count survive
Adam, and does scaling the step count ∝ K remove it under each optimiser?

Theory. Under gradient descent the margins follow the exact recursion
r(n+1) = r(n) + (ηβ²/N) C σ(−r(n)) (THEORY §1.2); without noise every row of C sums to 4Q, so
r(n+1) = r(n) + h σ(−r(n)) with h = 2ηβ²/K (`noise_free_recursion`): margins depend on β²t/(Kτ),
they fall like 1/K at a fixed step count and steps ∝ K removes the ordering. Adam divides each
coordinate's (momentum) gradient by its running RMS: while a gradient keeps its sign every
coordinate of ΔW moves ≈ η per step, whatever its size (sign descent). The concept coordinate of
D = ΔW_a − ΔW_b then grows 2η per step, so r ≈ 2βηn independently of K; each of the d − K − 1
pure-noise coordinates also moves η per step, in the direction of Σ_l s_l w_l ξ_l over the N_p
samples sharing the pair, which adds v·(d−K−1)·√(2/(πN_p)) per unit (E[X sign(X + Y)] for
Gaussians). Prediction: r_Adam ≈ 2βηn·(1 + v(d−K−1)√(2/(πN_p))) — no 1/K ordering at a fixed n
(N_p = 2Q for distinct tokens; N_p = 2KQ for the shared pair, a weak K^{−1/2} trend), and an
ordering ∝ K under steps ∝ K. Test error: GD ≈ Φ(−1/(v√K)) with shared tokens (THEORY §1.8);
under sign descent every one of the d coordinates of D has the same size, so a test sample's
noise v·ξ·D has sd v√d·|D_c| against the signal |D_c|: ≈ Φ(−1/(v√d)) for every K.

Sweeps ("im-li"): optimizer ∈ {gd, adam} at one fixed η each (GD: K = 1 reaches τ_1 in S0 steps;
Adam: 2βηS0 equals the noise-free GD margin at τ_1), K ∈ Ks, steps S0 ("fixed") or S0·K
("scaled"), in the theorem regime (distinct tokens, d = 5Q, v = 1/(32√Q)) and the shared-token
regime of the paper's experiments (one Yes/No pair, v = 0.3).

This module also holds the small statistics shared by the audit's dynamics questions (Q5–Q7, Q9).

References:
    [IL] Im & Li, arXiv 2408.03459: Lemma 4.1, §1.6 time rescaling, §1.8 (Adam in the paper's
    experiments). Kingma & Ba, "Adam", arXiv 1412.6980. Balles & Hennig, "Dissecting Adam: the
    sign, magnitude and variance of stochastic gradients", ICML 2018 (Adam as sign descent).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from dpolab.audit.common import per_point, sweep_spec
from dpolab.checks.result import CheckResult
from dpolab.sims.risk import fmt_ci, mean_ci
from dpolab.theory import im_li
from dpolab.theory.extensions import noise_free_recursion, sign_descent_margin

NAME = "q5-adam"
TITLE = "Q5. Adam vs gradient descent: does the 1/K margin and risk ordering survive Adam?"
OPTIMIZERS = ("gd", "adam")
SCHEDULES = ("fixed", "scaled")
REGIMES = {"theorem": {"tokens": "distinct"}, "shared": {"tokens": "yes_no", "v": 0.3}}
SETTINGS = {True: dict(Q=10, n_test=20, seeds=3, S0=16, Ks=(1, 2), regimes=("theorem",)),
            False: dict(Q=50, n_test=100, seeds=8, S0=40, Ks=(1, 3, 9),
                        regimes=("theorem", "shared"))}


# ---- shared statistics and closed forms (Q5, Q6, Q7, Q9) ----------------------------------------

def kendall_per_seed(x, y):
    """Kendall τ_b between x (n,) and y[..., :, s] for every seed s; y (..., n, S) -> (..., S).

    A seed whose values are all equal has no ordering: τ = 0 there (scipy would give NaN)."""
    y = np.asarray(y, dtype=float)
    out = np.zeros(y.shape[:-2] + y.shape[-1:])
    for idx in np.ndindex(out.shape):
        col = y[idx[:-1] + (slice(None), idx[-1])]
        if np.ptp(col) > 0:
            out[idx] = stats.kendalltau(x, col).statistic
    return out


def loglog_slope_per_seed(x, y):
    """Least-squares slope of log y on log x for every seed; y (..., n, S) -> (..., S), NaN where
    some y ≤ 0."""
    y = np.asarray(y, dtype=float)
    lx = np.log(np.asarray(x, dtype=float))
    lx = lx - lx.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        ly = np.where(y > 0, np.log(np.where(y > 0, y, 1.0)), np.nan)
    return np.einsum("n,...ns->...s", lx, ly) / np.sum(lx**2)


# ---- Q5 -----------------------------------------------------------------------------------------

def step_sizes(S0, beta=1.0):
    """{optimizer: η}: GD reaches τ_1 of K = 1 in S0 steps; Adam's 2βηS0 equals the noise-free
    GD margin at τ_1 (so both start the K = 1 run at about the same margin)."""
    r_tau1 = float(im_li.dpo_noise_free(im_li.tau_1(K=1, beta=beta), K=1, beta=beta))
    return {"gd": im_li.tau_1(K=1, beta=beta) / S0, "adam": r_tau1 / (2 * beta * S0)}


def predictions(opt, K, n, eta, *, Q, d, v, tokens, beta=1.0):
    """Predicted (margin, test risk) after n steps (module docstring; Adam: sign descent)."""
    if opt == "gd":
        margin = noise_free_recursion(2 * eta * beta**2 / K, n)[-1]
        return float(margin), float(stats.norm.cdf(-1 / (v * math.sqrt(K))))
    n_pair = 2 * Q * (K if tokens == "yes_no" else 1)
    margin = float(sign_descent_margin(eta * n, beta=beta, v=v, d=d, K=K, n_pair=n_pair))
    return margin, float(stats.norm.cdf(-1 / (v * math.sqrt(d))))


def compute(ctx) -> dict:
    """Runs the optimiser × schedule × K sweeps of each regime; stores metrics, predictions and
    the per-seed ordering statistics."""
    cfg = SETTINGS[ctx.quick]
    Ks, S, S0 = cfg["Ks"], cfg["seeds"], cfg["S0"]
    etas = step_sizes(S0)
    shape = (len(cfg["regimes"]), len(OPTIMIZERS), len(SCHEDULES), len(Ks))
    metrics = {m: np.zeros(shape + (S,)) for m in ("margin_mean", "margin_min", "test_risk",
                                                    "nonfinite")}
    pred = {m: np.zeros(shape) for m in ("margin_pred", "risk_pred")}
    v_used = []
    for r, regime in enumerate(cfg["regimes"]):
        v = REGIMES[regime].get("v", float(im_li.default_v(cfg["Q"])))
        v_used.append(v)
        for o, opt in enumerate(OPTIMIZERS):
            base = {"Q": cfg["Q"], "n_test": cfg["n_test"], "optimizer": opt, "eta": etas[opt],
                    "tokens": REGIMES[regime]["tokens"], "v": v}
            runs = [ctx.sweep(f"{regime}-{opt}-fixed", sweep_spec(
                S, base | {"steps": S0}, {"K": list(Ks)}, quick=ctx.quick))]
            runs += [ctx.sweep(f"{regime}-{opt}-scaled-K{K}", sweep_spec(
                S, base | {"steps": S0 * K, "K": K}, {}, quick=ctx.quick, root_seed=K))
                for K in Ks[1:]]
            for m in metrics:
                fixed = per_point(runs[0], m, S)
                metrics[m][r, o, 0] = fixed
                metrics[m][r, o, 1] = np.concatenate([fixed[:1]] + [per_point(x, m, S) for x in runs[1:]])
            for c, _ in enumerate(SCHEDULES):
                for k, K in enumerate(Ks):
                    n = S0 * (K if c else 1)
                    pred["margin_pred"][r, o, c, k], pred["risk_pred"][r, o, c, k] = predictions(
                        opt, K, n, etas[opt], Q=cfg["Q"], d=5 * cfg["Q"], v=v,
                        tokens=REGIMES[regime]["tokens"])
    margin, risk = metrics["margin_mean"], metrics["test_risk"]
    return {
        **metrics, **pred,
        "tau_margin": kendall_per_seed(Ks, margin), "slope_margin": loglog_slope_per_seed(Ks, margin),
        "tau_risk": kendall_per_seed(Ks, risk),
        "slope_pred": loglog_slope_per_seed(Ks, pred["margin_pred"][..., None])[..., 0],
        "regimes": np.asarray(cfg["regimes"]), "optimizers": np.asarray(OPTIMIZERS),
        "schedules": np.asarray(SCHEDULES), "K": np.asarray(Ks, dtype=float),
        "eta": np.asarray([etas[o] for o in OPTIMIZERS]), "v": np.asarray(v_used),
        "Q": np.float64(cfg["Q"]), "d": np.float64(5 * cfg["Q"]), "n_test": np.float64(cfg["n_test"]),
        "S0": np.float64(S0), "seeds": np.float64(S), "beta": np.float64(1.0),
    }


def render(data, ctx) -> list:
    """`q5_adam_vs_gd.*`: margins and test risk against K per regime, optimiser and schedule."""
    from dpolab.figures.audit_dynamics import plot_q5

    return plot_q5(data, ctx.dir)


def _ordering_rows(data):
    """Rows (regime, optimiser, schedule, texts...) of the report table."""
    rows = []
    for r, regime in enumerate(data["regimes"]):
        for o, opt in enumerate(data["optimizers"]):
            for c, sched in enumerate(data["schedules"]):
                slope = mean_ci(data["slope_margin"][r, o, c])
                tau_m = mean_ci(data["tau_margin"][r, o, c])
                tau_r = mean_ci(data["tau_risk"][r, o, c])
                risk = [mean_ci(data["test_risk"][r, o, c, k]) for k in (0, -1)]
                rows.append((regime, opt, sched, slope, float(data["slope_pred"][r, o, c]), tau_m,
                             tau_r, risk))
    return rows


#: Slopes with |slope| below this count as "flat" in the verdict's words (a descriptive cut: less
#: than a 25% change over a ten-fold range of K); the table gives the numbers.
FLAT_SLOPE = 0.1


def _slope_word(mean, half):
    if abs(mean) <= FLAT_SLOPE:
        return "flat"
    if mean + half < 0:
        return "∝ K^{%.2g}, decreasing" % mean
    if mean - half > 0:
        return "∝ K^{%.2g}, increasing" % mean
    return "unresolved"


def _risk_change(data, r, o, c):
    """Text for the test error from the smallest to the largest K (CI of the difference)."""
    Ks = data["K"]
    lo, hi = (mean_ci(data["test_risk"][r, o, c, k]) for k in (0, -1))
    diff, half = hi[0] - lo[0], math.hypot(lo[1], hi[1])
    if not data["test_risk"][r, o, c].any():
        return "no test error at any K"
    if abs(diff) <= half:
        return (f"test error ≈ {(lo[0] + hi[0]) / 2:.2g} at K = {Ks[0]:g} and K = {Ks[-1]:g} "
                "(unchanged within CI)")
    return f"test error {'rises' if diff > 0 else 'falls'} by {fmt_ci(diff, half, 2)} from K = " \
        f"{Ks[0]:g} to {Ks[-1]:g}"


def report(data) -> str:
    """The Q5 section of audit.md (every number from `data`)."""
    S, Ks = int(data["seeds"]), data["K"]
    eta = dict(zip(data["optimizers"], data["eta"]))
    lines = [f"## {TITLE}", "",
             f"Setup: K ∈ {{{', '.join(f'{k:g}' for k in Ks)}}}, Q = {data['Q']:g}, d = {data['d']:g}, "
             f"{S} seeds per point, β = {data['beta']:g}; GD η = {eta['gd']:.4g}, Adam η = "
             f"{eta['adam']:.4g} (fixed for all K); steps {data['S0']:g} (\"fixed\") or "
             f"{data['S0']:g}·K (\"scaled\"). "
             "Regimes: " + "; ".join(f"{r} (v = {v:.3g})" for r, v in zip(data["regimes"], data["v"])) +
             ". Statistics per seed, then mean ± 95% CI over seeds: slope of log(mean train margin) "
             "on log K, Kendall τ between K and the margin, and between K and the test error.", "",
             "| regime | optimiser | steps | margin slope (pred.) | τ(K, margin) | τ(K, test err.) | "
             f"test err. K={Ks[0]:g} | test err. K={Ks[-1]:g} |", "|---|---|---|---|---|---|---|---|"]
    for regime, opt, sched, slope, pred, tau_m, tau_r, risk in _ordering_rows(data):
        lines.append(f"| {regime} | {opt} | {sched} | {fmt_ci(*slope)} ({pred:.3g}) | "
                     f"{fmt_ci(*tau_m, 2)} | {fmt_ci(*tau_r, 2)} | {fmt_ci(*risk[0])} | "
                     f"{fmt_ci(*risk[1])} |")
    lines += ["", "Predictions (module docstring): GD margins from the exact noise-free "
              "recursion, Adam margins from the sign-descent estimate 2βηn(1 + v(d−K−1)√(2/(πN_p))); "
              "test error "
              "GD ≈ Φ(−1/(v√K)), Adam ≈ Φ(−1/(v√d)).", "",
              "| regime | optimiser | steps | K | margin | predicted | test err. | predicted |",
              "|---|---|---|---|---|---|---|---|"]
    for r, regime in enumerate(data["regimes"]):
        for o, opt in enumerate(data["optimizers"]):
            for c, sched in enumerate(data["schedules"]):
                for k, K in enumerate(Ks):
                    lines.append(f"| {regime} | {opt} | {sched} | {K:g} | "
                                 f"{fmt_ci(*mean_ci(data['margin_mean'][r, o, c, k]))} | "
                                 f"{data['margin_pred'][r, o, c, k]:.3g} | "
                                 f"{fmt_ci(*mean_ci(data['test_risk'][r, o, c, k]))} | "
                                 f"{data['risk_pred'][r, o, c, k]:.3g} |")
    lines += ["", f"![margins and test error against K]({NAME}/q5_adam_vs_gd.png)", "",
              f"Non-finite runs: {int(data['nonfinite'].sum())} of {data['nonfinite'].size}.", "",
              "**Verdict:** " + verdict_text(data)]
    return "\n".join(lines)


def verdict_text(data) -> str:
    """Per regime and optimiser: the margin's K-dependence at fixed and ∝ K steps, and the error."""
    parts = []
    for r, regime in enumerate(data["regimes"]):
        for o, opt in enumerate(data["optimizers"]):
            fixed, scaled = (mean_ci(data["slope_margin"][r, o, c]) for c in (0, 1))
            parts.append(f"{regime}/{'GD' if opt == 'gd' else 'Adam'}: margins {_slope_word(*fixed)} "
                         f"at a fixed step count (slope {fmt_ci(*fixed, 2)}), {_slope_word(*scaled)} "
                         f"with steps ∝ K (slope {fmt_ci(*scaled, 2)}); at a fixed step count "
                         f"{_risk_change(data, r, o, 0)}")
    return "; ".join(parts) + ". Adam's per-step margin change is ≈ 2βη whatever K (sign " \
        "descent), so the theory's β²t/(Kτ) time scale — and with it the 1/K ordering — does not " \
        "carry over to Adam."


def finding(data) -> CheckResult:
    """Registry entry: the ordering statistics (an empirical answer: verdict finding)."""
    rows = _ordering_rows(data)
    measured = {f"{reg}/{opt}/{sched}": {"slope": round(float(s[0]), 3),
                                         "tau_margin": round(float(tm[0]), 3),
                                         "tau_risk": round(float(tr[0]), 3)}
                for reg, opt, sched, s, _, tm, tr, _ in rows}
    predicted = {f"{reg}/{opt}/{sched}": round(p, 3) for reg, opt, sched, _, p, *_ in rows}
    return CheckResult(id=f"audit/{NAME}", reference="[IL] §1.6 time rescaling; THEORY §1.8 (Adam)",
                       claim="margins order as 1/K at a fixed step count; steps ∝ K removes it",
                       predicted={"margin slope": predicted}, measured=measured,
                       tolerance="95% CI over seeds", why=verdict_text(data), verdict="finding")
