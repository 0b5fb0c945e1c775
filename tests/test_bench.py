"""Tests for the benchmark harness: the quick "im-li" suite's result shape, its equal-work
checks, the naive NumPy baseline against the fast trainer, and the suite registry's errors.
Speed targets are reported by the benchmark, never asserted here."""
import json
import math

import jax
import numpy as np
import pytest

import dpolab.bench as bench
from dpolab.bench import harness, im_li, im_li_baselines

REQUIRED_KEYS = {
    "path", "speedup_vs_numpy", "speedup_vs_numpy_vectorized", "speedup_vs_torch", "speedup_vs_full_vocab",
    "ratio_to_floor", "compile_s", "fast_s_per_step", "features_s_per_step", "gram_s_per_step",
    "numpy_s_per_step", "numpy_vectorized_s_per_step", "torch_s_per_step", "full_vocab_s_per_step",
    "floor_one_pass_s_per_step", "floor_gram_s_per_step", "floor_algorithm_s_per_step", "path_costs",
    "bandwidth_gb_s", "config", "jax_backend", "precision", "targets", "meets_targets",
}
TIME_KEYS = ("compile_s", "fast_s_per_step", "features_s_per_step", "gram_s_per_step", "numpy_s_per_step",
             "numpy_vectorized_s_per_step", "full_vocab_s_per_step",
             "full_vocab_train_only_s_per_step", "floor_one_pass_s_per_step", "floor_gram_s_per_step",
             "floor_algorithm_s_per_step", "bandwidth_gb_s", "speedup_vs_numpy",
             "speedup_vs_numpy_vectorized", "speedup_vs_full_vocab", "ratio_to_floor")


@pytest.fixture(scope="module")
def quick_result():
    return bench.run_suite("im-li", quick=True)


def test_quick_suite_returns_every_key_with_positive_finite_times(quick_result):
    r = quick_result
    assert REQUIRED_KEYS <= set(r)
    for key in TIME_KEYS:
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, key
    assert r["precision"] == "float64" and r["jax_backend"] == jax.default_backend()
    assert set(r["meets_targets"]) == {k for k in r["targets"] if r[k] is not None}
    assert r["path"] in ("features", "gram") and set(r["path_costs"]) == {"features", "gram"}
    assert r["path"] == min(r["path_costs"], key=r["path_costs"].get)  # the rule: fewer words read
    assert all(isinstance(v, bool) for v in r["meets_targets"].values())
    assert r["config"]["steps"] == im_li.QUICK.steps and r["config"]["N"] == 2 * 2 * 20
    # derived quantities are what they claim to be
    assert r["speedup_vs_numpy"] == pytest.approx(r["numpy_s_per_step"] / r["fast_s_per_step"])
    assert r["speedup_vs_numpy_vectorized"] == pytest.approx(r["numpy_vectorized_s_per_step"] / r["fast_s_per_step"])
    assert r["numpy_vectorized_s_per_step"] == min(r["numpy_vectorized_by_path_s_per_step"].values())
    if r["torch_s_per_step"] is not None:
        assert r["speedup_vs_torch"] == pytest.approx(r["torch_s_per_step"] / r["fast_s_per_step"])
    assert r["fast_s_per_step"] == r[f"{r['path']}_s_per_step"]
    floor = r["floor_one_pass_s_per_step"] if r["path"] == "features" else r["floor_gram_s_per_step"]
    assert r["ratio_to_floor"] == pytest.approx(r["fast_s_per_step"] / floor)
    assert r["floor_algorithm_s_per_step"] == pytest.approx(2 * r["floor_one_pass_s_per_step"])
    n, d, q, k = r["config"]["N"], r["config"]["d"], r["config"]["Q"], r["config"]["K"]
    bw_f, bw_g = r["bandwidth_features_gb_s"], r["bandwidth_gram_gb_s"]
    assert bw_f >= r["bandwidth_gb_s"] and bw_g >= r["bandwidth_gb_s"]
    assert r["floor_one_pass_s_per_step"] == pytest.approx(n * d * 8 / (bw_f * 1e9))
    steps = r["config"]["steps"]
    setup = max(n * d * 8 / (bw_f * 1e9), k * (2 * q) ** 2 * d / r["gram_muladds_per_s"])
    assert r["gram_setup_floor_s"] == pytest.approx(setup)
    assert r["floor_gram_s_per_step"] == pytest.approx(k * (2 * q) ** 2 * 8 / (bw_g * 1e9) + setup / steps)
    json.loads(json.dumps(r))  # the CLI's --json prints it as is


def test_quick_suite_compares_equal_work(quick_result):
    checks = quick_result["checks"]
    assert checks["numpy_loop"]["max_abs_diff"] < 1e-10 and checks["numpy_loop"]["ok"]
    assert checks["full_vocab"]["max_abs_diff"] < 1e-9 and checks["full_vocab"]["ok"]
    assert checks["full_vocab_train_only"]["max_abs_diff"] < 1e-9
    other = "gram" if quick_result["path"] == "features" else "features"
    baselines = [f"jax_{other}_path", "numpy_vectorized_features", "numpy_vectorized_gram"]
    if quick_result["torch_s_per_step"] is not None:
        baselines += ["torch_features", "torch_gram"]
    for name in baselines:
        assert checks[name]["ok"] and checks[name]["max_abs_diff"] < 1e-10, name


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("path", ["features", "gram"])
def test_blocked_baselines_do_the_trainers_work_on_unequal_blocks(backend, path):
    """The vectorised NumPy / PyTorch baselines give the fast trainer's margins (equal work), on
    pairs of unequal size with an empty one (padded slots must not count)."""
    from dpolab.sims.blocks import pair_blocks
    from dpolab.sims.config import DataSpec, TrainSpec, make_params
    from dpolab.sims.data import pair_sizes, sample_dataset
    from dpolab.sims.train import make_trainer

    if backend == "torch" and not im_li_baselines.torch_available():
        pytest.skip("torch is not installed")
    fn = dict(numpy=im_li_baselines.numpy_blocked_dpo_gd, torch=im_li_baselines.torch_blocked_dpo_gd)[backend]
    spec, per_cluster = DataSpec(K=3, Q=(4, 2, 3), d=7, n_test=2, vocab=8), (4, 2, 0)
    params = make_params(beta=0.8, eta=0.9, v=0.3)
    key = jax.random.key(1)
    data = sample_dataset(key, spec, params, 0, per_cluster=per_cluster)
    sizes = pair_sizes(spec, per_cluster)
    traj = jax.jit(make_trainer(TrainSpec(steps=6, stride=6), 3, pair_sizes=sizes))(data, data, params)
    blocks = pair_blocks(sizes)
    g_b, s_b = im_li_baselines.to_blocks(blocks, data.g, data.sign)
    r = fn(g_b, s_b, blocks.mask, beta=0.8, eta=0.9, steps=6, path=path)
    np.testing.assert_allclose(r[blocks.mask], np.asarray(traj.margins[-1]), rtol=0, atol=1e-13)
    assert float(np.max(np.abs(r))) > 0.05  # the margins moved


def test_format_table_names_every_method(quick_result):
    table = harness.format_table(quick_result)
    for word in ("fast path", "NumPy", "full-vocab", "floor", "EXTRAPOLATED", "compile"):
        assert word in table


def test_numpy_loop_matches_a_hand_computed_first_and_second_step():
    # two samples of one pair, g orthogonal: after step 1 every margin is η β² |g|² σ(0) / N
    g = np.array([[1.0, 0.0], [0.0, 2.0]])
    pair, sign = np.array([0, 0]), np.array([1, -1])
    beta, eta = 0.5, 0.3
    dw, times = im_li_baselines.numpy_loop_dpo_gd(g, pair, sign, beta=beta, eta=eta, n_pairs=1, steps=1)
    r1 = im_li_baselines.numpy_margins(g, pair, sign, dw, beta=beta)
    # r_i(1) = 2 η β² |g_i|² σ(0) / N  (rows a and b each move, hence the 2)
    np.testing.assert_allclose(r1, 2 * eta * beta**2 * np.array([1.0, 4.0]) * 0.5 / 2, rtol=1e-15)
    dw2, times = im_li_baselines.numpy_loop_dpo_gd(g, pair, sign, beta=beta, eta=eta, n_pairs=1, steps=2)
    r2 = im_li_baselines.numpy_margins(g, pair, sign, dw2, beta=beta)
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
        bench.run_suite("no-such-suite")
    msg = str(err.value)
    assert "suite" in msg and "'no-such-suite'" in msg and "im-li" in msg
    assert "im-li" in bench.SUITES


def test_bench_config_is_validated():
    with pytest.raises(ValueError, match="numpy_steps"):
        im_li.ImLiBench(steps=5, numpy_steps=6)
    with pytest.raises(ValueError, match="repeats"):
        im_li.ImLiBench(repeats=2)


# ---- suite "rdpo": the bandit fit grid, vmapped, against a SciPy L-BFGS-B loop ----------------

from dpolab.bench import rdpo as rdpo_bench  # noqa: E402
from dpolab.bench import rdpo_baselines  # noqa: E402

RDPO_KEYS = {"speedup_vs_scipy", "compile_s", "fast_s", "scipy_s", "n_fits", "max_theta_diff",
             "targets", "meets_targets", "config", "jax_backend", "precision", "checks", "notes",
             "table_rows"}


@pytest.fixture(scope="module")
def rdpo_quick_result():
    return bench.run_suite("rdpo", quick=True)


def test_rdpo_quick_suite_returns_every_key_with_positive_finite_times(rdpo_quick_result):
    r = rdpo_quick_result
    assert RDPO_KEYS <= set(r)
    for key in ("compile_s", "fast_s", "scipy_s", "speedup_vs_scipy"):
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, key
    q = rdpo_bench.QUICK
    assert r["n_fits"] == q.seeds * len(q.eps) * len(q.ns) == q.n_fits
    assert r["speedup_vs_scipy"] == pytest.approx(r["scipy_s"] / r["fast_s"])
    assert r["targets"] == {"speedup_vs_scipy": 10.0, "speedup_vs_numpy_vectorized": 3.0}
    assert r["speedup_vs_numpy_vectorized"] == pytest.approx(r["numpy_vectorized_s"] / r["fast_s"])
    assert set(r["meets_targets"]) == set(r["targets"])
    assert all(isinstance(v, bool) for v in r["meets_targets"].values())
    assert r["precision"] == "float64" and r["jax_backend"] == jax.default_backend()
    assert r["config"]["steps"] == q.steps and r["config"]["ns"] == list(q.ns)
    assert r["suite"] == "rdpo" and r["quick"] is True
    json.loads(json.dumps(r))  # the CLI's --json prints it as is


def test_rdpo_quick_suite_compares_equal_work(rdpo_quick_result):
    r = rdpo_quick_result
    assert 0 <= r["max_theta_diff"] <= rdpo_bench.THETA_TOL
    assert r["checks"]["scipy_lbfgs"]["ok"]
    assert r["max_theta_norm"] < rdpo_bench.QUICK.B  # the ball is inactive
    assert r["max_loss_diff"] < 1e-12
    assert r["checks"]["numpy_newton"]["ok"] and r["max_theta_diff_numpy_newton"] <= rdpo_bench.THETA_TOL


def test_rdpo_format_table_names_both_methods(rdpo_quick_result):
    table = harness.format_table(rdpo_quick_result)
    for word in ("fast path", "SciPy L-BFGS-B", "NumPy vectorised Newton", "compile", "scipy_lbfgs", "QUICK"):
        assert word in table


def test_rdpo_numpy_objective_is_the_rdpo_loss_and_its_gradient():
    # golden value: the loss is the library's rDPO at z = β(θ − θ_0)ᵀx, mean over pairs
    from dpolab.theory.losses import rdpo
    rng = np.random.default_rng(3)
    x, theta0, theta = rng.normal(size=(7, 3)), rng.normal(size=3), rng.normal(size=3)
    beta, eps = 1.7, 0.3
    value, grad = rdpo_baselines.rdpo_objective_np(theta, x, theta0, beta=beta, eps=eps)
    z = beta * x @ (theta - theta0)
    hand = np.mean(((1 - eps) * np.log1p(np.exp(-z)) - eps * np.log1p(np.exp(z))) / (1 - 2 * eps))
    assert value == pytest.approx(hand, rel=1e-13)
    assert value == pytest.approx(float(np.mean(rdpo(z, eps))), rel=1e-13)
    h = 1e-6
    fd = [(rdpo_baselines.rdpo_objective_np(theta + h * e, x, theta0, beta=beta, eps=eps)[0]
           - rdpo_baselines.rdpo_objective_np(theta - h * e, x, theta0, beta=beta, eps=eps)[0]) / (2 * h)
          for e in np.eye(3)]
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-9)
    # no overflow for huge margins
    v, g = rdpo_baselines.rdpo_objective_np(np.array([1e3, 0, 0]), np.eye(3), np.zeros(3), beta=1.0,
                                        eps=0.1)
    assert np.isfinite(v) and np.all(np.isfinite(g))


def test_rdpo_grid_fit_matches_run_bandit_point_by_point():
    # the flattened (n, ε, seed) grid must put each fit back where run_bandit would
    from dpolab.sims.bandit import BanditSpec, make_bandit_params, make_instance, run_bandit
    spec = BanditSpec(S=8, A=4, d=3, n=200, loss="rdpo", steps=200)
    eps_values, ns, seeds = (0.0, 0.25), (50, 200), 3
    params = make_bandit_params(beta=1.0, eps=np.asarray(eps_values), B=8.0, reward_scale=1.5)
    inst = make_instance(jax.random.key(0), spec, params)
    data = rdpo_bench.make_grid_data(spec, inst, params, seeds)
    theta = np.asarray(jax.jit(rdpo_bench.make_grid_fit(spec))(
        data, inst, params, jax.numpy.asarray(ns)).theta)
    assert theta.shape == (len(ns), len(eps_values), seeds, spec.d)
    for m, n in enumerate(ns):
        for e, eps in enumerate(eps_values):
            p = make_bandit_params(beta=1.0, eps=eps, B=8.0, reward_scale=1.5)
            fits, one_data, _ = run_bandit(spec, p, np.arange(seeds), n_active=n, instance=inst)
            np.testing.assert_allclose(np.asarray(one_data.x), np.asarray(data.x[e]), rtol=0,
                                       atol=0)
            np.testing.assert_allclose(theta[m, e], np.asarray(fits.theta), rtol=0, atol=1e-12)


def test_rdpo_blas_pinning_restores_thread_counts():
    controls = rdpo_baselines.openblas_thread_controls()
    before = [int(get()) for get, _ in controls]
    with rdpo_baselines.single_threaded_blas() as pinned:
        assert pinned == len(controls)
        assert all(int(get()) == 1 for get, _ in controls)
    assert [int(get()) for get, _ in controls] == before


def test_rdpo_scipy_fit_reaches_a_stationary_point():
    x = np.random.default_rng(0).normal(size=(100, 2))
    res = rdpo_baselines.scipy_rdpo_fit(x, np.zeros(2), beta=1.0, eps=0.1)
    assert np.all(np.isfinite(res.x)) and np.linalg.norm(res.jac) < 1e-8


def test_rdpo_numpy_newton_grid_matches_scipy_fit_by_fit():
    """The vectorised Newton baseline solves each grid point's own problem (its first n pairs, its
    ε): every θ̂ agrees with a separate L-BFGS-B fit, and ε matters (fits differ across ε). The
    sizes keep every optimum finite (with few pairs rDPO's loss can be unbounded below)."""
    from dpolab.sims.bandit import BanditSpec, make_bandit_params, make_instance

    spec = BanditSpec(S=8, A=4, d=3, n=200, loss="rdpo", steps=200)
    params = make_bandit_params(beta=1.3, eps=np.asarray([0.0, 0.2]), B=8.0, reward_scale=1.5)
    inst = make_instance(jax.random.key(0), spec, params)
    x = np.asarray(rdpo_bench.make_grid_data(spec, inst, params, 2).x)
    theta0 = np.asarray(inst.theta0)
    theta, loss, iters = rdpo_baselines.numpy_newton_grid(x, theta0, beta=1.3, eps_values=(0.0, 0.2),
                                                           ns=(100, 200))
    assert theta.shape == (2, 2, 2, 3) and 0 < iters < 100
    for m, n in enumerate((100, 200)):
        for e, eps in enumerate((0.0, 0.2)):
            for r in range(2):
                res = rdpo_baselines.scipy_rdpo_fit(x[e, r, :n], theta0, beta=1.3, eps=eps)
                np.testing.assert_allclose(theta[m, e, r], res.x, atol=1e-7)
                assert loss[m, e, r] == pytest.approx(res.fun, abs=1e-12)
    assert np.max(np.abs(theta[:, 0] - theta[:, 1])) > 1e-3


def test_rdpo_bench_config_is_validated():
    with pytest.raises(ValueError, match=r"eps=\(0\.5,\)"):
        rdpo_bench.RdpoBench(eps=(0.5,))
    with pytest.raises(ValueError, match="ns"):
        rdpo_bench.RdpoBench(ns=(0,))
    with pytest.raises(ValueError, match="repeats"):
        rdpo_bench.RdpoBench(repeats=2)
    with pytest.raises(ValueError, match="B"):
        rdpo_bench.RdpoBench(B=0.0)
    assert "rdpo" in bench.SUITES


def test_bench_out_writes_the_json_and_the_table_and_never_overwrites(tmp_path, capsys):
    from dpolab.cli import main

    out = tmp_path / "b"
    assert main(["bench", "--suite", "rdpo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    stored = json.loads((out / "bench.json").read_text())
    assert stored["suite"] == "rdpo" and (out / "bench.md").read_text().strip() == printed.strip()
    assert json.loads((out / "manifest.json").read_text())["kind"] == "bench"
    assert main(["bench", "--suite", "rdpo", "--quick", "--out", str(out)]) == 2  # refused before running
    assert "--force replaces it" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    assert main(["bench", "--suite", "rdpo", "--quick", "--out", str(tmp_path / "mine"), "--force"]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "a user's file"
    assert main(["bench", "--suite", "rdpo", "--quick", "--force"]) == 2
