"""Real-data helpers shared by `fig5_training_curves` and `fig3_cosines` (Gemma-3-270M features).

Both items read the paper's persona sets (THEORY §1.8) through `ctx.features`, with the same
statements-per-persona limit and the same persona list (`run_personas`: the union of what both
need), so the model is loaded and the hidden states are extracted once (they share the feature
cache's `limit<L>` folder, `Backbone.feature_cache`, with later runs).

References:
  S. Im, S. Li, arXiv 2408.03459, §5 and App. E (persona sets for K = 1, 2, 4, 8, 16).
"""
from __future__ import annotations

import re

from dpolab.sims.llm.persona import paper_persona_set

#: Statements per persona (the first lines of each file, balanced +/−). Full: 200 keeps the
#: first-time extraction of the 28 distinct personas of the five sets (5,600 statements at about
#: 37 statements/s on 2 idle cores) near 2.5 minutes; quick: 16 (a 14/2 split per persona).
LIMIT = {False: 200, True: 16}


#: The paper's value sets trained in `fig5_training_curves`, by quick.
TRAINING_KS = {False: (1, 2, 4, 8, 16), True: (1, 2)}
#: How many personas of the paper's K = 16 set `fig3_cosines` compares, by quick.
COSINE_PERSONAS = {False: 16, True: 4}


def statements_limit(quick: bool) -> int:
    """Statements per persona for the run size (see `LIMIT`)."""
    return LIMIT[bool(quick)]


def persona_sets(ctx, ks) -> dict[int, list[str]]:
    """{K: persona names} of the paper's value sets for the given K (THEORY §1.8)."""
    return {int(k): paper_persona_set(int(k), ctx.persona_dir) for k in ks}


def cosine_personas(ctx) -> list[str]:
    """The first `COSINE_PERSONAS[quick]` personas of the paper's K = 16 set, in its order."""
    return persona_sets(ctx, [16])[16][: COSINE_PERSONAS[bool(ctx.quick)]]


def run_personas(ctx) -> list[str]:
    """Every persona either item needs in this run size (training sets first), without repeats."""
    sets = persona_sets(ctx, TRAINING_KS[bool(ctx.quick)])
    return list(dict.fromkeys([n for group in sets.values() for n in group] + cosine_personas(ctx)))


def features(ctx, names) -> list:
    """[PersonaFeatures] of `names`, from one extraction of `run_personas(ctx)`.

    Raises:
      dpolab.items.Unavailable: when the real-embedding track cannot run here.
    """
    stored = ctx.features(run_personas(ctx), statements_limit(ctx.quick))
    return [stored[n] for n in names]


_ABBREVIATIONS = (
    ("willingness-to-", "will. "), ("desire-for-", "desire: "), ("desire-to-", "desire: "),
    ("believes-", "bel. "), ("subscribes-to-", "subscr. "), ("human-", "hum. "),
    ("to-achieve-", "to achieve "), ("non-HHH", "¬HHH"),
)


def short_label(name: str, width: int = 30) -> str:
    """A legible axis label for a persona file name: common prefixes abbreviated, dashes as
    spaces, cut to `width` characters with an ellipsis.

    >>> short_label("willingness-to-defer-to-authorities")
    'will. defer to authorities'
    """
    text = name
    for long, short in _ABBREVIATIONS:
        text = text.replace(long, short)
    text = re.sub(r"-", " ", text)
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"
