"""Likelihood displacement in last-layer DPO: log-prob trajectories vs label-flip rate (DPO vs rDPO)
and the displaced fraction vs token structure and K.

Reproduces (in spirit): Razin et al., "Unintentional Unalignment: Likelihood Displacement in DPO",
ICLR 2025, arXiv 2410.08847 — the chosen response's log-probability can fall while the margin grows.
What differs and why: the paper fine-tunes whole LLMs (hidden representations move); this package's
model is the last-layer one (THEORY §1.1: frozen features, trainable unembedding, single tokens),
where displacement has its own exact condition (`dpolab.theory.displacement`, ours). Data are the
synthetic value mixture of `dpolab.sims.data` with the token structures of `dpolab.sims.displacement`;
no number of the paper is matched (we could not consult it). Label flips and rDPO as THEORY §2.

Shown: (a, b) the mean change of log π(y_w|x) and log π(y_l|x) from the reference along GD on the
"chain" task (value k prefers token k over k+1: neighbours share tokens), for flip rates ε, trained
with DPO and with rDPO at the true ε; the chosen change is split into clean and flipped samples
("chosen" is the observed label); (c) the fraction of samples displaced (chosen below its
reference while r > 0) along training; (d) the closed-form fraction displaced at r = 0 (the
velocity condition, β-invariant) vs K for each token structure, mean over seeds.
"""
from __future__ import annotations

import jax
import numpy as np
from scipy.special import logsumexp

from dpolab.sims.config import DataSpec, make_params
from dpolab.sims.displacement import STRUCTURES, make_token_trainer, sample_token_data, token_pairs
from dpolab.theory import displacement as disp

NAME = "likelihood-displacement"
TITLE = "Likelihood displacement: y_w/y_l log-prob trajectories vs flip rate (DPO, rDPO); fraction vs structure"

SPEC = dict(Q=20, d=32)
QUICK_KS, FULL_KS = (2, 4, 8), (2, 4, 8, 16)
PARAMS = dict(v=0.5, concept_cos=0.5, ref_scale=3.0, lb=0.5)
TRAJ_K, BETA, ETA = 4, 1.0, 1.0
LOSSES = ("dpo", "rdpo")


def vocab(K: int) -> int:
    """The vocabulary at K: 24 tokens up to K = 8, beyond that the 2K tokens of the "distinct"
    structure plus 8 unused ones (as at K = 8), so every structure has unused tokens at every K."""
    return max(24, 2 * K + 8)


def _data(structure, K, seed, flip):
    params = make_params(beta=BETA, eta=ETA, flip=flip, **PARAMS)
    return sample_token_data(jax.random.key(seed), DataSpec(K=K, vocab=vocab(K), **SPEC), params, structure)


def trajectories(flips, seeds, steps, stride) -> dict[str, np.ndarray]:
    """(L, F, C) means over samples and seeds of the chain task's log-prob changes and displacement."""
    U = token_pairs("chain", TRAJ_K)[2]
    run = jax.jit(make_token_trainer(n_tokens=U, steps=steps, stride=stride))
    run_r = jax.jit(make_token_trainer(n_tokens=U, steps=steps, stride=stride, loss="rdpo"))
    keys = ("chosen", "rejected", "clean_chosen", "flipped_chosen", "displaced", "margin")
    out = {k: np.zeros((len(LOSSES), len(flips), steps // stride + 1)) for k in keys}
    for f, flip in enumerate(flips):
        for seed in range(seeds):
            data = _data("chain", TRAJ_K, seed, flip)
            w, l = np.asarray(data.chosen), np.asarray(data.rejected)
            rows, flipped = np.arange(len(w)), np.asarray(data.flipped)
            for i, fn in enumerate((run, run_r)):
                traj = fn(data, BETA, ETA, flip)
                lp, r = np.asarray(traj.logp), np.asarray(traj.margins)
                ch, rj = lp[:, rows, w] - lp[0, rows, w], lp[:, rows, l] - lp[0, rows, l]
                vals = {"chosen": ch.mean(1), "rejected": rj.mean(1),
                        "clean_chosen": ch[:, ~flipped].mean(1),
                        "flipped_chosen": ch[:, flipped].mean(1) if flipped.any() else np.full(len(ch), np.nan),
                        "displaced": ((ch < 0) & (r > 0)).mean(1), "margin": r.mean(1)}
                for k in keys:
                    out[k][i, f] += vals[k] / seeds
    out["t"] = ETA * stride * np.arange(steps // stride + 1)
    return out


def fractions_at_zero(Ks, seeds) -> np.ndarray:
    """(S, k, seeds) closed-form fraction displaced at r = 0 (reference log-probs) per structure and K."""
    out = np.zeros((len(STRUCTURES), len(Ks), seeds))
    for s, structure in enumerate(STRUCTURES):
        for k, K in enumerate(Ks):
            for seed in range(seeds):
                data = _data(structure, K, seed, 0.0)
                G = np.asarray(data.g)
                logits = np.asarray(data.ref_logits)
                lse = np.logaddexp(np.asarray(data.ref_lse_rest), logsumexp(logits, axis=1))
                v = disp.logp_velocity(G, np.asarray(data.chosen), np.asarray(data.rejected),
                                       logits - lse[:, None], np.zeros(len(G)), beta=BETA)
                out[s, k, seed] = disp.displaced(v).mean()
    return out


def compute(ctx) -> dict[str, np.ndarray]:
    flips = (0.0, 0.2, 0.4) if ctx.quick else (0.0, 0.1, 0.2, 0.3, 0.4)
    seeds, steps, stride = (1, 200, 20) if ctx.quick else (4, 400, 10)
    Ks = QUICK_KS if ctx.quick else FULL_KS
    data = trajectories(flips, seeds, steps, stride)
    data |= {"flips": np.array(flips), "Ks": np.array(Ks, float), "seeds": np.int64(seeds),
             "frac_at_zero": fractions_at_zero(Ks, 2 if ctx.quick else 8), "beta": np.float64(BETA),
             "eta": np.float64(ETA), "K_traj": np.int64(TRAJ_K)}
    return data


def render(data, ctx) -> list:
    """likelihood_displacement.{pdf,png,csv} and likelihood_displacement_structure.csv."""
    from dpolab.figures.displacement import plot_likelihood_displacement

    return plot_likelihood_displacement(data, ctx.dir, structures=STRUCTURES)
