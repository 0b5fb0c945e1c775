"""Balanced-design comparisons from a hidden-context (K-type BT) mixture.

Every unordered item pair is compared exactly ``per_pair`` times; each comparison draws a hidden
annotator type k ~ w and the winner by that type's BT probability a_k. This is the design under
which the finite-sample BT MLE ranks exactly by total wins (`dpolab.theory.hidden_context`, point
3b); `dpolab.sims.preference_mixture.sample_counts` draws i.i.d. random pairs instead.
"""
from __future__ import annotations

import numpy as np

from dpolab.errors import InputError
from dpolab.theory.mixture import group_win_probs


def sample_balanced_counts(rng: np.random.Generator, rewards, weights, per_pair: int):
    """(M, M) wins[i, j] = times i beat j, every pair compared ``per_pair`` times.

    Args:
        rng: numpy Generator. rewards: (K, M). weights: (K,), > 0, summing to 1.
        per_pair: comparisons per unordered pair, >= 1.
    """
    if isinstance(per_pair, bool) or not isinstance(per_pair, (int, np.integer)) or per_pair < 1:
        raise InputError(f"per_pair must be an integer >= 1; got {per_pair!r}")
    a = group_win_probs(rewards)
    M = a.shape[1]
    i, j = np.triu_indices(M, 1)
    types = rng.multinomial(per_pair, np.asarray(weights, dtype=np.float64), size=i.size)  # (pairs, K)
    first = rng.binomial(types, a[:, i, j].T).sum(axis=1)
    wins = np.zeros((M, M))
    wins[i, j] = first
    wins[j, i] = per_pair - first
    return wins
