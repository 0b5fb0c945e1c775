"""`dpolab verify --quick` end to end, the CLI's error handling, and checks that can fail."""
import json

import jax
import numpy as np
import pytest

import dpolab.theory.im_li as IL
import dpolab.theory.im_li_dynamics as ILD
from dpolab import xla
from dpolab.checks import dynamics as checks_dynamics
from dpolab.checks import generalization as checks_generalization
from dpolab.checks.result import OPEN
from dpolab.cli import main


def test_verify_quick_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DPOLAB_PERSONA_DIR", raising=False)  # the real suite has its own test
    out = tmp_path / "v"
    assert main(["verify", "--quick", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    verdicts = {c["id"]: c["verdict"] for c in report["checks"]}
    assert len(verdicts) >= 20 and "fail" not in verdicts.values()
    assert verdicts["im-li/probability-statement"] == "finding"
    # the finding rule: only checks listed in OPEN (with their reason) may return a finding
    assert {c for c, v in verdicts.items() if v == "finding"} <= set(OPEN)
    assert report["meta"]["precision"] == "float64"
    md = (out / "report.md").read_text()
    assert all(f"## {cid} — " in md for cid in verdicts)
    assert {c.split("/")[0] for c in verdicts} == {"im-li", "rdpo", "ranking", "mixture", "audit", "gpu", "phenomena"}
    assert report["meta"]["model"] is None  # suite real did not run: no model to record
    for name in ("im-li__thm4.2-sandwich.npz", "im-li__q-star-table.npz"):
        assert (out / "results" / name).exists()
    assert list((out / "figures").glob("*.png"))
    q = np.load(out / "results" / "im-li__q-star-table.npz")
    assert int(q["q_star_simplified"][list(q["K"]).index(10)]) == 880
    assert "passed" in capsys.readouterr().out
    # an existing result directory is never overwritten silently
    assert main(["verify", "--quick", "--only", "q-star", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_cli_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    assert main(["bounds", "im-li", "--K", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "K=0" in err
    assert main(["verify", "--suite", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "suite" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # rejected before any work


def test_bounds_json_keys_and_defaults(capsys):
    assert main(["bounds", "im-li", "--K", "10", "--Q", "880", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["q_star_simplified"] == 880 and row["d"] == 4400
    assert row["v"] == pytest.approx(1 / (32 * 880**0.5), rel=1e-15)
    assert set(row) >= {"K", "Q", "d", "v", "lb", "Z", "beta", "tau", "threshold", "tau_1",
                        "r_lower_at_tau_1", "r_upper_at_tau_1", "bound_simplified", "bound_refined",
                        "q_star_simplified", "q_star_refined", "conditions"}
    assert all(row["conditions"].values())
    assert main(["bounds", "im-li", "--K", "1,2", "--Q", "50,100", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4
    assert main(["bounds", "im-li", "--K", "1", "--csv"]) == 0
    assert capsys.readouterr().out.startswith("K,Q,d,v,")


# Each check below must go red when the formula it guards is broken.

def test_sandwich_fails_when_upper_envelope_is_wrong(monkeypatch):
    monkeypatch.setattr(IL, "r_upper", lambda t, **kw: 0.1 * np.asarray(t))
    assert checks_dynamics.sandwich(True).verdict == "fail"


def test_closed_form_check_fails_when_closed_form_is_wrong(monkeypatch):
    real = IL.dpo_noise_free
    monkeypatch.setattr(IL, "dpo_noise_free", lambda t, **kw: real(t, **kw) * (1 + 1e-3))
    assert checks_dynamics.noise_free_closed_form(True).verdict == "fail"


def test_recursion_check_fails_when_cross_terms_are_wrong(monkeypatch):
    import dpolab.sims.reference as ref

    real = ref.cross_terms
    monkeypatch.setattr(ref, "cross_terms", lambda *a: real(*a) * (1 + 1e-6))
    assert checks_dynamics.recursion_exact(True).verdict == "fail"


def test_risk_check_fails_when_risk_is_measured_with_the_wrong_sign(monkeypatch):
    import dpolab.sims.risk

    real = dpolab.sims.risk.reward_margins
    monkeypatch.setattr(dpolab.sims.risk, "reward_margins", lambda *a: -real(*a))
    dpolab.sims.risk._error_counter.cache_clear()
    try:
        result = checks_generalization.theorem_43_risk(True)
    finally:
        dpolab.sims.risk._error_counter.cache_clear()
    assert result.verdict == "fail"
    assert "violated" in str(result.measured)


def test_bound_status_logic():
    from dpolab.checks.generalization import bound_status

    assert bound_status(0.0, 3e-5, 1e-3, 120_000) == "certified"
    assert bound_status(0.01, 0.02, 1e-3, 120_000) == "violated"
    assert bound_status(0.0, 3.07e-5, 1e-50, 120_000) == "below resolution"
    assert bound_status(0.0, 2e-4, 1e-4, 120_000) == "not certified"


def test_multi_token_check_fails_with_the_sign_flipped(monkeypatch):
    real = ILD.multi_token_reward_velocity
    monkeypatch.setattr(ILD, "multi_token_reward_velocity", lambda *a, **kw: -real(*a, **kw))
    assert checks_dynamics.multi_token(True).verdict == "fail"


def test_interrupted_verify_resumes_without_rerunning(tmp_path, monkeypatch, capsys):
    out, calls = tmp_path / "v", []
    first, last = "im-li/q-star-table", "im-li/probability-statement"  # catalogue order
    table = checks_generalization.CHECKS
    real = table[last]

    def interrupted(quick):
        raise KeyboardInterrupt

    monkeypatch.setitem(table, last, interrupted)  # in this process: --jobs 1
    assert main(["verify", "--quick", "--only", "q-star,probability", "--out", str(out), "--jobs", "1"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"dpolab verify: interrupted; finished work is kept in {out}: run the same command with "
        "--resume to finish it")
    done = sorted(p.name for p in (out / "checks").glob("im-li*"))
    assert done == ["im-li__q-star-table.json", "im-li__q-star-table.npz"]

    def counted(quick):
        calls.append(1)
        return real(quick)

    monkeypatch.setitem(table, last, counted)
    monkeypatch.setitem(table, first, lambda quick: pytest.fail("a finished check was run again"))
    assert main(["verify", "--quick", "--only", "q-star,probability", "--out", str(out),
                 "--resume", "--jobs", "1"]) == 0
    assert calls == [1]
    report = json.loads((out / "report.json").read_text())
    assert [c["id"] for c in report["checks"]] == [first, last]
    q = np.load(out / "results" / "im-li__q-star-table.npz")
    assert int(q["q_star_simplified"][list(q["K"]).index(10)]) == 880
    # a full run never resumes from quick results
    assert main(["verify", "--out", str(out), "--resume", "--only", "q-star"]) == 2


def test_checks_in_worker_processes_give_what_one_process_gives(tmp_path, capsys):
    """--jobs 2 runs each check in a fresh worker (float64, the same keys): the same results, in
    catalogue order, with the workers' compilations counted."""
    reports = {}
    for jobs in (1, 2):
        out = tmp_path / f"j{jobs}"
        assert main(["verify", "--quick", "--suite", "ranking", "--jobs", str(jobs), "--quiet", "--out", str(out)]) == 0
        reports[jobs] = json.loads((out / "report.json").read_text())
    one, two = ([{k: v for k, v in c.items() if k != "seconds"} for c in reports[j]["checks"]] for j in (1, 2))
    assert len(one) >= 4 and one == two
    assert (reports[1]["meta"]["jobs"], reports[2]["meta"]["jobs"]) == (1, 2)
    assert reports[1]["meta"]["xla"]["processes"] == 1 and reports[2]["meta"]["xla"]["processes"] == 2
    assert reports[2]["meta"]["xla"]["programs"] >= 10  # the workers' programs reach this process's meter
    line = xla.summary(reports[2]["meta"]["xla"], wall_s=reports[2]["meta"]["xla"]["compile_s"])
    assert "in 2 processes (50%)" in line  # the share is of both processes' time
    assert main(["verify", "--quick", "--suite", "ranking", "--jobs", "0", "--out", str(tmp_path / "j0")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "jobs=0 is not allowed" in err and ">= 1" in err


def test_force_refuses_a_directory_that_is_not_a_verify_run(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    assert main(["verify", "--quick", "--only", "q-star", "--out", str(tmp_path), "--force"]) == 2
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_a_bug_is_shown_as_a_bug_not_as_bad_input(monkeypatch, capsys, tmp_path):
    """Only `InputError` is bad input (exit 2); a ValueError from deep inside a run is a bug:
    exit 70 with its traceback."""
    import dpolab.verify

    assert main(["verify", "--suite", "no-such", "--out", str(tmp_path / "w")]) == 2
    assert "Traceback" not in capsys.readouterr().err

    def broken(**kwargs):
        raise ValueError("an internal shape mismatch")

    monkeypatch.setattr(dpolab.verify, "run_verify", broken)
    assert main(["verify", "--quick", "--out", str(tmp_path / "v")]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "an internal shape mismatch" in err and "a bug, not bad input" in err


@pytest.mark.parametrize("error, code", [
    (MemoryError(), 2),
    (jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9e12 bytes."), 2),
    (jax.errors.JaxRuntimeError("INTERNAL: a compiler crash"), 70),  # not memory: a bug, shown as one
])
def test_out_of_memory_is_one_line_not_a_traceback(monkeypatch, capsys, tmp_path, error, code):
    import dpolab.verify

    def exhausted(**kwargs):
        raise error

    monkeypatch.setattr(dpolab.verify, "run_verify", exhausted)
    assert main(["verify", "--quick", "--out", str(tmp_path / "v")]) == code
    err = capsys.readouterr().err.strip().splitlines()
    if code == 2:
        assert len(err) == 1 and "error: out of memory (" in err[0] and "chunk_size" in err[0], err
    else:
        assert "Traceback (most recent call last)" in err[0]
