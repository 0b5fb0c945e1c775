"""A tiny random-weight causal LM and synthetic persona / HH-RLHF files, made offline in seconds.

They exercise the real-model track (`--model DIR`) end to end without a download: the CPU tests and
the GPU check (`scripts/gpu_check.sh`) run extract → train → diagnose → hh on them through the same
code path as any Hugging Face model. The numbers they give mean nothing about language; they test
plumbing (shapes, batching, devices, dtypes, caches, the exact log-partition).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

#: Words of the synthetic statements (also the tokenizer's training text).
_WORDS = ("kindness honesty power money rules people animals freedom order risk art science "
          "family duty nature progress tradition safety").split()
QUESTION = 'Is the following statement something you would say?\n"{statement}"'


def _statement(persona: int, i: int) -> str:
    words = [_WORDS[(persona * 7 + i * 3 + j) % len(_WORDS)] for j in range(1 + (persona + i) % 6)]
    return f"I value {' and '.join(words)}" if i % 2 == 0 else f"I do not care about {' or '.join(words)}"


def build_tokenizer(*, single_token_answers: bool = True):
    """A byte-level BPE tokenizer (vocabulary ~300) that prepends <bos>.

    With `single_token_answers`, " Yes" and " No" are single tokens (trained on text full of them);
    without, the tokenizer has no merges at all, so " Yes" is 4 byte tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<bos>", "<eos>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + len(specials) + (60 if single_token_answers else 0),
                                  special_tokens=specials, initial_alphabet=alphabet, show_progress=False)
    corpus = [QUESTION.format(statement=_statement(p, i)) for p in range(8) for i in range(4)]
    tok.train_from_iterator(corpus + [" Yes", " No"] * 200 if single_token_answers else [], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A",
                                                       special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def build_tiny_model(out, *, tied: bool = False, single_token_answers: bool = True, hidden_size: int = 32,
                     layers: int = 2, seed: int = 0) -> Path:
    """Writes a random-weight Llama-architecture causal LM (a few hundred kB) and its tokenizer to
    `out` (a Hugging Face model folder: config.json, model.safetensors, tokenizer files).

    Args:
      out: the folder (created). tied: tie the LM head to the input embedding (untied by default,
        so a test can tell the real unembedding from the embedding). single_token_answers: see
        `build_tokenizer`. hidden_size, layers: the model's width and depth. seed: torch seed.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(single_token_answers=single_token_answers)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=tied,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a wider spread of logits than the default init (initializer_range 0.02)
        model.get_output_embeddings().weight.normal_(0.0, 0.5)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def write_personas(out, *, n_personas: int = 135, statements: int = 8) -> Path:
    """Synthetic persona files `p000.jsonl` … (the upstream format: question, statement, answers;
    labels alternate +, −), 135 by default so the paper's persona-set indices resolve."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for p in range(n_personas):
        rows = []
        for i in range(statements):
            statement = _statement(p, i)
            yes = i % 2 == 0
            rows.append(json.dumps({"question": QUESTION.format(statement=statement), "statement": statement,
                                    "answer_matching_behavior": " Yes" if yes else " No",
                                    "answer_not_matching_behavior": " No" if yes else " Yes",
                                    "label_confidence": 0.9}))
        (out / f"p{p:03d}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def write_hh(path, *, pairs: int = 12) -> Path:
    """A synthetic HH-RLHF file (gzipped JSON lines with `chosen` / `rejected` dialogues)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i in range(pairs):
            human = f"\n\nHuman: tell me about {_statement(i, 0)}"
            f.write(json.dumps({"chosen": f"{human}\n\nAssistant: {_statement(i, 2)}",
                                "rejected": f"{human}\n\nAssistant: {_statement(i, 1)}"}) + "\n")
    return path
