"""`dpolab sweep plan SPEC` and `dpolab sweep status DIR`: the plan's counts are the sweep's own
(chunks written, batch functions traced = compiled), and status tells done, corrupt and missing
chunks apart."""
import json

import pytest

from dpolab.cli import main
from dpolab.errors import InputError
from dpolab.sims.sweep import engine, overview
from dpolab.sims.sweep import simulations as sweep_sims
from dpolab.sims.sweep.run import run_spec
from dpolab.sims.sweep.spec import load_spec

SPEC = """
[sweep]
simulation = "im-li"
seeds = 2
chunk_size = 2
[fixed]
Q = 10
steps = 5
[grid]
K = [1, 2]
v = [0.0, 0.01, 0.02]
"""


def _traces():
    return sweep_sims.TRACES.get("im-li", 0)


def test_the_plan_counts_what_the_sweep_compiles_and_writes(tmp_path, monkeypatch):
    path = tmp_path / "s.toml"
    path.write_text(SPEC)
    spec = load_spec(path)
    monkeypatch.setattr(engine, "_JITS", {})
    before = _traces()
    info = overview.describe_plan(spec, calibrate=True)
    assert _traces() - before == info["signatures"] == 2  # K fixes shapes: one compilation per K
    assert info["points"] == 6 and info["runs"] == 12 and info["chunks"] == 6
    assert info["estimated_s"] > 0 and len(info["calibration_chunk_s"]) == 2
    monkeypatch.setattr(engine, "_JITS", {})
    before = _traces()
    run_spec(spec, tmp_path / "o", quiet=True)
    assert _traces() - before == info["signatures"]
    assert len(list((tmp_path / "o" / "chunks").glob("*.npz"))) == info["chunks"]
    assert "estimated_s" not in overview.describe_plan(spec, calibrate=False)


def test_status_tells_done_corrupt_and_missing_chunks_apart(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(SPEC)
    out = tmp_path / "o"
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["sweep", "status", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["done"] == info["chunks"] == 6 and not info["missing"] and not info["corrupt"]
    assert info["eta_s"] == 0 and info["chunk_s"] > 0
    (out / "chunks" / "00001.npz").write_bytes(b"damaged")
    for ext in ("npz", "json"):
        (out / "chunks" / f"00004.{ext}").unlink()
    info = overview.sweep_status(out)
    assert info["done"] == 4 and info["corrupt"] == [1] and info["missing"] == [4]
    assert info["eta_s"] == pytest.approx(2 * info["chunk_s"])
    assert "corrupt chunks [1]: --resume recomputes them" in overview.format_status(info)
    with pytest.raises(InputError, match="holds no sweep"):
        overview.sweep_status(tmp_path)


def test_plan_from_the_command_line_takes_overrides(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(SPEC)
    assert main(["sweep", "plan", str(path), "--no-calibrate", "--set", "grid.K=[1]", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["signatures"] == 1 and info["points"] == 3
    assert main(["sweep", "plan"]) == 2
    assert "needs SPEC" in capsys.readouterr().err


def test_force_replaces_a_sweep_whose_write_was_cut_short(tmp_path, capsys):
    """A killed atomic write leaves `NAME.tmp-PID` (`store.write_atomic`): still a file the sweep wrote."""
    path = tmp_path / "s.toml"
    path.write_text(SPEC)
    out = tmp_path / "o"
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--set", "grid.K=[1]"]) == 0
    (out / "chunks" / "00001.json.tmp-4242").write_text("{")
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--set", "grid.K=[1]", "--force"]) == 0
    assert not (out / "chunks" / "00001.json.tmp-4242").exists()
    (out / "notes.txt").write_text("mine")
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--force"]) == 2
    assert (out / "notes.txt").read_text() == "mine"
