"""The bad-input table of issue #16's new-user run: every command line below must exit 2 with one
line on stderr (no traceback), print nothing on stdout, and write or delete nothing.

Each case runs in-process through `dpolab.cli.main` in a temporary working folder that holds the
files the cases point at (specs, a plain file, a foreign folder, folders of earlier runs).
"""
import json
import os

import pytest

from dpolab.cli import BOUND_ARGS, main
from dpolab.theory.calculator import FAMILIES


def _gpu() -> bool:
    """Whether torch sees a CUDA GPU here (then `--device cuda` is good input)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


GOOD_SPEC = '[sweep]\nsimulation = "im-li"\nseeds = 1\n[fixed]\nQ = 10\nsteps = 5\n'
_IM = '[sweep]\nsimulation = "im-li"\n'
_RD = '[sweep]\nsimulation = "rdpo"\n'

#: name → TOML text of a bad spec (each written to NAME.toml)
BAD_SPECS = {
    "not_toml": "[sweep\nsimulation = im-li",
    "duplicate_key": _IM + "seeds = 1\nseeds = 2\n",
    "empty": "",
    "sweep_not_table": "sweep = 3\n",
    "unknown_table": _IM + "[extra]\nx = 1\n",
    "unknown_sweep_key": _IM + "foo = 1\n",
    "unknown_param": _IM + "[fixed]\nbar = 1\n",
    "no_simulation": "[sweep]\nseeds = 2\n",
    "unknown_simulation": '[sweep]\nsimulation = "mystery"\n',
    "simulation_not_str": "[sweep]\nsimulation = 3\n",
    "seeds_str": _IM + 'seeds = "4"\n',
    "seeds_zero": _IM + "seeds = 0\n",
    "seeds_negative": _IM + "seeds = -1\n",
    "seeds_float": _IM + "seeds = 2.0\n",
    "seeds_huge": _IM + "seeds = 9223372036854775807\n",
    "chunk_zero": _IM + "chunk_size = 0\n",
    "chunk_negative": _IM + "chunk_size = -3\n",
    "chunk_str": _IM + 'chunk_size = "big"\n',
    "precision_bad": _IM + 'precision = "float16"\n',
    "root_seed_float": _IM + "root_seed = 1.5\n",
    "K_zero_in_grid": _IM + "[grid]\nK = [1, 0]\n",
    "K_float": _IM + "[fixed]\nK = 1.5\n",
    "K_list_in_fixed": _IM + "[fixed]\nK = [1, 2]\n",
    "Q_bool": _IM + "[fixed]\nQ = true\n",
    "Q_huge": _IM + "[fixed]\nQ = 1000000000000\n",
    "steps_huge": _IM + "[fixed]\nsteps = 100000000000000000000\n",
    "steps_negative": _IM + "[fixed]\nsteps = -5\n",
    "beta_zero": _IM + "[fixed]\nbeta = 0.0\n",
    "beta_negative": _IM + "[fixed]\nbeta = -1.0\n",
    "beta_inf": _IM + "[fixed]\nbeta = inf\n",
    "v_inf": _IM + "[fixed]\nv = inf\n",
    "v_nan": _IM + "[fixed]\nv = nan\n",
    "v_negative": _IM + "[fixed]\nv = -0.1\n",
    "lb_inf": _IM + "[fixed]\nlb = inf\n",
    "grid_scalar": _IM + "[grid]\nK = 3\n",
    "grid_empty": _IM + "[grid]\nK = []\n",
    "grid_and_fixed": _IM + "[fixed]\nK = 1\n[grid]\nK = [1, 2]\n",
    "rdpo_eps_half": _RD + "[grid]\neps = [0.1, 0.5]\n",
    "rdpo_eps_inf": _RD + "[fixed]\neps = inf\n",
    "rdpo_eps_negative": _RD + "[fixed]\neps = -0.1\n",
}

CASES = [
    # ---- top level and argparse ----
    [], ["frobnicate"], ["--bogus"], ["bounds"], ["bounds", "quantum"], ["llm"],
    ["llm", "extract", "--out", "x"], ["llm", "extract", "--k-set", "x", "--out", "x"],
    ["llm", "train", "--features", "f", "--out", "x", "--protocol", "pap"],
    ["llm", "train", "--features", "f", "--out", "x", "--seeds", "many"],
    # ---- bounds im-li ----
    *[["bounds", "im-li", flag, value] for flag, value in [
        ("--K", "inf"), ("--K", "-inf"), ("--K", "nan"), ("--K", "0"), ("--K", "-1"), ("--K", "1.5"),
        ("--K", "1e300"), ("--K", "x"), ("--K", ","), ("--K", "1,,2"), ("--K", ""),
        ("--Q", "0"), ("--Q", "nan"), ("--Q", "1e300"), ("--d", "1e300"), ("--d", "0"), ("--d", "inf"),
        ("--v", "inf"), ("--v", "nan"), ("--v", "-1"), ("--v", "1e300"), ("--lb", "0"), ("--lb", "-1"),
        ("--lb", "inf"), ("--Z", "0"), ("--Z", "2.5"), ("--beta", "0"), ("--beta", "-1"),
        ("--beta", "inf"), ("--beta", "1e-300"), ("--tau", "0"), ("--tau", "-1"), ("--tau", "nan"),
        ("--threshold", "0"), ("--threshold", "2"), ("--threshold", "-0.1"), ("--threshold", "nan")]],
    ["bounds", "im-li", "--K"], ["bounds", "im-li", "--json", "--csv"], ["bounds", "im-li", "--foo", "1"],
    ["bounds", "im-li", "--K", "1,2", "--beta", "1,-1"],
    # ---- bounds rdpo ----
    *[["bounds", "rdpo", flag, value] for flag, value in [
        ("--n", "0"), ("--n", "inf"), ("--n", "1.5"), ("--n", "1e300"), ("--d", "1e300"), ("--d", "0"),
        ("--eps", "0.5"), ("--eps", "-0.1"), ("--eps", "nan"), ("--beta", "0"), ("--L", "0"),
        ("--B", "0"), ("--B", "-1"), ("--delta", "0"), ("--delta", "1"), ("--lambda", "-1"),
        ("--C", "0"), ("--C-prime", "-1"), ("--c-margin", "0"), ("--c-margin", "inf")]],
    # ---- bounds ranking ----
    *[["bounds", "ranking", flag, value] for flag, value in [
        ("--alpha", "-0.5"), ("--alpha", "1.5"), ("--alpha", "nan"), ("--beta", "0"), ("--beta", "-1"),
        ("--beta", "inf"), ("--beta", "1e-320"), ("--log-ref-ratio", "inf"), ("--log-ref-ratio", "nan"),
        ("--log-ref-ratio", "x"), ("--log-ref-ratio", "-1,x")]],
    # ---- bounds mixture ----
    ["bounds", "mixture", "--weights", "1"], ["bounds", "mixture", "--rewards", "1,2"],
    *[["bounds", "mixture", "--rewards", r, "--weights", w] for r, w in [
        ("1,x", "1"), ("1,inf", "1"), ("1,2", "nan"), ("1,2", "-1"), ("1,2", "2"), ("1,2;3", "0.5,0.5"),
        ("1,2;2,1", "0.5"), (";", "1"), ("1,2;2,1", "0.6,0.6")]],
    # ---- verify (all refused before any check runs) ----
    ["verify", "--suite", "bogus", "--out", "v"], ["verify", "--only", "q-star-tabel", "--out", "v"],
    ["verify", "--only", "nothing-like-this", "--out", "v"], ["verify", "--only", ",", "--out", "v"],
    ["verify", "--only", "", "--out", "v"], ["verify", "--quick", "--force", "--resume", "--out", "v"],
    ["verify", "--quick", "--resume", "--out", "v"], ["verify", "--quick", "--out", "a_file"],
    ["verify", "--quick", "--out", "a_file/sub"], ["verify", "--quick", "--out", "/proc/dpolab-no"],
    ["verify", "--quick", "--out", "foreign"], ["verify", "--quick", "--out", "foreign", "--force"],
    ["verify", "--quick", "--out", "sweep_run", "--force"], ["verify", "--quick", "--out", "verify_run"],
    # ---- sweep ----
    *[["sweep", f"{name}.toml", "--out", "out"] for name in BAD_SPECS],
    ["sweep", "missing.toml", "--out", "out"], ["sweep", "a_dir", "--out", "out"],
    ["sweep", "binary.toml", "--out", "out"], ["sweep", "good.toml"],
    ["sweep", "good.toml", "--out", "out", "--backend", "rya"],
    ["sweep", "good.toml", "--out", "out", "--backend", "local", "--address", "auto"],
    ["sweep", "good.toml", "--out", "out", "--resume"],
    ["sweep", "good.toml", "--out", "out", "--resume", "--force"],
    ["sweep", "good.toml", "--out", "a_file"], ["sweep", "good.toml", "--out", "a_file/sub"],
    ["sweep", "good.toml", "--out", "/proc/dpolab-no"], ["sweep", "good.toml", "--out", "foreign"],
    ["sweep", "good.toml", "--out", "foreign", "--force"], ["sweep", "good.toml", "--out", "features"],
    ["sweep", "good.toml", "--out", "features", "--force"],
    ["sweep", "good.toml", "--out", "verify_run", "--force"],
    ["sweep", "good.toml", "--out", "sweep_run"], ["sweep", "good.toml", "--out", "sweep_run", "--force"],
    ["sweep", "good.toml", "--out", "sweep_run", "--resume"],
    # ---- repro / audit ----
    *[[cmd, *args] for cmd in ("repro", "audit") for args in [
        ["--only", "fig44", "--out", "r"], ["--only", ",", "--out", "r"], ["--quick"],
        ["--quick", "--resume", "--out", "r"], ["--quick", "--out", "a_file"],
        ["--quick", "--out", "foreign", "--force"], ["--quick", "--out", "sweep_run", "--force"]]],
    # ---- the model flags of verify / repro / audit (checked before any work, issue #14) ----
    *[[*cmd, *args] for cmd in (["verify", "--suite", "real"], ["verify", "--suite", "im-li"], ["repro"], ["audit"])
      for args in [["--quick", "--model", "no_such_model_dir", "--out", "r"],
                   ["--quick", "--model", "a_file", "--out", "r"], ["--quick", "--model", "a_dir", "--out", "r"],
                   ["--quick", "--batch-size", "0", "--out", "r"], ["--quick", "--dtype", "float64", "--out", "r"],
                   ["--quick", "--device", "tpu", "--out", "r"]]],
    *[[*cmd, "--quick", "--device", "cuda", "--out", "r"] for cmd in (["verify", "--suite", "real"], ["repro"],
                                                                     ["audit"]) if not _gpu()],
    # ---- bench / selftest ----
    ["bench", "--suite", "x"], ["bench", "--suite", "IM-LI"], ["bench", "--fast"], ["bench", "--quick", "--force"],
    ["bench", "--quick", "--out", "a_file"], ["bench", "--quick", "--out", "foreign", "--force"],
    ["bench", "--quick", "--out", "sweep_run"],
    ["selftest", "--only", "no-such-mutant"], ["selftest", "--jobs", "0"], ["selftest", "--jobs", "-1"],
    ["selftest", "--jobs", "x"],
]


def _snapshot(root):
    """Every path under root with its size and modification time."""
    snap = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            snap[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return snap


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder holding what the cases point at."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.toml").write_text(GOOD_SPEC)
    for name, text in BAD_SPECS.items():
        (tmp_path / f"{name}.toml").write_text(text)
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "a_file").write_text("a plain file")
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.md").write_text("a user's notes")
    (tmp_path / "features").mkdir()  # an `llm extract` folder: a manifest without a kind
    (tmp_path / "features" / "manifest.json").write_text(json.dumps({"personas": []}))
    (tmp_path / "features" / "notes.md").write_text("mine")
    for kind, key in (("sweep", {"spec_hash": "0"}), ("verify", {"quick": True})):
        run = tmp_path / f"{kind}_run"
        run.mkdir()
        (run / "manifest.json").write_text(json.dumps({"kind": kind, "key": key}))
        (run / "notes.md").write_text("a user's file in a run folder")
    return tmp_path


def _ids():
    return [" ".join(argv) or "(no arguments)" for argv in CASES]


def test_the_table_has_at_least_100_cases():
    assert len(CASES) >= 100 and len(set(_ids())) == len(CASES)


@pytest.mark.parametrize("argv", CASES, ids=_ids())
def test_bad_input_is_one_line_exit_2_and_touches_nothing(argv, workdir, capsys):
    before = _snapshot(workdir)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("dpolab") and "error:" in err, err
    assert out == ""
    assert _snapshot(workdir) == before


def test_negative_values_parse_as_numbers(capsys):
    assert main(["bounds", "ranking", "--log-ref-ratio", "-1,0,1", "--csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert [r.split(",")[0] for r in rows] == ["log_ref_ratio", "-1.0", "0.0", "1.0"]
    assert main(["bounds", "ranking", "--log-ref-ratio=-2", "--alpha", "0.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["log_ref_ratio"] == -2.0


def test_vacuous_risk_bounds_are_marked(capsys):
    assert main(["bounds", "im-li", "--K", "10", "--Q", "100,2000", "--json"]) == 0
    small, large = json.loads(capsys.readouterr().out)
    assert small["bound_simplified"] > 1 and small["vacuous"]["bound_simplified"] is True
    assert large["bound_simplified"] < 1 and large["vacuous"]["bound_simplified"] is False
    for row in (small, large):
        assert row["vacuous"]["bound_refined"] == (row["bound_refined"] > 1)
    assert main(["bounds", "im-li", "--K", "10", "--csv"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert dict(zip(header.split(","), row.split(",")))["vacuous: bound_simplified"] == "True"


def test_version_and_bounds_help_show_defaults(capsys):
    import importlib.metadata

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"dpolab {importlib.metadata.version('dpolab')}"
    for family, flags in BOUND_ARGS.items():
        assert main(["bounds", family, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        for flag, (dest, _) in flags.items():
            default = FAMILIES[family].defaults[dest]
            assert flag in text and (default is None or f"(default {default})" in text), (flag, text)


def test_ctrl_c_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from dpolab.sims.sweep import run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "run_sweep", interrupted)
    spec = tmp_path / "good.toml"
    spec.write_text(GOOD_SPEC)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume" in err and str(tmp_path / "out") in err
