"""rDPO on real features: HH-RLHF harmless-base pairs embedded by the same model (THEORY §2).

φ(pair side) = the final hidden state at the last token of the whole dialogue. A log-linear
policy π_θ ∝ exp(θᵀφ) with θ_0 = 0 is fitted on x = (φ(chosen) − φ(rejected))/s (s the mean ‖x‖,
so L ≈ 1) by DPO, cDPO and rDPO with labels flipped at rate ε on the training split only; the
held-out clean preference accuracy and calibration (mean predicted σ(βθᵀx) minus accuracy) are
reported against ε.
"""
from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

import numpy as np

from dpolab.errors import InputError
from dpolab.sims.llm.backbone import HH_BATCH_SIZE
from dpolab.store import sha256, write_atomic

HH_PATH_ENV = "DPOLAB_HH_PATH"
LOSSES = ("dpo", "cdpo", "rdpo")


def resolve_hh_path(path=None) -> Path:
    """The HH-RLHF harmless-base test file: the argument, else `$DPOLAB_HH_PATH`."""
    path = path or os.environ.get(HH_PATH_ENV)
    if not path:
        raise InputError(f"hh_path: not given and ${HH_PATH_ENV} is not set (the "
                         "harmless-base-test.jsonl.gz of anthropics/hh-rlhf)")
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"hh_path: {str(path)!r} is not a file")
    return path


def load_pairs(path, limit=None) -> list[tuple[str, str]]:
    """The first `limit` (chosen, rejected) dialogues, in file order.

    Raises:
      InputError: naming `hh_path` (file and line) for a file that is not gzipped JSON lines with
        `chosen` and `rejected` strings.
    """
    source = resolve_hh_path(path)
    pairs = []
    try:
        with gzip.open(source, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                row = json.loads(line)
                if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("chosen", "rejected")):
                    raise InputError(f"hh_path: {source.name} line {lineno} has no 'chosen' and 'rejected' texts")
                pairs.append((row["chosen"], row["rejected"]))
                if limit is not None and len(pairs) >= limit:
                    break
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"hh_path: {str(source)!r} is not a gzipped JSON-lines HH-RLHF file "
                         f"({err.__class__.__name__}: {err})") from err
    if not pairs:
        raise InputError(f"hh_path: {str(source)!r} holds no pair")
    return pairs


def extract_hh(path, limit, out, *, model=None, device="auto", dtype="float32", batch_size=HH_BATCH_SIZE,
               cache_dir=None, loaded=None) -> Path:
    """Embeds both sides of each pair; stores `hh.npz` (phi_chosen, phi_rejected) + manifest,
    reusing them when the request (data file checksum, limit, model revision and dtype) is
    unchanged. Every argument is checked before the model loads or `out` is created.

    Args:
      path: the HH-RLHF file (None: `$DPOLAB_HH_PATH`). limit: pairs (the first `limit`; None: all).
      out: folder for hh.npz and hh_manifest.json. model, device, dtype, batch_size, cache_dir,
      loaded: as in `dpolab.sims.llm.extract.extract`.
    """
    from dpolab.sims.llm.backbone import check_positive_int, load_backbone, resolve_backbone
    from dpolab.sims.llm.extract import final_hidden_states

    check_positive_int("limit", limit, allow_none=True)
    check_positive_int("batch_size", batch_size)
    source = resolve_hh_path(path)
    ref, device = resolve_backbone(model, device, dtype, loaded)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"out: {str(out)!r} exists and is not a directory")
    request = {**ref.key(dtype), "data_sha256": sha256(source.read_bytes()), "limit": limit}
    manifest, arrays = out / "hh_manifest.json", out / "hh.npz"
    if manifest.exists() and arrays.exists():
        stored = json.loads(manifest.read_text())
        if stored.get("request") == request and stored.get("npz_sha256") == sha256(arrays.read_bytes()):
            return arrays
    pairs = load_pairs(source, limit)
    lm, tokenizer = loaded or load_backbone(ref, device=device, dtype=dtype, cache_dir=cache_dir, progress=False)
    feats = final_hidden_states(lm, tokenizer, [c for c, _ in pairs] + [r for _, r in pairs],
                                batch_size=batch_size, model_name=ref.name)
    n = len(pairs)
    buf = io.BytesIO()
    np.savez(buf, phi_chosen=feats["g"][:n], phi_rejected=feats["g"][n:])
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(arrays, buf.getvalue())
    write_atomic(manifest, json.dumps({"request": request, "npz_sha256": sha256(buf.getvalue()),
                                       "pairs": n, "device": device, "source": "github.com/anthropics/"
                                       "hh-rlhf harmless-base test (MIT)"}, indent=1))
    return arrays


def min_pairs(train_frac: float = 0.8) -> int:
    """The fewest pairs whose split by `train_frac` leaves both parts non-empty."""
    return next(n for n in range(2, 10**6) if 1 <= int(round(train_frac * n)) <= n - 1)


def check_rdpo_args(*, seeds, pairs, train_frac: float = 0.8) -> None:
    """Validates `rdpo_on_real`'s counts (before any extraction, with `pairs` = --limit).

    Raises:
      InputError: naming `seeds` or `limit` with what is allowed.
    """
    from dpolab.sims.llm.backbone import check_positive_int

    check_positive_int("seeds", seeds)
    if pairs is not None and pairs < min_pairs(train_frac):
        raise InputError(f"limit: {pairs} pair(s) leave an empty training or held-out split "
                         f"(train fraction {train_frac}); allowed: at least {min_pairs(train_frac)}")


def rdpo_on_real(features, *, eps_grid=(0.0, 0.1, 0.2, 0.3, 0.4), seeds=5, train_frac=0.8,
                 beta=1.0, radius=10.0, steps=200) -> list[dict]:
    """Fits DPO, cDPO and rDPO on flipped training labels; evaluates on clean held-out pairs.

    Returns:
      rows with loss, eps, seed, test_accuracy, mean_confidence (mean σ(βθᵀx) on held-out pairs)
      and calibration_gap = mean_confidence − test_accuracy.

    Raises:
      InputError: naming `seeds` (< 1) or `limit` (too few pairs for both splits).
    """
    import jax
    import jax.numpy as jnp

    from dpolab.sims import bandit

    jax.config.update("jax_enable_x64", True)
    with np.load(features) as data:
        x = (data["phi_chosen"] - data["phi_rejected"]).astype(np.float64)
    check_rdpo_args(seeds=seeds, pairs=len(x), train_frac=train_frac)
    x = x / np.mean(np.linalg.norm(x, axis=1))
    n, d = x.shape
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        order = rng.permutation(n)
        cut = int(round(train_frac * n))
        train, test = x[order[:cut]], x[order[cut:]]
        for eps in eps_grid:
            flips = rng.random(cut) < eps
            observed = np.where(flips[:, None], -train, train)
            data = bandit.PreferenceData(x=jnp.asarray(observed), p=jnp.zeros(cut),
                                         flipped=jnp.asarray(flips), state=jnp.zeros(cut, int))
            inst = bandit.BanditInstance(phi=jnp.zeros((1, 2, d)), theta0=jnp.zeros(d), omega=jnp.zeros(d))
            params = bandit.make_bandit_params(beta=beta, eps=eps, B=radius, sft_scale=0.0,
                                               reward_scale=0.0)
            for loss in LOSSES:
                fit = _fit(bandit.BanditSpec(S=1, A=2, d=d, n=cut, loss=loss, steps=steps))
                theta = np.asarray(fit(data, inst, params).theta)
                z = beta * test @ theta
                acc = float(np.mean(z > 0))
                conf = float(np.mean(1 / (1 + np.exp(-z))))
                rows.append(dict(loss=loss, eps=eps, seed=seed, test_accuracy=acc,
                                 mean_confidence=conf, calibration_gap=conf - acc))
    return rows


_FITS: dict = {}


def _fit(spec):
    import jax

    from dpolab.sims.bandit import make_fit

    if spec not in _FITS:
        _FITS[spec] = jax.jit(make_fit(spec))
    return _FITS[spec]


def write_results(rows, out) -> str:
    """Writes hh_results.csv (every fit) and returns a table of means over seeds."""
    out = Path(out)
    header = list(rows[0])
    write_atomic(out / "hh_results.csv", "\n".join(
        [",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]) + "\n")
    lines = [f"{'loss':6} {'eps':>5} {'test accuracy':>14} {'calibration gap':>16}"]
    for loss in LOSSES:
        for eps in sorted({r["eps"] for r in rows}):
            sel = [r for r in rows if r["loss"] == loss and r["eps"] == eps]
            lines.append(f"{loss:6} {eps:5.2f} {np.mean([r['test_accuracy'] for r in sel]):14.4f} "
                         f"{np.mean([r['calibration_gap'] for r in sel]):16.4f}")
    return "\n".join(lines)
