"""Sweep data-loss regressions (issue #16): resuming with another chunk_size, a summary only from
a complete verified grid, `--force` deleting only what a run of this kind wrote, and chunk
padding bounded by the device count (not by `chunk_size`)."""
import json

import jax
import pytest

from dpolab.cli import main
from dpolab.sims.sweep import engine
from dpolab.sims.sweep.run import run_sweep
from dpolab.sims.sweep.spec import load_spec
from dpolab.store import save_record

SPEC = """
[sweep]
simulation = "im-li"
seeds = {seeds}
chunk_size = {chunk}
[fixed]
Q = 10
beta = 1.0
steps = 10
[grid]
K = [1, 2]
v = [0.0, 0.01, 0.02]
"""


def write_spec(tmp_path, chunk, seeds=4, name=None):
    path = tmp_path / (name or f"chunk{chunk}.toml")
    path.write_text(SPEC.format(seeds=seeds, chunk=chunk))
    return path


def test_resume_with_another_chunk_size_recomputes_to_the_full_grid(tmp_path):
    reference = run_sweep(write_spec(tmp_path, 8), tmp_path / "ref", quiet=True).read_bytes()
    out = tmp_path / "out"
    for first, second in ((8, 100), (100, 4)):  # fewer, then more chunks than the stored run
        run_sweep(write_spec(tmp_path, first), out, force=out.exists(), quiet=True)
        (out / "chunks" / "00001.json").unlink()  # interrupted: one chunk missing
        (out / "summary.csv").unlink()
        summary = run_sweep(write_spec(tmp_path, second), out, resume=True, quiet=True)
        assert len(summary.read_text().splitlines()) == 1 + 6 * 4  # every point and seed
        assert summary.read_bytes() == reference


def test_summary_is_written_only_from_the_whole_verified_grid(tmp_path):
    spec_path = write_spec(tmp_path, 8)
    out = tmp_path / "out"
    run_sweep(spec_path, out, quiet=True)
    (out / "summary.csv").unlink()
    store = engine.SweepStore(out, load_spec(spec_path), resume=True, force=False, backend="local")
    arrays, meta = engine.load_record(store.chunks, "00001")
    assert list(arrays["point"]) == [1, 2]
    arrays["point"] = arrays["point"] * 0 + 1  # the record is whole but holds point 1 twice
    save_record(store.chunks, "00001", arrays, meta)
    with pytest.raises(RuntimeError, match="miss 4 of 24"):
        store.finish(0.0)
    assert not (out / "summary.csv").exists()


def test_force_replaces_only_a_folder_this_command_wrote(tmp_path, capsys):
    spec = write_spec(tmp_path, 8)
    features = tmp_path / "features"  # e.g. an `llm extract` folder (its manifest has no kind)
    features.mkdir()
    (features / "manifest.json").write_text(json.dumps({"model": "x", "personas": []}))
    (features / "notes.md").write_text("mine")
    assert main(["sweep", str(spec), "--out", str(features), "--force", "--quiet"]) == 2
    assert "not a dpolab sweep directory" in capsys.readouterr().err
    assert sorted(p.name for p in features.iterdir()) == ["manifest.json", "notes.md"]

    verify_dir = tmp_path / "verify"  # a run of another kind is not replaced either
    verify_dir.mkdir()
    (verify_dir / "manifest.json").write_text(json.dumps({"kind": "verify", "key": {"quick": True}}))
    assert main(["sweep", str(spec), "--out", str(verify_dir), "--force", "--quiet"]) == 2
    assert (verify_dir / "manifest.json").exists()

    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--quiet"]) == 0
    (out / "chunks" / "my-plot.png").write_bytes(b"mine")  # a user's file inside a sweep folder
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    capsys.readouterr()
    assert main(["sweep", str(spec), "--out", str(out), "--force", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "chunks/my-plot.png" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing deleted
    (out / "chunks" / "my-plot.png").unlink()
    assert main(["sweep", str(spec), "--out", str(out), "--force", "--quiet"]) == 0


def test_oversized_chunk_size_pads_only_to_the_device_count(tmp_path, monkeypatch):
    widths = []
    jitted = engine._jitted

    def spy(name, static):
        fn = jitted(name, static)
        return lambda keys, dyn: (widths.append(keys.shape[0]), fn(keys, dyn))[1]

    monkeypatch.setattr(engine, "_jitted", spy)
    one_point = tmp_path / "one.toml"
    one_point.write_text('[sweep]\nsimulation = "im-li"\nseeds = 1\nchunk_size = 64\n'
                         '[fixed]\nK = 1\nQ = 10\nsteps = 10\n')
    run_sweep(one_point, tmp_path / "one", quiet=True)
    assert widths == [jax.local_device_count()]

    widths.clear()  # 3 points per K with at most 2 per chunk: chunks of 2 and 1, both width 2
    spec = write_spec(tmp_path, 2, seeds=1)
    assert [len(c) for c in engine.plan(load_spec(spec))] == [1, 2, 1, 2]
    run_sweep(spec, tmp_path / "grid", quiet=True)
    ndev = jax.local_device_count()
    assert widths == [-(-2 // ndev) * ndev] * 4
