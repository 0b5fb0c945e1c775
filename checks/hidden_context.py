"""Checks that one Bradley–Terry fit under hidden context aggregates by the Borda count ([DPL]).

The references here never call the code they check: win probabilities, BT scores and the BFGS
fits are written out in plain numpy/scipy from the groups' rewards. See
`dpolab.theory.hidden_context` for the derivations (points 1–5).

References:
    [DPL] Siththaranjan, Laidlaw, Hadfield-Menell, ICLR 2024, arXiv 2312.08358, Sec. 3.
"""
from __future__ import annotations

import numpy as np
from scipy import optimize, special

from dpolab.checks.result import CheckResult, verdict
from dpolab.sims.hidden_context import sample_balanced_counts
from dpolab.sims.preference_mixture import fit_from_counts, sample_counts
from dpolab.theory import hidden_context as H
from dpolab.theory import mixture

_REF = "Siththaranjan et al., ICLR 2024 (arXiv 2312.08358), Sec. 3; our derivation in theory/hidden_context.py"
_TIED = ((1.0, 0.0, 2.0, -1.0), (0.0, 1.0, 2.0, -1.0))  # w = (½, ½): swapping the groups swaps items 0, 1
_TIE = 1e-9  # |ΔBC| below this counts as a tie: the fits are exact to ~1e-13 in r (gradient < 1e-13)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _win_probs(rewards, weights):
    """P_ij = Σ_k w_k σ(r_ki − r_kj), written out (not from the module under test)."""
    r, w = np.asarray(rewards, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    return np.einsum("k,kij->ij", w, _sig(r[:, :, None] - r[:, None, :]))


def _bfgs_fit(P, W=None):
    """Mean-zero minimiser of Σ_{i≠j} W_ij [−P_ij log σ(r_i − r_j)] by BFGS (r_0 = 0), plain numpy."""
    M = P.shape[0]
    W = np.ones((M, M)) if W is None else np.asarray(W, dtype=np.float64)
    W = W * (1 - np.eye(M)) / W.sum()

    def loss(free):
        r = np.concatenate([[0.0], free])
        return float(np.sum(W * P * np.logaddexp(0.0, -(r[:, None] - r[None, :]))))

    res = optimize.minimize(loss, np.zeros(M - 1), method="BFGS", options={"gtol": 1e-11})
    r = np.concatenate([[0.0], res.x])
    return r - r.mean()


def _order_violations(score, fit, tie=_TIE):
    """Pairs with |Δscore| > tie whose Δfit has the other sign; and the smallest such |Δscore|."""
    i, j = np.triu_indices(score.size, 1)
    ds, df = score[i] - score[j], fit[i] - fit[j]
    compared = np.abs(ds) > tie
    return int(np.sum(compared & (np.sign(ds) != np.sign(df)))), float(np.min(np.abs(ds), initial=np.inf))


def _random_mixture(rng):
    K, M = int(rng.integers(2, 5)), int(rng.integers(3, 9))
    return rng.normal(0.0, rng.uniform(0.5, 4.0), (K, M)), rng.dirichlet(np.ones(K))


def borda_order(quick):
    """Uniform pairs: s(r̂) = BC exactly and sign(r̂_a − r̂_b) = sign(BC_a − BC_b) for every pair."""
    n_mix, n_bfgs = (300, 10) if quick else (3000, 60)
    rng = np.random.default_rng(1512)
    worst_stat, violations, bfgs_violations, bfgs_err, min_gap = 0.0, 0, 0, 0.0, np.inf
    for t in range(n_mix):
        rewards, weights = _random_mixture(rng)
        P = _win_probs(rewards, weights)
        bc = H.borda_count(P)
        fit = mixture.fit_single_bt(P).reward
        scores = _sig(fit[:, None] - fit[None, :]).sum(axis=1) - 0.5
        worst_stat = max(worst_stat, float(np.max(np.abs(scores - (P.sum(axis=1) - 0.5)))))
        v, gap = _order_violations(bc, fit)
        violations, min_gap = violations + v, min(min_gap, gap)
        if t < n_bfgs:
            ref = _bfgs_fit(P)
            bfgs_err = max(bfgs_err, float(np.max(np.abs(ref - fit))))
            bfgs_violations += _order_violations(bc, ref, tie=1e-4)[0]
    # an exact tie: items 0 and 1 exchanged by swapping the two equally weighted groups
    tie_fit = mixture.fit_single_bt(_win_probs(_TIED, [0.5, 0.5])).reward
    ok = (worst_stat <= 1e-11 and violations == 0 and bfgs_violations == 0 and bfgs_err <= 1e-5
          and abs(tie_fit[0] - tie_fit[1]) <= 1e-12)
    return CheckResult(
        id="phenomena/hidden-context-borda-order", reference=_REF,
        claim="with comparisons uniform over pairs, the population single-BT fit reproduces every "
              "item's Borda count (Σ_b σ(r̂_a − r̂_b) = BC(a)) and ranks a above b iff BC(a) > BC(b) "
              "— exactly, ties included",
        predicted={"max |s(r̂) − BC|": 0.0, "order violations": 0, "tied BC ⇒ |r̂_0 − r̂_1|": 0.0},
        measured={"mixtures": n_mix, "max |s(r̂) − BC|": worst_stat, "order violations": violations,
                  "smallest |ΔBC| compared": min_gap, "BFGS fits": n_bfgs,
                  "BFGS order violations (|ΔBC| > 1e-4)": bfgs_violations, "max |r̂ − BFGS|": bfgs_err,
                  "tie |r̂_0 − r̂_1|": float(abs(tie_fit[0] - tie_fit[1]))},
        tolerance={"stationarity": 1e-11, "tie": 1e-12, "|ΔBC| compared": f"> {_TIE:g}", "vs BFGS": 1e-5},
        why="the Newton fit stops at gradient < 1e-13, so s(r̂) − BC is rounding (~1e-15·M) and r̂ is "
            "exact to ~1e-13 ≪ the 1e-9 tie threshold; BFGS at gtol 1e-11 is good to ~1e-7 in r. "
            "Random K ∈ [2, 4], M ∈ [3, 8], reward scale U[0.5, 4], Dirichlet weights",
        verdict=verdict(ok))


def nonuniform_pairs(quick):
    """Non-uniform comparisons: the weighted scores are reproduced, but the Borda order breaks."""
    ex = H.NONUNIFORM_EXAMPLE
    P = _win_probs(ex["rewards"], ex["weights"])
    W = np.asarray(ex["pair_weights"])
    bc = H.borda_count(P)
    fit = mixture.fit_single_bt(P, pair_weights=W).reward
    ref = _bfgs_fit(P, W)
    weighted_scores = (W * _sig(fit[:, None] - fit[None, :])).sum(axis=1)
    stat = float(np.max(np.abs(weighted_scores - H.weighted_borda(P, W))))
    uniform_v = _order_violations(bc, mixture.fit_single_bt(P).reward)[0]
    # how often a random non-uniform design breaks the order (a measurement, no claim)
    rng = np.random.default_rng(1513)
    n_survey, broken = (200 if quick else 2000), 0
    for _ in range(n_survey):
        rewards, weights = _random_mixture(rng)
        Pr = _win_probs(rewards, weights)
        Wr = rng.uniform(0.25, 4.0, Pr.shape)
        Wr = Wr + Wr.T
        broken += _order_violations(H.borda_count(Pr), mixture.fit_single_bt(Pr, pair_weights=Wr).reward)[0] > 0
    reversed_ = bc[0] - bc[1] > 0.1 and fit[1] - fit[0] > 0.05 and ref[1] - ref[0] > 0.05
    ok = stat <= 1e-11 and reversed_ and uniform_v == 0 and float(np.max(np.abs(fit - ref))) <= 1e-5
    return CheckResult(
        id="phenomena/hidden-context-nonuniform-pairs", reference=_REF,
        claim="the exact Borda order needs uniform pairs: under a comparison distribution W the fit "
              "reproduces the weighted scores Σ_b W_ab P_ab, and in the frozen instance ranks item 1 "
              "above item 0 although BC(0) > BC(1); uniform pairs on the same P keep the Borda order",
        predicted={"max |Σ W σ(Δr̂) − Σ W P|": 0.0, "BC(0) − BC(1)": "> 0.1", "r̂_1 − r̂_0": "> 0.05",
                   "uniform-pair violations": 0},
        measured={"max |Σ W σ(Δr̂) − Σ W P|": stat, "BC": bc.tolist(), "r̂ (weighted)": fit.tolist(),
                  "r̂ BFGS": ref.tolist(), "uniform-pair violations": uniform_v,
                  "random designs W ~ U[0.5, 8] breaking the order": f"{broken}/{n_survey}"},
        tolerance={"stationarity": 1e-11, "vs BFGS": 1e-5, "margins": "0.1 and 0.05 (≫ 1e-5)"},
        why="the reversal margins (0.157 in BC, 0.107 in r̂) are five orders above the fits' error; "
            "the random-design count is reported, not compared",
        verdict=verdict(ok))


def _one_d():
    ex = H.ONE_D_EXAMPLE
    rewards = np.outer(ex["slopes"], ex["positions"])  # written out: r_k(a) = slope_k · a
    return ex, rewards


def eu_reversal(quick):
    """[DPL]'s 1-D point: a majority's mild preference beats a minority's intense one."""
    ex, rewards = _one_d()
    w, slopes, pos = ex["weights"], ex["slopes"], ex["positions"]
    P = _win_probs(rewards, w)
    gaps = np.diff(pos)[0] * np.arange(1, pos.size)
    margin = H.line_win_margin(gaps, w, slopes)
    margin_err = float(np.max(np.abs(margin - np.array([P[k, 0] - 0.5 for k in range(1, pos.size)]))))
    eu = H.expected_utility(H.line_rewards(pos, slopes), w)
    eu_slope = float(np.dot(w, slopes))
    eu_err = float(np.max(np.abs(eu - eu_slope * (pos - pos.mean()))))
    fit, ref = mixture.fit_single_bt(P).reward, _bfgs_fit(P)
    tau_fit, tau_ref = H.order_agreement(fit, eu), H.order_agreement(ref, eu)
    # weak preferences (rewards ε·r_k): r̂ = ε·EU + O(ε³), relative deviation ≤ (ε·max|Δr|)²
    eps = 1e-3
    weak = mixture.fit_single_bt(_win_probs(eps * rewards, w)).reward / eps
    weak_dev = float(np.max(np.abs(weak - eu)) / np.max(np.abs(eu)))
    weak_tol = float((eps * np.ptp(rewards, axis=1).max()) ** 2)
    # sampled: n i.i.d. uniform-pair comparisons per seed; the seed mean of the MLE vs r̂
    n, seeds = (4000, 24) if quick else (20000, 100)
    mle = np.array([fit_from_counts(sample_counts(np.random.default_rng([15, n, s]), rewards, w, n).sum(0))
                    for s in range(seeds)])
    z = np.abs(mle.mean(0) - fit) / (mle.std(0, ddof=1) / np.sqrt(seeds))
    z_tol = float(special.ndtri(1 - 0.0005 / pos.size))  # 99.9% two-sided, Bonferroni over M items
    reversed_seeds = int(sum(H.order_agreement(m, eu) == -1.0 for m in mle))
    ok = (eu_slope < 0 and margin.min() > 0 and margin_err <= 1e-15 and eu_err <= 1e-12
          and tau_fit == -1.0 and tau_ref == -1.0 and weak_dev <= weak_tol
          and H.order_agreement(weak, eu) == 1.0 and float(np.nanmax(z)) <= z_tol)
    return CheckResult(
        id="phenomena/hidden-context-eu-reversal", reference=_REF,
        claim="items a ∈ {0, ¼, ½, ¾, 1}; 70% have r = 8a, 30% have r = −40a: expected utility falls "
              "with a (slope −6.4) but every P(a ≻ b) with a > b exceeds 1/2, so Borda and the BT fit "
              "(population and sampled) rank the items in exactly the reverse order; scaled by "
              "ε = 1e-3 the fit is ε·EU + O(ε³) and agrees with EU",
        predicted={"EU slope": eu_slope, "min_gap P(a≻b) − 1/2": "> 0", "τ(r̂, EU)": -1.0,
                   "weak τ(r̂, EU)": 1.0, "sampled mean": "= r̂ within CI"},
        measured={"P(a≻b) − 1/2 per gap": margin.tolist(), "|closed form − P|": margin_err,
                  "|EU − slope·a|": eu_err, "r̂": fit.tolist(), "τ(r̂, EU)": tau_fit, "τ(BFGS, EU)": tau_ref,
                  "weak relative |r̂/ε − EU|": weak_dev, "sampled max z": float(np.nanmax(z)),
                  "seeds with the full reversal": f"{reversed_seeds}/{seeds}"},
        tolerance={"weak": weak_tol, "z": z_tol, "closed forms": "1e-15 / 1e-12"},
        why=f"{seeds} seeds of n = {n}: z = |mean − r̂|/(sd/√seeds) at 99.9% two-sided, Bonferroni over "
            "5 items (the MLE's O(1/n) bias is ≪ its SE/√seeds); the weak bound: σ's cubic term is x³/48 "
            "against x/4, so the relative error is ≤ (ε·max|Δr|)²",
        verdict=verdict(ok))


def borda_sufficient(quick):
    """The fit depends on P only through BC: a cyclic flow changes E_irr, not r̂."""
    ex = mixture.WORKED_EXAMPLES["four_items"]
    rng = np.random.default_rng(1514)
    cases = [(ex["rewards"], ex["weights"])] + [(rng.normal(0, 2, (3, 6)), rng.dirichlet(np.ones(3)))]
    fit_moved, borda_err, eirr_change = 0.0, 0.0, []
    for rewards, weights in cases:
        P = _win_probs(rewards, weights)
        delta = 0.5 * min(P[0, 1], P[1, 2], P[2, 0], 1 - P[0, 1], 1 - P[1, 2], 1 - P[2, 0])
        Pc = H.add_cycle(P, (0, 1, 2), delta)
        base, cyc = mixture.fit_single_bt(P), mixture.fit_single_bt(Pc)
        fit_moved = max(fit_moved, float(np.max(np.abs(cyc.reward - base.reward))))
        bc = P.sum(axis=1) - 0.5  # written out
        borda_err = max(borda_err, float(np.max(np.abs(H.fit_from_borda(bc) - base.reward))))
        eirr_change.append(cyc.kl - base.kl)
    ok = fit_moved <= 1e-11 and borda_err <= 1e-11 and min(np.abs(eirr_change)) > 1e-4
    return CheckResult(
        id="phenomena/hidden-context-borda-sufficient", reference=_REF,
        claim="the population BT fit is a function of the Borda counts alone: adding δ around a "
              "directed 3-cycle of P (zero row sums) leaves r̂ unchanged and only moves E_irr, and "
              "solving s(r) = BC gives the same r̂ as the full fit",
        predicted={"max |r̂(P + cycle) − r̂(P)|": 0.0, "max |fit_from_borda(BC) − r̂|": 0.0,
                   "|ΔE_irr|": "> 0"},
        measured={"max |r̂(P + cycle) − r̂(P)|": fit_moved, "max |fit_from_borda(BC) − r̂|": borda_err,
                  "ΔE_irr per case": [float(x) for x in eirr_change]},
        tolerance={"fits": 1e-11, "|ΔE_irr|": "> 1e-4"},
        why="both Newton solvers stop at gradient < 1e-12 on an O(1) Hessian, so the fits agree to "
            "~1e-13; δ is half the room to 0 or 1, an O(0.1) flow whose KL cost is O(δ²) ≫ 1e-4",
        verdict=verdict(ok))


def eirr_vs_eu(quick):
    """E_irr = 0 is neither necessary nor sufficient for BT to agree with expected utility."""
    ex = H.ONE_D_EXAMPLE
    w, slopes = ex["weights"], ex["slopes"]
    d = H.additive_reversal(w, slopes)
    add_rewards = np.outer(slopes, [0.0, d, 2 * d])
    P_add = _win_probs(add_rewards, w)
    L = np.log(P_add / (1 - P_add))
    defect = float(abs(L[0, 1] + L[1, 2] + L[2, 0]))
    add_fit = mixture.fit_single_bt(P_add)
    add_eu = w @ add_rewards
    two = np.outer(slopes, [0.0, 0.25])  # M = 2: E_irr = 0 always
    two_fit = mixture.fit_single_bt(_win_probs(two, w))
    base = np.random.default_rng(1515).normal(0.0, 1.5, 6)
    scaled = np.stack([base, 3.0 * base])  # same order, different intensity
    sc_P = _win_probs(scaled, [0.5, 0.5])
    sc_fit = mixture.fit_single_bt(sc_P)
    sc_eu = 2.0 * base
    ok = (defect <= 1e-13 and add_fit.kl <= 1e-14 and H.order_agreement(add_fit.reward, add_eu) == -1.0
          and two_fit.kl <= 1e-14 and H.order_agreement(two_fit.reward, w @ two) == -1.0
          and sc_fit.kl > 1e-6 and H.order_agreement(sc_fit.reward, sc_eu) == 1.0
          and H.order_agreement(sc_P.sum(axis=1), sc_eu) == 1.0)
    return CheckResult(
        id="phenomena/hidden-context-eirr-vs-eu", reference=_REF + "; THEORY §4 (E_irr)",
        claim="E_irr = 0 (logit P additive) makes BT reproduce P exactly but does not make it agree "
              "with expected utility: items (0, d, 2d) on the 1-D example's line, with d solving "
              "g(2d) = 2g(d), have E_irr = 0 and the BT order the reverse of EU (so does any M = 2 "
              "pair); groups r and 3r have E_irr > 0 and full agreement",
        predicted={"additive: E_irr, triangle defect": 0.0, "additive: τ(r̂, EU)": -1.0,
                   "M = 2: E_irr": 0.0, "M = 2: τ": -1.0, "scaled: E_irr": "> 0", "scaled: τ(r̂, EU)": 1.0},
        measured={"d": d, "additive: E_irr": add_fit.kl, "additive: triangle defect": defect,
                  "additive: r̂": add_fit.reward.tolist(), "additive: EU": (add_eu - add_eu.mean()).tolist(),
                  "M = 2: E_irr": two_fit.kl, "M = 2: r̂_1 − r̂_0": float(np.diff(two_fit.reward)[0]),
                  "scaled: E_irr": sc_fit.kl, "scaled: τ(r̂, EU)": H.order_agreement(sc_fit.reward, sc_eu)},
        tolerance={"defect": 1e-13, "E_irr": 1e-14, "scaled E_irr": "> 1e-6"},
        why="d is solved by brentq to 1e-15, so the cycle sum is ~1e-15 and the true E_irr ~ defect² "
            "~ 1e-30; computed as cross-entropy − entropy (each O(1)) it rounds at ~1e-16. The scaled "
            "case's E_irr (1.8e-3) is far above; the reversal margins are O(0.1–1)",
        verdict=verdict(ok))


def finite_sample(quick):
    """Balanced design: the MLE ranks exactly by total wins, and its seed mean is the population fit."""
    ex = mixture.WORKED_EXAMPLES["four_items"]
    rewards, w = ex["rewards"], ex["weights"]
    per_pair, seeds = (500, 30) if quick else (2000, 100)
    fit = mixture.fit_single_bt(_win_probs(rewards, w)).reward
    mle = np.array([fit_from_counts(sample_balanced_counts(np.random.default_rng([1516, per_pair, s]),
                                                           rewards, w, per_pair)) for s in range(seeds)])
    z = np.abs(mle.mean(0) - fit) / (mle.std(0, ddof=1) / np.sqrt(seeds))
    z_tol = float(special.ndtri(1 - 0.0005 / fit.size))
    # the order part on items 0, 1 tied in BC (the groups swap them): their wins are close every seed
    tied, tied_w, m = np.array(_TIED), np.array([0.5, 0.5]), 40
    violations, iid_broken = 0, 0
    for s in range(seeds):
        wins = sample_balanced_counts(np.random.default_rng([1517, m, s]), tied, tied_w, m)
        violations += _order_violations(wins.sum(axis=1), fit_from_counts(wins), tie=0.5)[0]
        iid = sample_counts(np.random.default_rng([1518, m, s]), tied, tied_w, 6 * m).sum(0)
        iid_broken += _order_violations(iid.sum(axis=1), fit_from_counts(iid), tie=0.5)[0] > 0
    ok = violations == 0 and float(z.max()) <= z_tol
    return CheckResult(
        id="phenomena/hidden-context-finite-sample", reference=_REF,
        claim="with every pair compared m times, the BT MLE ranks items exactly by their total wins "
              "(the empirical Borda count) in every seed, and its seed mean is the population fit "
              "(MIX four_items, E_irr > 0); with i.i.d. random pairs the wins order can break",
        predicted={"balanced order violations": 0, "max z": f"≤ {z_tol:.2f}"},
        measured={"balanced order violations (tied instance, m = 40)": violations, "max z": float(z.max()),
                  "seed mean": mle.mean(0).tolist(), "population r̂": fit.tolist(),
                  "i.i.d.-pair seeds whose MLE breaks the wins order": f"{iid_broken}/{seeds}"},
        tolerance={"z": z_tol},
        why=f"{seeds} seeds × {per_pair} per pair; z at 99.9% two-sided, Bonferroni over 4 items (the "
            "MLE's O(1/n) bias is ≪ SE/√seeds); the wins order is exact (no tolerance; equal wins "
            "skipped), tested where it is most fragile: two items with equal Borda counts",
        verdict=verdict(ok))


#: {check id: fn(quick) -> CheckResult | list[CheckResult]}, in run order.
CHECKS = {
    "phenomena/hidden-context-borda-order": borda_order,
    "phenomena/hidden-context-nonuniform-pairs": nonuniform_pairs,
    "phenomena/hidden-context-eu-reversal": eu_reversal,
    "phenomena/hidden-context-borda-sufficient": borda_sufficient,
    "phenomena/hidden-context-eirr-vs-eu": eirr_vs_eu,
    "phenomena/hidden-context-finite-sample": finite_sample,
}
