"""Im & Li (arXiv 2408.03459) Figure 4: samples per value Q needed for risk < 0.05, against K.

The paper's Figure 4 plots Q*(K) = min{Q ≥ 40 : 2KQ²e^{−Q/45} < 0.05} (Theorem 4.3, simplified
form), which grows like 45·log K (headline: K = 10 needs Q*(10) = 880 > 875 samples per value).
Here, on the same axes (K = 1 … 1000, log-log):

* the simplified bound's Q*(K) (`dpolab.theory.im_li.q_star`), exact integers, Q*(10) = 880;
* the refined bound's Q*(K) — RECONSTRUCTED from the appendix proof (`bound_refined`, not printed
  as such in the paper) — at the theorem's own parameters d = 5Q, v = 1/(32√Q), l_b = 1/2, Z = 1;
* the Q that simulation actually needs (sweep engine, simulation "im-li", trained by GD to τ_1):
  the smallest grid Q from which on every larger grid Q the pooled Monte-Carlo test risk is
  certified below 0.05, i.e. the Clopper–Pearson 95% upper end of (errors over all seeds) /
  (seeds · 2K · n_test) is < 0.05 (`needed_q`). The pooled interval treats the held-out samples
  as independent (they are, given each seed's trained head); it estimates the risk averaged over
  training draws;
  - theorem regime (distinct tokens, d = 5Q, v = 1/(32√Q)): the risk is 0 already at the smallest
    admissible grid Q (d = 5Q must exceed K), so the measured need is censored: "≤ that Q" —
    one to four samples per value where the bound asks for hundreds. Theorem 4.3 assumes Q ≥ 40;
    these Q are below it on purpose, to locate the real need;
  - the paper's regime for contrast (tokens="yes_no": one Yes/No pair for every value, Z = K,
    v = PAPER_V = 0.2 fixed, d = PAPER_D = 256 fixed like the paper's d = 4096 > 5Q): the need
    grows fast with K (full run: ≤ 1, 4, 16 for K = 1, 2, 4) and from K = 8 on no grid Q suffices;
    as Q → ∞ the risk falls only to ≈ Φ(−1/(v√K)) (THEORY §1.8): 0.039 at K = 8, 0.106 at
    K = 16. This breaks Z ≤ 1/(4l_b²), d ≤ 5Q and v ≤ 1/(32√Q).

A second figure shows the measured risks behind those points (risk vs Q per K, CP95 bars).

What differs from the paper and why: the paper plots only the bound; the simulated points are
added to show that the bound's log K growth (a union bound over the 2KQ training samples) is not
what limits learning in the theorem's regime, while sharing answer tokens is. K for simulation
stops at 16 and the Q grid is coarse (factor 4 up to 64; quick: K ∈ {1, 4}, one or two grid Q)
because every (K, Q) compiles anew (the dominant cost on a CPU).
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from dpolab.figures.im_li import plot_samples_per_value, plot_simulated_risk
from dpolab.sims.risk import needed_q, pooled_risk
from dpolab.theory import im_li

NAME = "fig4-samples-per-value"
TITLE = "Im & Li Fig. 4: samples per value Q needed for risk < 0.05 vs K (bounds and simulation)"

THRESHOLD = 0.05
#: K values of the theory curves: 1 … 1000, log-spaced, always including the headline K = 10.
THEORY_KS = np.unique(np.concatenate([np.round(np.geomspace(1, 1000, 31)), [10]])).astype(int)
PAPER_V = 0.2
PAPER_D = 256
#: Simulation grids by quick: K values, Q grid of each regime, seeds, held-out per cluster, steps.
#: Every (K, Q) is its own compiled shape (~2–8 s of compilation each on a CPU, the dominant
#: cost), hence the coarse factor-4 grids.
SETTINGS = {
    True: dict(Ks=(1, 4), Qs_theorem=(1,), Qs_paper=(4, 16), seeds=4, n_test=50, steps=20),
    False: dict(Ks=(1, 2, 4, 8, 16), Qs_theorem=(1, 4), Qs_paper=(1, 4, 16, 64), seeds=8,
                n_test=100, steps=40),
}
REGIMES = ("theorem", "paper")


def _specs(cfg):
    """(regime, K, name, sweep spec dict) of every sweep this item runs."""
    base = {"sweep": {"simulation": "im-li", "seeds": cfg["seeds"], "chunk_size": 8 * cfg["seeds"]},
            "fixed": {"n_test": cfg["n_test"], "steps": cfg["steps"], "beta": 1.0, "lb": 0.5}}
    out = []
    for K in cfg["Ks"]:  # d = 5Q (the default) must exceed K: only admissible Q per K
        qs = [q for q in cfg["Qs_theorem"] if 5 * q > K] or [-(-(K + 1) // 5)]
        out.append(("theorem", K, f"theorem_K{K}", base | {
            "fixed": base["fixed"] | {"K": K, "tokens": "distinct"}, "grid": {"Q": qs}}))
    out.append(("paper", None, "paper", base | {
        "fixed": base["fixed"] | {"tokens": "yes_no", "v": PAPER_V, "d": PAPER_D},
        "grid": {"K": list(cfg["Ks"]), "Q": list(cfg["Qs_paper"])}}))
    return out


def compute(ctx) -> dict:
    """Theory curves Q*(K) for both bounds and the simulated need in both regimes."""
    cfg = SETTINGS[ctx.quick]
    rows = {k: [] for k in ("regime", "K", "Q", "d", "v", "errors", "n", "risk", "cp_low",
                            "cp_high")}
    for regime, _, name, spec in _specs(cfg):
        s = ctx.sweep(name, spec)
        for K, Q in sorted({(int(k), int(q)) for k, q in zip(s["K"], s["Q"])}):
            at = (s["K"] == K) & (s["Q"] == Q)
            errors, n, risk, lo, hi = pooled_risk(s["test_risk"][at], 2 * K * cfg["n_test"])
            for key, val in zip(rows, (REGIMES.index(regime), K, Q, s["d"][at][0], s["v"][at][0],
                                       errors, n, risk, lo, hi)):
                rows[key].append(val)
    sim = {f"sim_{k}": np.asarray(v, dtype=np.float64) for k, v in rows.items()}
    need = {"need_regime": [], "need_K": [], "need_Q": [], "need_censored": []}
    for r in range(len(REGIMES)):
        for K in cfg["Ks"]:
            at = (sim["sim_regime"] == r) & (sim["sim_K"] == K)
            q = needed_q(sim["sim_Q"][at], sim["sim_cp_high"][at] < THRESHOLD)
            for key, val in zip(need, (r, K, q, q == sim["sim_Q"][at].min())):
                need[key].append(val)
    return {
        "threshold": np.float64(THRESHOLD),
        "theory_K": THEORY_KS.astype(np.float64),
        "q_star_simplified": im_li.q_star_table(THEORY_KS, threshold=THRESHOLD),
        "q_star_refined": im_li.q_star_table(THEORY_KS, threshold=THRESHOLD, bound="refined",
                                             lb=0.5, Z=1),
        "paper_v": np.float64(PAPER_V), "paper_d": np.float64(PAPER_D),
        # shared tokens, Q → ∞: the head is Σ_k c_k, a test margin ~ N(1, v²K) (THEORY §1.8)
        "paper_floor": stats.norm.cdf(-1.0 / (PAPER_V * np.sqrt(np.asarray(cfg["Ks"], float)))),
        "seeds": np.float64(cfg["seeds"]), "n_test": np.float64(cfg["n_test"]),
        **sim, **{k: np.asarray(v, dtype=np.float64) for k, v in need.items()},
    }


def render(data, ctx) -> list:
    """Figure 4 (`fig4_samples_per_value.*`) and the measured risks (`fig4_simulated_risk.*`)."""
    return plot_samples_per_value(data, ctx.dir) + plot_simulated_risk(data, ctx.dir)
