"""A user's preference data for `dpolab diagnose`: read and validated line by line, then mapped onto
the last-layer model of THEORY §1.1 by a language model.

Formats (`FORMATS`; "auto" picks by the path):
  jsonl    one JSON object per line: "prompt", "chosen", "rejected" strings and an optional group
           field (`--group-field`, default "group"; a string or an integer); `.gz` is read too.
  hh       HH-RLHF lines: "chosen" and "rejected" whole dialogues (the prompt is their shared start).
  persona  a folder of Anthropic persona files: group = persona, prompt = `question`, chosen =
           `answer_matching_behavior`, rejected = the other answer (`--personas` / `--k-set`).
  extracted  a folder written by `dpolab llm extract` (persona features of one model; no texts).
  npz      features already computed: G (N, d), w and l (N,) token indices, optional group (N,)
           and logp (N, U) reference log-probs of the U used tokens (see `load_features_npz`).

The mapping (ours; exact for single-token answers). Each record is tokenized as prompt ⊕ chosen
and prompt ⊕ rejected; the shared prefix of the two answers is part of the context, because its
log-ratio terms cancel exactly in the DPO margin. At the first answer token where they differ
(the *divergence token*; the end-of-sequence token for an answer that stops first) the model gives
g = the final hidden state and the reference log-probabilities log π_0(u|x) = (W_0 g)_u − LSE(W_0 g)
of every used token u (over the full vocabulary). A record then is the single-token sample
(g, y_w, y_l) of THEORY §1.1. For single-token answers (persona: " Yes"/" No") this is the last-layer
model itself; for longer answers it keeps the first differing token only, and the report says how
many records that is.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dpolab.errors import InputError

FORMATS = ("auto", "jsonl", "hh", "persona", "extracted", "npz")
FEATURE_FORMATS = ("extracted", "npz")  # features already computed: no model, no texts
NPZ_FIELDS = {"G": "(N, d) float features", "w": "(N,) int chosen token index in 0..U-1",
              "l": "(N,) int rejected token index", "group": "optional (N,) int group id",
              "logp": "optional (N, U) reference log-probs of the used tokens (default: uniform over U)"}


class Preference(NamedTuple):
    """One preference record: where it came from (file and 1-based line) and its texts."""

    source: str
    line: int
    prompt: str
    chosen: str
    rejected: str
    group: str


def detect_format(path: Path) -> str:
    """The format "auto" means for `path`: extracted for a folder with an `llm extract` manifest,
    persona for another folder, npz for `.npz`, else jsonl (the first record without a "prompt"
    field makes it hh)."""
    from dpolab.sims.llm.extract import MANIFEST

    if path.is_dir():
        return "extracted" if (path / MANIFEST).is_file() else "persona"
    if path.suffix == ".npz":
        return "npz"
    for _, row in _json_lines(path):
        return "jsonl" if "prompt" in row else "hh"
    raise InputError(f"data: {path.name!r} is empty (no preference line)")


def _json_lines(path: Path):
    """(1-based line, dict) of every non-blank line; errors name the line."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw_lines = f.read().split(b"\n")
    except (OSError, EOFError) as err:
        raise InputError(f"data: {str(path)!r} cannot be read ({err.__class__.__name__}: {err})") from err
    for lineno, raw in enumerate(raw_lines, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"data: {path.name} line {lineno} is not UTF-8 (byte {err.start}: "
                             f"{raw[err.start:err.start + 1]!r}); the file must be UTF-8 JSON lines") from err
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"data: {path.name} line {lineno} is not JSON ({err.msg} at column {err.colno})") from err
        if not isinstance(row, dict):
            raise InputError(f"data: {path.name} line {lineno} is a JSON {type(row).__name__}, not an object")
        yield lineno, row


def _field(row, name, path, lineno, allowed):
    value = row.get(name)
    if not isinstance(value, str):
        got = "missing" if name not in row else f"a {type(value).__name__}"
        raise InputError(f"data: {path.name} line {lineno}: field {name!r} is {got}; each line needs "
                         f"{allowed} strings")
    return value


def _text_records(path: Path, fmt: str, group_field: str, limit: int | None) -> list[Preference]:
    records = []
    for lineno, row in _json_lines(path):
        if fmt == "jsonl":
            prompt = _field(row, "prompt", path, lineno, "'prompt', 'chosen' and 'rejected'")
            group = row.get(group_field, "")
            if not isinstance(group, (str, int)) or isinstance(group, bool):
                raise InputError(f"data: {path.name} line {lineno}: group field {group_field!r} is "
                                 f"{group!r}; allowed: a string or an integer")
        else:
            prompt, group = "", ""
        allowed = "'prompt', 'chosen' and 'rejected'" if fmt == "jsonl" else "'chosen' and 'rejected'"
        chosen = _field(row, "chosen", path, lineno, allowed)
        rejected = _field(row, "rejected", path, lineno, allowed)
        records.append(Preference(path.name, lineno, prompt, chosen, rejected, str(group)))
        if limit is not None and len(records) >= limit:
            break
    return records


def _persona_records(path: Path, personas, k_set, limit) -> list[Preference]:
    from dpolab.sims.llm.persona import load_persona, select_personas

    if personas is None and k_set is None:
        raise InputError("personas: a persona folder needs --personas NAMES or --k-set K (the paper's set)")
    names = select_personas(path, names=personas, k=k_set)
    records = []
    for name in names:
        p = load_persona(path, name, limit)
        for question, label, line in zip(p.question, p.label, p.line):
            yes_no = (" Yes", " No") if label > 0 else (" No", " Yes")
            records.append(Preference(f"{name}.jsonl", int(line) + 1, question, *yes_no, name))
    return records


def read_preferences(data, *, fmt: str = "auto", group_field: str = "group", personas=None,
                     k_set: int | None = None, limit: int | None = None) -> list[Preference]:
    """Reads and validates a preference file (or persona folder); see the module docstring.

    Args:
      data: the file or folder. fmt: one of FORMATS except "npz" (see `load_features_npz`).
      group_field: the jsonl field naming a record's group (absent: one group "").
      personas, k_set: persona names (comma list) or the paper's set size (persona folders only).
      limit: keep the first `limit` records (per persona for a folder).

    Returns:
      The records in file order.

    Raises:
      InputError: naming the file and line for a line that is not UTF-8, not a JSON object, lacks
        a field, has chosen == rejected, or repeats an earlier line (same group, prompt, chosen and
        rejected); naming `data` for a missing or empty file, `format`, `limit`.
    """
    if fmt not in FORMATS:
        raise InputError(f"format={fmt!r} is not allowed: format must be one of {FORMATS}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit={limit!r} is not allowed: limit must be a positive integer (records)")
    path = Path(data).expanduser()
    if not path.exists():
        raise InputError(f"data: {str(path)!r} does not exist")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt in FEATURE_FORMATS:
        raise InputError(f"format={fmt!r} is not allowed here: features are read by load_features")
    if fmt == "persona":
        records = _persona_records(path, personas, k_set, limit)
    else:
        if path.is_dir():
            raise InputError(f"data: {str(path)!r} is a folder; format {fmt!r} needs a file")
        records = _text_records(path, fmt, group_field, limit)
    if not records:
        raise InputError(f"data: {path.name!r} is empty (no preference line)")
    seen = {}
    for rec in records:
        where = f"data: {rec.source} line {rec.line}"
        if rec.chosen == rec.rejected:
            raise InputError(f"{where}: chosen and rejected are the same text ({rec.chosen[:40]!r}); "
                             "a preference needs two different answers")
        key = (rec.source, rec.group, rec.prompt, rec.chosen, rec.rejected)
        if key in seen:
            raise InputError(f"{where} repeats line {seen[key]} (same group, prompt, chosen and rejected); "
                             "remove the duplicate pair")
        seen[key] = rec.line
    return records


def divergence(prompt_ids, chosen_ids, rejected_ids, eos):
    """(context ids, chosen token, rejected token, multi_token) of one tokenized record.

    The context is the prompt and the answers' shared prefix; the tokens are the first that differ
    (`eos` for an answer that ends first). Returns None when the two answers tokenize identically.
    """
    k = 0
    while k < min(len(chosen_ids), len(rejected_ids)) and chosen_ids[k] == rejected_ids[k]:
        k += 1
    if k == len(chosen_ids) == len(rejected_ids):
        return None
    w = chosen_ids[k] if k < len(chosen_ids) else eos
    lo = rejected_ids[k] if k < len(rejected_ids) else eos
    multi = max(len(chosen_ids), len(rejected_ids)) > 1
    return list(prompt_ids) + list(chosen_ids[:k]), int(w), int(lo), multi


def featurise(records: list[Preference], model, tokenizer, *, batch_size: int, model_name: str,
              bar=None) -> dict[str, np.ndarray]:
    """Maps records onto the last-layer model (module docstring): one forward pass per record.

    Returns:
      dict with G (N, d) float32, w, l (N,) int64 indices into `tokens`, tokens (U,) int64
      vocabulary ids of the used tokens, token_text (U,) str, logp (N, U) float64 reference
      log-probs log π_0(u|x_j) (full-vocabulary normalised), group (N,) int64 into group_names,
      group_names (K,) str, multi_token (N,) bool, line (N,) int64, source (N,) str.

    Raises:
      InputError: naming the file and line of a record whose answers tokenize identically, or a
        multi-token record whose answers end together when the tokenizer has no end token.
    """
    from dpolab.sims.llm.extract import forward_last

    eos = tokenizer.eos_token_id
    contexts, ws, ls, multi = [], [], [], []
    for rec in records:
        prompt_ids = tokenizer(rec.prompt)["input_ids"]
        cut = divergence(prompt_ids, tokenizer(rec.chosen, add_special_tokens=False)["input_ids"],
                         tokenizer(rec.rejected, add_special_tokens=False)["input_ids"], eos)
        if cut is None or (eos is None and None in cut[1:3]):
            raise InputError(f"data: {rec.source} line {rec.line}: chosen and rejected tokenize to the same "
                             f"tokens under {model_name!r} (or one is a prefix of the other and the "
                             "tokenizer has no end token)")
        if not cut[0]:
            raise InputError(f"data: {rec.source} line {rec.line}: empty context (no prompt, no BOS token and "
                             "the answers differ at their first token)")
        contexts.append(cut[0])
        ws.append(cut[1])
        ls.append(cut[2])
        multi.append(cut[3])
    tokens = np.unique(np.asarray(ws + ls, dtype=np.int64))
    out = forward_last(model, contexts, tokens.tolist(), pad=tokenizer.pad_token_id, batch_size=batch_size,
                       bar=bar, model_name=model_name)
    logp = out["logit"].astype(np.float64) - out["lse"][:, None]
    group_names, group = np.unique(np.asarray([r.group for r in records]), return_inverse=True)
    return {"G": out["g"], "w": np.searchsorted(tokens, ws), "l": np.searchsorted(tokens, ls), "tokens": tokens,
            "token_text": np.asarray([tokenizer.decode([int(t)]) for t in tokens]), "logp": logp,
            "group": group.astype(np.int64), "group_names": group_names, "multi_token": np.asarray(multi),
            "line": np.asarray([r.line for r in records], dtype=np.int64),
            "source": np.asarray([r.source for r in records])}


def load_features(path, fmt) -> dict[str, np.ndarray]:
    """The features of a FEATURE_FORMATS input, as `featurise` returns them."""
    if fmt == "npz":
        return load_features_npz(path)
    from dpolab.sims.llm.extract import load_features as load_extracted

    stored = load_extracted(path)
    names = list(stored)
    label = np.concatenate([stored[n]["label"] for n in names]).astype(np.int64)
    yes = (label > 0).astype(np.int64)  # used tokens: 0 = " No", 1 = " Yes"
    return {"G": np.concatenate([stored[n]["g"] for n in names]), "w": yes, "l": 1 - yes,
            "tokens": np.arange(2), "token_text": np.asarray([" No", " Yes"]),
            "logp": np.concatenate([np.stack([stored[n]["ref_logp_no"], stored[n]["ref_logp_yes"]], axis=1)
                                    for n in names]),
            "group": np.concatenate([np.full(len(stored[n]["label"]), k) for k, n in enumerate(names)]),
            "group_names": np.asarray(names), "multi_token": np.zeros(len(label), dtype=bool),
            "line": np.concatenate([stored[n]["line"] + 1 for n in names]),
            "source": np.concatenate([[f"{n}.jsonl"] * len(stored[n]["label"]) for n in names])}


def load_features_npz(path) -> dict[str, np.ndarray]:
    """Reads a features file (NPZ_FIELDS) and validates it; fills the optional fields.

    Raises:
      InputError: naming the field, its shape or values and what is allowed.
    """
    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise InputError(f"data: {str(path)!r} is not a readable .npz file ({err.__class__.__name__}: {err})") from err
    missing = [k for k in ("G", "w", "l") if k not in arrays]
    if missing:
        raise InputError(f"data: {path.name} lacks field {missing[0]!r}; fields: {NPZ_FIELDS}")
    G = np.asarray(arrays["G"], dtype=np.float64)
    if G.ndim != 2 or G.shape[0] == 0 or not np.isfinite(G).all():
        raise InputError(f"data: {path.name} field 'G' has shape {G.shape}; allowed: (N, d) finite, N >= 1")
    N = G.shape[0]
    ints = {}
    for name in ("w", "l", "group"):
        if name not in arrays:
            continue
        a = np.asarray(arrays[name])
        if a.shape != (N,) or not np.issubdtype(a.dtype, np.integer) or (a < 0).any():
            raise InputError(f"data: {path.name} field {name!r} has shape {a.shape} and dtype {a.dtype}; "
                             f"allowed: ({N},) non-negative integers")
        ints[name] = a.astype(np.int64)
    bad = np.flatnonzero(ints["w"] == ints["l"])
    if bad.size:
        raise InputError(f"data: {path.name} record {int(bad[0])}: w == l ({int(ints['w'][bad[0]])}); "
                         "chosen and rejected tokens must differ")
    U = int(max(ints["w"].max(), ints["l"].max())) + 1
    logp = np.asarray(arrays.get("logp", np.full((N, U), -np.log(U))), dtype=np.float64)
    if logp.shape != (N, U) or not (logp <= 1e-12).all() or (np.logaddexp.reduce(logp, axis=1) > 1e-9).any():
        raise InputError(f"data: {path.name} field 'logp' has shape {logp.shape}; allowed: ({N}, {U}) log-probs "
                         "(each <= 0, each row's probabilities summing to <= 1)")
    group = ints.get("group", np.zeros(N, dtype=np.int64))
    names, group = np.unique(group, return_inverse=True)
    return {"G": G, "w": ints["w"], "l": ints["l"], "tokens": np.arange(U), "token_text": np.asarray(
        [f"token {u}" for u in range(U)]), "logp": logp, "group": group.astype(np.int64),
        "group_names": np.asarray([str(n) for n in names]), "multi_token": np.zeros(N, dtype=bool),
        "line": np.arange(1, N + 1), "source": np.asarray([path.name] * N)}
