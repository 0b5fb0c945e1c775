"""Likelihood displacement on a real model's persona features (suite "real").

Model and data as `dpolab.checks.real` (its cached Gemma-3-270M features of the paper's persona sets;
responses are the single tokens " Yes" / " No"). The claim checked is ours
(`dpolab.theory.displacement`): with one token pair for every sample, last-layer training can never
displace — the chosen log-prob has risen exactly when the margin has, for GD and Adam, with
log π_t(y_w) − log π_0(y_w) = a − log(1 + π_0(y_w)(e^a − 1) + π_0(y_l)(e^{−a} − 1)), a = r/(2β).
This contrasts with Razin et al.'s catastrophic displacement on persona prompts, which needs a
trainable backbone (or dispreferred tokens other than the preferred one's twin): see the theory module.
"""
from __future__ import annotations

import numpy as np

from dpolab.checks.real import features
from dpolab.checks.result import CheckResult, verdict
from dpolab.theory import displacement as disp


def _yes_no(data):
    """(G, w, l, logp0) of a one-pair `Dataset`: used tokens 0 = " Yes", 1 = " No"."""
    G = np.asarray(data.g)
    logits = np.asarray(data.ref_logits)
    lse = np.logaddexp(np.asarray(data.ref_lse_rest), np.logaddexp(logits[:, 0], logits[:, 1]))
    w = np.asarray(data.chosen).astype(np.int64)
    return G, w, 1 - w, logits - lse[:, None]


def yes_no_never_displaced(quick):
    """On Gemma persona features: no sample displaced at r = 0 (closed form), the exact one-step change
    matches the trainer, and along the paper's Adam protocol the chosen log-prob change is the
    closed-form function of the margin (so it falls exactly where the margin is negative)."""
    import jax

    from dpolab.sims.config import TrainSpec, make_params
    from dpolab.sims.llm.train import PAPER_PROTOCOL, to_dataset, train_split
    from dpolab.sims.train import make_trainer

    feats = features(quick)[max(features(quick))]
    beta, steps = PAPER_PROTOCOL["beta"], PAPER_PROTOCOL["steps"]
    data = to_dataset(feats, [np.arange(len(f.label)) for f in feats])
    G, w, l, logp0 = _yes_no(data)
    v0 = disp.logp_velocity(G, w, l, logp0, np.zeros(len(w)), beta=beta)
    predicted_fraction = float(np.mean(disp.displaced(v0)))
    # one exact GD step (η = 1e-3) of the package's trainer vs the closed form's step change
    eta = 1e-3
    traj = jax.jit(make_trainer(TrainSpec(steps=1), 1))(data, data, make_params(beta=beta, eta=eta, v=0.0))
    step = disp.step_change(G, w, l, logp0, np.zeros(len(w)), beta=beta, eta=eta)
    chosen_now = np.asarray(traj.logp_chosen)
    step_err = float(np.max(np.abs(step["chosen"] - (chosen_now[1] - chosen_now[0]))))
    # the paper's protocol (Adam, lr 1e-3, β = 0.01, 100 steps), every 10 steps
    run, train, _ = train_split(feats, seed=0, stride=steps // 10, **PAPER_PROTOCOL)
    Gt, wt, lt, lp0 = _yes_no(train)
    rows = np.arange(len(wt))
    r = np.asarray(run.margins)
    change = np.asarray(run.logp_chosen) - np.asarray(run.logp_chosen)[0]
    pred = disp.single_pair_chosen_change(r, lp0[rows, wt], lp0[rows, lt], beta=beta)
    identity_err = float(np.max(np.abs(change - pred)))
    displaced_count = int(np.sum((change < 0) & (r > 0)))
    fell, negative = float(np.mean(change[-1] < 0)), float(np.mean(r[-1] < 0))
    scale = float(np.max(np.abs(np.asarray(data.ref_logits))))
    tol = 1e-12 * max(scale, 1.0) * 10
    ok = predicted_fraction == 0.0 and step_err <= tol and identity_err <= tol and displaced_count == 0
    return CheckResult(
        id="real/displacement-yes-no", reference="ours (theory/displacement.py); contrast Razin et al. "
        "2025 §3 (persona prompts, full fine-tuning)",
        claim="with the single token pair Yes/No no sample is displaced in last-layer training on Gemma "
              "persona features: at r = 0, after an exact GD step, and along the paper's Adam protocol "
              "the chosen log-prob change is a − log(1 + π_0(y_w)(e^a − 1) + π_0(y_l)(e^{−a} − 1)), a = r/(2β)",
        predicted={"displaced fraction at r = 0": 0.0, "|step − trainer|": 0.0, "|identity|": 0.0,
                   "displaced along training": 0},
        measured={"displaced fraction at r = 0": predicted_fraction, "|step − trainer|": step_err,
                  "|identity|": identity_err, "displaced along training": displaced_count,
                  "end: fraction whose chosen log-prob fell": fell, "end: fraction with r < 0": negative,
                  "samples": int(len(w)), "personas": len(feats)},
        tolerance=tol, why=f"float64 from float32 features; reference logits up to {scale:.1f} in size, "
        "so 10·1e-12 relative to them covers the log-sum-exp and 100 Adam steps' rounding",
        verdict=verdict(ok))


#: {check id: fn(quick) -> CheckResult | list[CheckResult]}, in run order.
CHECKS = {
    "real/displacement-yes-no": yes_no_never_displaced,
}
