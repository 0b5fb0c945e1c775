"""Suite "llm": feature-extraction throughput of the real-embedding track and cache reuse.

Runs `dpolab.sims.llm.extract.extract` for the paper's K = 2 persona set (limit statements each) into a
fresh folder with an already loaded model (statements per second on this machine), then again
into the same folder (every persona reused from its checksummed npz; the model is not loaded).
Model load time (from the float32 cache) is reported apart. Needs the `llm` extra and
$DPOLAB_PERSONA_DIR.
"""
from __future__ import annotations

import tempfile
import time

import jax


def llm_suite(*, quick: bool = False) -> dict:
    from dpolab.sims.llm.extract import extract
    from dpolab.sims.llm.model import MODEL_NAME, load_model
    from dpolab.sims.llm.persona import paper_persona_set

    limit = 8 if quick else 200
    names = paper_persona_set(2)
    start = time.perf_counter()
    loaded = load_model(progress=False)
    load_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        extract(None, names, limit, out, loaded=loaded, progress=False)
        compute_s = time.perf_counter() - start
        start = time.perf_counter()
        summary = extract(None, names, limit, out, progress=False)
        reuse_s = time.perf_counter() - start
    n = limit * len(names)
    reused = all(p["reused"] for p in summary["personas"].values())
    return dict(
        statements=n, model_load_s=load_s, compute_s=compute_s, reuse_s=reuse_s,
        statements_per_second=n / compute_s, reuse_speedup=compute_s / reuse_s, all_reused=reused,
        config=dict(steps=1, personas=names, limit=limit, model=MODEL_NAME),
        jax_backend=jax.default_backend(), precision="float32 (model)", targets={}, meets_targets={},
        table_rows=[dict(method="extract, computed (s per statement)", s_per_step=compute_s / n, metric=None),
                    dict(method="extract, reused (s per statement)", s_per_step=reuse_s / n,
                         metric="reuse_speedup")],
        notes=[f"{n} statements ({len(names)} personas × {limit}) at {n / compute_s:.1f} statements/s; "
               f"model load from the float32 cache {load_s:.1f} s (not in the extraction time); "
               f"the second run reused every persona: {reused}."],
    )
