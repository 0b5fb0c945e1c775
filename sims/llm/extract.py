"""Feature extraction: g(x) = the final hidden state at the last prompt token, with the reference
log-probabilities of " Yes" / " No" (THEORY §1.8, the paper's last-layer protocol).

The model is any causal LM (`backbone`: the packaged Gemma-3-270M by default, a local folder or a
cached hub id) on any device, in any dtype. For every statement the prompt is the `question` field,
tokenized as the model's tokenizer does by default — BOS prepended where the tokenizer adds one, no
chat template, nothing appended (see `PROMPT_FORMAT`). The model reads it once; at the last token
of `question` (its closing quote) we keep

  g            the final hidden state after the model's final norm (d = hidden size; 640 for Gemma),
  W_0 g        the reference logits (the model's real LM head W_0, tied or not; no bias, no
               soft-capping),
  ref_lse      log Σ_y exp((W_0 g)_y) over the full vocabulary (262,144 tokens for Gemma),
  ref_lse_rest the same sum without " Yes" and " No" (dpolab.sims.data.Dataset's `ref_lse_rest`: the
               part of the partition function that training the Yes/No rows never changes),
  ref_logp_yes / ref_logp_no = (W_0 g)_y − ref_lse,

and the two LM-head rows W_0[" Yes"], W_0[" No"] (2 × d), so that a JAX head initialised at W_0
reproduces the exact log-probs: log S(W g)_y = (W g)_y − logsumexp(ref_lse_rest, (W g)_yes,
(W g)_no).

Features are stored per persona as `<out>/<persona>.npz` plus one `<out>/manifest.json` (model,
revision, dtype, device, package versions, data commit and file hashes, prompt format, token ids,
shapes). A persona whose npz and manifest entry match the request (same model revision and dtype,
prompt format, data file and statement count) is reused, not recomputed; a folder holds one
model's features (another model's request is refused).

References:
  The paper under test, §5 and App. E (last-layer runs on Anthropic persona evaluations).
  Perez et al. 2022 (the persona data).
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from dpolab.errors import InputError
from dpolab.sims.llm import backbone
from dpolab.sims.llm import model as llm_model
from dpolab.sims.llm.backbone import check_positive_int
from dpolab.sims.llm.persona import DATA_COMMIT, DATA_SOURCE, load_persona, resolve_persona_dir, select_personas
from dpolab.store import write_atomic

FEATURES_FORMAT = 2  # 2: any causal LM; the key names model, revision and dtype
PROMPT_FORMAT = ("{question}: the persona file's `question` field verbatim, tokenized with the "
                 "model tokenizer's defaults (its BOS if it adds one, no chat template, no trailing space or "
                 "newline); features and next-token log-probs are taken at the last token of the "
                 "question (its closing quote)")
MANIFEST = "manifest.json"

FIELDS = {
    "g": "(n, d) float32: final hidden state at the last prompt token, after the final norm",
    "label": "(n,) int8: +1 when ' Yes' ≻ ' No' (answer_matching_behavior == ' Yes'), else -1",
    "line": "(n,) int64: 0-based line of the statement in <persona>.jsonl",
    "statement": "(n,) str: the raw statement",
    "n_tokens": "(n,) int32: prompt length in tokens, BOS included",
    "ref_logit_yes": "(n,) float32: reference logit (W_0 g) of ' Yes'",
    "ref_logit_no": "(n,) float32: reference logit (W_0 g) of ' No'",
    "ref_logp_yes": "(n,) float64: log S(W_0 g) of ' Yes' (log-softmax over the full vocabulary)",
    "ref_logp_no": "(n,) float64: log S(W_0 g) of ' No'",
    "ref_lse": "(n,) float64: log Σ_y exp((W_0 g)_y), all tokens",
    "ref_lse_rest": "(n,) float64: log Σ_{y ∉ {Yes, No}} exp((W_0 g)_y)",
    "head_yes_no": "(2, d) float32: LM-head rows W_0[' Yes'], W_0[' No'] (in that order)",
}


def last_token_index(attention_mask):
    """(B,) index of the last non-pad position of each row, for left or right padding.

    Args:
      attention_mask: (B, L) 0/1 torch tensor, 1 on real tokens (contiguous per row).
    """
    length = attention_mask.shape[1]
    return length - 1 - attention_mask.flip(1).argmax(dim=1)


def final_hidden_states(model, tokenizer, prompts, *, batch_size: int = backbone.PERSONA_BATCH_SIZE,
                        padding_side: str = "left", bar=None,
                        model_name: str = llm_model.MODEL_NAME) -> dict[str, np.ndarray]:
    """Runs the model on `prompts` and returns the features at each prompt's last token, with the
    reference log-probs of " Yes" and " No" (`forward_last` does the work).

    Args:
      model, tokenizer: a causal LM and its tokenizer (`backbone.load_backbone`).
      prompts: n strings (the `question` fields), tokenized with the tokenizer's defaults.
      batch_size, padding_side, bar, model_name: as in `forward_last`.

    Returns:
      dict with g (n, d) float32, ref_logit_yes / ref_logit_no (n,) float32, ref_logp_yes /
      ref_logp_no / ref_lse / ref_lse_rest (n,) float64, n_tokens (n,) int32 (fields as in FIELDS).
    """
    ids = llm_model.check_head(model, tokenizer, model_name)
    encoded = tokenizer(list(prompts))["input_ids"]  # default special tokens (BOS where the model has one)
    out = forward_last(model, encoded, [ids["yes"], ids["no"]], pad=tokenizer.pad_token_id, batch_size=batch_size,
                       padding_side=padding_side, bar=bar, model_name=model_name)
    logit, lse = out["logit"], out["lse"]
    return {"g": out["g"], "ref_logit_yes": logit[:, 0], "ref_logit_no": logit[:, 1],
            "ref_logp_yes": logit[:, 0].astype(np.float64) - lse,
            "ref_logp_no": logit[:, 1].astype(np.float64) - lse,
            "ref_lse": lse, "ref_lse_rest": out["lse_rest"], "n_tokens": out["n_tokens"]}


def forward_last(model, encoded, columns, *, pad=None, batch_size: int = backbone.PERSONA_BATCH_SIZE,
                 padding_side: str = "left", bar=None, model_name: str = llm_model.MODEL_NAME) -> dict:
    """Runs the model on token sequences and keeps, at each sequence's last token, the final hidden
    state g and the reference logits W_0 g of the vocabulary `columns`, with the full log-partition.

    Sequences are sorted by length and batched (less padding); results come back in input order.
    Padding goes on `padding_side`; position ids count real tokens only, so a padded sequence sees
    exactly the positions it would see alone, and the last *non-pad* token is read. Runs under
    `torch.inference_mode` on the model's device; the reference logits are W_0 g in float32 from
    the stored g and the head's own rows (whatever the model's dtype), so a trainer reading the
    stored g and rows reproduces them, and log-partition sums are taken in float64.

    Args:
      model: a causal LM (`backbone.load_backbone`).
      encoded: n lists of token ids (each non-empty).
      columns: vocabulary ids whose logits are kept (distinct).
      pad: the pad token id (None: 0; never read, masked out).
      batch_size: sequences per forward pass. padding_side: "left" or "right".
      bar: an optional `dpolab.progress.Progress`, advanced by the number of sequences done.
      model_name: named in errors.

    Returns:
      dict with g (n, d) float32, logit (n, len(columns)) float32, lse (n,) float64 = log Σ_y
      exp((W_0 g)_y) over the full vocabulary, lse_rest (n,) float64 = the same sum without
      `columns`, n_tokens (n,) int32.

    Raises:
      InputError: naming `batch_size`, `padding_side`, or `--dtype` when float16 overflows;
      FloatingPointError on other non-finite output.
    """
    import torch

    check_positive_int("batch_size", batch_size)
    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side: {padding_side!r} must be 'left' or 'right'")
    columns = [int(c) for c in columns]
    pad = 0 if pad is None else pad
    n = len(encoded)
    lengths = np.asarray([len(t) for t in encoded], dtype=np.int32)
    order = np.argsort(lengths, kind="stable")
    weight = model.get_output_embeddings().weight  # (V, d): the real unembedding, tied or not
    head = weight.detach().float()  # no copy for a float32 model
    device = weight.device
    g = np.empty((n, head.shape[1]), dtype=np.float32)
    logit = np.empty((n, len(columns)), dtype=np.float32)
    lse = np.empty(n, dtype=np.float64)
    lse_rest = np.empty(n, dtype=np.float64)
    backbone = model.base_model  # embeddings → layers → final norm
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            width = int(lengths[rows].max())
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                cols = slice(width - lengths[i], width) if padding_side == "left" else slice(0, lengths[i])
                input_ids[r, cols] = torch.tensor(encoded[i])
                mask[r, cols] = 1
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
            hidden = backbone(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                              position_ids=positions.to(device), use_cache=False).last_hidden_state
            last = hidden[torch.arange(len(rows), device=device), last_token_index(mask).to(device)].float()
            logits = (last @ head.T).double()  # (b, V), float32 products → float64 sums
            rest = logits.clone()
            rest[:, columns] = -torch.inf
            g[rows] = last.cpu().numpy()
            logit[rows] = logits[:, columns].float().cpu().numpy()
            lse[rows] = torch.logsumexp(logits, dim=1).cpu().numpy()
            lse_rest[rows] = torch.logsumexp(rest, dim=1).cpu().numpy()
            if bar is not None:
                bar.update(len(rows))
    if not (np.isfinite(g).all() and np.isfinite(logit).all() and np.isfinite(lse).all()):
        if weight.dtype == torch.float16:
            raise InputError(f"--dtype: 'float16' overflows in {model_name!r} (non-finite hidden states); "
                             "allowed for this model: bfloat16, float32")
        raise FloatingPointError(f"non-finite hidden states or logits from {model_name!r}")
    return {"g": g, "logit": logit, "lse": lse, "lse_rest": lse_rest, "n_tokens": lengths}


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _read_manifest(out: Path) -> dict:
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _request_key(persona, model_key: dict) -> dict:
    """What a stored persona must match to be reused."""
    return {"features_format": FEATURES_FORMAT, **model_key, "prompt_format": PROMPT_FORMAT,
            "data_sha256": persona.sha256, "n": len(persona)}


def _model_manifest(ref, model, tokenizer, ids, device, dtype) -> dict:
    weight = model.get_output_embeddings().weight
    info = {"model": ref.name, "model_kind": ref.kind, "model_revision": ref.revision,
            "model_key": ref.key(dtype), "device": device, "dtype": f"{dtype} model; reference logits "
            "W_0 g in float32, log-partition sums in float64",
            "token_ids": {"bos": tokenizer.bos_token_id, "pad": tokenizer.pad_token_id,
                          "yes": ids["yes"], "no": ids["no"]},
            "answer_tokens": {"yes": llm_model.ANSWER_TEXT["yes"], "no": llm_model.ANSWER_TEXT["no"]},
            "hidden_size": int(weight.shape[1]), "vocab_size": int(weight.shape[0]),
            "tied_head": weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()}
    if ref.kind == "packaged":
        info.update(quantization=llm_model.QUANTIZATION, model_package=llm_model.MODEL_PACKAGE,
                    upstream=llm_model.UPSTREAM, license=llm_model.LICENSE, gguf_sha256=ref.revision)
    return info


def extract(persona_dir, personas, limit, out, *, model=None, device="auto", dtype="float32",
            batch_size: int = backbone.PERSONA_BATCH_SIZE, cache_dir=None, progress: bool = True,
            loaded=None) -> dict:
    """Extracts and stores features for the given personas (THEORY §1.8), reusing stored ones.

    Every argument is validated before a model is loaded or `out` is created. A folder holds the
    features of one (model, revision, dtype): another model's request is refused, never mixed in.

    Args:
      persona_dir: the persona folder (None: `$DPOLAB_PERSONA_DIR`).
      personas: persona names (a list, or a comma-separated string); see
        `persona.select_personas` for the paper's K-sets and "all".
      limit: statements per persona (the first `limit` lines of each file; None: all).
      out: output folder (created); gets `<persona>.npz` per persona and `manifest.json`.
      model: `--model` (None: the packaged Gemma-3-270M; see `backbone.resolve_model`).
      device: "auto", "cpu" or "cuda". dtype: "float32", "bfloat16" or "float16".
      batch_size: prompts per forward pass.
      cache_dir: model cache root (default `$DPOLAB_CACHE` or `~/.cache/dpolab`).
      progress: progress on stderr (`dpolab.progress`: a bar on a terminal, plain lines otherwise)
        and a line per reuse.
      loaded: an already loaded (model, tokenizer) of `model` in `dtype` (default: loaded here,
        and only when some persona must be computed).

    Returns:
      A summary dict: model, out, personas {name: {n, reused, seconds}}, statements computed and
      reused, model_load_seconds (None when nothing was computed), statements_per_second.

    Raises:
      InputError: naming `persona_dir`, `personas`, `limit`, `batch_size`, `out`, `--model`,
        `--device` or `--dtype` for bad input.
    """
    check_positive_int("limit", limit, allow_none=True)
    check_positive_int("batch_size", batch_size)
    persona_dir = resolve_persona_dir(persona_dir)
    names = select_personas(persona_dir, names=personas)
    ref, device = backbone.resolve_backbone(model, device, dtype, loaded)
    model_key = ref.key(dtype)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"out: {str(out)!r} exists and is not a directory")
    log = (lambda msg: print(f"dpolab llm: {msg}", file=sys.stderr, flush=True)) if progress else (lambda m: None)

    manifest = _read_manifest(out)
    if "model_key" not in manifest:  # none yet, or format 1 (packaged model only): nothing reusable
        manifest = {}
    stored = manifest.get("personas", {}) if isinstance(manifest.get("personas"), dict) else {}
    if stored and manifest["model_key"] != model_key:
        held = manifest["model_key"]
        raise InputError(f"out: {str(out)!r} holds features of {held} and this request is {model_key}; "
                         "one folder holds one model's features: choose another --out")
    data = {name: load_persona(persona_dir, name, limit) for name in names}
    summary = {"model": ref.name, "out": str(out), "personas": {}, "computed": 0, "reused": 0,
               "model_load_seconds": None, "statements_per_second": None}
    todo = []
    for name in names:
        entry = stored.get(name, {})
        if (entry.get("key") == _request_key(data[name], model_key)
                and _sha256_file(out / entry.get("file", f"{name}.npz")) == entry.get("npz_sha256")):
            summary["personas"][name] = {"n": len(data[name]), "reused": True, "seconds": 0.0}
            summary["reused"] += len(data[name])
            log(f"reusing {name} ({len(data[name])} statements, {out / entry['file']})")
        else:
            todo.append(name)
    if not todo:
        return summary

    start = time.perf_counter()
    if loaded is None:
        loaded = backbone.load_backbone(ref, device=device, dtype=dtype, cache_dir=cache_dir,
                                        progress=progress)
    lm, tokenizer = loaded
    ids = llm_model.check_head(lm, tokenizer, ref.name)
    summary["model_load_seconds"] = round(time.perf_counter() - start, 2)
    import torch  # after loading, which sets the offline environment first

    head_yes_no = lm.get_output_embeddings().weight[[ids["yes"], ids["no"]]].detach().float().cpu().numpy()
    from dpolab.store import environment

    manifest.update(_model_manifest(ref, lm, tokenizer, ids, device, dtype))
    manifest.update({
        "prompt_format": PROMPT_FORMAT,
        "data": {"source": DATA_SOURCE, "commit": DATA_COMMIT, "persona_dir": str(persona_dir.resolve()),
                 "note": "commit of the tested copy; each persona entry records its file's sha256"},
        "fields": FIELDS, "versions": llm_model.package_versions(), "environment": environment(),
        "torch_threads": torch.get_num_threads(), "batch_size": batch_size,
    })
    manifest.setdefault("personas", stored)

    from dpolab.progress import Progress

    bar = Progress(desc="llm extract", unit="statement", quiet=not progress).reset(
        sum(len(data[name]) for name in todo))
    compute_start = time.perf_counter()
    try:
        for name in todo:
            persona = data[name]
            bar.start(name[:40])
            t0 = time.perf_counter()
            arrays = final_hidden_states(lm, tokenizer, persona.question, batch_size=batch_size, bar=bar,
                                         model_name=ref.name)
            seconds = time.perf_counter() - t0
            arrays.update({"label": persona.label, "line": persona.line,
                           "statement": np.asarray(persona.statement, dtype=str),
                           "head_yes_no": head_yes_no})
            blob = _npz_bytes(arrays)
            out.mkdir(parents=True, exist_ok=True)  # only now: a refused request leaves nothing behind
            write_atomic(out / f"{name}.npz", blob)
            manifest["personas"][name] = {
                "file": f"{name}.npz", "n": len(persona), "limit": limit,
                "npz_sha256": hashlib.sha256(blob).hexdigest(), "data_sha256": persona.sha256,
                "labels": {"+1": int((persona.label > 0).sum()), "-1": int((persona.label < 0).sum())},
                "shapes": {k: list(np.shape(v)) for k, v in arrays.items()},
                "seconds": round(seconds, 3), "statements_per_second": round(len(persona) / seconds, 2),
                "key": _request_key(persona, model_key),
            }
            manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            write_atomic(out / MANIFEST, json.dumps(manifest, indent=1, default=str))
            summary["personas"][name] = {"n": len(persona), "reused": False, "seconds": round(seconds, 3)}
            summary["computed"] += len(persona)
    finally:
        bar.close()
    summary["statements_per_second"] = round(summary["computed"] / (time.perf_counter() - compute_start), 2)
    return summary


def format_summary(summary: dict) -> str:
    """A few human-readable lines about an `extract` run (for the CLI)."""
    rate = summary["statements_per_second"]
    lines = [f"{summary['model']}: {summary['computed']} statements extracted"
             + (f" at {rate:.1f} statements/s" if rate else "")
             + (f" (model load {summary['model_load_seconds']:.1f} s)" if summary["model_load_seconds"] else "")
             + f", {summary['reused']} reused; {len(summary['personas'])} persona(s)"]
    for name, entry in summary["personas"].items():
        took = "reused" if entry["reused"] else f"{entry['seconds']:.1f} s"
        lines.append(f"  {name}: {entry['n']} statements, {took}")
    lines.append(f"features: {Path(summary['out']) / MANIFEST}")
    return "\n".join(lines)


def load_features(out, personas=None) -> dict[str, dict[str, np.ndarray]]:
    """Reads stored features for the trainer.

    Args:
      out: a folder written by `extract`.
      personas: names to load (default: every persona in the manifest, in manifest order).

    Returns:
      {persona: {field: array}} with the fields in FIELDS (g (n, d) float32, label (n,) ±1,
      ref_logp_yes, ref_logp_no, ref_lse, ref_lse_rest, head_yes_no (2, d), ...).

    Raises:
      ValueError: naming `out` when there is no manifest or a file is missing or altered, and
        `personas` for a name not stored there.
    """
    out = Path(out).expanduser()
    manifest = _read_manifest(out)
    if not manifest.get("personas"):
        raise InputError(f"out: no features in {str(out)!r} (no {MANIFEST} with personas; run extract)")
    stored = manifest["personas"]
    if personas is None:
        names = list(stored)
    else:
        names = personas.split(",") if isinstance(personas, str) else list(personas)
        names = [n.strip() for n in names if n.strip()]
    result = {}
    for name in names:
        if name not in stored:
            raise InputError(f"personas: {name!r} is not stored in {str(out)!r} "
                             f"({len(stored)} stored, e.g. {next(iter(stored))!r})")
        path = out / stored[name]["file"]
        if _sha256_file(path) != stored[name]["npz_sha256"]:
            raise InputError(f"out: {str(path)!r} is missing or does not match {MANIFEST}; re-run extract")
        with np.load(path, allow_pickle=False) as npz:
            result[name] = {k: npz[k] for k in npz.files}
    return result
