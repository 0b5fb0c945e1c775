"""Any causal language model as the frozen backbone: which model (`--model`), where (`--device`),
in which precision (`--dtype`), resolved and validated before anything expensive runs.

A model is one of
  the packaged default   Gemma-3-270M Q4_K_M (`model.py`), `--model` left out or `gemma-3-270m-q4`;
  a local directory      a Hugging Face model folder (config.json, weights, tokenizer files);
  a hub id               e.g. `meta-llama/Llama-3.1-8B`, read from the local Hugging Face cache only.
dpolab never downloads: a hub model must be fetched first (`hf download ID`), so a run is
reproducible and an id that is not cached fails at once, naming `--model`.

Every model has a *revision* that, with the dtype, keys the feature cache: the packaged GGUF's
sha256, a hub snapshot's commit hash, or the sha256 over a local folder's files.

Importing this module does not import torch (only the functions do).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import numbers
import re
from dataclasses import dataclass
from pathlib import Path

from dpolab.errors import InputError

DEFAULT_MODEL = "gemma-3-270m-q4"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: Prompts per forward pass when `--batch-size` is not given: persona statements are short (27
#: Gemma tokens on average), HH-RLHF dialogues are long.
PERSONA_BATCH_SIZE, HH_BATCH_SIZE = 16, 8


@dataclass(frozen=True)
class ModelRef:
    """A resolved `--model`.

    kind: "packaged", "local" or "hub". name: what the manifest and messages call it.
    path: the folder transformers loads (None for the packaged model: built on first load).
    revision: GGUF sha256 (packaged), snapshot commit (hub) or sha256 of the folder's files (local).
    """

    kind: str
    name: str
    path: Path | None
    revision: str

    def key(self, dtype: str) -> dict:
        """What stored features depend on besides the data and the prompt."""
        return {"model": self.name, "revision": self.revision, "dtype": dtype}

    def slug(self, dtype: str) -> str:
        """A folder name unique to (model, revision, dtype), for caches."""
        safe = re.sub(r"[^\w.-]+", "_", self.name.split("/")[-1] if self.kind == "local" else self.name)
        return f"{safe}-{self.revision[:12]}-{dtype}"


def check_positive_int(name: str, value, allow_none: bool = False) -> None:
    """Raises InputError naming `name` unless `value` is an integer >= 1 (or None, if allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name}: {value!r} must be a positive integer" + (" or None" if allow_none else ""))


@dataclass(frozen=True)
class Backbone:
    """The frozen model that real features come from: what the shared flags `--model`, `--device`,
    `--dtype`, `--batch-size` and `--cache-dir` say, on every command that extracts features (`llm
    extract`, `llm hh`, `verify`, `repro`, `audit`). The default is the packaged Gemma in float32.

    batch_size None: each extraction's own default (PERSONA_BATCH_SIZE, HH_BATCH_SIZE).
    """

    model: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int | None = None
    cache_dir: str | None = None

    def options(self) -> dict:
        """The keyword arguments of `extract.extract` and `hh.extract_hh`."""
        opts = dict(model=self.model, device=self.device, dtype=self.dtype, cache_dir=self.cache_dir)
        return opts if self.batch_size is None else opts | {"batch_size": self.batch_size}

    def is_default(self) -> bool:
        """No flag asks for another model, device, dtype or batch size (the cache may differ)."""
        return dataclasses.replace(self, cache_dir=None) == Backbone()

    def provenance(self) -> dict | None:
        """Validates every field without loading weights (before any expensive work) and returns
        what a run records: {model, revision, dtype} (what features depend on, `ModelRef.key`) and
        kind, device, batch_size. None when the llm extra is not installed and no flag asks for a
        model (the real track then does not run).

        Raises:
          InputError: naming the flag (`resolve_model`, `resolve_device`, `resolve_dtype`,
            `check_causal_lm`), or the flags given when the llm extra is missing.
        """
        from dpolab.sims.llm.model import MissingExtraError, require_llm_extra

        try:
            require_llm_extra()
        except MissingExtraError as err:
            if self.is_default():
                return None
            raise InputError(f"--model/--device/--dtype/--batch-size need the llm extra ({err})") from err
        if self.batch_size is not None:
            check_positive_int("--batch-size", self.batch_size)
        ref, device = resolve_backbone(self.model, self.device, self.dtype)
        return {**ref.key(self.dtype), "kind": ref.kind, "device": device, "batch_size": self.batch_size}

    def features_folder(self) -> str:
        """A folder name unique to the model's revision and dtype (`ModelRef.slug`), for caches."""
        return resolve_model(self.model).slug(self.dtype)

    @contextlib.contextmanager
    def feature_cache(self, name: str):
        """Holds the feature folder `<cache>/features/<model>-<revision>-<dtype>/<name>` (cache:
        `--cache-dir`, else `$DPOLAB_CACHE`, else ~/.cache/dpolab) under an exclusive lock, across
        processes, and yields its path.

        Every command that extracts keeps its features there (`verify --suite real`, `repro`,
        `audit`), so a run with a new `--out` reuses what an earlier run extracted with the same
        model. The extractors reuse a stored request only when its data, model revision, dtype and
        limit all match, and otherwise compute again. The lock lets two runs share a folder: the
        second waits and then reuses the features."""
        from filelock import FileLock

        from dpolab.sims.llm.model import cache_root

        folder = cache_root(self.cache_dir) / "features" / self.features_folder() / name
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"--cache-dir: the feature cache {str(folder.parent)!r} cannot be made "
                             f"({err.strerror}); set --cache-dir or $DPOLAB_CACHE to a writable folder") from err
        with FileLock(str(folder) + ".lock"):
            yield folder


def feature_key(provenance: dict | None) -> dict | None:
    """What stored features and results depend on, from `Backbone.provenance`: model, revision,
    dtype (not the device or batch size)."""
    return None if provenance is None else {k: provenance[k] for k in ("model", "revision", "dtype")}


def _sha256_folder(path: Path) -> str:
    """sha256 over the names and contents of the folder's regular files (sorted by name)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(file.name.encode("utf-8") + b"\0")
        with open(file, "rb") as f:
            for block in iter(functools.partial(f.read, 1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _resolve(spec: str, stamp: tuple) -> ModelRef:  # stamp: a local folder's file stats (cache key)
    if spec in ("", DEFAULT_MODEL):
        from dpolab.sims.llm import model as packaged

        return ModelRef("packaged", packaged.MODEL_NAME, None, packaged.gguf_sha256())
    path = Path(spec).expanduser()
    if path.exists() or not _HUB_ID.match(spec):
        if not path.is_dir() or not (path / "config.json").is_file():
            raise InputError(f"--model: {spec!r} is not a model folder with a config.json, nor a hub id "
                             f"(owner/name); allowed: {DEFAULT_MODEL} (packaged), a local Hugging Face "
                             "model folder, or a hub id already in the local Hugging Face cache")
        try:
            revision = _sha256_folder(path)
        except OSError as err:
            raise InputError(f"--model: {spec!r} cannot be read ({err.strerror or err})") from err
        return ModelRef("local", str(path.resolve()), path.resolve(), revision)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(spec, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as err:
        raise InputError(f"--model: {spec!r} is not in the local Hugging Face cache and dpolab does not "
                         f"download; fetch it first (hf download {spec}) or pass a local model "
                         "folder") from err
    if not (snapshot / "config.json").is_file():
        raise InputError(f"--model: {spec!r} is cached at {snapshot} without a config.json")
    return ModelRef("hub", spec, snapshot, snapshot.name)


def resolve_model(model: str | None) -> ModelRef:
    """Resolves `--model` (None: the packaged Gemma) without loading any weights.

    Raises:
      InputError: naming `--model` for a folder without config.json, an unreadable folder, or a hub
        id that is not in the local cache; MissingExtraError when the packaged model is missing.
    """
    spec = "" if model is None else str(model).strip()
    stamp = ()
    if spec and Path(spec).expanduser().is_dir():
        try:  # a folder rewritten in place is hashed again
            stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                          for f in sorted(Path(spec).expanduser().iterdir()))
        except OSError:
            pass
    return _resolve(spec, stamp)


def resolve_device(device: str | None) -> str:
    """`auto` → "cuda" when torch sees a GPU, else "cpu"; "cuda" without a GPU is refused.

    Raises:
      InputError: naming `--device` for an unknown value or CUDA requested without a GPU.
    """
    device = device or "auto"
    if device not in DEVICES:
        raise InputError(f"--device: {device!r} is not allowed; choose one of {', '.join(DEVICES)}")
    import torch

    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        raise InputError(f"--device: 'cuda' was requested but torch {torch.__version__} sees no CUDA GPU "
                         "here; allowed on this machine: auto, cpu")
    return "cuda" if device == "cuda" or (device == "auto" and available) else "cpu"


def resolve_dtype(dtype: str | None, device: str):
    """The torch dtype for `--dtype` on `device`, after running a small probe in it there.

    Raises:
      InputError: naming `--dtype` for an unknown value or one the device cannot compute in.
    """
    dtype = dtype or "float32"
    if dtype not in DTYPES:
        raise InputError(f"--dtype: {dtype!r} is not allowed; choose one of {', '.join(DTYPES)}")
    import torch

    torch_dtype = getattr(torch, dtype)
    if device == "cuda" and dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise InputError(f"--dtype: 'bfloat16' is not supported by {torch.cuda.get_device_name()}; "
                         "allowed on this device: float32, float16")
    try:  # the operations a decoder layer needs, in this dtype on this device
        x = torch.ones((2, 8), dtype=torch_dtype, device=device)
        torch.nn.functional.rms_norm(torch.softmax(x @ x.T, dim=-1), (2,))
    except (RuntimeError, TypeError) as err:
        raise InputError(f"--dtype: {dtype!r} cannot run on {device} here ({str(err).splitlines()[0]}); "
                         f"allowed: {', '.join(DTYPES)} where the device supports them") from err
    return torch_dtype


def check_causal_lm(ref: ModelRef) -> None:
    """Refuses a model folder whose architecture has no causal-LM head, before loading weights.

    Raises:
      InputError: naming `--model` and the model type.
    """
    if ref.kind == "packaged":
        return
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        config = AutoConfig.from_pretrained(str(ref.path), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"--model: {ref.name!r} has no readable Hugging Face config "
                         f"({str(err).splitlines()[0]})") from err
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise InputError(f"--model: {ref.name!r} (model_type {config.model_type!r}) has no causal-LM head; "
                         "allowed: a decoder-only language model (AutoModelForCausalLM: Llama, Mistral, "
                         "Qwen2, Gemma, GPT-2, ...)")


def resolve_backbone(model=None, device="auto", dtype="float32", loaded=None):
    """Validates `--model`, `--device` and `--dtype` without loading weights; returns (ModelRef,
    device). With `loaded` (model, tokenizer) its device is used and its dtype must be `dtype`.

    Raises:
      InputError: naming the flag (see `backbone.resolve_model`, `resolve_device`, `resolve_dtype`,
        `check_causal_lm`).
    """
    ref = resolve_model(model)
    if dtype not in DTYPES:
        raise InputError(f"--dtype: {dtype!r} is not allowed; choose one of {', '.join(DTYPES)}")
    if loaded is not None:
        weight = loaded[0].get_output_embeddings().weight
        if str(weight.dtype).removeprefix("torch.") != dtype:
            raise InputError(f"--dtype: {dtype!r} but the loaded model is {weight.dtype}")
        return ref, weight.device.type
    device = resolve_device(device)
    resolve_dtype(dtype, device)
    check_causal_lm(ref)
    return ref, device


def load_backbone(ref: ModelRef, *, device: str, dtype: str, cache_dir=None, progress: bool = True):
    """Loads (model, tokenizer) in eval mode on `device` in `dtype`, offline.

    Args:
      ref: from `resolve_model`. device: "cpu" or "cuda" (from `resolve_device`).
      dtype: one of DTYPES. cache_dir: the dpolab cache (the packaged model's float32 copy).
    """
    from dpolab.sims.llm import model as packaged

    torch_dtype = resolve_dtype(dtype, device)
    if ref.kind == "packaged":
        model, tokenizer = packaged.load_model(cache_dir, progress=progress)
        return model.to(device=device, dtype=torch_dtype), tokenizer
    check_causal_lm(ref)
    packaged.offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    import sys

    if progress and sys.stderr.isatty():  # a loading bar on a terminal only, like extract's own bar
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(ref.path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(ref.path), dtype=torch_dtype, local_files_only=True)
    except (OSError, ValueError) as err:
        raise InputError(f"--model: {ref.name!r} could not be loaded ({str(err).splitlines()[0]})") from err
    return model.to(device).eval(), tokenizer


@dataclass(frozen=True)
class Architecture:
    """What the resource estimate needs: parameters, hidden size, layers, MLP width, vocabulary."""

    params: float
    hidden: int
    layers: int
    intermediate: int
    vocab: int


#: Published shapes (config.json of each model) of the paper's models and the packaged one.
ARCHITECTURES = {
    "Gemma-3-270M": Architecture(268e6, 640, 18, 2048, 262_144),
    "Qwen2.5-7B": Architecture(7.62e9, 3584, 28, 18_944, 152_064),
    "Mistral-7B-v0.1": Architecture(7.24e9, 4096, 32, 14_336, 32_000),
    "Llama-3.1-8B": Architecture(8.03e9, 4096, 32, 14_336, 128_256),
}


#: Dense peak FLOP/s of one H100 SXM by dtype (bfloat16/float16 tensor cores; float32 without
#: TF32, which torch leaves off for matmuls) and its memory bandwidth (bytes/s).
H100_FLOPS = {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}
H100_BANDWIDTH = 3.35e12


def estimate_resources(arch: Architecture, *, dtype: str = "bfloat16", tokens: int = 27,
                       batch_size: int = 16, flops_per_second: float | None = None,
                       bandwidth: float = H100_BANDWIDTH, utilization: float = 0.3) -> dict:
    """Memory and time of `extract` for one model, from its shapes (inference, no KV cache).

    With b bytes per element of `dtype`, P parameters and T tokens per prompt:
      weights = P · b;
      activations per statement = T · (4·hidden + 2·intermediate) · b (the residual stream, the
        attention input/output and the MLP's gate and up projections alive at once in one layer)
        + vocab · (4 + 8) (the last position's logits in float32, then float64 for the partition);
      peak = weights + batch_size · activations per statement + vocab · hidden · 4 (the head in
        float32, copied unless the model is float32);
      seconds per statement = max(2 · P · T / (flops_per_second · utilization),
                                  P · b / (bandwidth · batch_size))  (compute or weight reads).

    Args:
      arch: the model's shapes. dtype: one of DTYPES. tokens: prompt length (the persona prompts
      average 27 Gemma tokens, 95th percentile 41). batch_size: prompts per forward pass.
      flops_per_second: the device's dense peak (default: one H100 SXM in `dtype`).
      bandwidth: memory bandwidth in bytes/s (H100 SXM). utilization: fraction of peak reached.

    Returns:
      dict with weights_gib, activations_mib_per_statement, peak_gib, seconds_per_statement,
      hours_for_135_personas (all 135 persona files, 1,000 statements each).
    """
    if dtype not in _DTYPE_BYTES:
        raise InputError(f"dtype: {dtype!r} is not allowed; choose one of {', '.join(DTYPES)}")
    b = _DTYPE_BYTES[dtype]
    flops = flops_per_second or H100_FLOPS[dtype]
    weights = arch.params * b
    per_statement = tokens * (4 * arch.hidden + 2 * arch.intermediate) * b + arch.vocab * (4 + 8)
    head_copy = 0 if dtype == "float32" else arch.vocab * arch.hidden * 4
    peak = weights + batch_size * per_statement + head_copy
    seconds = max(2 * arch.params * tokens / (flops * utilization), weights / (bandwidth * batch_size))
    return {"weights_gib": weights / 2**30, "activations_mib_per_statement": per_statement / 2**20,
            "peak_gib": peak / 2**30, "seconds_per_statement": seconds,
            "hours_for_135_personas": seconds * 135_000 / 3600}


def resource_table() -> str:
    """The README's table: `estimate_resources` for every model in ARCHITECTURES, bfloat16 and
    float32, default settings (a test keeps the README in sync)."""
    lines = ["| model | dtype | weights GiB | activations MiB/statement | peak GiB | ms/statement | "
             "hours, 135 personas × 1,000 |", "|---|---|---|---|---|---|---|"]
    for name, arch in ARCHITECTURES.items():
        for dtype in ("bfloat16", "float32"):
            e = estimate_resources(arch, dtype=dtype)
            lines.append(f"| {name} | {dtype} | {e['weights_gib']:.1f} | {e['activations_mib_per_statement']:.1f} | "
                         f"{e['peak_gib']:.1f} | {1000 * e['seconds_per_statement']:.2f} | "
                         f"{e['hours_for_135_personas']:.2f} |")
    return "\n".join(lines)
