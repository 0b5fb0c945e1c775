"""`dpolab llm train` and `dpolab llm hh`: stored features in, stored results out."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dpolab.errors import InputError
from dpolab.sims.llm.backbone import HH_BATCH_SIZE
from dpolab.sims.llm.extract import MANIFEST, load_features
from dpolab.sims.llm.persona import PAPER_PERSONA_SETS, paper_persona_set
from dpolab.sims.llm.train import PAPER_PROTOCOL, PersonaFeatures, per_value_means, train_split
from dpolab.store import environment, prepare_out, write_atomic, write_manifest
from dpolab.theory.im_li import tau_1

PROTOCOLS = ("paper", "gd")


def load_persona_features(features_dir) -> dict[str, PersonaFeatures]:
    """The personas stored by `dpolab llm extract` in `features_dir`, as training inputs."""
    stored = load_features(features_dir)
    return {n: PersonaFeatures(**{f: a[f] for f in PersonaFeatures._fields}) for n, a in stored.items()}


def parse_k_sets(text, flag: str = "--k-sets") -> list[int]:
    """A comma list of the paper's value-set sizes ("1,2,4,8,16"), validated.

    Raises:
      InputError: naming `flag`, the value and the allowed sizes.
    """
    allowed = sorted(PAPER_PERSONA_SETS)
    try:
        ks = [int(k) for k in str(text).split(",") if k.strip()]
    except ValueError:
        ks = []
    if not ks or any(k not in PAPER_PERSONA_SETS for k in ks):
        raise InputError(f"{flag}: {text!r} is not allowed; give a comma list of the paper's set sizes {allowed}")
    return list(dict.fromkeys(ks))


def paper_union(ks, persona_dir) -> list[str]:
    """The personas of the paper's sets for every K in `ks` (union, first-seen order)."""
    return list(dict.fromkeys(n for k in ks for n in paper_persona_set(k, persona_dir)))


def paper_value_sets(ks, persona_dir, features_dir) -> dict[int, list[str]]:
    """{K: persona names} of the paper's sets, after checking that `features_dir` holds them all.

    The paper's sets are not nested (the K = 16 set is not a superset of the others), so features
    for `--k-sets 1,2,4,8,16` come from `dpolab llm extract --k-set 1,2,4,8,16`.

    Raises:
      InputError: naming `--features` and, per K, the personas that are missing.
    """
    sets = {k: paper_persona_set(k, persona_dir) for k in ks}
    stored = set(load_features_manifest(features_dir).get("personas", {}))
    missing = {k: [n for n in names if n not in stored] for k, names in sets.items()}
    missing = {k: names for k, names in missing.items() if names}
    if missing:
        detail = "; ".join(f"K={k} needs {names}" for k, names in missing.items())
        raise InputError(f"--features: {str(features_dir)!r} lacks personas of the requested sets ({detail}); "
                         f"extract them first: dpolab llm extract --k-set {','.join(map(str, ks))} "
                         f"--out {features_dir}")
    return sets


def load_features_manifest(features_dir) -> dict:
    """The manifest of a features folder written by `dpolab llm extract`.

    Raises:
      InputError: naming `--features` when there is none.
    """
    try:
        manifest = json.loads((Path(features_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"--features: {str(features_dir)!r} has no readable {MANIFEST} "
                         "(a folder written by dpolab llm extract)") from err
    if not isinstance(manifest, dict) or not manifest.get("personas"):
        raise InputError(f"--features: {str(features_dir)!r} holds no extracted persona")
    return manifest


def check_features_model(features_dir, model) -> dict:
    """With `--model` given, the features must have been extracted by that model (any dtype).
    Returns the features' model key (recorded in train/diagnose manifests).

    Raises:
      InputError: naming `--model` when the features come from another model or revision.
    """
    held = load_features_manifest(features_dir).get("model_key", {})
    if model is not None:
        from dpolab.sims.llm.backbone import resolve_model

        ref = resolve_model(model)
        if (held.get("model"), held.get("revision")) != (ref.name, ref.revision):
            raise InputError(f"--model: {ref.name!r} (revision {ref.revision[:12]}) did not extract "
                             f"--features {str(features_dir)!r} ({held.get('model')!r}, revision "
                             f"{str(held.get('revision'))[:12]})")
    return held


def run_train(features_dir, out, *, value_sets: dict[int, list[str]], protocol="paper", seeds=3,
              eta_gd=None, force=False):
    """Last-layer training for each value set K (personas by name) and split seed.

    protocol "paper": Adam, lr 1e-3, β = 0.01, 100 steps; "gd": gradient descent for the same
    number of steps at η = eta_gd (default: τ_1/100 of the theory, K·log3/(5β²)/100).
    Writes per (K, seed) trajectories as npz (per-sample train/held-out margins and chosen/rejected
    log-probs at every step, the value of each sample, mean curves) and `summary.csv`; returns the
    summary rows. An earlier run in `out` is replaced only with `force`.
    """
    import jax

    jax.config.update("jax_enable_x64", True)  # the features are float32; training runs in float64
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol={protocol!r} is not allowed: protocol must be one of {PROTOCOLS}")
    from dpolab.sims.llm.backbone import check_positive_int

    check_positive_int("seeds", seeds)
    personas = load_persona_features(features_dir)
    missing = sorted({n for names in value_sets.values() for n in names if n not in personas})
    if missing:
        raise InputError(f"--features: personas {missing} are not in {str(features_dir)!r}")
    model_key = load_features_manifest(features_dir).get("model_key")
    out = Path(out)
    key = {"features": str(features_dir), "protocol": protocol, "seeds": seeds}
    manifest = prepare_out(out, "llm-train", force=force, resume=False, key=key, resumable=False)
    rows = []
    for k, names in sorted(value_sets.items()):
        feats = [personas[n] for n in names]
        proto = dict(PAPER_PROTOCOL)
        if protocol == "gd":
            proto.update(optimizer="gd", eta=eta_gd or tau_1(K=k, beta=proto["beta"]) / proto["steps"])
        for seed in range(seeds):
            traj, train, test = train_split(feats, seed=seed, **proto)
            np.savez(out / f"K{k}_seed{seed}.npz", t=np.asarray(traj.t), loss=np.asarray(traj.loss),
                     test_loss=np.asarray(traj.test_loss), accuracy=np.asarray(traj.accuracy),
                     test_accuracy=np.asarray(traj.test_accuracy),
                     margin_mean=np.asarray(traj.margins).mean(axis=1),
                     test_margin_mean=np.asarray(traj.test_margins).mean(axis=1),
                     per_value_margin=per_value_means(traj, train, len(feats)),
                     margins=np.asarray(traj.margins), test_margins=np.asarray(traj.test_margins),
                     logp_chosen=np.asarray(traj.logp_chosen),
                     logp_rejected=np.asarray(traj.logp_rejected),
                     value=np.asarray(train.value), test_value=np.asarray(test.value))
            rows.append(dict(K=k, seed=seed, protocol=protocol, train_margin=float(np.mean(traj.margins[-1])),
                             test_margin=float(np.mean(traj.test_margins[-1])),
                             train_loss=float(traj.loss[-1]), test_loss=float(traj.test_loss[-1]),
                             train_accuracy=float(traj.accuracy[-1]), test_accuracy=float(traj.test_accuracy[-1]),
                             test_error=1 - float(traj.test_accuracy[-1])))
    header = list(rows[0])
    write_atomic(out / "summary.csv", "\n".join([",".join(header)] + [
        ",".join(repr(r[h]) if isinstance(r[h], float) else str(r[h]) for h in header) for r in rows]) + "\n")
    write_manifest(out, dict(manifest, **environment(), value_sets=value_sets, hyperparameters=proto,
                             features_model=model_key))
    return rows


def run_hh(hh_path, limit, out, *, seeds=5, model=None, device="auto", dtype="float32", batch_size=HH_BATCH_SIZE,
           cache_dir=None) -> str:
    """`dpolab llm hh`: every count checked first, then HH-RLHF features (cached in `out`), DPO /
    cDPO / rDPO under injected flips, `hh_results.csv`; returns the table of means."""
    from dpolab.sims.llm.hh import check_rdpo_args, extract_hh, rdpo_on_real, write_results

    check_rdpo_args(seeds=seeds, pairs=limit)
    features = extract_hh(hh_path, limit, out, model=model, device=device, dtype=dtype,
                          batch_size=batch_size, cache_dir=cache_dir)
    return write_results(rdpo_on_real(features, seeds=seeds), out)
