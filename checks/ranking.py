"""Checks of Chen et al.'s ranking-accuracy results (THEORY §3), in float64."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import expit

from dpolab.checks.result import CheckResult, verdict
from dpolab.sims.bandit import BanditSpec, make_bandit_params, make_instance
from dpolab.sims.ranking_flips import FlipPairs, FlipParams, FlipSpec, make_flip_training
from dpolab.theory import losses, ranking, rdpo

DRAWS = 1_000_000


BETAS = (0.05, 0.3, 1.0, 2.0)
GAMMAS = (1.0, 0.0, 0.5, 1.7)  # γ = 1 is DPO; the others DPO^γ


def _draws(seed, n=DRAWS):
    """u, R_ref ~ N(0, 9): n draws split evenly over the (β, γ) grid."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 3, n), rng.normal(0, 3, n)


def optimum(quick):
    """The KL-regularised optimum's log-ratio is log-ref-ratio + (1/β)·log(α/(1−α))."""
    rng = np.random.default_rng(0)
    S, A, worst = 200, 6, 0.0
    for beta in (0.1, 0.5, 2.0):
        pi_ref = rng.dirichlet(np.ones(A), S)
        reward = rng.normal(0, 2, (S, A))
        log_pi = np.log(rdpo.optimal_policy(pi_ref, reward, beta=beta))
        w, l = rng.integers(0, A, (2, S))
        alpha = 1 / (1 + np.exp(-(reward[np.arange(S), w] - reward[np.arange(S), l])))
        predicted = ranking.optimal_log_ratio(np.log(pi_ref[np.arange(S), w] / pi_ref[np.arange(S), l]),
                                              alpha, beta=beta)
        measured = log_pi[np.arange(S), w] - log_pi[np.arange(S), l]
        worst = max(worst, float(np.max(np.abs(predicted - measured))))
    return CheckResult(
        id="ranking/thm3.1-optimum", reference="Chen et al. Theorem 3.1",
        claim="π*(y_w)/π*(y_l) = (π_ref(y_w)/π_ref(y_l))·(α/(1−α))^{1/β} with α = σ(r_w − r_l)",
        predicted=0.0, measured=worst, tolerance=1e-10,
        why="float64; log-ratios up to ~|r|/β ≈ 100 carry ~1e-13 rounding", verdict=verdict(worst <= 1e-10))


def threshold_equivalence(quick):
    """R = 1 ⟺ L ≤ −log σ(βγc) on 10⁶ random (u, R_ref, β, γ); Prop. 2.6; the IPO analogue."""
    u_all, r_all = _draws(1)
    grid = [(b, g) for b in BETAS for g in GAMMAS]
    mism, counter, ipo_bad, premise_share = {"DPO": 0, "DPO^γ": 0}, 0, 0, 0.0
    for (b, g), idx in zip(grid, np.array_split(np.arange(DRAWS), len(grid))):
        u, r_ref = u_all[idx], r_all[idx]
        c, correct = -r_ref, ranking.ranking_correct(u)
        below = _softplus_loss(u, r_ref, b, g) <= ranking.loss_threshold(c, beta=b, gamma=g)
        mism["DPO" if g == 1.0 else "DPO^γ"] += int(np.sum(below != correct))
        premise, conclusion = ranking.prop_2_6_holds(u, r_ref, beta=b)
        counter += int(np.sum(premise & ~conclusion))
        premise_share += float(premise.mean()) / len(grid)
        cert = ranking.ipo_certifies_ranking(ranking.ipo_loss_from_ratios(u, r_ref, beta=b), c, beta=b)
        under = u <= r_ref + 1 / b
        ipo_bad += int(np.sum(cert & ~correct)) + int(np.sum(under & (cert != correct)))
    ok = mism["DPO"] == 0 and mism["DPO^γ"] == 0 and counter == 0 and ipo_bad == 0
    return CheckResult(
        id="ranking/thm4.1-equivalence", reference="Chen et al. Theorem 4.1, Prop. 2.6 (THEORY §3)",
        claim="R = 1 ⟺ L_DPO ≤ −log σ(βc) (and with γc for DPO^γ); R_ref ≥ 0 and L ≤ 0.6 ⇒ R = 1; "
              "IPO: a loss ≤ (1−βc)² with βc ≤ 1 certifies R = 1, exactly on the branch u ≤ R_ref + 1/β",
        predicted={"mismatches": 0},
        measured={"DPO mismatches": mism["DPO"], "DPO^γ mismatches": mism["DPO^γ"],
                  "Prop 2.6 counterexamples": counter, "premise share": round(premise_share, 4),
                  "IPO violations": ipo_bad},
        tolerance=0, why=f"{DRAWS} random draws u, R_ref ~ N(0, 9) over β ∈ {BETAS} × γ ∈ {GAMMAS}; "
        "the loss is a strictly decreasing function of u, so the equivalence is exact in floating point "
        "as well", verdict=verdict(ok))


def _softplus_loss(u, r_ref, beta, gamma):
    """ℓ(β(u − γR_ref)) by dpolab.theory.losses (an independent path from dpolab.theory.ranking)."""
    return np.asarray(losses.logistic_loss(jnp.asarray(beta * (u - gamma * r_ref))))


def soft_label_fit(quick):
    """A tabular DPO fit with soft labels α reaches the idealized ranking accuracy."""
    rng = np.random.default_rng(2)
    n, beta = (20_000 if quick else 200_000), 0.1
    r_ref = rng.normal(0, 2, n)
    alpha = np.where(rng.random(n) < 0.2, 1.0, rng.uniform(0.5, 1.0, n))
    a = ranking.clamp_alpha(alpha)

    def loss(u):
        z = beta * (u - r_ref)
        return jnp.sum(a * losses.logistic_loss(z) + (1 - a) * losses.logistic_loss(-z))

    grad, hess = jax.grad(loss), jax.vmap(jax.grad(jax.grad(lambda ui, ri, ai: ai * losses.logistic_loss(
        beta * (ui - ri)) + (1 - ai) * losses.logistic_loss(-beta * (ui - ri)))), in_axes=(0, 0, 0))
    u = jnp.asarray(r_ref)
    for _ in range(60):  # Newton on separable 1-D problems
        u = u - grad(u) / hess(u, jnp.asarray(r_ref), jnp.asarray(a))
    u = np.asarray(u)
    ideal = ranking.idealized_ranking_accuracy(r_ref, alpha, beta=beta)
    achieved = float(np.mean(ranking.ranking_correct(u)))
    ref_acc = float(np.mean(r_ref >= 0))
    gap = abs(achieved - ideal)
    return CheckResult(
        id="ranking/soft-label-fit", reference="Chen et al. Cor. 3.3 (idealized ranking accuracy)",
        claim="a DPO fit that reaches its optimum with soft labels α (α = 1 clamped to 0.999) ranks "
              "exactly the pairs the idealized model ranks right",
        predicted=round(ideal, 6), measured={"achieved": round(achieved, 6), "reference model": round(ref_acc, 6)},
        tolerance=f"≤ {1 / n:g} (one pair at an exact tie)", why=f"{n} pairs, β = {beta}: Newton "
        "converges to the optimum to machine precision; the reference model is shown for contrast",
        verdict=verdict(gap <= 1 / n))


FLIP_GAMMAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # increasing: the flipped sets must shrink along it
FLIP_BETA = 0.5  # β ≠ 1: the threshold −log σ(βγc) and the optimum's logit(α)/β are exercised


def flip_reference(x, theta0, alpha, *, beta, gammas, eta, steps, stride):
    """(G, C, n) log-ratios u_i = θᵀx_i at the checkpoints of gradient descent on the log-linear
    model, by the closed-form gradient θ ← θ + (ηβ/n)·Xᵀw(z), w = α σ(−z) − (1−α) σ(z),
    z = β(Xθ − γR_ref), from θ = θ_0 (the log-partition cancels in u, so no softmax is needed).

    Written independently of `dpolab.sims.ranking_flips` (no log-softmax, no autodiff).

    Args:
        x: (n, d) φ(y_w) − φ(y_l). theta0: (d,) reference. alpha: (n,) vote shares in (0, 1).
        gammas: (G,) reference weights. eta, steps, stride: as `FlipSpec`/`FlipParams`.
    """
    n = len(x)
    r_ref = x @ theta0
    g = np.asarray(gammas, dtype=float)[:, None]
    theta = np.repeat(theta0[None], len(g), axis=0)
    out = [theta @ x.T]
    for k in range(1, steps + 1):
        z = beta * (theta @ x.T - g * r_ref)
        theta = theta + (eta * beta / n) * (alpha * expit(-z) - (1 - alpha) * expit(z)) @ x
        if k % stride == 0:
            out.append(theta @ x.T)
    return np.stack(out, axis=1)


def _flip_case(phi, state, chosen, rejected, alpha, theta0, *, eta, spec):
    """Simulation and reference of one training set over FLIP_GAMMAS, and their comparison."""
    pairs = FlipPairs(phi=jnp.asarray(phi), state=jnp.asarray(state), chosen=jnp.asarray(chosen),
                      rejected=jnp.asarray(rejected), alpha=jnp.asarray(alpha))
    k = len(FLIP_GAMMAS)
    params = FlipParams(beta=jnp.full(k, FLIP_BETA), gamma=jnp.asarray(FLIP_GAMMAS), eta=jnp.full(k, eta))
    traj = jax.jit(jax.vmap(make_flip_training(spec), in_axes=(None, None, 0)))(pairs, jnp.asarray(theta0), params)
    u, loss = np.asarray(traj.log_ratio), np.asarray(traj.loss)
    x = phi[state, chosen] - phi[state, rejected]
    r_ref = x @ theta0
    ref = flip_reference(x, theta0, alpha, beta=FLIP_BETA, gammas=FLIP_GAMMAS, eta=eta, steps=spec.steps,
                         stride=spec.stride)
    # a priori float64 bound: a step moves u_i by (ηβ/n)Σ_j w_j G_ij (|w| ≤ 1, G = XXᵀ), a sum of n
    # terms, plus one addition to |u|; the map is non-expansive (ηβ²λ_max(G)/(4n) ≤ 1/4 here), so
    # the rounding errors of the steps add up
    n, fp = len(x), np.finfo(np.float64).eps
    step = (n + 2) * fp * (eta * FLIP_BETA / n) * np.abs(x @ x.T).sum(1).max() + 2 * fp * np.abs(ref).max()
    tol = spec.steps * step
    c = -np.asarray(traj.log_ref_ratio)[:, None, :]
    correct = ranking.ranking_correct(u)
    below = np.stack([loss[i] <= ranking.loss_threshold(c[i], beta=FLIP_BETA, gamma=gi)
                      for i, gi in enumerate(FLIP_GAMMAS)])
    ties = np.abs(u) <= tol
    misranked = r_ref < 0
    flipped = correct & misranked
    return dict(u=u, ref=ref, r_ref=r_ref, tol=tol, ties=ties, flipped=flipped, misranked=misranked,
                dev=max(float(np.max(np.abs(u - ref))), float(np.max(np.abs(traj.log_ref_ratio - r_ref[None])))),
                thm41=int(np.sum((below != correct) & ~ties)))


def gamma_flips(quick):
    """Which pairs the reference mis-ranks does DPO^γ training flip: pair by pair by Theorem 4.1,
    exactly by the recursion, nested in γ, inside the optimum's set.

    [CR]'s Remark 3.2 has no text in this package or in THEORY §3; it is read here as the
    unanimous-vote clamp α ← 1 − 0.001 that makes the optimum finite: half the separable pairs are
    unanimous, trained at the clamped α, and every flip must lie in the set Cor. 3.3 counts for the
    attenuated reference, 1[γR_ref + logit(α)/β > 0] (that a converged fit reaches that set is
    `ranking/soft-label-fit`). The "< 10% of mis-ranked pairs flip" of [CR] is an LLM observation and
    is shown, not compared.
    """
    spec = FlipSpec(steps=200, stride=10)
    rng = np.random.default_rng(12)
    # (a) separable: pair s has its own direction, x_s = e_s (φ(s, y_w) = e_s/2 = −φ(s, y_l))
    n = 400 if quick else 1000
    phi = np.stack([np.eye(n) / 2, -np.eye(n) / 2], axis=1)
    theta0 = rng.normal(0.0, 5.0, n)  # R_ref = θ_0,s: half the pairs mis-ranked, c up to ~15
    votes = rng.choice([0.75, 1.0], n)  # 3 of 4 raters, or unanimous (clamped to 1 − 0.001)
    idx = np.arange(n)
    sep = _flip_case(phi, idx, np.zeros(n, int), np.ones(n, int), ranking.clamp_alpha(votes), theta0,
                     eta=1.0 * n, spec=spec)
    # (b) coupled: the bandit's shared d = 4 features, every pair of distinct responses in every
    # context, y_w the truly better one, α = σ(r*(y_w) − r*(y_l)); an opinionated reference ‖θ_0‖ = 2
    bspec = BanditSpec(S=32, A=8, d=4)
    inst = make_instance(jax.random.key(0), bspec, make_bandit_params(sft_scale=2.0, reward_scale=1.5))
    bphi, omega = np.asarray(inst.phi), np.asarray(inst.omega)
    i, j = np.triu_indices(bspec.A, 1)
    state = np.repeat(np.arange(bspec.S), len(i))
    a, b = np.tile(i, bspec.S), np.tile(j, bspec.S)
    gap = (bphi[state, a] - bphi[state, b]) @ omega
    chosen, rejected = np.where(gap >= 0, a, b), np.where(gap >= 0, b, a)
    xb = bphi[state, chosen] - bphi[state, rejected]
    eta_b = 1.0 / (FLIP_BETA**2 * np.linalg.eigvalsh(xb.T @ xb / len(xb))[-1])
    cpl = _flip_case(bphi, state, chosen, rejected, expit(np.abs(gap)), np.asarray(inst.theta0),
                     eta=eta_b, spec=spec)

    # the separable model's exact structure: nested in γ, monotone in time, inside the optimum's set
    f = sep["flipped"]
    nested = int(np.sum(f[1:] & ~f[:-1]))  # flipped at a larger γ but not at the smaller one
    unflipped = int(np.sum(f[:, :-1] & ~f[:, 1:]))  # flipped, then mis-ranked again
    ideal = np.stack([ranking.idealized_correct(g * sep["r_ref"], votes, beta=FLIP_BETA) for g in FLIP_GAMMAS])
    outside = int(np.sum(f & ~ideal[:, None, :]))
    counts = {k: [int(c) for c in case["flipped"][:, -1].sum(-1)] for k, case in (("separable", sep), ("coupled", cpl))}
    ref_counts = {k: [int(c) for c in ((case["ref"][:, -1] >= 0) & case["misranked"]).sum(-1)]
                  for k, case in (("separable", sep), ("coupled", cpl))}
    share = {k: np.round(np.asarray(counts[k]) / case["misranked"].sum(), 4).tolist()
             for k, case in (("separable", sep), ("coupled", cpl))}
    reached = np.round(np.asarray(counts["separable"]) / (ideal & sep["misranked"]).sum(-1), 4).tolist()
    ties = int(sep["ties"].sum() + cpl["ties"].sum())
    ok = (sep["dev"] <= sep["tol"] and cpl["dev"] <= cpl["tol"] and sep["thm41"] == 0 and cpl["thm41"] == 0
          and counts == ref_counts and nested == 0 and unflipped == 0 and outside == 0)
    return CheckResult(
        id="ranking/gamma-flips", reference="Chen et al. Thm 4.1, §4 (DPO^γ), Cor. 3.3 with α ← 1 − 0.001",
        claim="in DPO^γ training of a log-linear policy from its reference, a mis-ranked pair is flipped "
              "exactly when its loss falls below −log σ(βγc) (every pair, every checkpoint, coupled or "
              "not); with one direction per pair the flips are exactly those of the margin recursion, "
              "a smaller γ flips a superset of pairs at every step (the γ trend), a flip is never undone, "
              "and only pairs the DPO^γ optimum γR_ref + logit(α)/β ranks right ever flip",
        predicted={"Thm 4.1 mismatches": 0, "flips per γ (recursion)": ref_counts,
                   "γ-nesting / un-flip / outside-optimum violations": 0},
        measured={"Thm 4.1 mismatches": {"separable": sep["thm41"], "coupled": cpl["thm41"]},
                  "flips per γ": counts, "γ-nesting violations": nested, "un-flips": unflipped,
                  "flips outside the optimum's set": outside,
                  "max |u − recursion|": {"separable": sep["dev"], "coupled": cpl["dev"]},
                  "share of mis-ranked pairs flipped per γ": share,
                  "share of the optimum's flips reached (separable)": reached, "near-ties": ties},
        tolerance={"u": {"separable": sep["tol"], "coupled": cpl["tol"]}, "counts": 0},
        why=f"float64, β = {FLIP_BETA}, γ ∈ {FLIP_GAMMAS}, {spec.steps} GD steps; separable: {n} pairs, "
            "R_ref ~ N(0, 25), votes 3/4 or unanimous; coupled: the 896 pairs of a 32-context, 8-action, d = 4 "
            "bandit. The u tolerance is the a-priori rounding bound of the recursion (n-term sums, "
            "non-expansive map); pairs within it of u = 0 are near-ties, excluded and counted. Not "
            "compared: [CR]'s 'fewer than 10% of mis-ranked pairs flip' is an observation on LLM "
            "fine-tuning; here the share is set exactly, pair by pair, by the budget and c (shown)",
        verdict=verdict(ok),
        artifacts={"gammas": np.asarray(FLIP_GAMMAS), "separable_flips": np.asarray(counts["separable"]),
                   "coupled_flips": np.asarray(counts["coupled"])})


#: {check id: fn(quick) -> CheckResult | list[CheckResult]}, in run order.
CHECKS = {
    "ranking/thm3.1-optimum": optimum,
    "ranking/thm4.1-equivalence": threshold_equivalence,
    "ranking/soft-label-fit": soft_label_fit,
    "ranking/gamma-flips": gamma_flips,
}
