"""Audit Q4 (issue #7): do Theorems 4.2/4.3 survive realistic, anisotropic low-rank noise?

The theorems assume isotropic cluster noise v²I_d. Real hidden states are far from it: their
within-cluster covariance has a small effective rank r_eff = (tr Σ)²/tr Σ². Here the noise is a
rank-`noise_rank` spike carrying a fraction `noise_share` of the variance (`dpolab.sims.data.
low_rank_spectrum`: the spiked coordinates are spread evenly over all d, so e_1, the bias
direction, is always one of them, concept coordinates only when the spike is wide enough),
calibrated to real embeddings:

* real track (`ctx.features` on the paper's K = 4 persona set, Gemma-3-270M): the pooled
  within-cluster spectrum and v of `dpolab.sims.llm.diagnose.data_model_estimates` (units ‖c_k‖ = 1);
  the spike's (rank, share) is the pair whose share is the real top-rank variance fraction and
  whose effective rank is closest to the real one, and v_cal = √(tr Σ / d) keeps the real total
  noise energy in the simulation's d = 5Q;
* fallback (no real track here): r_eff = (0.227/0.058)² ≈ 15 from the paper's App. E statistics
  (mean squared distance to the persona mean = tr Σ, mean covariance Frobenius norm = ‖Σ‖_F,
  THEORY §1.8), the spike share fixed at 0.9 (an assumption), and no calibrated v (the paper
  reports no concept norm); the v axis spans the theorem's value to far beyond it either way.

Then Theorem 4.2's sandwich and Theorem 4.3's risk bounds are re-checked over v, with the
mean-field risk of `dpolab.audit.q2_unseen.mean_field` (which takes the spectrum) beside the measurement.

References:
    [IL] S. Im, S. Li, arXiv 2408.03459: Theorems 4.2, 4.3; App. E (embedding statistics).
"""
from __future__ import annotations

import numpy as np

from dpolab.audit.common import BASE, BOUND_BASE, SEEDS, spec_dict, summarize, sweep_rows, violations_inside_conditions
from dpolab.checks.generalization import bound_status
from dpolab.checks.result import CheckResult
from dpolab.sims.data import low_rank_spectrum
from dpolab.theory import im_li

NAME = "q4-noise"
TITLE = "Q4. Realistic noise: do Theorems 4.2/4.3 hold under anisotropic low-rank noise?"
#: THEORY §1.8 (paper App. E, Llama-3.1-8B, unit-norm embeddings): mean Frobenius norm of the
#: per-persona covariance and mean squared distance to the persona mean (= its trace).
PAPER_COV_FROBENIUS, PAPER_MEAN_SQ_DIST = 0.058, 0.227
FALLBACK_SHARE = 0.9
SETTINGS = {True: dict(K=8, base=BASE[True], limit=8, v=[0.4], ranks=(), shares=()),
            False: dict(K=4, base=BOUND_BASE, limit=60, v=[0.05, 0.1, 0.2, 0.4, 0.8],
                        ranks=(1, 4), shares=(0.5, 0.99))}


def effective_rank(spectrum) -> float:
    """(Σλ)²/Σλ² of a variance spectrum."""
    lam = np.asarray(spectrum, dtype=float)
    return float(lam.sum() ** 2 / np.sum(lam**2))


def calibrate_spike(d: int, target_rank: float, real_spectrum=None, share=FALLBACK_SHARE):
    """The spike (rank, share) of `low_rank_spectrum(d, rank, share)` closest to a target r_eff.

    With a real spectrum (descending variances) the share of rank r is the real top-r variance
    fraction; without one it is `share`. Returns (rank, share, model effective rank).
    """
    best = None
    lam = None if real_spectrum is None else np.sort(np.asarray(real_spectrum, float))[::-1]
    for rank in range(1, d):
        if lam is not None:
            share = float(np.clip(lam[:rank].sum() / lam.sum(), 1e-3, 0.999))
        model = effective_rank(low_rank_spectrum(d, rank, share))
        gap = abs(np.log(model / target_rank))
        if best is None or gap < best[0]:
            best = (gap, rank, share, model)
    return best[1:]


def calibration(ctx, d: int, limit: int) -> dict:
    """Real-embedding estimates (or the stated fallback) and the spike calibrated to them."""
    why = ctx.real_unavailable()
    if why is None:
        from dpolab.sims.llm.diagnose import data_model_estimates, embedding_structure
        from dpolab.sims.llm.persona import paper_persona_set

        feats = ctx.features(paper_persona_set(4, ctx.persona_dir), limit)
        gs = [f.g.astype(np.float64) for f in feats.values()]
        labels = [f.label for f in feats.values()]
        est, struct = data_model_estimates(gs, labels), embedding_structure(gs, labels)
        spectrum = est["v_per_dimension"] ** 2
        rank, share, model = calibrate_spike(d, est["effective_rank"], spectrum)
        return {"source": "real", "why": "", "r_eff": est["effective_rank"], "v_real": est["v"],
                "d_real": est["d"], "v_cal": float(np.sqrt(spectrum.sum() / d)), "lb_real": est["lb"],
                "cos_real": est["concept_cosine_mean"], "q_min_real": est["Q_min"],
                "n_statements": sum(len(g) for g in gs), "rank": rank, "share": share,
                "model_r_eff": model, "spectrum": spectrum / spectrum.mean(),
                "cov_frobenius": struct["covariance_frobenius"],
                "mean_sq_dist": struct["mean_squared_distance"]}
    r_eff = (PAPER_MEAN_SQ_DIST / PAPER_COV_FROBENIUS) ** 2
    rank, share, model = calibrate_spike(d, r_eff)
    nan = float("nan")
    return {"source": "paper", "why": why, "r_eff": r_eff, "v_real": nan, "d_real": nan,
            "v_cal": nan, "lb_real": nan, "cos_real": nan, "q_min_real": nan, "n_statements": 0,
            "rank": rank, "share": share, "model_r_eff": model, "spectrum": np.zeros(0),
            "cov_frobenius": PAPER_COV_FROBENIUS, "mean_sq_dist": PAPER_MEAN_SQ_DIST}


def compute(ctx) -> dict:
    """Calibration, then isotropic vs spiked noise over v (and spike rank/share variants)."""
    cfg = SETTINGS[ctx.quick]
    base = dict(cfg["base"], K=cfg["K"])
    d = 5 * base["Q"]
    cal = calibration(ctx, d, cfg["limit"])
    vs = [im_li.default_v(base["Q"])] + cfg["v"] + ([round(cal["v_cal"], 4)] if cal["source"] == "real" else [])
    vs = sorted(set(vs))
    rank, share = cal["rank"], round(cal["share"], 4)
    sweeps = {"spike": (dict(base, tokens="distinct", noise_share=share), {"noise_rank": [0, rank], "v": vs}),
              "yes_no": (dict(base, tokens="yes_no", noise_share=share), {"noise_rank": [0, rank], "v": vs})}
    if cfg["ranks"]:
        wide = [min(m * rank, d - 1) if m > 1 else m for m in cfg["ranks"]]
        sweeps["rank"] = (dict(base, tokens="distinct", noise_share=share),
                          {"noise_rank": sorted(set(wide) - {rank}), "v": vs})
        sweeps["share"] = (dict(base, tokens="distinct", noise_rank=rank),
                           {"noise_share": list(cfg["shares"]), "v": vs})
    if ctx.quick:
        del sweeps["yes_no"]
    data = {}
    for name, (fixed, grid) in sweeps.items():
        for key, arr in summarize(ctx.sweep(name, spec_dict(fixed, grid, ctx.quick))).items():
            data[f"{name}_{key}"] = np.asarray(arr, dtype=float)
        data[f"{name}_refined_status"] = np.asarray([bound_status(lo, hi, b, n) for lo, hi, b, n in zip(
            data[f"{name}_test_risk_lo"], data[f"{name}_test_risk_hi"], data[f"{name}_bound_refined"],
            data[f"{name}_n_test_total"])])
    spike = np.asarray(low_rank_spectrum(d, rank, cal["share"]))
    return data | {f"cal_{k}": np.asarray(v) for k, v in cal.items()} | {
        "sweeps": np.asarray(list(sweeps)), "seeds": np.asarray(SEEDS[ctx.quick]), "Q": np.asarray(base["Q"]),
        "K": np.asarray(base["K"]), "d": np.asarray(d), "v_theorem": np.asarray(im_li.default_v(base["Q"])),
        "limit": np.asarray(cfg["limit"]), "model_spectrum": np.sort(spike)[::-1],
        "spike_on_e1": np.asarray(spike[0] > 1), "spike_on_concepts": np.asarray(
            np.mean(spike[1:base["K"] + 1] > 1))}


def render(data, ctx) -> list:
    """`q4_noise.*`: spectra, risk and sandwich vs v (isotropic vs spiked), risk vs bound."""
    from dpolab.figures.audit_data import plot_noise

    return plot_noise(data, ctx.dir)


def configs(data) -> list[dict]:
    """One entry per noise configuration (sweep, tokens, rank, share) with its v curve."""
    out = []
    for s in (str(x) for x in data["sweeps"]):
        keys = sorted(set(zip(data[f"{s}_shared"], data[f"{s}_noise_rank"], data[f"{s}_noise_share"])))
        for shared, rank, share in keys:
            sel = ((data[f"{s}_shared"] == shared) & (data[f"{s}_noise_rank"] == rank)
                   & (data[f"{s}_noise_share"] == share))
            order = np.argsort(data[f"{s}_v"][sel])
            pick = {f: data[f"{s}_{f}"][sel][order] for f in (
                "v", "sandwich", "in_window", "test_risk", "test_risk_lo", "test_risk_hi", "mf_test_risk",
                "lam_e1", "lam_concepts")}
            name = ("isotropic" if rank == 0 else f"spike r = {int(rank)}, share {share:.2f}") + (
                ", shared Yes/No" if shared else "")
            out.append({"name": name, "rank": int(rank), **pick})
    return out


def _last_v(v, ok):
    """Largest v up to which `ok` holds at every smaller grid v (NaN if it fails at the first)."""
    bad = np.flatnonzero(~ok)
    return float(v[-1] if not bad.size else (v[bad[0] - 1] if bad[0] else np.nan))


def _inside(c) -> int:
    """How many v of a configuration have the mean-field risk inside the measured CP95 interval."""
    return int(np.sum((c["test_risk_lo"] <= c["mf_test_risk"]) & (c["mf_test_risk"] <= c["test_risk_hi"])))


def report(data) -> str:
    """The audit.md section: calibration (or fallback), sandwich and risk vs v, bounds."""
    real = str(data["cal_source"]) == "real"
    cal = {k[4:]: data[k] for k in data if k.startswith("cal_")}
    if real:
        calib = (f"Real track: the paper's K = 4 persona set, first {int(data['limit'])} statements each "
                 f"({int(cal['n_statements'])} statements, Gemma-3-270M, d = {int(cal['d_real'])}, "
                 f"{int(cal['q_min_real'])} per cluster). Within-cluster effective rank "
                 f"{float(cal['r_eff']):.1f} (at most the number of statements), noise v = "
                 f"{float(cal['v_real']):.3g} per coordinate in units ‖c_k‖ = 1 (tr Σ = "
                 f"{float(cal['v_real'])**2 * float(cal['d_real']):.3g}), also "
                 f"l_b = {float(cal['lb_real']):.3g} "
                 f"and mean concept cosine {float(cal['cos_real']):.2f} (both outside the theorem; see Q3). "
                 f"Calibrated: v_cal = √(tr Σ/d) = {float(cal['v_cal']):.3g} in d = {int(data['d'])}, "
                 f"{float(cal['v_cal']) / float(data['v_theorem']):.0f}× Theorem 4.2's limit 1/(32√Q)")
    else:
        calib = (f"Real track unavailable here ({cal['why']}); fallback calibration from the paper's "
                 f"App. E statistics (THEORY §1.8): r_eff = ({float(cal['mean_sq_dist']):g}/"
                 f"{float(cal['cov_frobenius']):g})² = {float(cal['r_eff']):.1f}, spike share fixed at "
                 f"{FALLBACK_SHARE:g} (an assumption); v is not calibrated (no concept norm is reported)")
    calib += (f"; spike rank {int(cal['rank'])}, share {float(cal['share']):.2f} (model r_eff "
              f"{float(cal['model_r_eff']):.1f}). Its spiked coordinates include e_1 "
              f"{'(always)' if bool(data['spike_on_e1']) else '(not here)'} and "
              f"{float(data['spike_on_concepts']):.0%} of the trained concept coordinates.")
    cs = configs(data)
    vmax = max(float(np.max(c["v"])) for c in cs)
    iso, spk = cs[0], cs[1]  # the "spike" sweep: isotropic and the calibrated spike, new tokens
    inside = sum(_inside(c) for c in cs)
    total = sum(len(c["v"]) for c in cs)
    extra = [n for n, s in (("shared Yes/No tokens (the paper's)", "yes_no"),
                            ("spike rank variants", "rank"), ("spike share variants", "share"))
             if s in [str(x) for x in data["sweeps"]]]
    grid = np.unique(np.concatenate([c["v"] for c in cs]))
    v_mid = float(cal["v_cal"]) if real else float(grid[len(grid) // 2])
    v_mid = float(grid[np.argmin(np.abs(grid - v_mid))])  # the grid value (v_cal is rounded there)

    def risk_at(c, v):
        j = np.argmin(np.abs(c["v"] - v))
        return (f"{c['test_risk'][j]:.3f} [{c['test_risk_lo'][j]:.3f}, {c['test_risk_hi'][j]:.3f}] "
                f"({c['mf_test_risk'][j]:.3f})")

    lines = [f"| {c['name']} | {c['lam_e1'][0]:.3g}, {c['lam_concepts'][0]:.3g} | "
             f"{_last_v(c['v'], c['sandwich'] == 1):.3g} | {_last_v(c['v'], c['in_window'] == 1):.3g} | "
             f"{risk_at(c, v_mid)} | {risk_at(c, vmax)} | {_inside(c)}/{len(c['v'])} |" for c in cs]
    spiked = [c for c in cs if c["rank"] > 0]
    over = [(float(np.max(c["mf_test_risk"] - c["test_risk_hi"])), float(c["lam_e1"][0])) for c in spiked]
    worst = max(over) if over else (float("nan"), float("nan"))
    iso_in = sum(_inside(c) for c in cs if c["rank"] == 0)
    iso_n = sum(len(c["v"]) for c in cs if c["rank"] == 0)
    bound, status = sweep_rows(data, "bound_refined"), sweep_rows(data, "refined_status")
    useful = bound < 1
    counts = ", ".join(f"{int(np.sum(status[useful] == s))} {s}" for s in np.unique(status[useful])) or "none"
    return "\n".join([
        f"## {TITLE}", "",
        f"Sweeps (`im-li`, K = {int(data['K'])}, Q = {int(data['Q'])}, d = 5Q = {int(data['d'])}, GD to τ_1, "
        f"seeds 0–{int(data['seeds']) - 1}): isotropic vs spiked noise over v from the theorem's "
        f"{float(data['v_theorem']):.3g} to {vmax:g}, new tokens (the theorem's setting)"
        + (", plus " + ", ".join(extra) if extra else "") + ".", "",
        f"**Calibration.** {calib}", "",
        "Per noise configuration: noise variance along e_1 and along the trained concept axes (in "
        "units of v²; isotropic = 1), the largest v up to which every seed keeps Theorem 4.2's sandwich "
        f"and τ_1 window, the test risk [CP95] (mean field) at v = {v_mid:.3g}"
        f"{' (calibrated)' if real else ''} and at v = {vmax:g}, and at how many v the mean field lies "
        "inside the CP95 interval.", "",
        "| noise | λ(e_1), λ(c_k) | sandwich up to v | window up to v | risk at v = "
        f"{v_mid:.3g} | risk at v = {vmax:g} | mean field inside CP95 |",
        "|---|---|---|---|---|---|---|", *lines, "",
        f"**Mean field.** With isotropic noise it lies inside CP95 at {iso_in} of {iso_n} points; with "
        f"spiked noise it misses more, overpredicting the risk by up to {worst[0]:.3f} above the CP95 "
        f"upper end (at λ(e_1) = {worst[1]:.3g}): the common-weight approximation keeps the training "
        "noise's pull along the bias direction e_1, which the loss weights of the real run partly "
        "undo (a hypothesis the table is consistent with, not a measurement).", "",
        f"**Risk bounds.** Of {bound.size} grid points the refined bound is non-vacuous at {int(useful.sum())} "
        f"({counts}); {int(np.sum(status == 'violated'))} violate it.", "",
        "![Q4: anisotropic noise](q4-noise/q4_noise.png)", "",
        f"**Verdict:** finding — calibrated on "
        f"{'real Gemma-3-270M embeddings' if real else 'the paper’s App. E statistics (fallback)'}: "
        f"the sandwich holds for every seed up to v = {_last_v(iso['v'], iso['sandwich'] == 1):.3g} with "
        f"isotropic noise and up to v = {_last_v(spk['v'], spk['sandwich'] == 1):.3g} with the calibrated "
        f"spike; at v = {v_mid:.3g} the risk is {risk_at(iso, v_mid)} vs {risk_at(spk, v_mid)} "
        "(measured [CP95] (mean field)); "
        f"the mean field with the spectrum lies inside CP95 at {inside} of {total} points; "
        f"{int(np.sum(status == 'violated'))} refined-bound violations ({int(useful.sum())} "
        "non-vacuous points).",
    ])


def finding(data) -> CheckResult:
    """A finding: sandwich / window limits per noise configuration, bound violations."""
    status = sweep_rows(data, "refined_status")
    inside = violations_inside_conditions(data)
    return CheckResult(
        id=f"audit/{NAME}", reference="Im & Li Theorems 4.2, 4.3 under anisotropic noise; issue #7 Q4",
        claim="the sandwich and risk bounds under low-rank noise calibrated to real embeddings",
        predicted="mean-field risk Φ(−E/√Var) with the noise spectrum",
        measured={c["name"]: {"sandwich_up_to_v": _last_v(c["v"], c["sandwich"] == 1),
                              "risk_at_largest_v": float(c["test_risk"][-1])} for c in configs(data)}
        | {"calibration": str(data["cal_source"]), "bound_violations": int(np.sum(status == "violated"))},
        tolerance="risks: pooled Clopper–Pearson 95%; sandwich: every seed",
        why="empirical answer to an open question; a refined-bound violation at a point inside "
            f"Theorem 4.3's conditions would contradict the theorem and fails the check ({inside} here)",
        verdict="fail" if inside else "finding")
