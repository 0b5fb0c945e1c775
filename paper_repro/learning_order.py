"""Learning order between values: predicted vs realized mean-margin crossing times.

Reproduces: the claim of Im & Li, "Understanding the Learning Dynamics of Alignment with Human
Feedback" (ICML 2024, arXiv 2403.18742) that more distinguishable behaviours are learned faster,
which the paper shows on Anthropic persona data with an LLM. What differs: we do not redraw the
paper's figures (not available here); we draw our own prediction (`dpolab.theory.learning_order`:
the mean-field crossing time of each value's mean margin, computed from the features alone)
against exact last-layer GD, (a) on noise-free synthetic values coupled through shared Yes/No
tokens (the prediction is exact there), (b) on noisy synthetic values of controlled
distinguishability κ_k (each on its own tokens; times within the first-order dispersion band),
(c) on Gemma-3-270M persona features (every persona of this run's sets; shared Yes/No tokens), where
the realized times lag the prediction and the rank agreement is the result.
"""
from __future__ import annotations

import numpy as np

from dpolab.checks.learning_order import BETA, LEVEL, NORMS, STEPS, D, Q
from dpolab.checks.real_learning_order import order_on_features
from dpolab.paper_repro import real_sets
from dpolab.sims import learning_order as sim
from dpolab.theory import learning_order as lo

NAME = "learning-order"
TITLE = "Learning order between values: closed-form crossing times vs exact GD (Im & Li 2024)"
NOISE = 0.1
SEEDS = {True: 4, False: 24}


def _run(data):
    g = np.asarray(data.g)
    w, l, group = sim.token_indices(data)
    pred = lo.predict_order(g, w, l, group, beta=BETA, level=LEVEL)
    eta = 1.3 * float(np.max(pred["predicted_time"])) / STEPS
    t, means = sim.train_means(data, beta=BETA, eta=eta, steps=STEPS)
    _, M, n = lo.centroid_gram(g, w, l, group)
    return pred, t, means, lo.mean_field_margins(t, M, n, beta=BETA), sim.crossing_times(t, means, LEVEL)


def compute(ctx) -> dict[str, np.ndarray]:
    data = sim.value_data(0, norms=NORMS, Q=Q, d=D, v=0.0, tokens="yes_no", concept_cos=0.3)
    pred, t, means, mf, t_sim = _run(data)
    out = {"norms": np.asarray(NORMS), "level": np.float64(LEVEL), "noise": np.float64(NOISE),
           "coupled_t": t, "coupled_sim": means, "coupled_mf": mf, "coupled_pred": pred["predicted_time"],
           "coupled_cross": t_sim}
    pred_t, sim_t, dist = [], [], []
    for seed in range(SEEDS[bool(ctx.quick)]):
        pred, _, _, _, t_sim = _run(sim.value_data(seed, norms=NORMS, Q=Q, d=D, v=NOISE, tokens="distinct"))
        pred_t.append(pred["predicted_time"])
        sim_t.append(t_sim)
        dist.append(pred["distinguishability"])
    out |= {"noisy_pred": np.array(pred_t), "noisy_cross": np.array(sim_t), "noisy_d": np.array(dist)}
    reason = ctx.real_unavailable()
    out["real_unavailable"] = np.asarray(reason or "")
    if not reason:
        names = real_sets.run_personas(ctx)
        pred, t_sim, _, _ = order_on_features(real_sets.features(ctx, names))
        out |= {"real_pred": pred["predicted_time"], "real_cross": t_sim, "real_d": pred["distinguishability"],
                "real_limit": np.int64(real_sets.statements_limit(ctx.quick))}
    return out


def render(data, ctx) -> list:
    """learning_order.{pdf,png,csv} (synthetic) and learning_order_real.csv when the real track ran."""
    from dpolab.figures.learning_order import plot_learning_order

    return plot_learning_order(data, ctx.dir)
