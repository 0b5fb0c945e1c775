"""Im & Li (arXiv 2408.03459) Figure 5 and Figures 7–8: training curves for K = 1, 2, 4, 8, 16.

The paper trains the last layer of Llama-3.1-8B on its persona sets (Adam, lr 1e-3, β = 0.01,
100 full-batch steps, 90/10 split) and plots the mean train/test reward margin (Fig. 5), loss and
accuracy (Figs 7–8) against the step: at a fixed step the margin falls as K grows. Here three
versions stand side by side (rows: margin, loss, accuracy; colour light → dark in K):

(a) theorem regime, simulated (THEORY §1.3–1.6): distinct tokens per value (Z = 1), Q samples
    per cluster, d = 5Q, v = 1/(32√Q), l_b = 1/2, β = 1, gradient descent with one step size for
    every K, η = τ_1(K=16)/100 = 16·log 3/(5·100), 100 steps. The last step is τ_1 of K = 16 and
    beyond τ_1 of the smaller K, so the theory's time rescaling (margins depend on β²t/(Kτ))
    orders the margins 1/K-like at every step; the noise-free gradient-flow closed form
    r + e^r = 1 + 2β²t/K is drawn dotted.
(b) the paper's regime, simulated: every value uses the same Yes/No pair (tokens="yes_no",
    Z = K) and the noise is raised to v = 0.3 (d = 5Q, so ‖noise‖ ≈ 0.3·√(5Q) exceeds the unit
    concept); everything else as in (a). With v → 0 and orthogonal values shared and distinct
    tokens give identical margins (the cross-value terms cancel), so the noise is what lets the
    shared head fail: held-out accuracy falls with K (≈ Φ(−1/(v√K)), THEORY §1.8).
(c) real features: Gemma-3-270M (base, Q4_K_M dequantized, d = 640) final hidden states of the
    paper's persona sets, the paper's protocol (`dpolab.sims.llm.train.PAPER_PROTOCOL` via
    `train_split`), several split seeds.

What differs from the paper and why: the model is Gemma-3-270M, not Llama-3.1-8B (it runs on
CPU in minutes and ships as a package); statements per persona are capped
(`dpolab.paper_repro.real_sets.LIMIT`: 200 in full mode, 16 in quick) so that the first extraction takes
minutes; quick mode uses K ∈ {1, 4}, Q = 10, 4 seeds for (a)–(b) and K ∈ {1, 2}, 2 split seeds
for (c) (full: all five K, Q = 50, 8 seeds; 3 split seeds). When the real track is unavailable,
(a) and (b) are still produced and column (c) states why; no real number is invented.
"""
from __future__ import annotations

import numpy as np

from dpolab.figures.repro_curves import CURVES, curve_table, plot_training_curves
from dpolab.figures.style import write_csv
from dpolab.paper_repro import real_sets
from dpolab.sims.config import DataSpec, TrainSpec, make_params
from dpolab.sims.train import run_seeds
from dpolab.theory import im_li

NAME = "fig5-training-curves"
TITLE = ("Im & Li Fig. 5, 7, 8: mean train/test margin, loss and accuracy vs step for K = 1..16 "
         "(theorem regime, shared Yes/No tokens, Gemma-3-270M persona sets)")

KS = (1, 2, 4, 8, 16)
BETA = 1.0
STEPS = 100
#: One step size for every K: the largest K reaches exactly its τ_1 at the last step.
ETA = im_li.tau_1(K=max(KS), beta=BETA) / STEPS
V_SHARED = 0.3
#: (K values, Q per cluster, seeds) of the simulated columns, by quick.
SYNTHETIC = {False: (KS, 50, 8), True: ((1, 4), 10, 4)}
#: Split seeds of the real column (its K values: `real_sets.TRAINING_KS`), by quick.
REAL_SEEDS = {False: 3, True: 2}
#: (data key prefix, token mode) of the simulated columns.
REGIMES = (("theorem", "distinct"), ("shared", "yes_no"))


def seed_curves(traj) -> dict[str, np.ndarray]:
    """{curve: (S, C)} from a trajectory whose fields have a leading seed axis (margins averaged
    over samples)."""
    return {"train_margin": np.asarray(traj.margins).mean(axis=-1),
            "test_margin": np.asarray(traj.test_margins).mean(axis=-1),
            "train_loss": np.asarray(traj.loss), "test_loss": np.asarray(traj.test_loss),
            "train_accuracy": np.asarray(traj.accuracy), "test_accuracy": np.asarray(traj.test_accuracy)}


def _stack_by_k(prefix: str, per_k: list[dict]) -> dict[str, np.ndarray]:
    """{prefix_<curve>: (nK, S, C)} from per-K {curve: (S, C)}."""
    return {f"{prefix}_{c}": np.stack([curves[c] for curves in per_k]) for c in CURVES}


def simulate_regime(prefix: str, tokens: str, *, Ks, Q: int, seeds: int, v: float) -> dict:
    """Simulated curves of one column: {prefix_K, prefix_step, prefix_<curve> (nK, S, C), ...}.

    Every K shares β = BETA, η = ETA and STEPS (a fixed step count), d = 5Q, l_b = 1/2.
    """
    params = make_params(beta=BETA, eta=ETA, v=v)
    per_k = [seed_curves(run_seeds(DataSpec(K=K, Q=Q, d=im_li.default_d(Q), n_test=Q, tokens=tokens),
                                   TrainSpec(steps=STEPS), params, np.arange(seeds)))
             for K in Ks]
    out = _stack_by_k(prefix, per_k)
    out.update({f"{prefix}_K": np.asarray(Ks), f"{prefix}_step": np.arange(STEPS + 1),
                f"{prefix}_Q": np.asarray(Q), f"{prefix}_v": np.asarray(v)})
    return out


def real_curves(ctx, *, Ks, seeds: int) -> dict:
    """Curves of the paper's protocol on real features: {real_K, real_step, real_<curve>}."""
    import jax

    from dpolab.sims.llm.train import PAPER_PROTOCOL, train_split

    feats = {K: real_sets.features(ctx, names) for K, names in real_sets.persona_sets(ctx, Ks).items()}
    stack = lambda trajs: jax.tree.map(lambda *x: np.stack(x), *trajs)
    per_k = [seed_curves(stack([train_split(feats[K], seed=s, **PAPER_PROTOCOL)[0] for s in range(seeds)]))
             for K in Ks]
    out = _stack_by_k("real", per_k)
    out.update({"real_K": np.asarray(Ks), "real_step": np.arange(PAPER_PROTOCOL["steps"] + 1),
                "real_limit": np.asarray(real_sets.statements_limit(ctx.quick)),
                "real_n_statements": np.asarray([sum(len(f.label) for f in feats[K]) for K in Ks])})
    return out


def compute(ctx) -> dict[str, np.ndarray]:
    Ks, Q, seeds = SYNTHETIC[ctx.quick]
    data = {"beta": np.asarray(BETA), "eta": np.asarray(ETA)}
    for prefix, tokens in REGIMES:
        v = im_li.default_v(Q) if tokens == "distinct" else V_SHARED
        data.update(simulate_regime(prefix, tokens, Ks=Ks, Q=Q, seeds=seeds, v=v))
    t = ETA * np.arange(STEPS + 1)
    data["theorem_closed_form"] = np.stack([im_li.dpo_noise_free(t, K=K, beta=BETA) for K in Ks])
    reason = ctx.real_unavailable()
    data["real_unavailable"] = np.asarray(reason or "")
    if not reason:
        data.update(real_curves(ctx, Ks=real_sets.TRAINING_KS[ctx.quick], seeds=REAL_SEEDS[ctx.quick]))
    return data


def _column(data, prefix, title, reference=None):
    return {"title": title, "K": data[f"{prefix}_K"], "step": data[f"{prefix}_step"],
            "runs": {c: data[f"{prefix}_{c}"] for c in CURVES}, "reference": reference}


def render(data, ctx):
    eta, beta = float(data["eta"]), float(data["beta"])
    gd = f"GD η = {eta:.3g}, β = {beta:g}"
    columns = [
        _column(data, "theorem", f"(a) theorem regime\ndistinct tokens, v = 1/(32√Q)\n{gd}, "
                f"Q = {int(data['theorem_Q'])}", reference=data["theorem_closed_form"]),
        _column(data, "shared", f"(b) paper's regime, simulated\nshared Yes/No tokens, "
                f"v = {float(data['shared_v']):g}\n{gd}, Q = {int(data['shared_Q'])}"),
    ]
    reason = str(data["real_unavailable"])
    if reason:
        columns.append({"title": "(c) Gemma-3-270M, paper's sets", "runs": None,
                        "note": f"real track unavailable here:\n{reason}"})
    else:
        columns.append(_column(data, "real", "(c) Gemma-3-270M, paper's sets\nAdam lr 1e-3, β = 0.01\n"
                               f"≤ {int(data['real_limit'])} statements/persona"))
    paths = plot_training_curves(columns, ctx.dir, "fig5_training_curves")
    prefixes = ("theorem", "shared") + (() if reason else ("real",))
    return paths + [write_csv(ctx.dir / f"fig5_curves_{p}.csv", curve_table(
        data[f"{p}_K"], data[f"{p}_step"], {c: data[f"{p}_{c}"] for c in CURVES}, extra=_extra(data, p)))
        for p in prefixes]


def _extra(data, prefix) -> dict:
    """CSV columns beyond the curves: time t = nη and the closed form (simulated), statements."""
    K, step = data[f"{prefix}_K"], data[f"{prefix}_step"]
    if prefix == "real":
        return {"n_statements": np.repeat(data["real_n_statements"], len(step))}
    extra = {"t": np.tile(float(data["eta"]) * step, len(K))}
    if prefix == "theorem":
        extra["closed_form_margin"] = data["theorem_closed_form"]
    return extra
