"""Statistics of the checks, the audit and the figures, one definition each: normal quantiles, the
mean ± z·SE interval over seeds and its text form, exact binomial (Clopper–Pearson) intervals; and the
Monte-Carlo population risk R(P) = P(r ≤ 0) of a trained head on fresh samples.

The statistics are numpy/scipy only and JAX is imported only when `monte_carlo_risk` runs, so the
figures (which must load without JAX) can use this module.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special, stats

#: Two-sided normal quantiles: 95% (z = 1.95996…, the "1.96") and 99.9% (z = 3.29…).
Z95 = float(special.ndtri(0.975))
Z999 = float(special.ndtri(0.9995))


def mean_ci(x, axis=-1, z=Z95):
    """(mean, half-width z·sd/√n) over `axis` (the seeds): the normal interval mean ± half.

    Args:
      x: samples; axis: the axis of the n independent repeats; z: the two-sided quantile (95%).
    Returns:
      (mean, half), arrays with `axis` removed; half is NaN where n < 2 (no spread to estimate).
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[axis]
    if n < 2:
        return x.mean(axis=axis), np.full(x.mean(axis=axis).shape, np.nan)
    return x.mean(axis=axis), z * x.std(axis=axis, ddof=1) / math.sqrt(n)


def fmt_ci(mean, half, digits=3, *, fixed=False):
    """'m ± h': `digits` significant digits for m and 2 for h, or (fixed) `digits` decimals for both."""
    if fixed:
        return f"{mean:.{digits}f} ± {half:.{digits}f}"
    return f"{mean:.{digits}g} ± {half:.2g}"


def clopper_pearson(errors: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval for errors/n."""
    alpha = 1 - level
    lo = 0.0 if errors == 0 else float(stats.beta.ppf(alpha / 2, errors, n - errors + 1))
    hi = 1.0 if errors == n else float(stats.beta.ppf(1 - alpha / 2, errors + 1, n - errors))
    return lo, hi


def pooled_risk(test_risk, n_per_seed: int, level: float = 0.95):
    """Pools per-seed held-out error fractions into one binomial count with its CP interval.

    Args:
        test_risk: (S,) fraction of the n_per_seed held-out samples of each seed with r ≤ 0.
        n_per_seed: held-out samples per seed (2K · n_test).

    Returns:
        (errors, n, risk, low, high): integer error count, total samples, errors/n, and the
        Clopper–Pearson interval at `level`.
    """
    counts = np.asarray(test_risk, dtype=np.float64) * n_per_seed
    errors = np.rint(counts)
    if np.any(np.abs(counts - errors) > 1e-6):  # the fractions must be k / n_per_seed
        raise ValueError(f"test_risk={test_risk!r} is not allowed: not multiples of 1/{n_per_seed}")
    errors, n = int(errors.sum()), int(n_per_seed) * counts.size
    lo, hi = clopper_pearson(errors, n, level)
    return errors, n, errors / n, lo, hi


def needed_q(Qs, passes) -> float:
    """Smallest grid Q from which on every larger grid Q passes; NaN when the largest fails.

    Args:
        Qs: grid of Q values (any order). passes: same shape, bool (CP upper < threshold).

    Returns:
        float Q, or NaN when no such Q exists on the grid.
    """
    order = np.argsort(np.asarray(Qs))
    q, ok = np.asarray(Qs, dtype=np.float64)[order], np.asarray(passes, dtype=bool)[order]
    if ok.size == 0 or not ok[-1]:
        return float("nan")
    failing = np.flatnonzero(~ok)
    return float(q[failing[-1] + 1] if failing.size else q[0])


def reward_margins(data, delta_w, beta):
    """Margins of `data` under a trained head (`dpolab.sims.train.reward_margins`, imported here
    when a risk is measured, so the statistics above load without JAX)."""
    from dpolab.sims.train import reward_margins as margins

    return margins(data, delta_w, beta)


@functools.lru_cache(maxsize=32)
def _error_counter(spec, per_cluster: int):
    import jax
    import jax.numpy as jnp

    from dpolab.sims.data import sample_dataset

    def count(key, params, delta_w, split):
        fresh = sample_dataset(key, spec, params, split=split, per_cluster=(per_cluster,) * spec.K)
        return jnp.sum(reward_margins(fresh, delta_w, params.beta) <= 0)

    return jax.jit(count)


def monte_carlo_risk(key, spec, params, delta_w, *, n_samples: int,
                     batch: int = 20_000, level: float = 0.95):
    """Test risk of a trained head on ≥ n_samples fresh samples of the same mixture.

    Args:
      key: the mixture's PRNG key (the one its training set was drawn with: same concepts).
      spec, params: the mixture (`DataSpec`, `SimParams`). delta_w: (2P, d) trained used rows.
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


def log_gaussian_risk(delta_w, concepts, pair_of_value, *, beta, lb, v):
    """log R(P), exact, of a trained head on isotropic Gaussian clusters (THEORY §1.3, §1.5).

    A fresh sample of cluster (k, s) has margin r = β s D_p·(l_b e_1 + s c_k + v ξ), D_p the trained
    row difference of its value's pair p, so r ~ N(β(s l_b D_p[0] + D_p·c_k), β²v²‖D_p‖²) and
    R(P) = (1/2K) Σ_{k,s} Φ(−μ/σ), in log form (log_ndtr) so that risks far below float64's range
    stay comparable.

    Args:
      delta_w: (2P, d) trained used rows. concepts: (K, d) concept vectors. pair_of_value: (K,) int
      pair index of each value. beta, lb, v: the mixture (v > 0).
    Returns:
      float log R(P).
    """
    delta_w, c = np.asarray(delta_w, dtype=np.float64), np.asarray(concepts, dtype=np.float64)
    diff = (delta_w[0::2] - delta_w[1::2])[np.asarray(pair_of_value)]  # (K, d): D_p of each value
    sigma = beta * v * np.linalg.norm(diff, axis=1)
    terms = [special.log_ndtr(-beta * (s * lb * diff[:, 0] + np.sum(diff * c, axis=1)) / sigma) for s in (1.0, -1.0)]
    return float(special.logsumexp(np.concatenate(terms)) - math.log(2 * c.shape[0]))
