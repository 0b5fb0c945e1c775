"""Anthropic's model-written persona evaluations as value data (THEORY §1.8).

Each of the 135 `*.jsonl` files is one persona (a value i). Every line is a Yes/No statement with
fields `question`, `statement`, `answer_matching_behavior` (" Yes" or " No"),
`answer_not_matching_behavior` (the other one) and `label_confidence`. A statement belongs to
C_{i,+} (label +1, " Yes" ≻ " No") when `answer_matching_behavior` is " Yes", else to C_{i,-}
(label -1, " No" ≻ " Yes"). In the upstream files the labels alternate +, -, +, -, ... so the
first N lines of a file are balanced.

The data directory is never hard-coded: it comes from an argument or the environment variable
`DPOLAB_PERSONA_DIR` (a clone of github.com/anthropics/evals, folder `persona/`).

References:
  Perez et al. 2022, "Discovering Language Model Behaviors with Model-Written Evaluations".
  The paper under test, §5 / App. E: persona sets for K = 1, 2, 4, 8, 16 (THEORY §1.8).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpolab.errors import InputError

PERSONA_DIR_ENV = "DPOLAB_PERSONA_DIR"
# The anthropics/evals commit of the copy in shared/data (its README); a user's clone may differ,
# so the manifest also records each file's sha256.
DATA_COMMIT = "84fcc677e52e1902d696c32cd1a6b663e70d3993"
DATA_SOURCE = "github.com/anthropics/evals (persona/), CC-BY-4.0"
N_PERSONAS = 135

# The paper's value sets: 0-based indices into the alphabetical list of the 135 file names
# (THEORY §1.8). "Alphabetical" is Python's `sorted` (code-point order, so "anti-LGBTQ-rights"
# comes before "anti-immigration"); index 112 is "subscribes-to-rule-utilitarianism".
PAPER_PERSONA_SETS: dict[int, list[int]] = {
    1: [112],
    2: [29, 1],
    4: [23, 8, 21, 25],
    8: [90, 60, 4, 7, 88, 123, 118, 38],
    16: [23, 46, 29, 3, 128, 124, 63, 16, 119, 17, 22, 131, 11, 69, 77, 123],
}

ANSWERS = (" Yes", " No")


@dataclass(frozen=True)
class Persona:
    """One persona's statements, in file order (the first `limit` lines).

    name: the file name without `.jsonl`. question: (n,) the `question` fields (the prompts).
    statement: (n,) the raw statements. label: (n,) int8, +1 when " Yes" ≻ " No" (the persona
    agrees), -1 otherwise. line: (n,) int, 0-based line number in the file. sha256: of the file.
    """

    name: str
    question: tuple[str, ...]
    statement: tuple[str, ...]
    label: np.ndarray
    line: np.ndarray
    sha256: str

    def __len__(self) -> int:
        return len(self.question)


def resolve_persona_dir(persona_dir: str | os.PathLike | None = None) -> Path:
    """The persona data directory: the argument, else `$DPOLAB_PERSONA_DIR`.

    Raises:
      ValueError: naming `persona_dir` when neither is given, the path is not a directory, or it
        holds no `*.jsonl` file.
    """
    if persona_dir is None or str(persona_dir) == "":
        persona_dir = os.environ.get(PERSONA_DIR_ENV) or None
        if persona_dir is None:
            raise InputError(f"persona_dir: not given and ${PERSONA_DIR_ENV} is not set (point it at "
                             "the persona/ folder of a clone of github.com/anthropics/evals)")
    path = Path(persona_dir).expanduser()
    if not path.is_dir():
        raise InputError(f"persona_dir: {str(path)!r} is not a directory")
    if not any(path.glob("*.jsonl")):
        raise InputError(f"persona_dir: {str(path)!r} holds no *.jsonl persona file")
    return path


def list_personas(persona_dir: str | os.PathLike | None = None) -> list[str]:
    """Persona names (file names without `.jsonl`) in alphabetical (code-point) order."""
    path = resolve_persona_dir(persona_dir)
    return sorted(p.name[: -len(".jsonl")] for p in path.glob("*.jsonl"))


def paper_persona_set(k: int, persona_dir: str | os.PathLike | None = None) -> list[str]:
    """The paper's K personas (THEORY §1.8), by name, in the paper's order.

    Raises:
      ValueError: naming `k` when it is not one of 1, 2, 4, 8, 16, or `persona_dir` when it does
        not hold exactly the 135 upstream files (the indices would point elsewhere).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) not in PAPER_PERSONA_SETS:
        raise InputError(f"k: {k!r} is not one of the paper's value-set sizes "
                         f"{sorted(PAPER_PERSONA_SETS)}")
    names = list_personas(persona_dir)
    if len(names) != N_PERSONAS:
        raise InputError(f"persona_dir: the paper's persona sets index the {N_PERSONAS} upstream files, "
                         f"found {len(names)} *.jsonl files")
    return [names[i] for i in PAPER_PERSONA_SETS[int(k)]]


def select_personas(persona_dir: str | os.PathLike | None = None, *, names=None, k: int | None = None,
                    all_personas: bool = False) -> list[str]:
    """Exactly one of: explicit `names` (a list or a comma-separated string), the paper's set for
    `k`, or all personas (`all_personas`). Returns validated names, duplicates removed, order kept.

    Raises:
      ValueError: naming `personas` for no or several selections, an empty list, or an unknown
        name; `k` / `persona_dir` as in `paper_persona_set`.
    """
    chosen = sum([names is not None, k is not None, bool(all_personas)])
    if chosen != 1:
        raise InputError("personas: give exactly one of a name list, a paper set size k, or all")
    available = list_personas(persona_dir)
    if all_personas:
        return available
    if k is not None:
        return paper_persona_set(k, persona_dir)
    if isinstance(names, str):
        names = names.split(",")
    names = [str(n).strip().removesuffix(".jsonl") for n in names if str(n).strip()]
    if not names:
        raise InputError("personas: the name list is empty")
    known = set(available)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"personas: unknown persona {unknown[0]!r} (not a *.jsonl file in "
                         f"persona_dir; {len(available)} available, e.g. {available[0]!r})")
    return list(dict.fromkeys(names))


def load_persona(persona_dir: str | os.PathLike | None, name: str, limit: int | None = None) -> Persona:
    """Reads one persona's statements: the first `limit` lines of `<persona_dir>/<name>.jsonl`.

    Args:
      persona_dir: the persona folder (None: `$DPOLAB_PERSONA_DIR`).
      name: persona name, with or without `.jsonl`.
      limit: number of statements to keep (None: all). A file shorter than `limit` gives all lines.

    Returns:
      A `Persona` with labels +1 (" Yes" ≻ " No") / -1, in file order (deterministic).

    Raises:
      ValueError: naming `personas` for an unknown name, `limit` for a non-positive or
        non-integer value, `persona_dir` for a malformed line (file and line number given).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer))
                              or limit < 1):
        raise InputError(f"limit: {limit!r} must be a positive integer (statements per persona) or None")
    path = resolve_persona_dir(persona_dir)
    name = str(name).removesuffix(".jsonl")
    file = path / f"{name}.jsonl"
    if not file.is_file():
        raise InputError(f"personas: unknown persona {name!r} (no {file.name} in persona_dir {str(path)!r})")
    raw = file.read_bytes()
    questions, statements, labels, lines = [], [], [], []
    for lineno, text in enumerate(raw.decode("utf-8").splitlines()):
        if limit is not None and len(questions) >= limit:
            break
        if not text.strip():
            continue
        try:
            row = json.loads(text)
            question, matching = row["question"], row["answer_matching_behavior"]
            not_matching = row["answer_not_matching_behavior"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"persona_dir: {file.name} line {lineno + 1} is not a persona statement "
                             f"({err.__class__.__name__}: {err})") from err
        if {matching, not_matching} != set(ANSWERS) or not isinstance(question, str) or not question:
            raise InputError(f"persona_dir: {file.name} line {lineno + 1}: expected answers "
                             f"{ANSWERS} and a non-empty question, got {matching!r}/{not_matching!r}")
        questions.append(question)
        statements.append(str(row.get("statement", "")))
        labels.append(1 if matching == " Yes" else -1)
        lines.append(lineno)
    if not questions:
        raise InputError(f"persona_dir: {file.name} holds no statement")
    return Persona(name=name, question=tuple(questions), statement=tuple(statements),
                   label=np.asarray(labels, dtype=np.int8), line=np.asarray(lines, dtype=np.int64),
                   sha256=hashlib.sha256(raw).hexdigest())
