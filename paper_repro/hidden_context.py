"""What one Bradley–Terry fit learns under hidden context: the Borda count, not expected utility.

Reproduces: the claim of Siththaranjan, Laidlaw & Hadfield-Menell (ICLR 2024, arXiv 2312.08358,
Sec. 3) that a single BT model fitted to comparisons from a hidden mixture of annotator types
ranks items by the Borda count of the mixture's win probabilities, and that this can reverse the
expected-utility order when a minority's preference is intense and the majority's mild. The paper
states it for a continuous item space with its own example; we show it on a finite item set with
instances of our own (`dpolab.theory.hidden_context`: ONE_D_EXAMPLE, the proof that the order is
exact for uniform pairs, and where it is not).

Panels: (a) the 1-D example (items a ∈ {0, ¼, ½, ¾, 1}; 70% with r = 8a, 30% with r = −40a):
expected utility, Borda count and the population BT fit, with sampled MLEs (n i.i.d. uniform-pair
comparisons per seed). (b) the same example with every reward scaled by λ: Kendall τ between the
BT fit and EU (+1 for weak preferences, where r̂ ≈ λ·EU; −1 once the majority's mild preference
wins every pair) and E_irr. (c) random mixtures: ΔBC vs Δr̂ over item pairs for uniform pairs (every
point in quadrants I/III: exact) and for a random non-uniform comparison design (some points in
II/IV: only "in order").

References:
    [DPL] arXiv 2312.08358 Sec. 3; THEORY.md §4 (E_irr); [BT] Bradley & Terry 1952.
"""
from __future__ import annotations

import numpy as np

from dpolab.sims.preference_mixture import fit_from_counts, sample_counts
from dpolab.theory import hidden_context as H
from dpolab.theory import mixture

NAME = "hidden-context"
TITLE = "One BT fit under hidden context ranks by the Borda count, not by expected utility (DPL)"


def _one_d(scale=1.0):
    ex = H.ONE_D_EXAMPLE
    return scale * H.line_rewards(ex["positions"], ex["slopes"]), np.asarray(ex["weights"])


def _pairs(rng, n_mix, nonuniform):
    """(ΔBC, Δr̂) over all item pairs of ``n_mix`` random 2–4-type mixtures of 3–8 items."""
    d_bc, d_fit = [], []
    for _ in range(n_mix):
        K, M = int(rng.integers(2, 5)), int(rng.integers(3, 9))
        P = mixture.population_win_probs(rng.normal(0, rng.uniform(0.5, 4.0), (K, M)), rng.dirichlet(np.ones(K)))
        W = rng.uniform(0.25, 4.0, (M, M)) if nonuniform else np.ones((M, M))
        fit = mixture.fit_single_bt(P, pair_weights=W + W.T).reward
        bc = H.borda_count(P)
        i, j = np.triu_indices(M, 1)
        d_bc.append(bc[i] - bc[j])
        d_fit.append(fit[i] - fit[j])
    return np.concatenate(d_bc), np.concatenate(d_fit)


def compute(ctx) -> dict[str, np.ndarray]:
    """Closed forms of the 1-D example and its λ sweep; sampled MLEs; random-mixture pairs."""
    rewards, w = _one_d()
    P = mixture.population_win_probs(rewards, w)
    n, seeds = (4000, 8) if ctx.quick else (20000, 100)
    mle = np.array([fit_from_counts(sample_counts(np.random.default_rng([2312, n, s]), rewards, w, n).sum(0))
                    for s in range(seeds)])
    scales = np.logspace(-2, 1, 31 if ctx.quick else 121)
    tau, e_irr = [], []
    for lam in scales:
        r_lam, _ = _one_d(lam)
        fit = mixture.fit_single_bt(mixture.population_win_probs(r_lam, w))
        tau.append(H.order_agreement(fit.reward, H.expected_utility(r_lam, w)))
        e_irr.append(fit.kl)
    n_mix = 40 if ctx.quick else 400
    uni_bc, uni_fit = _pairs(np.random.default_rng(2313), n_mix, nonuniform=False)
    non_bc, non_fit = _pairs(np.random.default_rng(2314), n_mix, nonuniform=True)
    return {"positions": np.asarray(H.ONE_D_EXAMPLE["positions"]), "eu": H.expected_utility(rewards, w),
            "borda": H.borda_count(P), "fit": mixture.fit_single_bt(P).reward, "sampled_fit": mle,
            "n": np.int64(n), "scales": scales, "tau_fit_eu": np.array(tau), "e_irr": np.array(e_irr),
            "uniform_d_borda": uni_bc, "uniform_d_fit": uni_fit,
            "nonuniform_d_borda": non_bc, "nonuniform_d_fit": non_fit}


def render(data, ctx) -> list:
    """hidden_context.{pdf,png,csv} (1-D example), hidden_context_sweep.csv, hidden_context_pairs.csv."""
    from dpolab.figures.hidden_context import plot_hidden_context

    return plot_hidden_context(data, ctx.dir)
