"""Monte-Carlo population risk R(P) = P(r ≤ 0) on fresh samples, with exact binomial intervals."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from scipy import stats

from dpolab.sims.config import DataSpec, SimParams
from dpolab.sims.data import sample_dataset
from dpolab.sims.train import reward_margins


def clopper_pearson(errors: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval for errors/n."""
    alpha = 1 - level
    lo = 0.0 if errors == 0 else float(stats.beta.ppf(alpha / 2, errors, n - errors + 1))
    hi = 1.0 if errors == n else float(stats.beta.ppf(1 - alpha / 2, errors + 1, n - errors))
    return lo, hi


@functools.lru_cache(maxsize=32)
def _error_counter(spec: DataSpec, per_cluster: int):
    def count(key, params, delta_w, split):
        fresh = sample_dataset(key, spec, params, split=split, per_cluster=(per_cluster,) * spec.K)
        return jnp.sum(reward_margins(fresh, delta_w, params.beta) <= 0)

    return jax.jit(count)


def monte_carlo_risk(key, spec: DataSpec, params: SimParams, delta_w, *, n_samples: int,
                     batch: int = 20_000, level: float = 0.95):
    """Test risk of a trained head on ≥ n_samples fresh samples of the same mixture.

    Args:
      key: the mixture's PRNG key (the one its training set was drawn with: same concepts).
      spec, params: the mixture. delta_w: (2P, d) trained used rows.
      n_samples: at least this many fresh samples, drawn in batches of about `batch`.
    Returns:
      (risk, (low, high), n): the error fraction, its Clopper–Pearson interval, the sample count.
    """
    per_cluster = max(1, batch // (2 * spec.K))
    count = _error_counter(spec, per_cluster)
    batches = -(-n_samples // (2 * spec.K * per_cluster))
    errors = sum(int(count(key, params, delta_w, 2 + b)) for b in range(batches))
    n = batches * 2 * spec.K * per_cluster
    return errors / n, clopper_pearson(errors, n, level), n
