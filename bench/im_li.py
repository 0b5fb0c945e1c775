"""Suite "im-li": the fast trainer against honest baselines and the bandwidth floors.

Measured side by side in one run, for K values, Q samples per cluster, d features, DPO with plain
GD in float64 (Im & Li's Theorem 4.2 regime: v = 1/(32√Q), l_b = 1/2, β = 1, η = τ_1/steps so
the last step is t = τ_1):

1. the fast path, `dpolab.sims.train.make_trainer` jitted on the path its rule picks
   (`dpolab.sims.blocks.training_path`), and both paths forced ("features", "gram"); compile
   timed apart from steady state;
2. a per-sample NumPy loop of the same GD update (what a researcher would write first);
3. vectorised NumPy and PyTorch eager (CPU) on the per-pair blocks, each with both algorithms
   (features, Gram) — the best of the two is the baseline (`dpolab.bench.im_li_baselines`);
4. the full-vocabulary log-softmax head trained by autodiff (`dpolab.sims.reference.full_vocab_autodiff`,
   the way the paper's code trains), and a train-only variant of it (no per-step logging,
   reference log-probs cached) as the fairest full-vocabulary equal-work baseline;
5. the floors: bytes each path must read per step ÷ the best read bandwidth measured for an array
   of that size (one pass over the N·d features; the Gram path's Σ n_p² block entries per step
   plus its set-up — the Σ n_p² d multiply-adds at the best measured Gram rate, or one pass over
   the features if slower — amortised over the run's steps).

Every baseline's margins are checked against the fast path's at the same step, so the speedups
compare equal work.

References:
    [IL] Im & Li, "Can DPO Learn Diverse Human Values?", arXiv 2408.03459 (Theorem 4.2).
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from dpolab.bench.harness import gram_muladds_per_s, host, last_level_cache_bytes, read_bandwidth, time_fn
from dpolab.bench.im_li_baselines import (
    make_full_vocab_gd_step,
    numpy_blocked_dpo_gd,
    numpy_loop_dpo_gd,
    numpy_margins,
    to_blocks,
    torch_available,
    torch_blocked_dpo_gd,
)
from dpolab.errors import InputError
from dpolab.sims.blocks import pair_blocks, path_costs, training_path
from dpolab.sims.config import DataSpec, TrainSpec, make_params
from dpolab.sims.data import pair_sizes, reference_head, sample_dataset, split_keys
from dpolab.sims.reference import full_vocab_autodiff
from dpolab.sims.train import check_finite, make_trainer
from dpolab.theory.im_li import default_v, tau_1

# Speed targets of issue #13: printed beside the measurements, never asserted.
TARGETS = {
    "speedup_vs_numpy": 20.0,              # ≥ 20× the per-sample NumPy loop
    "speedup_vs_numpy_vectorized": 5.0,    # ≥ 5× the best vectorised NumPy
    "speedup_vs_torch": 3.0,               # ≥ 3× PyTorch eager (CPU)
    "speedup_vs_full_vocab": 100.0,        # ≥ 100× the full-vocabulary autodiff head
    "speedup_vs_full_vocab_train_only": 100.0,
    "ratio_to_floor": 2.0,                 # within 2× of the floor of the path it uses
}
# Equal-work tolerances on margins (float64).
NUMPY_TOL = 1e-10
FULL_VOCAB_TOL = 1e-9
PATHS = ("features", "gram")


@dataclasses.dataclass(frozen=True)
class ImLiBench:
    """Static settings of the "im-li" suite.

    Attributes:
      K, Q, d: values, samples per cluster (N = 2KQ training samples), feature dimension.
      steps: GD steps of the fast path (the NumPy and full-vocabulary times are scaled to it).
      n_test: held-out samples per cluster (recorded at checkpoints only; kept small).
      vocab: vocabulary V of the full-vocabulary head.
      numpy_steps: steps the NumPy loop actually runs (timed one by one, then extrapolated).
      full_vocab_steps: steps each full-vocabulary run actually takes.
      repeats: timed calls of the fast path (best kept). baseline_repeats: timed whole runs of the
        vectorised NumPy and PyTorch baselines (best kept). full_vocab_repeats: timed
        full-vocabulary reference runs (best kept).
      bandwidth_bytes: array size of the bandwidth probe; None = 4× the last-level cache.
      seed: PRNG seed of the data.
    """

    K: int = 16
    Q: int = 200
    d: int = 1000
    steps: int = 70
    n_test: int = 10
    vocab: int = 4096
    numpy_steps: int = 3
    full_vocab_steps: int = 3
    repeats: int = 3
    baseline_repeats: int = 2
    full_vocab_repeats: int = 2
    bandwidth_bytes: int | None = None
    seed: int = 0

    def __post_init__(self):
        for field, lo in [("K", 1), ("Q", 1), ("d", 2), ("steps", 1), ("n_test", 0),
                          ("vocab", 2), ("numpy_steps", 1), ("full_vocab_steps", 1),
                          ("repeats", 3), ("baseline_repeats", 1), ("full_vocab_repeats", 1), ("seed", 0)]:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise InputError(f"{field}={value!r} is not allowed: {field} must be an "
                                 f"integer >= {lo}")
        for field in ("numpy_steps", "full_vocab_steps"):
            if getattr(self, field) > self.steps:
                raise InputError(f"{field}={getattr(self, field)!r} is not allowed: {field} "
                                 f"must be <= steps={self.steps}")
        if self.bandwidth_bytes is not None and (not isinstance(self.bandwidth_bytes, int)
                                                 or self.bandwidth_bytes < 8 * 1024):
            raise InputError(f"bandwidth_bytes={self.bandwidth_bytes!r} is not allowed: "
                             "bandwidth_bytes must be None or an integer >= 8192")


FULL = ImLiBench()
QUICK = ImLiBench(K=2, Q=20, d=50, steps=5, n_test=5, vocab=64, numpy_steps=2,
                  full_vocab_steps=2, repeats=3, full_vocab_repeats=1,
                  bandwidth_bytes=16 * 2**20)


def _max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def _time_blocked(fn, g_b, s_b, mask, *, beta, eta, steps, repeats):
    """{path: (s/step, final blocked margins)} of a blocked baseline, best of `repeats` runs."""
    out = {}
    for path in PATHS:
        call = lambda: fn(g_b, s_b, mask, beta=beta, eta=eta, steps=steps, path=path)  # noqa: B023
        r = call()
        out[path] = (time_fn(call, repeats=repeats, warmup=0) / steps, r)
    return out


def im_li_suite(*, quick: bool = False, bench: ImLiBench | None = None) -> dict:
    """Runs the "im-li" benchmark and returns a JSON-ready dict.

    Args:
      quick: use `QUICK` (tiny, seconds) instead of `FULL` (K=16, Q=200, d=1000, 70 steps).
      bench: explicit settings (overrides `quick`).
    Returns:
      dict with, among others: path (the path the rule picks), speedup_vs_numpy (per-sample
      loop), speedup_vs_numpy_vectorized, speedup_vs_torch (None without torch),
      speedup_vs_full_vocab, speedup_vs_full_vocab_train_only, ratio_to_floor (fast s/step ÷ the
      floor of its path), ratio_to_floor_one_pass, compile_s, fast_s_per_step,
      {features,gram}_s_per_step, numpy_vectorized_s_per_step, torch_s_per_step,
      floor_one_pass_s_per_step, floor_gram_s_per_step, floor_algorithm_s_per_step, path_costs,
      bandwidth_gb_s, config, host, jax_backend, precision, targets, meets_targets, checks
      (equal-work margin differences), notes, table_rows.
    Raises:
      RuntimeError: a baseline's margins differ from the fast path's (unequal work).
    """
    b = bench if bench is not None else (QUICK if quick else FULL)
    beta = 1.0
    eta = tau_1(K=b.K, beta=beta) / b.steps
    params = make_params(beta=beta, eta=eta, v=default_v(b.Q), lb=0.5)
    spec = DataSpec(K=b.K, Q=b.Q, d=b.d, n_test=b.n_test, vocab=b.vocab)
    key = jax.random.key(b.seed)
    data = sample_dataset(key, spec, params, split=0)
    test = sample_dataset(key, spec, params, split=1)
    jax.block_until_ready((data, test))
    n, d = data.g.shape
    p, sizes = spec.n_pairs, pair_sizes(spec)
    blocks = pair_blocks(sizes)
    if data.g.dtype != jnp.float64:
        raise RuntimeError(f"features are {data.g.dtype}, the benchmark needs float64 "
                           "(jax_enable_x64)")

    # 1. fast path (the rule's choice) and both paths forced; compile timed apart
    auto = TrainSpec(loss="dpo", optimizer="gd", steps=b.steps, stride=b.steps)
    path = training_path(auto, blocks, d)
    jax_s, finals, compile_times = {}, {}, {}
    for name in PATHS:
        run = make_trainer(dataclasses.replace(auto, path=name), p, pair_sizes=sizes)
        start = time.perf_counter()
        compiled = jax.jit(run).lower(data, test, params).compile()
        compile_times[name] = time.perf_counter() - start
        traj = compiled(data, test, params)
        check_finite(traj)
        finals[name] = np.asarray(traj.margins[-1])
        jax_s[name] = time_fn(compiled, data, test, params, repeats=b.repeats, warmup=1) / b.steps
    fast_s_per_step, fast_final = jax_s[path], finals[path]
    checks = {f"jax_{other}_path": dict(steps=b.steps, tol=NUMPY_TOL,
                                        max_abs_diff=_max_abs_diff(finals[other], fast_final))
              for other in PATHS if other != path}

    # fast-path margins at every step up to the short baselines' step counts (for the checks)
    n_check = max(b.numpy_steps, b.full_vocab_steps)
    check_traj = jax.jit(make_trainer(TrainSpec(loss="dpo", optimizer="gd", steps=n_check, stride=1),
                                      p, pair_sizes=sizes))(data, test, params)
    fast_margins = np.asarray(check_traj.margins)  # (n_check + 1, N)

    # 2. per-sample NumPy loop, a few steps timed one by one
    g_np = np.asarray(data.g)
    dw_np, np_times = numpy_loop_dpo_gd(g_np, data.pair, data.sign, beta=beta, eta=eta,
                                        n_pairs=p, steps=b.numpy_steps)
    numpy_s_per_step = min(np_times)
    r_np = numpy_margins(g_np, data.pair, data.sign, dw_np, beta=beta)
    checks["numpy_loop"] = dict(steps=b.numpy_steps, tol=NUMPY_TOL,
                                max_abs_diff=_max_abs_diff(r_np, fast_margins[b.numpy_steps]))

    # 3. vectorised NumPy and PyTorch eager on the per-pair blocks, whole runs, both algorithms
    g_b, s_b = to_blocks(blocks, g_np, data.sign)
    fast_blocked = fast_final[blocks.index] * blocks.mask
    blocked = dict(numpy_vectorized=_time_blocked(numpy_blocked_dpo_gd, g_b, s_b, blocks.mask, beta=beta,
                                                  eta=eta, steps=b.steps, repeats=b.baseline_repeats))
    if torch_available():
        blocked["torch"] = _time_blocked(torch_blocked_dpo_gd, g_b, s_b, blocks.mask, beta=beta, eta=eta,
                                         steps=b.steps, repeats=b.baseline_repeats)
    for base, by_path in blocked.items():
        for name, (_, r) in by_path.items():
            checks[f"{base}_{name}"] = dict(steps=b.steps, tol=NUMPY_TOL,
                                            max_abs_diff=_max_abs_diff(r * blocks.mask, fast_blocked))
    best = {base: min(PATHS, key=lambda k: by_path[k][0]) for base, by_path in blocked.items()}

    # 4a. full-vocabulary reference (dpolab.sims.reference), best of a few short runs
    w0 = reference_head(split_keys(key, 0)[1], spec, params.ref_scale)
    y_w, y_l = data.chosen, data.rejected
    s_fv = b.full_vocab_steps
    reference = jax.jit(lambda g, yw, yl, w0: full_vocab_autodiff(
        g, yw, yl, w0, beta=beta, eta=eta, steps=s_fv))
    ref_compiled = reference.lower(data.g, y_w, y_l, w0).compile()
    out = ref_compiled(data.g, y_w, y_l, w0)
    fv_run_s = time_fn(ref_compiled, data.g, y_w, y_l, w0, repeats=b.full_vocab_repeats,
                       warmup=0)
    full_vocab_s_per_step = fv_run_s / s_fv
    checks["full_vocab"] = dict(steps=s_fv, tol=FULL_VOCAB_TOL,
                                max_abs_diff=_max_abs_diff(out["margins"][s_fv],
                                                           fast_margins[s_fv]))
    del out

    # 4b. full-vocabulary train-only: one jitted GD step per call, fastest step kept
    gd_step, fv_margins = make_full_vocab_gd_step(beta=beta, eta=eta)
    ref_logp = jax.nn.log_softmax(data.g @ w0.T, axis=1)
    ref_diff = (jnp.take_along_axis(ref_logp, y_w[:, None], axis=1)[:, 0]
                - jnp.take_along_axis(ref_logp, y_l[:, None], axis=1)[:, 0])
    del ref_logp
    step_compiled = gd_step.lower(w0, data.g, y_w, y_l, ref_diff).compile()
    w, lean_times = w0, []
    for _ in range(s_fv):
        start = time.perf_counter()
        w = jax.block_until_ready(step_compiled(w, data.g, y_w, y_l, ref_diff))
        lean_times.append(time.perf_counter() - start)
    full_vocab_train_only_s_per_step = min(lean_times)
    checks["full_vocab_train_only"] = dict(
        steps=s_fv, tol=FULL_VOCAB_TOL,
        max_abs_diff=_max_abs_diff(fv_margins(w, data.g, y_w, y_l, ref_diff),
                                   fast_margins[s_fv]))
    del w, w0

    for chk in checks.values():
        chk["ok"] = bool(chk["max_abs_diff"] < chk["tol"])
    failed = {k: v for k, v in checks.items() if not v["ok"]}
    if failed:
        raise RuntimeError(f"equal-work check failed (margins differ from the fast path's): "
                           f"{failed}")

    # 5. floors: bytes each path must read ÷ the best read bandwidth for an array of that size
    llc = last_level_cache_bytes()
    bw_bytes = b.bandwidth_bytes if b.bandwidth_bytes is not None else 4 * llc
    bandwidth_methods = read_bandwidth(bw_bytes, repeats=3)
    bandwidth_gb_s = max(bandwidth_methods.values())
    itemsize = data.g.dtype.itemsize
    bytes_one_pass = n * d * itemsize
    bytes_gram_blocks = int(blocks.mask.size * blocks.mask.shape[1] * itemsize)
    bw_features = max(bandwidth_gb_s, max(read_bandwidth(bytes_one_pass, repeats=5).values()))
    bw_gram = max(bandwidth_gb_s, max(read_bandwidth(bytes_gram_blocks, repeats=5).values()))
    floor_one_pass = bytes_one_pass / (bw_features * 1e9)
    floor_algorithm = 2 * floor_one_pass
    m = blocks.mask.shape[1]
    gemm_rate = gram_muladds_per_s(m, d)
    gram_setup_floor = max(bytes_one_pass / (bw_features * 1e9), p * m * m * d / gemm_rate)
    floor_gram = bytes_gram_blocks / (bw_gram * 1e9) + gram_setup_floor / b.steps
    floors = dict(features=floor_one_pass, gram=floor_gram)

    result = dict(
        path=path,
        speedup_vs_numpy=numpy_s_per_step / fast_s_per_step,
        speedup_vs_numpy_vectorized=blocked["numpy_vectorized"][best["numpy_vectorized"]][0] / fast_s_per_step,
        speedup_vs_torch=(blocked["torch"][best["torch"]][0] / fast_s_per_step if "torch" in blocked else None),
        speedup_vs_full_vocab=full_vocab_s_per_step / fast_s_per_step,
        speedup_vs_full_vocab_train_only=full_vocab_train_only_s_per_step / fast_s_per_step,
        ratio_to_floor=fast_s_per_step / floors[path],
        ratio_to_floor_one_pass=fast_s_per_step / floor_one_pass,
        ratio_to_floor_algorithm=fast_s_per_step / floor_algorithm,
        features_ratio_to_floor=jax_s["features"] / floor_one_pass,
        gram_ratio_to_floor=jax_s["gram"] / floor_gram,
        compile_s=compile_times[path],
        compile_by_path_s=compile_times,
        fast_s_per_step=fast_s_per_step,
        fast_s_total=fast_s_per_step * b.steps,
        features_s_per_step=jax_s["features"],
        gram_s_per_step=jax_s["gram"],
        numpy_s_per_step=numpy_s_per_step,
        numpy_s_total_extrapolated=numpy_s_per_step * b.steps,
        numpy_step_times_s=[float(t) for t in np_times],
        numpy_vectorized_s_per_step=blocked["numpy_vectorized"][best["numpy_vectorized"]][0],
        numpy_vectorized_path=best["numpy_vectorized"],
        numpy_vectorized_by_path_s_per_step={k: v[0] for k, v in blocked["numpy_vectorized"].items()},
        torch_s_per_step=blocked["torch"][best["torch"]][0] if "torch" in blocked else None,
        torch_path=best.get("torch"),
        torch_by_path_s_per_step=({k: v[0] for k, v in blocked["torch"].items()} if "torch" in blocked
                                  else None),
        full_vocab_s_per_step=full_vocab_s_per_step,
        full_vocab_train_only_s_per_step=full_vocab_train_only_s_per_step,
        full_vocab_train_only_step_times_s=[float(t) for t in lean_times],
        floor_one_pass_s_per_step=floor_one_pass,
        floor_gram_s_per_step=floor_gram,
        floor_algorithm_s_per_step=floor_algorithm,
        bytes_one_pass_per_step=int(bytes_one_pass),
        bytes_gram_blocks_per_step=bytes_gram_blocks,
        bytes_algorithm_per_step=int(2 * bytes_one_pass),
        path_costs=path_costs(steps=b.steps, n_checkpoints=auto.n_checkpoints, blocks=blocks, d=d),
        bandwidth_gb_s=bandwidth_gb_s,
        bandwidth_methods_gb_s=bandwidth_methods,
        bandwidth_features_gb_s=bw_features,
        bandwidth_gram_gb_s=bw_gram,
        gram_muladds_per_s=gemm_rate,
        gram_setup_floor_s=gram_setup_floor,
        config=dict(K=b.K, Q=b.Q, d=b.d, N=int(n), n_pairs=int(p), n_test=b.n_test,
                    steps=b.steps, loss="dpo", optimizer="gd", tokens=spec.tokens,
                    vocab=b.vocab, beta=beta, eta=eta, v=float(params.v), lb=float(params.lb),
                    seed=b.seed, numpy_steps=b.numpy_steps, full_vocab_steps=s_fv,
                    repeats=b.repeats, baseline_repeats=b.baseline_repeats,
                    full_vocab_repeats=b.full_vocab_repeats,
                    bandwidth_array_bytes=int(bw_bytes // 8 // 1024 * 1024 * 8),
                    llc_bytes=int(llc)),
        host=host(),
        jax_backend=jax.default_backend(),
        precision=str(data.g.dtype),
        targets=dict(TARGETS),
        checks=checks,
    )
    result["meets_targets"] = {
        k: bool(result[k] <= t) if k.startswith("ratio") else bool(result[k] >= t)
        for k, t in TARGETS.items() if result[k] is not None}
    mb = bytes_one_pass / 1e6
    torch_note = ("PyTorch eager: the same two blocked algorithms with torch.bmm on CPU tensors "
                  f"({_torch_threads()} threads), whole {b.steps}-step runs, best of {b.baseline_repeats}."
                  if "torch" in blocked else
                  "PyTorch eager: SKIPPED, torch is not installed (pip install 'dpolab[llm]').")
    result["notes"] = [
        f"fast path: the rule's path ({path}; words per run {result['path_costs']}), best of {b.repeats} "
        f"jitted {b.steps}-step runs ÷ {b.steps} (block_until_ready; the run also records checkpoints "
        f"at steps 0 and {b.steps}); compile timed apart. Both paths are also timed forced.",
        f"NumPy loop: {b.numpy_steps} steps run and timed one by one, s/step = fastest step; the "
        f"{b.steps}-step time is EXTRAPOLATED (s/step × {b.steps}).",
        f"vectorised NumPy: per-pair blocks, batched BLAS products (features) or the Gram-block "
        f"recursion (set-up included), whole {b.steps}-step runs, best of {b.baseline_repeats}; the "
        f"faster algorithm ({best['numpy_vectorized']}) is the baseline.",
        torch_note,
        f"full-vocab reference: dpolab.sims.reference.full_vocab_autodiff, V={b.vocab}, best of "
        f"{b.full_vocab_repeats} {s_fv}-step runs ÷ {s_fv} (SCALED per step); it also evaluates "
        f"margins and log-probs after every step and recomputes the reference log-softmax.",
        f"full-vocab train-only: same objective, reference log-probs cached, one jitted grad+update"
        f" per call, fastest of {s_fv} steps: the leanest full-vocabulary equal-work baseline.",
        f"floors: bytes read per step ÷ the best read bandwidth for an array that size; one pass "
        f"= N·d·8 B = {mb:.1f} MB at {bw_features:.1f} GB/s; Gram = Σn_p²·8 B = "
        f"{bytes_gram_blocks / 1e6:.1f} MB at {bw_gram:.1f} GB/s + set-up {gram_setup_floor:.3f} s "
        f"(Σn_p²·d multiply-adds at {gemm_rate / 1e9:.1f} G/s, the best of NumPy and JAX) ÷ {b.steps} "
        f"steps; two passes = the feature path's margins then sums. ratio_to_floor uses "
        f"the floor of the path the rule picks ({path}).",
    ]
    rows = [dict(method=f"fast path ({path}, jit) [1]", s_per_step=fast_s_per_step, metric=None),
            dict(method="  features path, forced", s_per_step=jax_s["features"],
                 metric="features_ratio_to_floor"),
            dict(method="  Gram path, forced", s_per_step=jax_s["gram"], metric="gram_ratio_to_floor"),
            dict(method="NumPy per-sample loop [2]", s_per_step=numpy_s_per_step, metric="speedup_vs_numpy")]
    for base, label, metric in (("numpy_vectorized", "NumPy vectorised", "speedup_vs_numpy_vectorized"),
                                ("torch", "PyTorch eager", "speedup_vs_torch")):
        if base not in blocked:
            rows.append(dict(method=f"{label}: skipped (not installed) [4]", s_per_step=None, metric=None))
            continue
        for name in PATHS:
            rows.append(dict(method=f"{label}, {name}{' (best)' if name == best[base] else ''} "
                                    f"[{3 if base == 'numpy_vectorized' else 4}]",
                             s_per_step=blocked[base][name][0], metric=metric if name == best[base] else None))
    rows += [dict(method=f"full-vocab autodiff V={b.vocab} [5]", s_per_step=full_vocab_s_per_step,
                  metric="speedup_vs_full_vocab"),
             dict(method="full-vocab train-only [6]", s_per_step=full_vocab_train_only_s_per_step,
                  metric="speedup_vs_full_vocab_train_only"),
             dict(method="floor, one pass over features [7]", s_per_step=floor_one_pass,
                  metric="ratio_to_floor" if path == "features" else "ratio_to_floor_one_pass"),
             dict(method="floor, Gram path [7]", s_per_step=floor_gram,
                  metric="ratio_to_floor" if path == "gram" else None),
             dict(method="floor, two feature passes [7]", s_per_step=floor_algorithm,
                  metric="ratio_to_floor_algorithm")]
    result["table_rows"] = rows
    return result


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
