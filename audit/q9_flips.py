"""Audit Q9: label noise and value diversity together — DPO vs rDPO (and cDPO) with flipped
training labels inside the multi-value mixture.

Theory (noise-free limit, distinct tokens, a fraction ε of each cluster's labels flipped; a
flipped sample has margin −m when the clean ones have m). Every value evolves on its own and
m(j+1) = m(j) + h·[(1−ε)w(m) − εw(−m)], h = 2ηβ²/K (`dpolab.audit.q5_adam.noise_free_recursion`):
- DPO, w = σ(−z): the drift is (1−ε)σ(−m) − εσ(m): the early signal is scaled by (1 − 2ε), and
  m saturates at log((1−ε)/ε) (the flow solves m − log((1−ε−εe^m)/(1−2ε))/ε = 2(1−ε)s,
  `dpo_flip_flow`).
- rDPO, w = σ(−z) + ε/(1−2ε): the drift is exactly σ(−m) — the clean DPO dynamics, m + e^m = 1 + 2s.
  Its weights are positive and bounded; it is its LOSS that is unbounded below, so a cluster whose
  actual flip fraction f falls below ε drifts upward forever at rate h(ε − f)/(1−2ε) (we check
  non-finite margins).
- cDPO, w = σ(−z) − ε (negative once z > log((1−ε)/ε)): drift DPO's minus ε(1−2ε); saturates lower.
To first order (weights ≈ constant) DPO and rDPO move ΔW in the SAME direction Σ s_i g_i, so
their test errors agree; the flips shrink the signal 2Q(1−2ε) but not the memorised noise
(√(2Q)·v per coordinate), so with noise v the test error is ≈ Φ(−(1−2ε)/(v√((1−2ε)² + dv²/(2Q))))
for each value: the noise-to-signal ratio grows as 1/(1−2ε) — rDPO's factor — under both losses.
With K values the worst value's error is the largest of K such errors, so it grows with K.

Sweeps ("im-li", GD, distinct tokens, d = 5Q): for each loss and ε one sweep (flip = eps = ε),
grid K × v ∈ {1/(32√Q), 0.3} × t_mult.

References:
    [rDPO] Chowdhury, Kini, Natarajan, arXiv 2403.00409 (THEORY §2.2); [IL] Im & Li,
    arXiv 2408.03459 (THEORY §1.2–1.3).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from dpolab.audit.common import per_point, sweep_spec
from dpolab.checks.result import CheckResult
from dpolab.sims.risk import fmt_ci, mean_ci
from dpolab.theory import im_li
from dpolab.theory.extensions import dpo_flip_flow, noise_free_recursion

NAME = "q9-flips"
TITLE = "Q9. Label flips inside the value mixture: does rDPO's 1/(1−2ε) story hold per value, " \
        "and does it interact with K?"
METRICS = ("margin_mean", "margin_mean_last", "test_margin_mean", "test_risk", "test_risk_worst",
           "final_loss", "nonfinite")
NOISY_V = 0.3
SETTINGS = {
    True: dict(Q=10, n_test=20, seeds=3, steps=16, Ks=(2,), eps=(0.0, 0.3), losses=("dpo", "rdpo"),
               t_mult=(1.0, 16.0)),
    False: dict(Q=50, n_test=100, seeds=6, steps=128, Ks=(1, 4, 8), eps=(0.0, 0.1, 0.2, 0.3, 0.4),
                losses=("dpo", "rdpo", "cdpo"), t_mult=(1.0, 16.0)),
}


def flip_risk_model(eps, K, *, v, d, Q, n_test, lb=0.5, draws=4000, seed=0):
    """First-order (constant-weight) test error with the flip counts drawn as they are in the runs.

    With weights constant, ΔW of value k moves along Σ s_i g_i = 2Q[(1−f₊−f₋)c + l_b(f₋−f₊)e_1] + n,
    n ~ N(0, 2Qv²I), f± ~ Binomial(Q, ε)/Q the two clusters' flip fractions. A clean test sample
    of C_± then has margin ∝ a_± + v|D|·Z with a_± = 2Q[(1−f₊−f₋) ± l_b²(f₋−f₊)] and
    |D|² = 4Q²[(1−f₊−f₋)² + l_b²(f₋−f₊)²] + 2Qdv², so its error is Φ(−a_±/(v|D|)). Each value's
    measured error also has the binomial noise of its 2·n_test test samples; the worst value is
    the largest of K such values (its growth with K is this max, not a change per value).

    Args: eps: flip rate. K: values. v, d, Q, n_test, lb: the mixture. draws, seed: Monte Carlo.
    Returns: (mean over values, worst value) of the expected measured error.
    """
    rng = np.random.default_rng(seed)
    f = rng.binomial(Q, eps, size=(2, draws, int(K))) / Q
    common, tilt = 1 - f[0] - f[1], lb * (f[1] - f[0])
    norm = np.sqrt(4 * Q**2 * (common**2 + tilt**2) + 2 * Q * d * v**2)
    risk = [stats.norm.cdf(-2 * Q * (common + sign * lb * tilt) / (v * norm)) for sign in (1, -1)]
    errors = sum(rng.binomial(n_test, p) for p in risk) / (2 * n_test)
    return float(errors.mean()), float(errors.max(axis=1).mean())


def compute(ctx) -> dict:
    """Sweeps over loss × ε (flip = eps = ε); metrics (L, E, K, V, T, S) and the predictions."""
    cfg = SETTINGS[ctx.quick]
    S, Ks, eps, losses = cfg["seeds"], cfg["Ks"], cfg["eps"], cfg["losses"]
    tm = np.asarray(cfg["t_mult"])
    vs = [float(im_li.default_v(cfg["Q"])), NOISY_V]
    shape = (len(Ks), len(vs), len(tm), S)
    out = {m: np.zeros((len(losses), len(eps)) + shape) for m in METRICS}
    for l, loss in enumerate(losses):
        for e, ep in enumerate(eps):
            if ep == 0 and l > 0:  # with ε = 0 cDPO and rDPO are DPO: reuse its runs
                for m in METRICS:
                    out[m][l, e] = out[m][0, e]
                continue
            fixed = {"Q": cfg["Q"], "n_test": cfg["n_test"], "steps": cfg["steps"], "loss": loss,
                     "flip": ep, "eps": ep if loss != "dpo" else 0.0}
            cols = ctx.sweep(f"{loss}-eps{ep:g}", sweep_spec(
                S, fixed, {"K": list(Ks), "v": vs, "t_mult": list(tm)}, quick=ctx.quick))
            for m in METRICS:
                out[m][l, e] = per_point(cols, m, S).reshape(shape)
    h = 2 * tm * im_li.LOG3 / (5 * cfg["steps"])
    pred = np.asarray([[noise_free_recursion(h, cfg["steps"], loss=loss, flip=ep,
                                             eps=ep if loss != "dpo" else 0.0)[-1]
                        for ep in eps] for loss in losses])  # (L, E, T) clean margin
    s_dense = np.linspace(0, tm[-1] * im_li.LOG3 / 5, 120)
    model = np.asarray([[flip_risk_model(ep, K, v=NOISY_V, d=5 * cfg["Q"], Q=cfg["Q"],
                                         n_test=cfg["n_test"]) for K in Ks] for ep in eps])
    return {**out, "margin_pred": pred, "risk_model": model,  # (E, K, {mean, worst})
            "dpo_flow_dense": np.asarray([dpo_flip_flow(s_dense, ep) for ep in eps]),
            "s_dense": s_dense,
            "dpo_saturation": np.asarray([math.log((1 - ep) / ep) if ep > 0 else np.inf for ep in eps]),
            "losses": np.asarray(losses), "eps": np.asarray(eps), "K": np.asarray(Ks, dtype=float),
            "v": np.asarray(vs), "t_mult": tm, "s": tm * im_li.LOG3 / 5, "Q": np.float64(cfg["Q"]),
            "d": np.float64(5 * cfg["Q"]), "n_test": np.float64(cfg["n_test"]),
            "steps": np.float64(cfg["steps"]), "seeds": np.float64(S)}


def render(data, ctx) -> list:
    """`q9_flips.*`: margins (theorem regime), test error and worst-value error (v = 0.3)."""
    from dpolab.figures.audit_dynamics import plot_q9

    return plot_q9(data, ctx.dir)


def _pooled(x):
    """(..., K, S) -> (..., K·S): values and seeds pooled into one sample."""
    x = np.asarray(x)
    return x.reshape(x.shape[:-2] + (-1,))


def risk_gap(data):
    """(T, E) mean and CI of the paired rDPO − DPO test error (v = 0.3; the sweeps share their
    grid, hence data and flips), pooled over K and seeds."""
    losses = list(data["losses"])
    risk = data["test_risk"][:, :, :, 1]  # (L, E, K, T, S)
    diff = risk[losses.index("rdpo")] - risk[losses.index("dpo")]
    return mean_ci(_pooled(np.moveaxis(diff, 2, 0)))


def _margin_lines(data):
    tm = data["t_mult"]
    lines = ["**Clean test margin vs the noise-free prediction** (theorem regime, values and seeds "
             "pooled):", "",
             "| loss | ε | " + " | ".join(f"t = {t:g}·τ_1: measured / predicted" for t in tm) + " |",
             "|---|---|" + "---|" * len(tm)]
    for l, loss in enumerate(data["losses"]):
        for e, ep in enumerate(data["eps"]):
            cells = [f"{fmt_ci(*mean_ci(_pooled(data['test_margin_mean'][l, e, :, 0, j])))} / "
                     f"{data['margin_pred'][l, e, j]:.3g}" for j in range(len(tm))]
            lines.append(f"| {loss} | {ep:g} | " + " | ".join(cells) + " |")
    sat = ", ".join(f"ε = {ep:g}: {m:.3g}" for ep, m in zip(data["eps"], data["dpo_saturation"]) if ep > 0)
    return lines + ["", f"DPO's noise-free saturation log((1−ε)/ε): {sat}.", ""]


def _risk_lines(data):
    eps, tm = data["eps"], data["t_mult"]
    lines = [f"**Test error per value** (v = {data['v'][1]:g}): mean over values / worst value, "
             "values and seeds pooled; last row: the first-order model (`flip_risk_model`, flip "
             "counts drawn as in the runs) averaged over the K of the sweep.", "",
             "| loss | t/τ_1 | " + " | ".join(f"ε = {ep:g}" for ep in eps) + " |",
             "|---|---|" + "---|" * len(eps)]
    for l, loss in enumerate(data["losses"]):
        for j, t in enumerate(tm):
            cells = [f"{fmt_ci(*mean_ci(_pooled(data['test_risk'][l, e, :, 1, j])), 2)} / "
                     f"{fmt_ci(*mean_ci(_pooled(data['test_risk_worst'][l, e, :, 1, j])), 2)}"
                     for e in range(len(eps))]
            lines.append(f"| {loss} | {t:g} | " + " | ".join(cells) + " |")
    model = data["risk_model"].mean(axis=1)
    lines.append("| model | 1 | " + " | ".join(f"{m:.2g} / {w:.2g}" for m, w in model) + " |")
    gap, half = risk_gap(data)
    lines += ["", "Paired rDPO − DPO test error (same data and flips): " + "; ".join(
        f"t = {t:g}·τ_1: " + ", ".join(f"ε = {ep:g}: {fmt_ci(gap[j, e], half[j, e], 2)}"
                                       for e, ep in enumerate(eps) if ep > 0)
        for j, t in enumerate(tm)) + ".", ""]
    e, d = len(eps) - 1, list(data["losses"]).index("dpo")
    lines += [f"**Values and the worst value** (DPO, t = τ_1, ε = {eps[e]:g}; model alongside):", "",
              "| K | mean over values | model | worst value | model |", "|---|---|---|---|---|"]
    for k, K in enumerate(data["K"]):
        lines.append(f"| {K:g} | {fmt_ci(*mean_ci(data['test_risk'][d, e, k, 1, 0]), 2)} | "
                     f"{data['risk_model'][e, k, 0]:.2g} | "
                     f"{fmt_ci(*mean_ci(data['test_risk_worst'][d, e, k, 1, 0]), 2)} | "
                     f"{data['risk_model'][e, k, 1]:.2g} |")
    return lines + [""]


def report(data) -> str:
    """The Q9 section of audit.md (every number from `data`)."""
    def join(xs):
        return ", ".join(f"{x:g}" for x in xs)

    head = [f"## {TITLE}", "",
            f"GD, distinct tokens, Q = {data['Q']:g}, d = {data['d']:g}, {data['steps']:g} steps to "
            f"t = t_mult·τ_1 (t_mult ∈ {{{join(data['t_mult'])}}}), K ∈ {{{join(data['K'])}}}, flip rate "
            f"ε ∈ {{{join(data['eps'])}}} with the loss's ε equal to it; {int(data['seeds'])} seeds. "
            f"Margins are read in the theorem regime (v = {data['v'][0]:.3g}), errors in a noisy one "
            f"(v = {data['v'][1]:g}). Means ± 95% CI over seeds.", ""]
    bad = ", ".join(f"{loss}: {int(data['nonfinite'][l].sum())} of {data['nonfinite'][l].size}"
                    for l, loss in enumerate(data["losses"]))
    return "\n".join(head + _margin_lines(data) + _risk_lines(data) + [
        f"Non-finite runs per loss: {bad}.", "",
        f"![flips: margins, test error, worst value]({NAME}/q9_flips.png)", "",
        "**Verdict:** " + verdict_text(data)])


def _margin_ratio(data, loss):
    l, e = list(data["losses"]).index(loss), len(data["eps"]) - 1
    return (_pooled(data["test_margin_mean"][l, e, :, 0, 0]).mean()
            / _pooled(data["test_margin_mean"][0, 0, :, 0, 0]).mean())


def recursion_deviation(data):
    """Largest |measured/predicted − 1| of the clean test margin (theorem regime, pooled means)."""
    measured = _pooled(np.moveaxis(data["test_margin_mean"][:, :, :, 0], 2, -2)).mean(axis=-1)
    return float(np.max(np.abs(measured / data["margin_pred"] - 1)))


def _k_effect(data, d, e):
    """Text: change of the mean and worst-value error from the smallest to the largest K."""
    if len(data["K"]) < 2:
        return "with a single K the K-dependence is not tested in this run"
    parts = []
    for name, key in (("worst value's", "test_risk_worst"), ("mean per-value", "test_risk")):
        lo, hi = (mean_ci(data[key][d, e, k, 1, 0]) for k in (0, -1))
        diff, half = hi[0] - lo[0], math.hypot(lo[1], hi[1])
        word = "rises" if diff - half > 0 else "falls" if diff + half < 0 else "does not change"
        parts.append(f"the {name} error {word} ({fmt_ci(diff, half, 2)})")
    model = data["risk_model"][e, -1] - data["risk_model"][e, 0]
    return (f"from K = {data['K'][0]:g} to {data['K'][-1]:g} " + " and ".join(parts) +
            f"; the model, a maximum over values with unchanged per-value error, gives "
            f"{model[1]:+.2g} and {model[0]:+.2g}")


def verdict_text(data) -> str:
    """Margins under each loss, the paired error difference early and late, the K effect."""
    eps, tm, e = data["eps"], data["t_mult"], len(data["eps"]) - 1
    d = list(data["losses"]).index("dpo")
    gap, half = risk_gap(data)
    early = "the same within CI" if abs(gap[0, e]) <= half[0, e] else "different"
    late = ("lower" if gap[-1, e] + half[-1, e] < 0 else "higher" if gap[-1, e] - half[-1, e] > 0
            else "not different")
    dpo_err = [_pooled(data["test_risk"][d, e, :, 1, j]).mean() for j in (0, -1)]
    return (f"at τ_1 with ε = {eps[e]:g} the clean margin is {_margin_ratio(data, 'dpo'):.3g}× the "
            f"clean-label one under DPO (first order: 1 − 2ε = {1 - 2 * eps[e]:.3g}) and "
            f"{_margin_ratio(data, 'rdpo'):.3g}× under rDPO (prediction: 1 — its noise-free drift is "
            f"exactly the clean one); all margins follow the noise-free recursions to "
            f"{recursion_deviation(data):.2g} (relative). Yet at τ_1 the per-value test error is {early} "
            f"for rDPO and DPO (paired difference {fmt_ci(gap[0, e], half[0, e], 2)}): to first order both "
            "move along Σ s_i g_i, whose noise-to-signal ratio grows as 1/(1−2ε) under either loss. "
            f"Later (t = {tm[-1]:g}·τ_1) rDPO's error is {late} ({fmt_ci(gap[-1, e], half[-1, e], 2)}) "
            f"while DPO's goes from {dpo_err[0]:.3g} to {dpo_err[1]:.3g}. Values: {_k_effect(data, d, e)}.")


def ratio_agreement(data):
    """(mean, half-width, agrees) of the per-value, per-seed ratio of rDPO's clean test margin at
    the largest ε to the clean-label one at τ_1 (theorem regime; the runs share data and seeds, so
    they pair). Its expectation is 1: a value's drift deviates from the clean one by
    (ε − f)/(1 − 2ε), linear in its flip fraction f, whose mean is ε. 99.9% Student-t interval."""
    l, e = list(data["losses"]).index("rdpo"), len(data["eps"]) - 1
    x = np.ravel(data["test_margin_mean"][l, e, :, 0, 0] / data["test_margin_mean"][0, 0, :, 0, 0])
    half = stats.t.ppf(0.9995, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half), bool(abs(x.mean() - 1.0) <= half)


def finding(data) -> CheckResult:
    """Registry entry: rDPO's clean drift is a sharp prediction (pass/fail); the error comparison
    with DPO is reported with it."""
    gap, half = risk_gap(data)
    mean, width, ok = ratio_agreement(data)
    return CheckResult(
        id=f"audit/{NAME}", reference="[rDPO] THEORY §2.2; [IL] §1.2–1.3",
        claim="rDPO undoes label flips (its noise-free drift is the clean one)",
        predicted={"rDPO clean margin / clean DPO": 1.0},
        measured={"rDPO/clean margin": round(float(_margin_ratio(data, "rdpo")), 4),
                  "per-value ratio (mean, 99.9% half-width)": [round(mean, 4), round(width, 4)],
                  **{f"rDPO-DPO error, eps={ep:g}, t={t:g}": [round(float(gap[j, e]), 4),
                                                             round(float(half[j, e]), 4)]
                     for j, t in enumerate(data["t_mult"]) for e, ep in enumerate(data["eps"])}},
        tolerance="ratio: 99.9% Student-t interval over values and seeds; errors: 95% CI over seeds",
        why=verdict_text(data), verdict="pass" if ok else "fail")
