"""What the audit questions share: the static settings their sweeps use (equal statics compile
once across questions), the im-li sweep spec they build, and the per-grid-point summaries of a
sweep's columns. Closed forms live in `dpolab.theory.extensions`, statistics in `dpolab.sims.risk`.
"""
from __future__ import annotations

import math

import numpy as np

from dpolab.sims.data import low_rank_spectrum
from dpolab.sims.risk import clopper_pearson, mean_ci
from dpolab.theory import im_li
from dpolab.theory.extensions import mean_field, mean_field_sandwich

#: Static settings shared by the data-model questions (Q2–Q4): equal statics compile once.
BASE = {True: dict(Q=10, n_test=20, steps=10, checkpoints=10, unseen=2),
        False: dict(Q=50, n_test=50, steps=50, checkpoints=10, unseen=2)}
#: Theorem 4.3's regime where the refined bound is non-vacuous (Q = 100, d = 5Q, v = 1/(32√Q)).
BOUND_BASE = dict(Q=100, n_test=100, steps=50, checkpoints=10, unseen=2)

#: Seeds of every Q2–Q4 sweep, and grid points per chunk (the sweep engine pads each chunk to this
#: many points: small enough not to waste work on padding, equal across questions so that chunks of
#: the same static signature have the same shapes and reuse one compilation).
SEEDS = {True: 4, False: 8}
CHUNK_POINTS = {True: 6, False: 8}
#: Quick runs use this many grid points per chunk in every dynamics question, so that equal
#: static signatures share one compiled batch function across questions.
QUICK_POINTS = 4


def im_li_spec(fixed: dict, grid: dict, *, seeds: int, chunk_size: int, root_seed: int = 0) -> dict:
    """An "im-li" sweep spec (float64) with the given fixed parameters, axes, seeds and chunk size."""
    sweep = {"simulation": "im-li", "seeds": seeds, "chunk_size": chunk_size, "precision": "float64"}
    if root_seed:
        sweep["root_seed"] = root_seed
    return {"sweep": sweep, "fixed": fixed, "grid": grid}



def spec_dict(fixed: dict, grid: dict, quick: bool) -> dict:
    """Q2–Q4's sweep: `SEEDS[quick]` seeds, `CHUNK_POINTS[quick]` grid points per chunk."""
    return im_li_spec(fixed, grid, seeds=SEEDS[quick], chunk_size=SEEDS[quick] * CHUNK_POINTS[quick])



def sweep_spec(seeds, fixed, grid, *, quick, root_seed=0):
    """Q5–Q9's sweep: one chunk per static group (QUICK_POINTS grid points per chunk when quick)."""
    from dpolab.sims.sweep.simulations import IM_LI_PARAMS

    dynamic = [len(v) for k, v in grid.items() if not IM_LI_PARAMS[k].static]
    points = QUICK_POINTS if quick else max(1, math.prod(dynamic))
    return im_li_spec(fixed, grid, seeds=seeds, chunk_size=seeds * points, root_seed=root_seed)



def per_point(cols, metric, seeds):
    """(points, seeds) matrix of one summary column (rows are sorted by point, then seed)."""
    return np.asarray(cols[metric], dtype=float).reshape(-1, seeds)


def sweep_rows(data, field):
    """The rows of `field` over every sweep stored in `data` (keys f"{sweep}_{field}"), concatenated."""
    sweeps = [str(s) for s in data["sweeps"]]
    return np.concatenate([np.asarray(data[f"{s}_{field}"]) for s in sweeps])


def violations_inside_conditions(data) -> int:
    """Grid points (over every sweep in `data`, `summarize` rows with a `refined_status`) where the
    refined Theorem 4.3 bound is violated — the CP95 lower end above it — although the point
    satisfies the theorem's conditions (`im_li.conditions` with Z = 1, and distinct tokens,
    orthogonal values ρ = 0, isotropic noise). Each such point contradicts the theorem."""
    rows = {f: sweep_rows(data, f) for f in ("Q", "d", "v", "lb", "delta", "shared", "rho", "noise_rank",
                                              "refined_status")}
    count = 0
    for i, status in enumerate(rows["refined_status"]):
        if status != "violated" or rows["shared"][i] or rows["rho"][i] or rows["noise_rank"][i]:
            continue
        conds = im_li.conditions(Q=rows["Q"][i], d=rows["d"][i], v=rows["v"][i], lb=rows["lb"][i], Z=1,
                                 delta=rows["delta"][i])
        count += all(c.holds for c in conds)
    return count


def seed_mean_ci(values, point):
    """Per grid point: mean over seeds and its 95% interval mean ± z·SE (`mean_ci`; finite rows only).

    Args:
      values, point: (R,) summary columns (one row per point and seed).
    Returns:
      (3, P) array: mean, low, high per distinct point (ascending point index).
    """
    pts = np.unique(point)
    out = np.full((3, len(pts)), np.nan)
    for i, p in enumerate(pts):
        x = values[(point == p) & np.isfinite(values)]
        mean, half = mean_ci(x)
        out[:, i] = mean, mean - half, mean + half
    return out


def pooled_risk_ci(risk, n_per_seed, point):
    """Per grid point: errors pooled over seeds, with its exact Clopper–Pearson 95% interval.

    Args:
      risk: (R,) error fractions per row. n_per_seed: (R,) samples behind each fraction.
      point: (R,) grid point of each row.
    Returns:
      (4, P) array: pooled risk, CP low, CP high, number of samples per distinct point.
    """
    pts = np.unique(point)
    out = np.zeros((4, len(pts)))
    for i, p in enumerate(pts):
        sel = point == p
        errors = int(np.sum(np.round(risk[sel] * n_per_seed[sel])))
        n = int(np.sum(n_per_seed[sel]))
        out[:, i] = (errors / n, *clopper_pearson(errors, n), n)
    return out


def summarize(cols) -> dict:
    """Per grid point of one sweep (columns `cols` of its summary): measured metrics with 95%
    intervals (sandwich and margins: mean ± Z95·SE over seeds; risks: pooled Clopper–Pearson),
    both bounds, and the mean field (`mean_field`, `mean_field_sandwich`; the noise spectrum of
    `dpolab.sims.data.low_rank_spectrum` where noise_rank > 0)."""
    point = cols["point"]
    pts, first = np.unique(point, return_index=True)
    n_seen = 2.0 * cols["n_test"] * cols["K"]
    sand = seed_mean_ci(cols["sandwich_frac"], point)
    risk = pooled_risk_ci(cols["test_risk"], n_seen, point)
    out = {"K": cols["K"][first], "shared": (cols["tokens"][first] == "yes_no").astype(float),
           "rho": cols["concept_cos"][first], "delta": cols["delta"][first], "v": cols["v"][first],
           "noise_rank": cols["noise_rank"][first], "noise_share": cols["noise_share"][first],
           "Q": cols["Q"][first], "d": cols["d"][first], "lb": cols["lb"][first],
           "sandwich": sand[0], "sandwich_lo": sand[1], "sandwich_hi": sand[2],
           "in_window": seed_mean_ci(cols["in_window"], point)[0],
           "margin_max": seed_mean_ci(cols["margin_max"], point)[0],
           **dict(zip(("margin_mean", "margin_mean_lo", "margin_mean_hi"),
                      seed_mean_ci(cols["margin_mean"], point))),
           "test_risk": risk[0], "test_risk_lo": risk[1], "test_risk_hi": risk[2],
           "n_test_total": risk[3], "bound_simplified": cols["bound_simplified"][first],
           "bound_refined": cols["bound_refined"][first],
           "unseen_risk": pooled_risk_ci(cols["unseen_risk"], 2.0 * cols["n_test"] * cols["unseen"],
                                         point)[0]}
    mf = {k: np.zeros(len(pts)) for k in ("mf_rate", "mf_sandwich", "mf_window", "mf_test_risk",
                                          "lam_e1", "lam_concepts")}
    for i, r in enumerate(first):
        d, rank = int(cols["d"][r]), int(cols["noise_rank"][r])
        spectrum = low_rank_spectrum(d, rank, float(cols["noise_share"][r])) if rank else None
        pred = mean_field(K=int(cols["K"][r]), Q=int(cols["Q"][r]), d=d, spectrum=spectrum,
                          tokens=str(cols["tokens"][r]), concept_cos=cols["concept_cos"][r],
                          v=cols["v"][r], lb=cols["lb"][r], unseen=int(cols["unseen"][r]))
        holds, window = mean_field_sandwich(K=int(cols["K"][r]), rate=pred["rate"],
                                            beta=cols["beta"][r], checkpoints=int(cols["checkpoints"][r]),
                                            t_mult=cols["t_mult"][r])
        mf["mf_rate"][i], mf["mf_sandwich"][i], mf["mf_window"][i] = pred["rate"], holds, window
        mf["mf_test_risk"][i] = pred["risk"]
        lam = np.ones(d) if spectrum is None else np.asarray(spectrum)  # noise variance / v², per axis
        mf["lam_e1"][i], mf["lam_concepts"][i] = lam[0], lam[1:int(cols["K"][r]) + 1].mean()
    return out | mf
