"""The bound calculator behind `dpolab bounds`: every closed form of a family at grid points.

The theory modules are imported when a summary is computed, so that the command line can read
`FAMILIES` (defaults for its help) without loading JAX.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, NamedTuple

import numpy as np

from dpolab.errors import InputError

#: The largest integer field: integers up to 2**53 are exact in float64 (the bounds' arithmetic).
MAX_INT = 2**53

#: Parameters of `im_li_summary` with their defaults (None: the theorem's default d = 5Q,
#: v = 1/(32√Q), also inside the Q* search).
IM_LI_DEFAULTS = dict(K=10, Q=100, d=None, v=None, lb=0.5, Z=1, beta=1.0, tau=1.0, threshold=0.05)
_INTS = ("K", "Q", "d", "Z")


def im_li_summary(*, K, Q, d=None, v=None, lb=0.5, Z=1, beta=1.0, tau=1.0, threshold=0.05) -> dict:
    """τ_1, the Theorem 4.2 envelope at τ_1, both Theorem 4.3 bounds, Q* and the conditions.

    Args:
      K, Q, d, v, lb, Z: the data model (THEORY §1.3); d, v default to 5Q and 1/(32√Q).
      beta, tau: DPO temperature and inverse learning rate. threshold: the risk level for Q*.
    Returns:
      dict with keys K, Q, d, v, lb, Z, beta, tau, threshold, tau_1, r_lower_at_tau_1,
      r_upper_at_tau_1, bound_simplified, bound_refined, q_star_simplified, q_star_refined,
      q_star_refined_violates (conditions that fail at Q* = q_star_refined with the given d, v),
      conditions (name → bool), vacuous (bound name → whether it exceeds 1: a risk bound above 1
      says nothing).
    """
    from dpolab.theory import im_li

    d_val = im_li.default_d(Q) if d is None else d
    v_val = float(im_li.default_v(Q)) if v is None else v
    t1 = im_li.tau_1(K=K, beta=beta, tau=tau)
    q_refined = im_li.q_star(K, threshold=threshold, bound="refined", d=d, v=v, lb=lb, Z=Z)
    at_q_star = [] if q_refined is None else [  # a fixed d or v may break the conditions at Q*
        c.name for c in im_li.conditions(Q=q_refined, d=im_li.default_d(q_refined) if d is None else d,
                                          v=float(im_li.default_v(q_refined)) if v is None else v,
                                          lb=lb, Z=Z, K=K) if not c.holds]
    risk_bounds = dict(bound_simplified=float(im_li.bound_simplified(K=K, Q=Q)),
                       bound_refined=float(im_li.bound_refined(K=K, Q=Q, d=d_val, v=v_val, lb=lb, Z=Z)))
    return dict(
        K=K, Q=Q, d=d_val, v=v_val, lb=lb, Z=Z, beta=beta, tau=tau, threshold=threshold,
        tau_1=t1,
        r_lower_at_tau_1=float(im_li.r_lower(t1, K=K, beta=beta, tau=tau)),
        r_upper_at_tau_1=float(im_li.r_upper(t1, K=K, beta=beta, tau=tau)),
        **risk_bounds,
        vacuous={name: value > 1 for name, value in risk_bounds.items()},
        q_star_simplified=im_li.q_star(K, threshold=threshold),
        q_star_refined=q_refined,
        q_star_refined_violates=at_q_star,
        conditions={c.name: c.holds for c in im_li.conditions(Q=Q, d=d_val, v=v_val, lb=lb, Z=Z, K=K)},
    )


def ranking_summary(*, log_ref_ratio, alpha, beta) -> dict:
    """Chen et al. at one pair: the optimal log-ratio (Thm 3.1), whether the idealized model ranks
    it right (Cor. 3.3) and the loss threshold −log σ(β·(−R)) of Thm 4.1 (R = log-ref-ratio)."""
    from dpolab.theory import ranking

    return dict(log_ref_ratio=log_ref_ratio, alpha=alpha, beta=beta,
                optimal_log_ratio=float(ranking.optimal_log_ratio(log_ref_ratio, alpha, beta=beta)),
                idealized_correct=bool(ranking.idealized_correct(log_ref_ratio, alpha, beta=beta)),
                loss_threshold=float(ranking.loss_threshold(-log_ref_ratio, beta=beta)))


def rdpo_summary(**kw) -> dict:
    """`dpolab.theory.rdpo.bounds_summary` (imported here: it loads JAX)."""
    from dpolab.theory import rdpo

    return rdpo.bounds_summary(**kw)


class Family(NamedTuple):
    """A bound family of `dpolab bounds`: its summary function, defaults, integer fields (1 to
    `MAX_INT`), fields that must be > 0 and fields that must be >= 0 (the summary checks the rest)."""

    summary: Callable[..., dict]
    defaults: dict
    integers: tuple = ()
    positive: tuple = ()
    non_negative: tuple = ()


FAMILIES = {
    "im-li": Family(im_li_summary, IM_LI_DEFAULTS, _INTS, ("lb", "beta", "tau", "threshold"), ("v",)),
    "rdpo": Family(rdpo_summary, dict(n=1000, d=10, eps=0.1, beta=1.0, L=1.0, B=1.0,
                                      delta=0.05, lam=0.0, C=1.0, C_prime=1.0, c_margin=4.0),
                   ("n", "d")),
    "ranking": Family(ranking_summary, dict(log_ref_ratio=0.0, alpha=0.75, beta=0.1)),
}


def _check(family: Family, name: str, value) -> None:
    """Raises InputError naming the field when `value` breaks the family's rule for it."""
    if value is None:  # a theorem default (im-li d, v)
        return
    if not math.isfinite(value):
        rule = "a finite number"
    elif name in family.integers and not (value == int(value) and 1 <= value <= MAX_INT):
        rule = f"an integer from 1 to 2**53 = {MAX_INT}"
    elif name in family.positive and not value > 0:
        rule = "> 0"
    elif name in family.non_negative and not value >= 0:
        rule = ">= 0"
    else:
        return
    raise InputError(f"{name}={value!r} is not allowed: {name} must be {rule}")


def grid(family: str, **lists) -> list[dict]:
    """The family's summary for every combination of the given value lists (one row each)."""
    if family not in FAMILIES:
        raise InputError(f"family={family!r} is not allowed: family must be one of {tuple(FAMILIES)}")
    fam = FAMILIES[family]
    unknown = set(lists) - set(fam.defaults)
    if unknown:
        name = sorted(unknown)[0]
        raise InputError(f"{name} is not a parameter of the {family} bounds: allowed are "
                         f"{tuple(fam.defaults)}")
    axes = {k: lists.get(k) or [fam.defaults[k]] for k in fam.defaults}
    for name, values in axes.items():
        for value in values:
            _check(fam, name, value)
    rows = []
    for combo in itertools.product(*axes.values()):
        kw = dict(zip(axes, combo))
        kw.update({k: int(kw[k]) for k in fam.integers if kw[k] is not None})
        try:
            with np.errstate(over="raise", invalid="raise"):
                rows.append(fam.summary(**kw))
        except (OverflowError, FloatingPointError, ZeroDivisionError) as err:
            given = ", ".join(f"{k}={kw[k]!r}" for k in lists)
            raise InputError(f"{given or 'the defaults'} is not allowed: the {family} bounds are not "
                             f"representable in float64 there ({err})") from None
    return rows
