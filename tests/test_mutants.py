"""The mutant table (`dpolab.mutants`) and the rule that every verdict can fail.

- The table is well formed: each mutant's text is found exactly once, its checks and tests exist.
- Every registered check is either guarded by a mutant or listed in `OPEN` with its reason.
- The harness run: every mutant that names checks is killed by them (one returns `fail`), the
  registry's score over the mutants that name checks is ≥ 95%,
  every mutant is killed by the tests it names (the test suite's score is 100%), and every check
  result outside `OPEN` was made to fail by some mutant.
"""
from pathlib import Path

import pytest

from dpolab.checks.result import OPEN
from dpolab.mutants import MUTANTS
from dpolab.selftest import _installed_path, run_all, score, source_root
from dpolab.verify import SUITES, checks_of

ROOT = Path(__file__).resolve().parent.parent


def _registry():
    return {key for suite in SUITES if suite != "real" for key in checks_of(suite)}


def test_mutant_table_is_well_formed(tmp_path):
    assert source_root() == ROOT
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names)) >= 40
    registry = _registry()
    for m in MUTANTS:
        text = (ROOT / m.path).read_text(encoding="utf-8")
        assert text.count(m.old) == 1, m.name
        assert m.old != m.new and m.why, m.name
        assert _installed_path(ROOT, tmp_path, m.path).name == Path(m.path).name
        assert set(m.checks) <= registry, (m.name, set(m.checks) - registry)
        assert m.tests, m.name  # the test suite's score is 100%: every mutant names its killer
        for node in m.tests:
            assert (ROOT / node.split("::")[0]).exists(), (m.name, node)
    # the table reaches every layer the issue names
    touched = {m.path for m in MUTANTS}
    for part in ("theory/im_li.py", "theory/losses.py", "theory/rdpo.py", "theory/mixture.py",
                 "theory/ranking.py", "sims/train.py", "sims/data.py", "sims/risk.py", "sims/bandit.py",
                 "sims/reference.py", "sims/sweep/simulations.py"):
        assert part in touched, part


def test_every_registered_check_can_fail_or_says_why_not():
    registry = _registry()
    guarded = {key for m in MUTANTS for key in m.checks}
    unguarded = sorted(registry - guarded - set(OPEN))
    assert not unguarded, f"checks with no mutant and no reason to be a finding: {unguarded}"
    real = set(checks_of("real")) if "real" in SUITES else set()
    assert set(OPEN) <= registry | real, sorted(set(OPEN) - registry - real)
    assert all(len(why) > 20 for why in OPEN.values())


@pytest.fixture(scope="module")
def outcomes():
    return run_all(MUTANTS, jobs=2, tests=True)


@pytest.mark.slow
def test_every_mutant_is_killed_by_the_registry_and_the_tests(outcomes):
    summary = score(outcomes)
    named = {m.name for m in MUTANTS if m.checks}
    detail = {o.name: o.verdicts for o in outcomes if not o.registry_killed and o.name in named}
    assert not detail, f"mutants that survive the checks meant to catch them: {detail}"
    assert summary["registry_killed"] >= 0.95 * summary["registry_total"], summary
    assert not summary["survivors_tests"], summary["survivors_tests"]
    assert summary["tests_total"] == len(MUTANTS)


@pytest.mark.slow
def test_every_check_result_outside_open_was_made_to_fail(outcomes):
    never = [rid for rid in score(outcomes)["results_never_failed"] if rid not in OPEN]
    assert not never, f"check results no mutant turned to fail: {never}"
