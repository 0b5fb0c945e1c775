"""`dpolab sweep SPEC --set TABLE.KEY=VALUE`: overrides applied before validation, an axis moved
between [fixed] and [grid], the effective spec in the manifest, bad overrides refused by name."""
import json

import pytest

from dpolab.cli import main
from dpolab.errors import InputError
from dpolab.sims.sweep.spec import apply_overrides

SPEC = """
[sweep]
simulation = "im-li"
seeds = 2
[fixed]
Q = 10
steps = 5
[grid]
K = [1, 2]
v = [0.0, 0.01]
"""


def test_overrides_are_toml_values_and_move_a_key_between_fixed_and_grid():
    data = {"sweep": {"seeds": 2}, "fixed": {"Q": 10}, "grid": {"K": [1, 2], "v": [0.0]}}
    got = apply_overrides(data, ["sweep.seeds=8", "fixed.K=4", "grid.Q=[10, 20]", "sweep.precision=float32",
                                 'sweep.simulation="rdpo"'])
    assert got == {"sweep": {"seeds": 8, "precision": "float32", "simulation": "rdpo"},
                   "fixed": {"K": 4}, "grid": {"v": [0.0], "Q": [10, 20]}}
    assert data["grid"] == {"K": [1, 2], "v": [0.0]}  # the parsed file itself is left alone


@pytest.mark.parametrize("bad", ["seeds=8", "sweep.seeds", "other.K=1", ".K=1", "grid.=1"])
def test_a_malformed_override_is_refused_naming_the_flag(bad):
    with pytest.raises(InputError, match=r"--set=.* is not allowed: --set must be TABLE.KEY=VALUE"):
        apply_overrides({}, [bad])


def test_the_sweep_runs_the_overridden_spec_and_records_it(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    out = tmp_path / "o"
    assert main(["sweep", str(spec), "--out", str(out), "--quiet", "--set", "grid.K=[2]", "--set", "sweep.seeds=1",
                 "--set", "fixed.v=0.01"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"]["grid"] == {"K": [2]} and manifest["spec"]["sweep"]["seeds"] == 1
    assert manifest["spec"]["fixed"]["v"] == 0.01
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 2  # header + one point x one seed
    capsys.readouterr()
    assert main(["sweep", str(spec), "--out", str(tmp_path / "p"), "--set", "fixed.nope=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fixed.nope=1 is not allowed" in err[0]
    assert not (tmp_path / "p").exists()
