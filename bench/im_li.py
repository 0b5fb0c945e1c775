"""Suite "im-li": the used-rows fast trainer against honest baselines and the bandwidth floor.

Measured side by side in one run, for K values, Q samples per cluster, d features, DPO with plain
GD in float64 (Im & Li's Theorem 4.2 regime: v = 1/(32√Q), l_b = 1/2, β = 1, η = τ_1/steps so
the last step is t = τ_1):

1. the fast path, `dpolab.sims.train.make_trainer` jitted (compile timed apart from steady state);
2. a per-sample NumPy loop of the same GD update (what a researcher would write first);
3. the full-vocabulary log-softmax head trained by autodiff (`dpolab.sims.reference.full_vocab_autodiff`,
   the way the paper's code trains), and a train-only variant of it (no per-step logging,
   reference log-probs cached) as the fairest full-vocabulary equal-work baseline;
4. the memory-bandwidth floor: feature bytes read per step ÷ the machine's read bandwidth.

Every baseline's margins are checked against the fast path's at the same step, so the speedups
compare equal work.

References:
    [IL] Im & Li, "Can DPO Learn Diverse Human Values?", arXiv 2408.03459 (Theorem 4.2).
"""
from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from dpolab.bench.harness import host, last_level_cache_bytes, read_bandwidth, time_fn
from dpolab.errors import InputError
from dpolab.sims.config import DataSpec, TrainSpec, make_params
from dpolab.sims.data import reference_head, sample_dataset, split_keys
from dpolab.sims.reference import full_vocab_autodiff
from dpolab.sims.train import check_finite, make_trainer
from dpolab.theory.im_li import default_v, tau_1
from dpolab.theory.losses import get_loss

# Speed targets of the issue: printed beside the measurements, never asserted.
TARGETS = {
    "speedup_vs_numpy": 20.0,          # fast ≥ 20× the per-sample NumPy loop
    "speedup_vs_full_vocab": 100.0,    # fast ≥ 100× the full-vocabulary autodiff head
    "speedup_vs_full_vocab_train_only": 100.0,
    "ratio_to_floor": 3.0,             # fast within 3× of the one-pass bandwidth floor
}
# Equal-work tolerances on margins (float64).
NUMPY_TOL = 1e-10
FULL_VOCAB_TOL = 1e-9


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
      repeats: timed calls of the fast path (best kept). full_vocab_repeats: timed full-vocabulary
        reference runs (best kept).
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
    full_vocab_repeats: int = 2
    bandwidth_bytes: int | None = None
    seed: int = 0

    def __post_init__(self):
        for field, lo in [("K", 1), ("Q", 1), ("d", 2), ("steps", 1), ("n_test", 0),
                          ("vocab", 2), ("numpy_steps", 1), ("full_vocab_steps", 1),
                          ("repeats", 3), ("full_vocab_repeats", 1), ("seed", 0)]:
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


def numpy_loop_dpo_gd(g, pair, sign, *, beta, eta, n_pairs, steps):
    """Full-batch DPO GD on the used rows with a Python loop over samples (the naive baseline).

    Per step, for each sample i: r_i = β s_i (ΔW_{a_i} − ΔW_{b_i})·g_i, w_i = σ(−r_i), and the
    gradient −(β/N) w_i s_i g_i is accumulated into row a_i (and its negative into b_i); then
    ΔW ← ΔW − η ∇. Tokens are in used-token space: a_p = 2p, b_p = 2p + 1.

    Args:
      g: (N, d) float64 features. pair: (N,) pair index p. sign: (N,) ±1.
      beta, eta: floats. n_pairs: P. steps: GD steps.
    Returns:
      ΔW (2P, d) after `steps` steps, and the list of per-step wall times (s).
    """
    g = np.asarray(g, dtype=np.float64)
    n, d = g.shape
    pair, sign = np.asarray(pair).tolist(), np.asarray(sign).tolist()
    delta_w = np.zeros((2 * n_pairs, d))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        grad = np.zeros_like(delta_w)
        for i in range(n):
            a, b, s = 2 * pair[i], 2 * pair[i] + 1, sign[i]
            r = beta * s * np.dot(delta_w[a] - delta_w[b], g[i])
            # σ(−r) without overflowing exp for large |r|
            w = 1.0 / (1.0 + math.exp(r)) if r < 0 else math.exp(-r) / (1.0 + math.exp(-r))
            coef = (beta / n) * w * s
            grad[a] -= coef * g[i]
            grad[b] += coef * g[i]
        delta_w -= eta * grad
        times.append(time.perf_counter() - start)
    return delta_w, times


def numpy_margins(g, pair, sign, delta_w, *, beta):
    """(N,) r_i = β s_i (ΔW_{2p_i} − ΔW_{2p_i+1})·g_i, vectorised (used only for the check)."""
    pair = np.asarray(pair)
    diff = delta_w[2 * pair] - delta_w[2 * pair + 1]
    return beta * np.asarray(sign) * np.einsum("nd,nd->n", np.asarray(g), diff)


def make_full_vocab_gd_step(*, beta, eta, loss="dpo"):
    """One GD step of the full V × d head on the log-softmax loss, reference log-probs cached.

    Returns `step(w, g, y_w, y_l, ref_diff) -> w'` (jitted): w (V, d), g (N, d), y_w, y_l (N,)
    vocabulary ids, ref_diff (N,) log π_0(y_w|x) − log π_0(y_l|x). Same objective as
    `dpolab.sims.reference.full_vocab_autodiff` without its per-step logging.
    """
    fn = get_loss(loss)

    def margins(w, g, y_w, y_l, ref_diff):
        logp = jax.nn.log_softmax(g @ w.T, axis=1)
        pick = lambda y: jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
        return beta * (pick(y_w) - pick(y_l) - ref_diff)

    def step(w, g, y_w, y_l, ref_diff):
        objective = lambda w: jnp.mean(fn.value(margins(w, g, y_w, y_l, ref_diff), 0.0))
        return w - eta * jax.grad(objective)(w)

    return jax.jit(step), jax.jit(margins)


def _max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def im_li_suite(*, quick: bool = False, bench: ImLiBench | None = None) -> dict:
    """Runs the "im-li" benchmark and returns a JSON-ready dict.

    Args:
      quick: use `QUICK` (tiny, seconds) instead of `FULL` (K=16, Q=200, d=1000, 70 steps).
      bench: explicit settings (overrides `quick`).
    Returns:
      dict with, among others: speedup_vs_numpy, speedup_vs_full_vocab,
      speedup_vs_full_vocab_train_only, ratio_to_floor (fast s/step ÷ one-pass floor),
      ratio_to_floor_algorithm, compile_s, fast_s_per_step, numpy_s_per_step,
      full_vocab_s_per_step, full_vocab_train_only_s_per_step, floor_one_pass_s_per_step,
      floor_algorithm_s_per_step, bandwidth_gb_s, bandwidth_methods_gb_s, config, host,
      jax_backend, precision, targets, meets_targets (dict of bools), checks (equal-work margin
      differences), notes, table_rows.
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
    p = spec.n_pairs
    if data.g.dtype != jnp.float64:
        raise RuntimeError(f"features are {data.g.dtype}, the benchmark needs float64 "
                           "(jax_enable_x64)")

    # 1. fast path: compile (trace + lower + compile) timed apart from steady-state runs
    run = make_trainer(TrainSpec(loss="dpo", optimizer="gd", steps=b.steps, stride=b.steps), p)
    start = time.perf_counter()
    compiled = jax.jit(run).lower(data, test, params).compile()
    compile_s = time.perf_counter() - start
    traj = compiled(data, test, params)
    check_finite(traj)
    fast_run_s = time_fn(compiled, data, test, params, repeats=b.repeats, warmup=1)
    fast_s_per_step = fast_run_s / b.steps

    # fast-path margins at every step up to the baselines' step counts (for the checks)
    n_check = max(b.numpy_steps, b.full_vocab_steps)
    check_traj = jax.jit(make_trainer(TrainSpec(loss="dpo", optimizer="gd", steps=n_check,
                                                stride=1), p))(data, test, params)
    fast_margins = np.asarray(check_traj.margins)  # (n_check + 1, N)

    # 2. per-sample NumPy loop, a few steps timed one by one
    g_np = np.asarray(data.g)
    dw_np, np_times = numpy_loop_dpo_gd(g_np, data.pair, data.sign, beta=beta, eta=eta,
                                        n_pairs=p, steps=b.numpy_steps)
    numpy_s_per_step = min(np_times)
    r_np = numpy_margins(g_np, data.pair, data.sign, dw_np, beta=beta)
    checks = {"numpy_loop": dict(steps=b.numpy_steps, tol=NUMPY_TOL,
                                 max_abs_diff=_max_abs_diff(r_np, fast_margins[b.numpy_steps]))}

    # 3a. full-vocabulary reference (dpolab.sims.reference), best of a few short runs
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

    # 3b. full-vocabulary train-only: one jitted GD step per call, fastest step kept
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

    # 4. bandwidth floor: features read per step ÷ streaming read bandwidth
    llc = last_level_cache_bytes()
    bw_bytes = b.bandwidth_bytes if b.bandwidth_bytes is not None else 4 * llc
    bandwidth_methods = read_bandwidth(bw_bytes, repeats=3)
    bandwidth_gb_s = max(bandwidth_methods.values())
    working_set = read_bandwidth(n * d * 8, repeats=5)
    bytes_one_pass = n * d * data.g.dtype.itemsize
    bytes_algorithm = 2 * bytes_one_pass
    floor_one_pass = bytes_one_pass / (bandwidth_gb_s * 1e9)
    floor_algorithm = bytes_algorithm / (bandwidth_gb_s * 1e9)

    result = dict(
        speedup_vs_numpy=numpy_s_per_step / fast_s_per_step,
        speedup_vs_full_vocab=full_vocab_s_per_step / fast_s_per_step,
        speedup_vs_full_vocab_train_only=full_vocab_train_only_s_per_step / fast_s_per_step,
        ratio_to_floor=fast_s_per_step / floor_one_pass,
        ratio_to_floor_algorithm=fast_s_per_step / floor_algorithm,
        compile_s=compile_s,
        fast_s_per_step=fast_s_per_step,
        fast_s_total=fast_run_s,
        numpy_s_per_step=numpy_s_per_step,
        numpy_s_total_extrapolated=numpy_s_per_step * b.steps,
        numpy_step_times_s=[float(t) for t in np_times],
        full_vocab_s_per_step=full_vocab_s_per_step,
        full_vocab_train_only_s_per_step=full_vocab_train_only_s_per_step,
        full_vocab_train_only_step_times_s=[float(t) for t in lean_times],
        floor_one_pass_s_per_step=floor_one_pass,
        floor_algorithm_s_per_step=floor_algorithm,
        bytes_one_pass_per_step=int(bytes_one_pass),
        bytes_algorithm_per_step=int(bytes_algorithm),
        bandwidth_gb_s=bandwidth_gb_s,
        bandwidth_methods_gb_s=bandwidth_methods,
        bandwidth_working_set_gb_s=max(working_set.values()),
        config=dict(K=b.K, Q=b.Q, d=b.d, N=int(n), n_pairs=int(p), n_test=b.n_test,
                    steps=b.steps, loss="dpo", optimizer="gd", tokens=spec.tokens,
                    vocab=b.vocab, beta=beta, eta=eta, v=float(params.v), lb=float(params.lb),
                    seed=b.seed, numpy_steps=b.numpy_steps, full_vocab_steps=s_fv,
                    repeats=b.repeats, full_vocab_repeats=b.full_vocab_repeats,
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
        for k, t in TARGETS.items()}
    mb = bytes_one_pass / 1e6
    result["notes"] = [
        f"fast path: best of {b.repeats} jitted {b.steps}-step runs ÷ {b.steps} (block_until_ready;"
        f" the run also records checkpoints at steps 0 and {b.steps}); compile timed apart.",
        f"NumPy loop: {b.numpy_steps} steps run and timed one by one, s/step = fastest step; the "
        f"{b.steps}-step time is EXTRAPOLATED (s/step × {b.steps}).",
        f"full-vocab reference: dpolab.sims.reference.full_vocab_autodiff, V={b.vocab}, best of "
        f"{b.full_vocab_repeats} {s_fv}-step runs ÷ {s_fv} (SCALED per step); it also evaluates "
        f"margins and log-probs after every step and recomputes the reference log-softmax.",
        f"full-vocab train-only: same objective, reference log-probs cached, one jitted grad+update"
        f" per call, fastest of {s_fv} steps: the leanest full-vocabulary equal-work baseline.",
        f"floors: features read per step ÷ max read bandwidth; one pass = N·d·8 B = {mb:.1f} MB "
        f"(any algorithm), algorithm = 2 passes = {2 * mb:.1f} MB (margins, then gradient); "
        f"ratio_to_floor uses the one-pass floor.",
    ]
    result["table_rows"] = [
        dict(method="fast path (used rows, jit) [1]", s_per_step=fast_s_per_step, metric=None),
        dict(method="NumPy per-sample loop [2]", s_per_step=numpy_s_per_step,
             metric="speedup_vs_numpy"),
        dict(method=f"full-vocab autodiff V={b.vocab} [3]", s_per_step=full_vocab_s_per_step,
             metric="speedup_vs_full_vocab"),
        dict(method="full-vocab train-only [4]", s_per_step=full_vocab_train_only_s_per_step,
             metric="speedup_vs_full_vocab_train_only"),
        dict(method="floor, one pass over features [5]", s_per_step=floor_one_pass,
             metric="ratio_to_floor"),
        dict(method="floor, two passes (as implemented) [5]", s_per_step=floor_algorithm,
             metric="ratio_to_floor_algorithm"),
    ]
    return result
