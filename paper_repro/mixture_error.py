"""One Bradley–Terry model for two disagreeing groups: irreducible error vs disagreement.

Reproduces: the claim of THEORY.md §4 [MIX] (MiCRo, arXiv 2505.24846; PAL, arXiv 2406.08469) that
a single BT reward fitted to a mixture of subgroups has an error that data cannot remove, and the
Pinsker subgroup bound of `dpolab.theory.mixture.subgroup_lower_bound`. The papers state this for LLM
reward models; there is no figure with numbers to match, so this item draws the closed-form
picture on a small synthetic instance and adds sampled fits (exact MLEs from finite comparisons).

Instance and disagreement parameter (ours): M = 5 items, two groups. Group 1's reward is s·u,
group 2's is s·(cos φ·u + sin φ·v), with u ∝ (−2, −1, 0, 1, 2) (a linear ranking) and
v ∝ (2, −1, −2, −1, 2) (a preference for the extremes), both unit norm and mean zero, s = 4.
**φ ∈ [0°, 180°] is the angle between the groups' centred reward vectors**: φ = 0 identical
groups, φ = 90° unrelated, φ = 180° exactly opposite. Weights w = (1/2, 1/2) and (0.7, 0.3).

Shown, per φ: E_irr = min_r E KL(Bern(P) ‖ Bern(σ(Δr))) (the BT misspecification error), the
subgroup loss Σ_k w_k E KL(Bern(a_k) ‖ Bern(σ(Δr̂))) of the population BT fit r̂, the Pinsker
lower bound 2·E Var_k(a_k) on every single model's subgroup loss, and the diversity term
D = Σ_k w_k E KL(Bern(a_k) ‖ Bern(P)). Exact identity (KL compensation): subgroup loss(r) =
KL(P ‖ σ(Δr)) + D for every r, so at r̂ it equals E_irr + D ≥ E_irr, and D ≥ 2·E Var (Pinsker).
Finding: E_irr is small and not monotone in φ — for equal weights it returns to 0 at φ = 180°
(P ≡ 1/2, a constant fit: pluralism lost "without error") — while the subgroup loss, which no
single model can push below the bound, grows steadily with disagreement.

References:
    THEORY.md §4; [BT] Bradley & Terry 1952; Pinsker's inequality. MiCRo arXiv 2505.24846, PAL
    arXiv 2406.08469 (mixture view).
"""
from __future__ import annotations

import numpy as np
from scipy.special import logit

from dpolab.sims.preference_mixture import fit_from_counts, sample_counts
from dpolab.theory import mixture

NAME = "mixture-error"
TITLE = "Single-BT irreducible error and the subgroup bound vs group disagreement (MIX)"

SCALE = 4.0
U = np.array([-2.0, -1.0, 0.0, 1.0, 2.0]) / np.sqrt(10.0)
V = np.array([2.0, -1.0, -2.0, -1.0, 2.0]) / np.sqrt(14.0)
WEIGHTS = ((0.5, 0.5), (0.7, 0.3))


def two_group_rewards(phi, *, scale=SCALE):
    """(2, M) rewards of two groups whose centred reward vectors are at angle ``phi`` (radians).

    Group 1: scale·u; group 2: scale·(cos φ·u + sin φ·v), with the module's u ⊥ v (unit, mean 0).
    """
    return scale * np.stack([U, np.cos(phi) * U + np.sin(phi) * V])


def diversity(rewards, weights):
    """D = Σ_k w_k E_pairs KL(Bern(a_k) ‖ Bern(P)): the part of any single model's subgroup loss
    that no reward (BT or not) can remove, since subgroup_loss(r) = KL(P ‖ σ(Δr)) + D.

    Args:
        rewards: (K, M). weights: (K,) summing to 1.

    References:
        THEORY §4; the compensation identity Σ_k w_k KL(a_k‖q) = Σ_k w_k KL(a_k‖P) + KL(P‖q).
    """
    a = mixture.group_win_probs(rewards)
    P = mixture.population_win_probs(rewards, weights)  # diagonal 1/2: finite logit
    off = ~np.eye(P.shape[0], dtype=bool)
    kl = mixture.bernoulli_kl(a, logit(P))
    return float(np.asarray(weights) @ kl[:, off].mean(axis=1))


def disagreement_fraction(rewards):
    """Fraction of item pairs the two groups order differently (a second, ordinal disagreement)."""
    d1, d2 = (r[:, None] - r[None, :] for r in rewards)
    i, j = np.triu_indices(rewards.shape[1], 1)
    return float(np.mean(np.sign(d1[i, j]) != np.sign(d2[i, j])))


def closed_form_row(phi, weights) -> dict:
    """Every population quantity of the instance at angle φ (radians) and group weights."""
    rewards, w = two_group_rewards(phi), np.asarray(weights, dtype=np.float64)
    P = mixture.population_win_probs(rewards, w)
    fit = mixture.fit_single_bt(P)
    return {"e_irr": fit.kl, "subgroup_loss": mixture.subgroup_loss(rewards, w, fit.reward),
            "pinsker_bound": mixture.subgroup_lower_bound(rewards, w),
            "diversity": diversity(rewards, w), "triangle_defect": mixture.triangle_defect(P),
            "disagreement_fraction": disagreement_fraction(rewards)}


def sampled_losses(phi, weights, *, n, seeds) -> tuple[np.ndarray, np.ndarray]:
    """(seeds,) subgroup losses of the single-BT and of the per-group (K-component) MLE fitted to
    n sampled comparisons (`dpolab.sims.preference_mixture`); seed s uses rng [φ in 0.01°, w₁·100, s]."""
    rewards, w = two_group_rewards(phi), np.asarray(weights, dtype=np.float64)
    a = mixture.group_win_probs(rewards)
    off = ~np.eye(a.shape[1], dtype=bool)
    single, multi = [], []
    for seed in range(seeds):
        rng = np.random.default_rng([int(round(np.degrees(phi) * 100)), int(round(w[0] * 100)), seed])
        wins = sample_counts(rng, rewards, w, n)
        single.append(mixture.subgroup_loss(rewards, w, fit_from_counts(wins.sum(0))))
        per_group = [mixture.bernoulli_kl(a[k], r[:, None] - r[None, :])[off].mean()
                     for k, r in enumerate(fit_from_counts(wk) for wk in wins)]
        multi.append(float(w @ per_group))
    return np.array(single), np.array(multi)


def compute(ctx) -> dict[str, np.ndarray]:
    """Closed forms on a fine φ grid; sampled fits (n comparisons, several seeds) on a coarse one."""
    phi_deg = np.arange(0.0, 180.0 + 1e-9, 2.5)
    sample_deg = np.arange(0.0, 180.0 + 1e-9, 30.0 if ctx.quick else 15.0)
    n, seeds = (2000, 4) if ctx.quick else (4000, 24)
    data = {"phi_deg": phi_deg, "sample_phi_deg": sample_deg, "weights": np.array(WEIGHTS),
            "n": np.int64(n), "seeds": np.int64(seeds), "scale": np.float64(SCALE)}
    for i, w in enumerate(WEIGHTS):
        rows = [closed_form_row(np.radians(p), w) for p in phi_deg]
        for key in rows[0]:
            data[f"{key}_{i}"] = np.array([r[key] for r in rows])
        single, multi = zip(*(sampled_losses(np.radians(p), w, n=n, seeds=seeds) for p in sample_deg))
        data[f"sampled_single_{i}"], data[f"sampled_mixture_{i}"] = np.array(single), np.array(multi)
    return data


def render(data, ctx) -> list:
    """mixture_error.{pdf,png,csv} (closed forms) and mixture_error_sampled.csv (fits)."""
    from dpolab.figures.repro_tables import plot_mixture_error

    return plot_mixture_error(data, ctx.dir)
