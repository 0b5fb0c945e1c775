"""Sampled comparisons from a K-group Bradley–Terry mixture (THEORY §4), and their fits.

Each comparison picks an unordered item pair uniformly, a group k ~ w, and the winner by group
k's BT probability a_k. A single-BT fit pools all comparisons; the K-component fit uses the group
labels (one BT model per group). Both are exact maximum-likelihood fits
(`dpolab.theory.mixture.fit_single_bt` on empirical win frequencies weighted by pair counts).
"""
from __future__ import annotations

import numpy as np

from dpolab.theory.mixture import fit_single_bt, group_win_probs


def sample_counts(rng: np.random.Generator, rewards, weights, n: int):
    """(K, M, M) wins[k, i, j] = times i beat j in group k, from n comparisons."""
    a = group_win_probs(rewards)
    K, M = a.shape[:2]
    i, j = np.triu_indices(M, 1)
    pair = rng.integers(0, i.size, n)
    group = rng.choice(K, size=n, p=np.asarray(weights))
    first_wins = rng.random(n) < a[group, i[pair], j[pair]]
    wins = np.zeros((K, M, M))
    np.add.at(wins, (group, np.where(first_wins, i[pair], j[pair]), np.where(first_wins, j[pair], i[pair])), 1)
    return wins


def fit_from_counts(wins):
    """Maximum-likelihood BT rewards (mean-zero) from an (M, M) win-count matrix.

    Empirical frequencies are clipped to [1e-9, 1 − 1e-9] (only a pair that one item won every
    time is affected: its MLE would be at infinity).
    """
    count = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = np.where(count > 0, wins / count, 0.5)
    np.fill_diagonal(freq, 0.5)
    return fit_single_bt(np.clip(freq, 1e-9, 1 - 1e-9), pair_weights=count).reward
