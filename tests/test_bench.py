"""Tests for the benchmark harness: the quick "im-li" suite's result shape, its equal-work
checks, the naive NumPy baseline against the fast trainer, and the suite registry's errors.
Speed targets are reported by the benchmark, never asserted here."""
import json
import math

import jax
import numpy as np
import pytest

from bench import harness
from bench import im_li

REQUIRED_KEYS = {
    "speedup_vs_numpy", "speedup_vs_full_vocab", "ratio_to_floor", "compile_s",
    "fast_s_per_step", "numpy_s_per_step", "full_vocab_s_per_step", "floor_one_pass_s_per_step",
    "floor_algorithm_s_per_step", "bandwidth_gb_s", "config", "jax_backend", "precision",
    "targets", "meets_targets",
}
TIME_KEYS = ("compile_s", "fast_s_per_step", "numpy_s_per_step", "full_vocab_s_per_step",
             "full_vocab_train_only_s_per_step", "floor_one_pass_s_per_step",
             "floor_algorithm_s_per_step", "bandwidth_gb_s", "speedup_vs_numpy",
             "speedup_vs_full_vocab", "ratio_to_floor")


@pytest.fixture(scope="module")
def quick_result():
    return harness.run_suite("im-li", quick=True)


def test_quick_suite_returns_every_key_with_positive_finite_times(quick_result):
    r = quick_result
    assert REQUIRED_KEYS <= set(r)
    for key in TIME_KEYS:
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, key
    assert r["precision"] == "float64" and r["jax_backend"] == jax.default_backend()
    assert set(r["meets_targets"]) == set(r["targets"])
    assert all(isinstance(v, bool) for v in r["meets_targets"].values())
    assert r["config"]["steps"] == im_li.QUICK.steps and r["config"]["N"] == 2 * 2 * 20
    # derived quantities are what they claim to be
    assert r["speedup_vs_numpy"] == pytest.approx(r["numpy_s_per_step"] / r["fast_s_per_step"])
    assert r["ratio_to_floor"] == pytest.approx(r["fast_s_per_step"]
                                                / r["floor_one_pass_s_per_step"])
    assert r["floor_algorithm_s_per_step"] == pytest.approx(2 * r["floor_one_pass_s_per_step"])
    n, d = r["config"]["N"], r["config"]["d"]
    assert r["floor_one_pass_s_per_step"] == pytest.approx(n * d * 8 / (r["bandwidth_gb_s"] * 1e9))
    json.loads(json.dumps(r))  # the CLI's --json prints it as is


def test_quick_suite_compares_equal_work(quick_result):
    checks = quick_result["checks"]
    assert checks["numpy_loop"]["max_abs_diff"] < 1e-10 and checks["numpy_loop"]["ok"]
    assert checks["full_vocab"]["max_abs_diff"] < 1e-9 and checks["full_vocab"]["ok"]
    assert checks["full_vocab_train_only"]["max_abs_diff"] < 1e-9


def test_format_table_names_every_method(quick_result):
    table = harness.format_table(quick_result)
    for word in ("fast path", "NumPy", "full-vocab", "floor", "EXTRAPOLATED", "compile"):
        assert word in table


def test_numpy_loop_matches_a_hand_computed_first_and_second_step():
    # two samples of one pair, g orthogonal: after step 1 every margin is η β² |g|² σ(0) / N
    g = np.array([[1.0, 0.0], [0.0, 2.0]])
    pair, sign = np.array([0, 0]), np.array([1, -1])
    beta, eta = 0.5, 0.3
    dw, times = im_li.numpy_loop_dpo_gd(g, pair, sign, beta=beta, eta=eta, n_pairs=1, steps=1)
    r1 = im_li.numpy_margins(g, pair, sign, dw, beta=beta)
    # r_i(1) = 2 η β² |g_i|² σ(0) / N  (rows a and b each move, hence the 2)
    np.testing.assert_allclose(r1, 2 * eta * beta**2 * np.array([1.0, 4.0]) * 0.5 / 2, rtol=1e-15)
    dw2, times = im_li.numpy_loop_dpo_gd(g, pair, sign, beta=beta, eta=eta, n_pairs=1, steps=2)
    r2 = im_li.numpy_margins(g, pair, sign, dw2, beta=beta)
    sig = lambda z: 1 / (1 + np.exp(z))
    np.testing.assert_allclose(
        r2, r1 + 2 * eta * beta**2 * np.array([1.0, 4.0]) * sig(r1) / 2, rtol=1e-14)
    assert len(times) == 2 and all(t > 0 for t in times)


def test_time_fn_takes_the_minimum_and_blocks():
    calls = []
    t = harness.time_fn(lambda x: calls.append(x) or jax.numpy.ones(3) * x, 2.0, repeats=4,
                        warmup=2)
    assert len(calls) == 6 and t > 0 and math.isfinite(t)
    with pytest.raises(ValueError, match="repeats"):
        harness.time_fn(lambda: None, repeats=0)


def test_unknown_suite_raises_naming_field_value_and_allowed():
    with pytest.raises(ValueError) as err:
        harness.run_suite("no-such-suite")
    msg = str(err.value)
    assert "suite" in msg and "'no-such-suite'" in msg and "im-li" in msg
    assert "im-li" in harness.SUITES


def test_bench_config_is_validated():
    with pytest.raises(ValueError, match="numpy_steps"):
        im_li.ImLiBench(steps=5, numpy_steps=6)
    with pytest.raises(ValueError, match="repeats"):
        im_li.ImLiBench(repeats=2)
