"""The repro/audit runner: store, resume, force, skipped parts, item selection."""
import json
import types

import numpy as np
import pytest

from dpolab.items import Unavailable, run_items, select


def _item(name, calls, *, unavailable=False):
    def compute(ctx):
        calls.append(name)
        if unavailable:
            raise Unavailable("no data here")
        return {"x": np.arange(3.0) * (2 if ctx.quick else 1)}

    def render(data, ctx):
        path = ctx.dir / "x.csv"  # items render PDF, PNG and CSV files
        path.write_text(",".join(map(str, data["x"])))
        return [path]

    return types.SimpleNamespace(NAME=name, TITLE=f"item {name}", compute=compute, render=render)


def _items(calls):
    return {"a": _item("a", calls), "b": _item("b", calls), "c": _item("c", calls, unavailable=True)}


def test_store_resume_and_force(tmp_path):
    calls, out = [], tmp_path / "out"
    manifest, _ = run_items("repro", _items(calls), out=out, quick=True)
    assert calls == ["a", "b", "c"]
    assert manifest["items"]["a"]["status"] == "done" and manifest["items"]["a"]["files"] == ["a/x.csv"]
    assert manifest["items"]["c"] == {"title": "item c", "status": "skipped", "reason": "no data here",
                                      "files": []}
    assert (out / "a" / "x.csv").read_text() == "0.0,2.0,4.0"
    # an earlier run is never overwritten silently
    with pytest.raises(ValueError, match="out=.*--resume finishes it"):
        run_items("repro", _items(calls), out=out, quick=True)
    with pytest.raises(ValueError, match="quick=False is not allowed with --resume"):
        run_items("repro", _items(calls), out=out, quick=False, resume=True)
    # resume: stored items are loaded, not recomputed; a corrupted store is recomputed
    (out / "b" / "data.npz").write_bytes(b"garbage")
    calls.clear()
    run_items("repro", _items(calls), out=out, quick=True, resume=True)
    assert calls == ["b", "c"]
    calls.clear()
    run_items("repro", _items(calls), out=out, quick=True, force=True)
    assert calls == ["a", "b", "c"]


def test_refuses_foreign_directories(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    for flags in ({}, {"force": True}, {"resume": True}):
        with pytest.raises(ValueError, match="not a dpolab repro directory"):
            run_items("repro", _items([]), out=tmp_path, **flags)
    assert (tmp_path / "mine.txt").read_text() == "user data"
    audit_dir = tmp_path / "audit"
    run_items("audit", _items([]), out=audit_dir, quick=True)
    with pytest.raises(ValueError, match="not a dpolab repro directory"):
        run_items("repro", _items([]), out=audit_dir, force=True)
    with pytest.raises(ValueError, match="nothing to resume"):
        run_items("repro", _items([]), out=tmp_path / "new", resume=True)


def test_select_names_the_allowed_items():
    items = _items([])
    assert select(items, None) == ["a", "b", "c"]
    assert select(items, "c, a") == ["a", "c"]
    with pytest.raises(ValueError, match=r"only='a,zz' is not allowed: only must name items from \('a', 'b', 'c'\)"):
        select(items, "a,zz")


def test_only_runs_the_selected_items(tmp_path):
    calls = []
    manifest, out = run_items("repro", _items(calls), out=tmp_path / "o", only="b")
    assert calls == ["b"] and list(manifest["items"]) == ["b"]
    assert json.loads((out / "manifest.json").read_text())["items"]["b"]["status"] == "done"


def test_an_items_sweep_of_another_spec_is_replaced_not_refused(tmp_path):
    """An item recomputed after its sweep spec changed (an older version of the item) replaces the
    stored sweep; the same spec resumes it."""
    import jax

    from dpolab.items import Context

    jax.config.update("jax_enable_x64", True)
    ctx = Context(kind="audit", quick=True, out=tmp_path, dir=tmp_path)
    spec = lambda seeds: {"sweep": {"simulation": "im-li", "seeds": seeds, "chunk_size": seeds,
                                    "precision": "float64"},
                          "fixed": {"Q": 5, "steps": 4, "checkpoints": 2, "n_test": 4}, "grid": {"K": [1]}}
    first = ctx.sweep("s", spec(2))
    np.testing.assert_array_equal(ctx.sweep("s", spec(2))["margin_mean"], first["margin_mean"])
    assert len(ctx.sweep("s", spec(3))["seed"]) == 3
