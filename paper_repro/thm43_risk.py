"""Im & Li (arXiv 2408.03459) Theorem 4.3: Monte-Carlo test risk at τ_1 against both bounds.

Theorem 4.3: inside Theorem 4.2's conditions and Q ≥ 40, the population risk at τ_1 satisfies
R(P) = P(r ≤ 0) ≤ 2KQ²e^{−Q/45} (main text). The refined form R(P) ≤ 2KQ²·exp(−ε²/(2(1 + l_b² +
dv² + 2εv))), ε = 1/(16v(Z+2)), is RECONSTRUCTED from the appendix proof (`bound_refined`). The
paper draws no such figure; here, for several K and Q on a log-scale y axis:

* both bounds as curves over Q (theorem regime: d = 5Q, v = 1/(32√Q), l_b = 1/2, Z = 1);
* the test risk at τ_1 of one trained head per (K, Q) on n fresh samples of the same mixture
  (`dpolab.checks.generalization.risk_at_tau1` → `dpolab.sims.risk.monte_carlo_risk`) with its exact
  Clopper–Pearson 95% interval. Where no sample errs (risk 0, which a log axis cannot show) the
  CP upper end 1 − 0.025^{1/n} is drawn instead (open triangle; the legend says so);
* each (bound, point) gets a status (`bound_status`): certified (CP upper ≤ bound), below
  resolution (the bound is under the CP upper end of 0 errors in n: no n used here can certify
  it; not a failure), not certified, violated (CP lower > bound).

Result (full run): no test sample errs at any (K, Q), so every point is a CP upper end
(≈ 2.5–3.7·10⁻⁵). The refined bound is non-vacuous from Q ≈ 60 (K = 1) to 70 (K = 16) and is
certified wherever it exceeds that resolution (12 of 14 points; the other 2, Q = 800, are below
resolution); the simplified bound is vacuous (> 1) until Q ≈ 620–700 and certified at Q = 800.

What differs from the paper and why: GD with η = τ_1/steps instead of gradient flow; one training
draw per (K, Q) (the theorem holds per draw with high probability); n = 10⁵ (quick 2·10⁴) test
samples, which fixes the resolution; K = 16 stops at Q = 120 (the training set at Q = 800 alone
would hold 25 600 × 4 000 floats).
"""
from __future__ import annotations

import numpy as np

from dpolab.checks.generalization import bound_status, risk_at_tau1
from dpolab.figures.im_li import STATUS, plot_risk_vs_bounds
from dpolab.sims.config import theorem_regime
from dpolab.theory import im_li

NAME = "thm43-risk"
TITLE = "Im & Li Thm 4.3: Monte-Carlo test risk at τ_1 (CP95) vs simplified and refined bounds"

#: By quick: K values, Q grid, largest Q per K (memory), test samples, GD steps to τ_1.
SETTINGS = {
    True: dict(Ks=(1, 4), Qs=(40, 80), q_cap={}, n_mc=20_000, steps=20),
    False: dict(Ks=(1, 4, 16), Qs=(40, 60, 80, 120, 800), q_cap={16: 120}, n_mc=100_000, steps=40),
}
LB, Z = 0.5, 1


def bounds(K, Q):
    """(simplified, refined) Theorem 4.3 bounds at the theorem's d = 5Q, v = 1/(32√Q); any shape."""
    Q = np.asarray(Q, dtype=np.float64)
    refined = im_li.bound_refined(K=K, Q=Q, d=im_li.default_d(Q), v=im_li.default_v(Q), lb=LB, Z=Z)
    return im_li.bound_simplified(K=K, Q=Q), refined


def status_code(lo, hi, bound, n) -> int:
    """Index in `STATUS` of `bound_status(lo, hi, bound, n)`."""
    return STATUS.index(bound_status(lo, hi, bound, n))


def compute(ctx) -> dict:
    """Risk at τ_1 with CP95 per (K, Q), both bounds there and on a dense Q grid per K."""
    cfg = SETTINGS[ctx.quick]
    pts = {k: [] for k in ("K", "Q", "n", "errors", "risk", "cp_low", "cp_high", "bound_simplified",
                           "bound_refined", "status_simplified", "status_refined")}
    curves = {k: [] for k in ("K", "Q", "bound_simplified", "bound_refined")}
    for K in cfg["Ks"]:
        qs = [q for q in cfg["Qs"] if q <= cfg["q_cap"].get(K, np.inf)]
        for Q in qs:
            spec, train, params = theorem_regime(K=K, Q=Q, steps=cfg["steps"], n_test=1)
            conds = im_li.conditions(Q=Q, d=spec.d, v=float(params.v), lb=LB, Z=Z)
            assert all(c.holds for c in conds), conds  # Theorems 4.2 and 4.3 apply
            risk, (lo, hi), n = risk_at_tau1(spec, train, params, seed=0, n_samples=cfg["n_mc"])
            simple, refined = (float(b) for b in bounds(K, Q))
            values = (K, Q, n, round(risk * n), risk, lo, hi, simple, refined,
                      status_code(lo, hi, simple, n), status_code(lo, hi, refined, n))
            for key, val in zip(pts, values):
                pts[key].append(val)
        dense = np.unique(np.concatenate([np.round(np.geomspace(40, max(qs), 80)), qs]))
        simple, refined = bounds(K, dense)
        for key, val in zip(curves, (np.full(len(dense), K), dense, simple, refined)):
            curves[key].append(np.asarray(val, dtype=np.float64))
    return {**{f"pt_{k}": np.asarray(v, dtype=np.float64) for k, v in pts.items()},
            **{f"curve_{k}": np.concatenate(v) for k, v in curves.items()},
            "status_names": np.asarray(STATUS)}


def render(data, ctx) -> list:
    """`thm43_risk.*`: risk (or its CP upper end) and both bounds against Q, log-scale y."""
    return plot_risk_vs_bounds(data, ctx.dir)
