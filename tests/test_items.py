"""The contract every `dpolab repro` and `dpolab audit` item keeps (see `dpolab.items`), checked on
the session's `repro --quick` and `audit --quick` runs, one test per item:

- it ran (or was skipped with a reason only because this machine lacks what it needs), and wrote a
  figure (PDF + PNG) and the CSV of the plotted numbers, none empty;
- rendering again from the stored numbers alone gives byte-identical CSVs and PNGs;
- the numbers come from the store: rendering a changed stored array changes a CSV (audit: the
  report text too);
- an audit question's report section has exactly one verdict line, its figure links resolve, and
  its registry result carries the question's id.
"""
import re
import types

import numpy as np
import pytest

from dpolab.audit import items as audit_items
from dpolab.items import Context, render
from dpolab.paper_repro import items as repro_items
from dpolab.store import load_record

REPRO, AUDIT = repro_items(), audit_items()


def _stored(out, name):
    stored = load_record(out / name, "data")
    assert stored is not None, f"{name}: no whole, checksummed record in the store"
    return stored[0]


def _csvs(paths, suffixes=(".csv",)):
    return {p.name: p.read_bytes() for p in paths if p.suffix in suffixes}


def _check_item(run, module, tmp_path):
    manifest, out = run
    entry = manifest["items"][module.NAME]
    if entry["status"] == "skipped":
        assert entry["reason"], "an item is skipped only with the reason"
        pytest.skip(f"{module.NAME}: {entry['reason']}")
    assert entry["status"] == "done"
    files = [out / f for f in entry["files"]]
    assert all(f.exists() and f.stat().st_size for f in files)
    assert {".pdf", ".png", ".csv"} <= {f.suffix for f in files}, entry["files"]
    data = _stored(out, module.NAME)
    ctx = Context(kind=manifest["kind"], quick=True, out=tmp_path, dir=tmp_path / "again")
    ctx.dir.mkdir()
    first = _csvs((f for f in files if f.parent == out / module.NAME), (".csv", ".png"))
    rendered = render(module, data, ctx)
    assert _csvs(rendered, (".csv", ".png")) == {k: v for k, v in first.items()
                                                  if k in {p.name for p in rendered}}, "re-render differs"
    again = _csvs(rendered)
    assert again
    # the numbers come from the store: nudge stored float arrays by a relative 1e-6, and a CSV
    # changes. First every array that holds a non-integer (one render: integer-valued ones are
    # labels and indices a plotter may reject when nudged); when the plotter rejects that too or
    # nothing moves, one array at a time, largest first (one it rejects or rounds away: the next)
    floats = sorted((k for k, v in data.items() if v.dtype.kind == "f" and v.size and np.isfinite(v).any()),
                    key=lambda k: -data[k].size)
    fractional = [k for k in floats if np.any(np.mod(data[k][np.isfinite(data[k])], 1))]
    changed = False
    for i, keys in enumerate([fractional] + [[key] for key in floats]):
        ctx.dir = tmp_path / f"changed{i}"
        ctx.dir.mkdir()
        nudged = {key: data[key] + 1e-6 * (np.abs(data[key]) + 1.0) for key in keys}
        try:
            moved = _csvs(render(module, data | nudged, ctx))
        except (ValueError, KeyError, IndexError, ZeroDivisionError):  # the plotter validated the numbers
            continue
        if moved != again:
            changed = True
            break
    assert changed, f"{module.NAME}: no CSV follows any stored float array"
    return data, out


@pytest.mark.parametrize("module", list(REPRO.values()), ids=list(REPRO))
def test_repro_item_contract(repro_quick, module, tmp_path):
    _check_item(repro_quick, module, tmp_path)


@pytest.mark.parametrize("module", list(AUDIT.values()), ids=list(AUDIT))
def test_audit_item_contract(audit_quick, module, tmp_path):
    data, out = _check_item(audit_quick, module, tmp_path)
    text = module.report(data)
    assert text.startswith(f"## {module.TITLE}")
    assert len(re.findall(r"^\*\*Verdict:\*\* ", text, flags=re.M)) == 1
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert links and all((out / link).exists() for link in links)
    assert text.strip() in (out / "audit.md").read_text()
    result = module.finding(data)
    assert result.id == f"audit/{module.NAME}" and result.verdict in ("pass", "finding", "fail")


def test_the_contract_catches_a_render_that_ignores_the_store(repro_quick, tmp_path):
    """Mutant: a render that reads its numbers from elsewhere (here: the store on disk, whatever
    it is given) keeps every file and byte-identical re-renders, and must still fail the contract."""
    real = REPRO["mixture-error"]
    fake = types.SimpleNamespace(NAME=real.NAME, TITLE=real.TITLE,
                                 render=lambda data, ctx: real.render(_stored(repro_quick[1], real.NAME), ctx))
    with pytest.raises(AssertionError, match="no CSV follows"):
        _check_item(repro_quick, fake, tmp_path)
