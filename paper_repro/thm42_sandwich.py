"""Im & Li (arXiv 2408.03459) Theorem 4.2 in pictures: the margin sandwich and the time collapse.

Theorem 4.2: inside its conditions (Z ≤ 1/(4l_b²), d ≤ 5Q, v ≤ 1/(32√Q), 1/4 ≤ l_b ≤ 1/2), every
training margin satisfies r_L(t) = β²t/(8Kτ) ≤ r_i(t) ≤ r_U(t) = 5β²t/(Kτ) for t ≤ τ_1 =
Kτ·log3/(5β²), so at τ_1 every margin lies in [log3/40, log3]. The paper states this without a
figure; here it is drawn:

* `thm42_sandwich.*`: for two K, every training sample's margin trajectory r_i(t) (a thin light
  line per sample, seed 0) between r_L and r_U up to τ_1, with the lowest and highest margin over
  all seeds and samples at each checkpoint;
* `thm42_collapse.*`: margins of several (K, β) against s = β²t/(Kτ) (mean over all seeds and
  samples, band = min…max), with the noise-free closed form r + e^r = 1 + 2β²t/(Kτ)
  (`dpolab.theory.im_li.dpo_noise_free`, THEORY §1.6) overlaid, and the gap mean − closed form.

Setup (`dpolab.sims.config.theorem_regime`): distinct tokens (Z = 1), d = 5Q, v = 1/(32√Q), l_b = 1/2,
gradient descent with η = τ_1/steps (τ = 1, t = nη). Runs continue to EXTEND·τ_1 for the collapse
(the sandwich panels stop at τ_1, where the theorem stops).

What differs from the paper and why: GD with a finite step instead of gradient flow (GD → flow at
rate O(η), checked by `im-li/gd-to-flow`); Q = 20 (quick: 10) samples per cluster and a few seeds,
because the theorem has no lower limit on Q and the picture does not change with Q; the
theorem's probability clause is non-computable (THEORY §1.4) and plays no role here.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from dpolab.figures.im_li import plot_margin_collapse, plot_sandwich_panels
from dpolab.sims.config import theorem_regime
from dpolab.sims.train import run_seeds
from dpolab.theory import im_li

NAME = "thm42-sandwich"
TITLE = "Im & Li Thm 4.2: per-sample margins inside [r_L, r_U] up to τ_1; collapse on β²t/(Kτ)"

#: Collapse runs go on to this multiple of τ_1.
EXTEND = 3
#: By quick: Q, seeds, GD steps to τ_1, checkpoint stride, (K, β) drawn as sandwich panels,
#: further (K, β) in the collapse only (β is dynamic: it adds no compilation).
SETTINGS = {
    True: dict(Q=10, seeds=2, steps=20, stride=2, sandwich=((2, 1.0), (4, 1.0)),
               collapse=((2, 0.5), (4, 2.0))),
    False: dict(Q=20, seeds=4, steps=40, stride=2, sandwich=((2, 1.0), (16, 1.0)),
                collapse=((2, 0.5), (4, 1.0), (4, 2.0), (16, 0.5))),
}


def run_config(K, beta, *, Q, seeds, steps, stride, extend=EXTEND):
    """Trains one theorem-regime configuration to extend·τ_1.

    Returns:
        (t (C,), margins (S, C, N), n_tau1): checkpoints, training margins of every seed, and the
        number of checkpoints with t ≤ τ_1 (the last of them is t = τ_1 up to rounding).
    """
    spec, train, params = theorem_regime(K=K, Q=Q, beta=beta, steps=steps, stride=stride, n_test=1)
    traj = run_seeds(spec, dataclasses.replace(train, steps=extend * steps), params, range(seeds))
    return np.asarray(traj.t[0]), np.asarray(traj.margins), steps // stride + 1


def sandwich_rows(config, K, beta, t, margins):
    """Long rows of one sandwich panel: each sample of seed 0, then the min (curve −1) and max
    (curve −2) over all seeds and samples, with r_L and r_U; t (C,), margins (S, C, N)."""
    lines = [margins[0, :, i] for i in range(margins.shape[2])]
    lines += [margins.min(axis=(0, 2)), margins.max(axis=(0, 2))]
    curve = np.concatenate([np.arange(margins.shape[2]), [-1, -2]])
    n = len(t)
    return {"config": np.full(n * len(lines), config, dtype=float),
            "curve": np.repeat(curve, n).astype(float), "t": np.tile(t, len(lines)),
            "margin": np.concatenate(lines),
            "r_lower": np.tile(im_li.r_lower(t, K=K, beta=beta), len(lines)),
            "r_upper": np.tile(im_li.r_upper(t, K=K, beta=beta), len(lines))}


def compute(ctx) -> dict:
    """Sandwich panels (long rows) and collapse curves of every configuration."""
    cfg = SETTINGS[ctx.quick]
    configs = list(cfg["sandwich"]) + list(cfg["collapse"])
    sw, cl = [], []
    per = {k: [] for k in ("K", "beta", "tau_1", "sandwich", "min_ratio_lower", "max_ratio_upper",
                           "max_gap_closed_form")}
    for idx, (K, beta) in enumerate(configs):
        t, r, n1 = run_config(K, beta, **{k: cfg[k] for k in ("Q", "seeds", "steps", "stride")})
        if (K, beta) in cfg["sandwich"]:
            sw.append(sandwich_rows(idx, K, beta, t[:n1], r[:, :n1]))
        ratio_lo = r[:, 1:n1] / im_li.r_lower(t[1:n1], K=K, beta=beta)[:, None]
        ratio_hi = r[:, 1:n1] / im_li.r_upper(t[1:n1], K=K, beta=beta)[:, None]
        closed = im_li.dpo_noise_free(t, K=K, beta=beta)
        mean = r.mean(axis=(0, 2))
        cl.append({"config": np.full(len(t), idx, dtype=float), "s": beta**2 * t / K,
                   "mean": mean, "min": r.min(axis=(0, 2)), "max": r.max(axis=(0, 2)),
                   "closed_form": closed})
        values = (K, beta, im_li.tau_1(K=K, beta=beta), (K, beta) in cfg["sandwich"],
                  ratio_lo.min(), ratio_hi.max(), np.abs(mean - closed).max())
        for key, val in zip(per, values):
            per[key].append(float(val))
    s_dense = np.linspace(0.0, EXTEND * im_li.LOG3 / 5, 241)
    return {
        **{f"cfg_{k}": np.asarray(v) for k, v in per.items()},
        **{f"sw_{k}": np.concatenate([row[k] for row in sw]) for k in sw[0]},
        **{f"cl_{k}": np.concatenate([row[k] for row in cl]) for k in cl[0]},
        # at K = β = τ = 1, t equals s: the closed form as a function of s
        "dense_s": s_dense, "dense_closed_form": im_li.dpo_noise_free(s_dense, K=1, beta=1.0),
        "Q": np.float64(cfg["Q"]), "seeds": np.float64(cfg["seeds"]),
        "v": np.float64(im_li.default_v(cfg["Q"])), "d": np.float64(im_li.default_d(cfg["Q"])),
    }


def render(data, ctx) -> list:
    """`thm42_sandwich.*` (panels per K) and `thm42_collapse.*` (all configurations vs s)."""
    return plot_sandwich_panels(data, ctx.dir) + plot_margin_collapse(data, ctx.dir)
