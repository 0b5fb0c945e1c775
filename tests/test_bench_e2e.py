"""`dpolab bench --suite e2e` (quick: `verify --quick --suite ranking`, cold then warm): the second
run loads every program the first compiled, through the command line and a fresh interpreter."""
import math

from dpolab.bench import run_suite
from dpolab.bench.harness import format_table


def test_e2e_quick_runs_cold_then_warm_from_the_persistent_cache():
    result = run_suite("e2e", quick=True)
    cold, warm = result["runs"]["verify_quick_ranking_cold"], result["runs"]["verify_quick_ranking_warm"]
    assert cold["exit_code"] == warm["exit_code"] == 0
    # the cold run starts from an empty cache: its hits can only be programs it compiled itself and
    # asked for again in the same process (a function jitted anew with the same program), so most of
    # its programs compile; the warm run loads every one
    assert cold["programs"] - cold["cache_hits"] > 10 and cold["cache_hits"] < cold["programs"] / 4
    assert warm["programs"] == cold["programs"] and warm["cache_hits"] == warm["programs"]
    assert warm["compile_s"] < cold["compile_s"]
    for key in ("verify_quick_ranking_s", "verify_quick_ranking_cold_s"):
        assert math.isfinite(result[key]) and result[key] > 0
    share, share_cold = result["compile_share"], result["compile_share_cold"]
    assert 0 < share["verify_quick_ranking"] < share_cold["verify_quick_ranking"] < 1
    table = format_table(result)
    assert "verify --quick --suite ranking (cold)" in table and "from the cache" in table
