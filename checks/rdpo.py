"""Checks of robust DPO under random preference flips (THEORY §2, Chowdhury et al. 2024).

Errors are measured in the Σ̂-norm ‖θ̂ − θ*‖_Σ̂ of the estimation bound (Σ̂ = XᵀX/n, unchanged by
flips). Rates are log-log slopes fitted with `scipy.stats.linregress` over every seed's point;
Monte-Carlo comparisons use standard errors over seeds or flip draws.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from dpolab.checks.result import CheckResult, verdict
from dpolab.sims.bandit import BanditSpec, PreferenceData, make_bandit_params, make_fit, make_instance, run_bandit
from dpolab.sims.risk import Z999
from dpolab.theory import losses, rdpo

POINTWISE = 1e-12
EPS_GRID = (0.0, 0.1, 0.25, 0.4, 0.49)


def sigma_norm_error(fits, data, theta_star, n_active, lam=0.0):
    """(S,) ‖θ̂ − θ*‖_{Σ̂+λI} per seed, Σ̂ = XᵀX/n over that seed's first n_active pairs."""
    err = np.asarray(fits.theta) - np.asarray(theta_star)
    x = np.asarray(data.x)[:, :n_active]
    # errᵀ(XᵀX)err = ‖X err‖²: one batched product (a four-operand einsum loops over s·n·d² in C)
    projected = np.matmul(x, err[:, :, None])[..., 0]
    return np.sqrt(np.sum(projected**2, axis=1) / n_active + lam * np.sum(err**2, axis=1))


def common_spec(quick, *, d=4, loss="rdpo", n=None):
    """One static shape for most checks (sample sizes vary through n_active: one compilation)."""
    return BanditSpec(S=32, A=8, d=d, n=n or (16000 if quick else 32000), loss=loss)


def slope(x, y):
    fit = stats.linregress(np.log(x), np.log(y))
    return float(fit.slope), float(fit.stderr)


def identities(quick):
    """Unbiasedness, cDPO's bias, the gradient weights and equal curvature, pointwise."""
    z = jnp.linspace(-50.0, 50.0, 4001)

    def rel(diff, f, eps):  # rounding scales with the debiased terms' size (1−ε)|f(z)|+ε|f(−z)|
        scale = jnp.maximum(1.0, (jnp.abs(f(z)) + jnp.abs(f(-z))) / (1 - 2 * eps))
        return float(jnp.max(jnp.abs(diff) / scale))

    worst = {"unbiased": 0.0, "cdpo bias": 0.0, "weights": 0.0, "curvature": 0.0,
             "debiased ipo/slic": 0.0}
    ell = losses.logistic_loss
    for eps in EPS_GRID:
        unb = rel((1 - eps) * losses.rdpo(z, eps) + eps * losses.rdpo(-z, eps) - ell(z), ell, eps)
        bias = ((1 - eps) * losses.cdpo(z, eps) + eps * losses.cdpo(-z, eps)
                - (1 - 2 * eps * (1 - eps)) * ell(z) - 2 * eps * (1 - eps) * ell(-z))
        base = {"ipo": losses.ipo, "slic": losses.slic}
        deb = max(rel((1 - eps) * losses.debias(f, z, eps) + eps * losses.debias(f, -z, eps) - f(z),
                      f, eps) for f in base.values())
        grads = {name: jax.vmap(jax.grad(lambda t, n=name, e=eps: losses.get_loss(n).value(t, e)))(z)
                 for name in ("dpo", "cdpo", "rdpo")}
        expected = {"dpo": jax.nn.sigmoid(-z), "cdpo": jax.nn.sigmoid(-z) - eps,
                    "rdpo": jax.nn.sigmoid(-z) + eps / (1 - 2 * eps)}
        curv = {name: jax.vmap(jax.grad(jax.grad(lambda t, n=name, e=eps: losses.get_loss(n).value(t, e))))(z)
                for name in ("dpo", "cdpo", "rdpo")}
        sig = jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)
        worst["unbiased"] = max(worst["unbiased"], unb)
        worst["cdpo bias"] = max(worst["cdpo bias"], float(jnp.max(jnp.abs(bias))))
        worst["debiased ipo/slic"] = max(worst["debiased ipo/slic"], deb)
        # the autodiff weight −dℓ/dz against the printed formula and against the weight function
        # the trainers use (`PairwiseLoss.weight`), and the de-biased weight of IPO likewise
        worst["weights"] = max(worst["weights"], max(
            max(float(jnp.max(jnp.abs(-grads[n] - expected[n]))),
                float(jnp.max(jnp.abs(losses.get_loss(n).weight(z, eps) - expected[n]))))
            for n in grads))
        ripo = jax.vmap(jax.grad(lambda t, e=eps: losses.debias(losses.ipo, t, e)))(z)
        worst["weights"] = max(worst["weights"], float(jnp.max(
            jnp.abs(losses.debias_weight(losses.ipo_weight, z, eps) + ripo) / (1 + jnp.abs(ripo)))))
        worst["curvature"] = max(worst["curvature"], max(float(jnp.max(jnp.abs(curv[n] - sig)))
                                                         for n in curv))
    ok = all(v <= POINTWISE for v in worst.values())
    return CheckResult(
        id="rdpo/identities", reference="Chowdhury et al. Lemma 3.1 & §4; THEORY §2.2",
        claim="(1−ε)ℓ̂(z)+εℓ̂(−z) = ℓ(z); E_flip cDPO = (1−2ε(1−ε))ℓ(z)+2ε(1−ε)ℓ(−z); weights "
              "σ(−z), σ(−z)−ε, σ(−z)+ε/(1−2ε) (autodiff and the weight functions the trainers use; "
              "de-biased IPO's weight likewise); equal curvature σ(z)σ(−z)",
        predicted=0.0, measured={k: float(v) for k, v in worst.items()}, tolerance=POINTWISE,
        why=f"float64 on z ∈ [−50, 50], ε ∈ {EPS_GRID}; the de-biasing identities are compared "
            "relative to the size of the de-biased terms max(1, (|φ(z)|+|φ(−z)|)/(1−2ε)), whose "
            "rounding error they inherit", verdict=verdict(ok))


def unbiased_monte_carlo(quick):
    """On a fixed dataset, rDPO's loss and gradient averaged over flip draws equal clean DPO's."""
    draws = 4000 if quick else 20000
    n = 200
    fits, data, inst = run_bandit(common_spec(quick), make_bandit_params(reward_scale=1.5), [0],
                                  n_active=n)
    clean = jax.tree_util.tree_map(lambda a: a[0, :n], data)
    eps, beta, d = 0.3, 1.0, clean.x.shape[1]
    theta = inst.theta0 + 0.7 * jnp.ones(d) / 2
    z = beta * clean.x @ (theta - inst.theta0)
    flips = jax.random.bernoulli(jax.random.key(5), eps, (draws, n))
    zf = jnp.where(flips, -z, z)
    xf = jnp.where(flips[..., None], -clean.x, clean.x)

    def stats_of(name, eps_):
        loss = losses.get_loss(name)
        value = jnp.mean(loss.value(zf, eps_), axis=1)
        grad = -beta * jnp.einsum("rn,rnd->rd", loss.weight(zf, eps_), xf) / n
        return jnp.concatenate([value[:, None], grad], axis=1)

    target = jnp.concatenate([jnp.mean(losses.dpo(z))[None],
                              -beta * (losses.dpo_weight(z) @ clean.x) / n])
    zs = {}
    for name, eps_ in (("rdpo", eps), ("dpo", 0.0)):
        sample = stats_of(name, eps_)
        se = jnp.std(sample, axis=0, ddof=1) / math.sqrt(draws)
        zs[name] = np.asarray(jnp.abs(jnp.mean(sample, axis=0) - target) / se)
    ok = bool(np.all(zs["rdpo"] <= 3.0))
    return CheckResult(
        id="rdpo/unbiased-monte-carlo", reference="Chowdhury et al. Lemma 3.1",
        claim="averaged over random flips, the rDPO loss and gradient on noisy labels equal the "
              "clean DPO loss and gradient on the same dataset",
        predicted=0.0, measured={"rDPO |z| (loss, grad…)": np.round(zs["rdpo"], 2).tolist(),
                                 "plain DPO on noisy labels |z|": np.round(zs["dpo"], 1).tolist()},
        tolerance="3 standard errors", why=f"{draws} flip draws at ε = {eps}; plain DPO shown "
        "for contrast (it is biased, so its z-scores are large)", verdict=verdict(ok))


def unboundedness(quick):
    """A separable finite dataset: rDPO diverges unconstrained and stops on the ball if projected."""
    spec = BanditSpec(n=3, d=2, loss="rdpo", steps=2000)
    x = jnp.asarray([[1.0, 0.2], [0.8, -0.1], [1.2, 0.0]])
    data = PreferenceData(x=x, p=jnp.full(3, 0.8), flipped=jnp.zeros(3, bool), state=jnp.zeros(3, int))
    inst = make_instance(jax.random.key(0), spec, make_bandit_params(sft_scale=0.0))
    fit = jax.jit(make_fit(spec))
    free = fit(data, inst, make_bandit_params(eps=0.2, sft_scale=0.0, B=np.inf))
    boxed = fit(data, inst, make_bandit_params(eps=0.2, sft_scale=0.0, reward_scale=0.0, B=2.0))
    ok = (bool(free.diverged) and float(free.loss) < -1.0 and not bool(boxed.diverged)
          and bool(boxed.on_boundary) and float(boxed.grad_mapping) < 1e-8)
    return CheckResult(
        id="rdpo/unboundedness", reference="THEORY §2.2 (slope −εβ/(1−2ε) as z → ∞)",
        claim="the empirical rDPO loss on separable data is unbounded below: unconstrained fitting "
              "diverges (detected), projected fitting on Θ_B converges on the boundary",
        predicted={"unconstrained": "diverged", "projected": "converged on ‖θ‖ = B"},
        measured={"unconstrained": {"diverged": bool(free.diverged), "loss": float(free.loss),
                                    "‖θ‖": float(jnp.linalg.norm(free.theta))},
                  "projected": {"diverged": bool(boxed.diverged), "on_boundary": bool(boxed.on_boundary),
                                "grad_mapping": float(boxed.grad_mapping)}},
        tolerance="projected-gradient mapping < 1e-8", why="3 pairs all with x·e_1 > 0",
        verdict=verdict(ok))


def _saturated(key, q, n_per_type):
    """Observed pairs x = ±e_j with P(+e_j) = q_j: the model is saturated, θ̂_j fits type j."""
    d = len(q)
    types = jnp.repeat(jnp.arange(d), n_per_type)
    plus = jax.random.uniform(key, types.shape) < jnp.asarray(q)[types]
    x = jnp.where(plus, 1.0, -1.0)[:, None] * jax.nn.one_hot(types, d)
    return PreferenceData(x=x, p=jnp.zeros(types.shape), flipped=jnp.zeros(types.shape, bool),
                          state=types)


def population_minimizers(quick):
    """At large n each loss reaches its population minimiser (implied probabilities, ±0.01)."""
    p, eps, n_per = np.array([0.6, 0.75, 0.9]), 0.2, (100_000 if quick else 400_000)
    q = rdpo.observed_win_prob(p, eps=eps)
    data = _saturated(jax.random.key(2), q, n_per)
    errors = {}
    for loss in ("dpo", "cdpo", "rdpo", "ipo", "ripo"):
        spec = BanditSpec(n=data.x.shape[0], d=3, loss=loss, steps=300)
        inst = make_instance(jax.random.key(0), spec, make_bandit_params(sft_scale=0.0, reward_scale=0.0))
        fit = jax.jit(make_fit(spec))(data, inst, make_bandit_params(eps=eps, sft_scale=0.0,
                                                                    reward_scale=0.0))
        target = rdpo.population_minimizer(loss, p, eps=eps)
        if target.prob is None:  # IPO family: compare margins (their SE is ~2x a probability's)
            errors[loss] = float(np.max(np.abs(np.asarray(fit.theta) - target.margin)) / 2)
        else:
            errors[loss] = float(np.max(np.abs(jax.nn.sigmoid(fit.theta) - target.prob)))
    ok = max(errors.values()) <= 0.01
    return CheckResult(
        id="rdpo/population-minimizers", reference="THEORY §2.2 (population minimisers)",
        claim="on noisy labels DPO's implied probability → q, cDPO's → p + 2ε(1−ε)(1−2p), rDPO's → p; "
              "IPO's margin → (1−2ε)(2p−1), rIPO's → 2p−1",
        predicted={"p": p.tolist(), "q": np.round(q, 4).tolist()},
        measured={k: round(v, 5) for k, v in errors.items()}, tolerance=0.01,
        why=f"{n_per} pairs per type (saturated design): the binomial SE of an implied probability "
            "is ≤ 0.0025, so 0.01 is 4 SE (IPO margins are compared at half scale)",
        verdict=verdict(ok))


def _rate_params(eps, reward_scale, B=8.0, beta=1.0):
    return make_bandit_params(beta=beta, eps=eps, L=1.0, B=B, sft_scale=0.5, reward_scale=reward_scale)


def _errors(spec, params, seeds, n_active=None, instance=None):
    n = spec.n if n_active is None else n_active
    fits, data, inst = run_bandit(spec, params, range(seeds), n_active=n, instance=instance)
    if bool(np.any(np.asarray(fits.diverged))):
        raise RuntimeError(f"a fit diverged inside Θ_B for {spec}, n = {n}")
    return sigma_norm_error(fits, data, inst.theta_star(params.beta), n), fits, data, inst


def rate_in_n(quick):
    """rDPO's error decays as n^{-1/2}; DPO's stops at its bias (plateau)."""
    ns = (1000, 4000, 16000) if quick else (1000, 2000, 4000, 8000, 16000, 32000)
    seeds, beta = (16 if quick else 32), 2.0  # β ≠ 1: θ* = θ_0 + ω*/β is exercised
    out = {}
    for loss in ("rdpo", "dpo"):
        spec = common_spec(quick, loss=loss)
        errs = [_errors(spec, _rate_params(0.2, 1.5, beta=beta), seeds, n)[0] for n in ns]
        out[loss] = (slope(np.repeat(ns, seeds), np.concatenate(errs)), [float(e.mean()) for e in errs])
    (s_r, se_r), means_r = out["rdpo"]
    (s_d, _), means_d = out["dpo"]
    ok = abs(s_r + 0.5) <= Z999 * se_r and s_d > -0.25
    return CheckResult(
        id="rdpo/rate-n", reference="Chowdhury et al. Theorem 4.2 (rate √(d/n)); THEORY §2.3",
        claim="rDPO's estimation error ‖θ̂ − θ*‖_Σ̂ decays with slope −1/2 in n; DPO's plateaus at "
              "its bias",
        predicted={"rDPO slope": -0.5, "DPO": "plateau (slope ≈ 0)"},
        measured={"rDPO slope": round(s_r, 4), "rDPO slope stderr": round(se_r, 4),
                  "DPO slope": round(s_d, 4), "mean error rDPO": np.round(means_r, 4).tolist(),
                  "mean error DPO": np.round(means_d, 4).tolist(), "n": list(ns)},
        tolerance={"rDPO": f"{Z999:.2f} stderr = {Z999 * se_r:.3f}", "DPO slope >": -0.25},
        why=f"linregress of log error on log n over {seeds} seeds per n, ε = 0.2, ‖ω*‖ = 1.5, β = {beta:g} "
            "(θ* = θ_0 + ω*/β); the slope's tolerance is its own 99.9% normal interval",
        verdict=verdict(ok),
        artifacts={"n": np.asarray(ns, float), "error_rdpo": np.asarray(means_r),
                   "error_dpo": np.asarray(means_d)})


def rate_in_d(quick):
    """The squared error grows linearly in d (error ∝ √d) in the weak-preference regime."""
    ds = (2, 4, 8) if quick else (2, 4, 8, 16)
    seeds, n = (400 if quick else 600), 4000
    mse = np.array([np.mean(_errors(common_spec(quick, d=d, n=n), _rate_params(0.2, 0.3), seeds)[0] ** 2)
                    for d in ds])
    s, se = slope(ds, mse)
    return CheckResult(
        id="rdpo/rate-d", reference="Chowdhury et al. Theorem 4.2; THEORY §2.3",
        claim="E‖θ̂ − θ*‖²_Σ̂ grows like d (slope +1 in log d): asymptotically it is "
              "tr(Σ̂H⁻¹VH⁻¹)/n = 4d/(n(1−2ε)²) at p = 1/2",
        predicted=1.0, measured={"slope": round(s, 4), "stderr": round(se, 4),
                                 "n·(1−2ε)²·MSE/(4d)": np.round(mse * n * 0.36 / (4 * np.asarray(ds)), 3).tolist()},
        tolerance=0.15,
        why=f"log of the mean squared error over {seeds} seeds per d (a per-seed log of a χ²_d "
            f"variable would bias small d; the MSE at d = 2 has relative SE √(2/(d·seeds)) = "
            f"{math.sqrt(1 / seeds):.3f}); n = {n}, ε = 0.2, ‖ω*‖ = 0.3",
        verdict=verdict(abs(s - 1.0) <= 0.15))


def _noise_sweep(quick):
    eps_grid = (0.0, 0.1, 0.2, 0.3, 0.4)
    seeds = 128 if quick else 256
    spec = common_spec(quick, n=16000)
    return eps_grid, seeds, [_errors(spec, _rate_params(e, 0.2), seeds)[0] for e in eps_grid]


def noise_factor(quick):
    """Weak preferences: the rDPO error grows by exactly 1/(1−2ε): (1−2ε)·RMSE(ε)/RMSE(0) ≈ 1."""
    eps_grid, seeds, errs = _noise_sweep(quick)
    rmse = np.array([math.sqrt(np.mean(e**2)) for e in errs])
    ratio = rmse / rmse[0] / rdpo.noise_factor(np.asarray(eps_grid))
    tol = Z999 / math.sqrt(seeds * 4)  # 99.9% of a ratio of two RMSEs, each of relative SE 1/√(2·seeds·d)
    ok = bool(np.all(np.abs(ratio - 1) <= tol))
    return CheckResult(
        id="rdpo/noise-factor", reference="Chowdhury et al. (1/(1−2ε) factor); THEORY §2.2",
        claim="for p ≈ 1/2 the error of rDPO at flip rate ε is 1/(1−2ε) times the clean error",
        predicted=[1.0] * len(eps_grid), measured=np.round(ratio, 4).tolist(), tolerance=round(tol, 4),
        why=f"n = 16000, ‖ω*‖ = 0.2, d = 4, {seeds} seeds: each RMSE has relative SE ≈ 1/√(2·seeds·d), "
            f"a ratio of two ≈ 1/√(seeds·d); the tolerance is {Z999:.2f} of those (p ≈ 1/2 holds only "
            "approximately, which biases the ratio up by a few %). The prediction is "
            "`theory.rdpo.noise_factor`", verdict=verdict(ok),
        artifacts={"eps": np.asarray(eps_grid), "rmse": rmse, "scaled_ratio": ratio})


def asymptotic_covariance(quick):
    """Strong preferences: the covariance of √n(θ̂ − θ*) over seeds matches H⁻¹VH⁻¹."""
    seeds, n, eps = (1500 if quick else 3000), 4000, 0.1
    spec = common_spec(quick, n=n)
    beta = 2.0  # β ≠ 1: θ* = θ_0 + ω*/β and the 1/β² of H⁻¹VH⁻¹ are exercised
    params = _rate_params(eps, 3.0, beta=beta)
    _, fits, data, inst = _errors(spec, params, seeds)
    dev = math.sqrt(n) * (np.asarray(fits.theta) - np.asarray(inst.theta_star(beta)))
    empirical = np.cov(dev, rowvar=False)
    pooled_x = np.asarray(data.x[:, :n]).reshape(-1, spec.d)  # p is the clean win probability
    pooled_p = np.asarray(data.p[:, :n]).reshape(-1)          # of the observed winner; H, V use
    flipped = np.asarray(data.flipped[:, :n]).reshape(-1)     # the clean orientation
    clean_x = np.where(flipped[:, None], -pooled_x, pooled_x)
    clean_p = np.where(flipped, 1 - pooled_p, pooled_p)
    theory_cov = rdpo.asymptotic_covariance(clean_x, clean_p, eps=eps, beta=beta)
    rel = float(np.linalg.norm(empirical - theory_cov.covariance) / np.linalg.norm(theory_cov.covariance))
    return CheckResult(
        id="rdpo/asymptotic-covariance", reference="Chowdhury et al. §4; THEORY §2.2",
        claim="√n(θ̂ − θ*) → N(0, H⁻¹VH⁻¹), H = β²E[p(1−p)xxᵀ], V = β²E[q(1−q)xxᵀ]/(1−2ε)²",
        predicted=np.round(theory_cov.covariance, 3).tolist(), measured=np.round(empirical, 3).tolist(),
        tolerance="relative Frobenius error < 0.10",
        why=f"{seeds} seeds at n = {n}, ‖ω*‖ = 3, β = {beta:g}: the sampling error of a {spec.d}×{spec.d} "
            f"covariance is ≈ √((d+1)/seeds) ≈ {math.sqrt((spec.d + 1) / seeds):.3f}; H and V from "
            f"all {seeds * n} pairs. Measured relative error {rel:.4f}", verdict=verdict(rel < 0.10))


def bound_constant(quick):
    """The smallest C making the estimation bound hold is stable across n, d and ε."""
    delta, seeds = 0.1, (32 if quick else 64)
    grid = [(n, 4, 0.2) for n in (1000, 4000, 16000)] + [(4000, d, 0.2) for d in (2, 8)] \
        + [(4000, 4, e) for e in (0.0, 0.1, 0.3)]
    rows = []
    for n, d, eps in grid:
        params = _rate_params(eps, 0.3)
        errs = _errors(common_spec(quick, d=d), params, seeds, n)[0]
        m = rdpo.margin_bound(beta=1.0, L=1.0, B=float(params.B))
        unit = rdpo.estimation_bound(n=n, d=d, eps=eps, beta=1.0, L=1.0, B=float(params.B),
                                     delta=delta, C=1.0)
        rows.append((n, d, eps, float(np.quantile(errs, 1 - delta)) / unit, m))
    c = np.array([r[3] for r in rows])
    drift = {"n": slope([r[0] for r in rows[:3]], c[:3])[0],
             "d": slope([r[1] for r in rows[1:2] + rows[3:5]], c[[1, 3, 4]])[0],
             "1/(1−2ε)": slope([1 / (1 - 2 * r[2]) for r in rows[5:] + rows[1:2]], c[[5, 6, 7, 1]])[0]}
    ok = all(abs(v) <= 0.15 for v in drift.values())
    return CheckResult(
        id="rdpo/bound-constant", reference="THEORY §2.3 (reconstructed shape; C not given)",
        claim="C_min = (1−δ)-quantile of ‖θ̂−θ*‖_Σ̂ · γβ(1−2ε)/√((d+log(1/δ))/n) does not drift with "
              "n, d or ε (it would if a rate or the 1/(1−2ε) factor were wrong)",
        predicted={"log-log drift": 0.0},
        measured={"drift": {k: round(v, 4) for k, v in drift.items()},
                  "C_min range": [float(c.min()), float(c.max())]},
        tolerance=0.15, why=f"δ = {delta}, {seeds} seeds per point, weak preferences; C is never "
        "chosen to make the bound pass — only its stability is checked", verdict=verdict(ok))


def _pi_moment(pi, phi):
    return np.einsum("sa,sad,sae->de", pi, phi, phi) / pi.shape[0]


def _gaps(fits, inst, beta=1.0):
    pi_sft = rdpo.policy(inst.theta0, inst.phi)
    reward = np.asarray(inst.phi @ inst.omega)
    return np.array([rdpo.suboptimality_gap(rdpo.policy(t, inst.phi), pi_sft, reward, beta=beta)
                     for t in np.asarray(fits.theta)])


def suboptimality_gap(quick):
    """The J-gap of the fitted policy decays in n and grows with the coverage constant κ."""
    seeds, ns = (16 if quick else 32), (1000, 4000, 16000)
    spec = common_spec(quick)
    params = _rate_params(0.2, 1.5)
    gaps = [_gaps(_errors(spec, params, seeds, n)[1], make_instance(jax.random.key(0), spec, params))
            for n in ns]
    s_n, se_n = slope(np.repeat(ns, seeds), np.concatenate(gaps))
    # Coverage: keep π* = π_{θ*} fixed and move π_sft away from it along u (ω* = β(θ* − θ_0)).
    base = make_instance(jax.random.key(0), spec, params)
    theta_star = base.theta_star(1.0)
    u = jnp.asarray(np.linalg.qr(np.column_stack([np.asarray(theta_star), np.eye(spec.d)]))[0][:, 1])
    kappas, kgaps = [], []
    for shift in (0.0, 1.0, 2.0, 3.0):
        theta0 = shift * u
        inst = base._replace(theta0=theta0, omega=theta_star - theta0)
        fits = _errors(spec, params, seeds, 4000, instance=inst)[1]
        phi = np.asarray(inst.phi)
        kappas.append(rdpo.coverage_constant(_pi_moment(rdpo.policy(theta_star, phi), phi),
                                             _pi_moment(rdpo.policy(theta0, phi), phi)))
        kgaps.append(float(np.mean(_gaps(fits, inst))))
    k_fit = stats.linregress(np.log(kappas), np.log(kgaps))
    ok = s_n < -0.5 and k_fit.slope - 3 * k_fit.stderr > 0
    return [
        CheckResult(
            id="rdpo/suboptimality-gap", reference="Chowdhury et al. Theorem 4.3; THEORY §2.3",
            claim="the J-gap J(π*) − J(π_θ̂) decays at least as fast as the bound's n^{-1/2} and "
                  "grows with the coverage constant κ of π* against π_sft",
            predicted={"n slope ≤": -0.5, "κ": "increasing"},
            measured={"n slope": round(s_n, 3), "κ": np.round(kappas, 2).tolist(),
                      "mean gap per κ": np.round(kgaps, 5).tolist(),
                      "log-log κ slope": round(float(k_fit.slope), 3)},
            tolerance="n slope < −0.5; κ slope > 3 stderr",
            why=f"{seeds} seeds, ε = 0.2; κ varied by moving θ_0 away from a fixed θ* (π* fixed, "
                "π_sft covers it worse)", verdict=verdict(ok)),
        CheckResult(
            id="rdpo/gap-rate", reference="THEORY §2.3 (sub-optimality O(√(d/n)/(1−2ε)))",
            claim="the J-gap decays like 1/n, not like the bound's n^{-1/2}: J(π*) − J(π) = "
                  "β E_s KL(π‖π*) is quadratic in θ̂ − θ* (so the bound is loose by √n at the optimum)",
            predicted=-1.0, measured={"n slope": round(s_n, 3), "stderr": round(se_n, 3)},
            tolerance=f"{Z999:.2f} stderr", why="the quadratic expansion gives slope −1 exactly as "
            "n → ∞; the slope's 99.9% normal interval over seeds", verdict=verdict(abs(s_n + 1) <= Z999 * se_n)),
    ]


def _rdpo_hessians(x, thetas, theta0s, *, beta, eps):
    """(P, d, d) Hessians in θ of the empirical rDPO loss mean_i ℓ̂_ε(β(θ − θ_0)ᵀx_i) by autodiff of
    `dpolab.theory.losses.rdpo`. x: (P, n, d) pairs; thetas, theta0s: (P, d)."""
    def loss(xp, t, t0):
        return jnp.mean(losses.rdpo(beta * (xp @ (t - t0)), eps))

    return np.asarray(jax.jit(jax.vmap(jax.hessian(loss, argnums=1)))(
        jnp.asarray(x), jnp.asarray(thetas), jnp.asarray(theta0s)))


def _curvature_ratio(hess, x, beta):
    """(P,) smallest generalised eigenvalue of (H_p, β²Σ̂_p), Σ̂ = XᵀX/n, and (P,) its float64 error
    bound: the Cholesky reduction L⁻¹HL⁻ᵀ is backward stable to ~d·ε·κ(Σ̂) relative to ‖H‖/‖β²Σ̂‖."""
    sigma = beta**2 * np.einsum("pnd,pne->pde", x, x) / x.shape[1]
    chol_inv = np.linalg.inv(np.linalg.cholesky(sigma))
    ratio = np.linalg.eigvalsh(chol_inv @ hess @ np.swapaxes(chol_inv, 1, 2))[:, 0]
    d, fp = x.shape[2], np.finfo(np.float64).eps
    scale = np.linalg.norm(hess, 2, axis=(1, 2)) / np.linalg.norm(sigma, 2, axis=(1, 2))
    return ratio, 8 * d * fp * np.linalg.cond(sigma) * np.maximum(scale, ratio)


def _ball(rng, k, d, radius, *, surface):
    v = rng.normal(size=(k, d))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return radius * v * (1.0 if surface else rng.random((k, 1)) ** (1 / d))


def gamma_curvature(quick):
    """γ = σ(m)σ(−m), m = 4βLB, is the sharp floor of the rDPO loss's curvature on Θ_B."""
    beta, L, B, eps, n = 0.5, 1.0, 2.0, 0.2, 2000  # m = 4: γ = 1/(2 + e^{−4} + e^4) ≈ 0.0177
    m = rdpo.margin_bound(beta=beta, L=L, B=B)
    gam = float(rdpo.gamma(margin_bound=m))
    rng = np.random.default_rng(3)
    k, d = (64 if quick else 256), common_spec(quick).d
    # (a) fitted rDPO on the bandit (‖φ‖ = L, ‖θ_0‖ ≤ B, θ̂ projected onto Θ_B): one point per seed
    params = make_bandit_params(beta=beta, eps=eps, L=L, B=B, sft_scale=1.0, reward_scale=0.5)
    # 16/32 seeds: the program rdpo/rate-n compiled (a seed count is part of the compiled shape)
    fits, data, inst = run_bandit(common_spec(quick), params, range(16 if quick else 32), n_active=n)
    x_fit = np.asarray(data.x)[:, :n]
    # (b) random θ, θ_0 in Θ_B on the first seed's pairs: inside, on the sphere, and antipodal
    # (θ_0 = −θ on the sphere: the largest ‖θ − θ_0‖ = 2B)
    anti = _ball(rng, k, d, B, surface=True)
    thetas = np.concatenate([_ball(rng, k, d, B, surface=False), _ball(rng, k, d, B, surface=True), anti])
    theta0s = np.concatenate([_ball(rng, k, d, B, surface=False), _ball(rng, k, d, B, surface=True), -anti])
    # (c) the extremal configuration: θ = B e_1 = −θ_0 and pairs x = ±2L e_1 (φ = ±L e_1) reach
    # |z| = m exactly; the other pairs lie in e_1's complement (z = 0), so λ_min = γ is attained
    on_axis = np.outer(rng.choice([-1.0, 1.0], n // 10) * 2 * L, np.eye(d)[0])
    off = _ball(rng, n - n // 10, d - 1, L, surface=True) - _ball(rng, n - n // 10, d - 1, L, surface=True)
    x_ext = np.concatenate([on_axis, np.concatenate([np.zeros((len(off), 1)), off], axis=1)])
    e1 = B * np.eye(d)[0]
    x_all = np.concatenate([x_fit, np.broadcast_to(x_fit[0], (len(thetas),) + x_fit.shape[1:]), x_ext[None]])
    th_all = np.concatenate([np.asarray(fits.theta), thetas, e1[None]])
    th0_all = np.concatenate([np.repeat(np.asarray(inst.theta0)[None], len(x_fit), axis=0), theta0s, -e1[None]])
    ratio, tol = _curvature_ratio(_rdpo_hessians(x_all, th_all, th0_all, beta=beta, eps=eps), x_all, beta)
    ratio, tol = ratio / gam, tol / gam
    f, e = len(x_fit), len(ratio) - 1
    lower_ok = bool(np.all(ratio[:e] >= 1 - tol[:e]))
    tight = abs(ratio[e] - 1) <= tol[e]
    return CheckResult(
        id="rdpo/gamma-curvature", reference="THEORY §2.3 (γ = 1/(2 + e^{−m} + e^m), m = 4βLB)",
        claim="for θ, θ_0 ∈ Θ_B and ‖φ‖ ≤ L the Hessian of the empirical rDPO loss is ⪰ γβ²Σ̂ "
              "(smallest generalised eigenvalue of (∇²L̂, β²Σ̂) ≥ γ) at fitted and random in-ball θ, "
              "and γ is attained (θ = −θ_0 on the sphere, pairs ±2L along it: |z| = m)",
        predicted={"min λ/γ ≥": 1.0, "extremal λ/γ": 1.0, "γ": gam, "m": float(m)},
        measured={"min λ/γ (fitted)": round(float(ratio[:f].min()), 4),
                  "min λ/γ (random in-ball)": round(float(ratio[f:e].min()), 4),
                  "extremal λ/γ": float(ratio[e])},
        tolerance={"relative": float(tol.max())},
        why=f"float64, β = {beta}, L = {L}, B = {B}, ε = {eps}, n = {n} pairs; {f} fitted rDPO optima and "
            f"{e - f} random points inside, on and antipodal on the sphere; the Hessian by autodiff of the "
            "rDPO loss, the eigenvalue by Cholesky reduction; the tolerance is that reduction's rounding "
            "bound 8·d·ε·κ(Σ̂)·max(‖H‖/‖β²Σ̂‖, λ)",
        verdict=verdict(lower_ok and tight))


def ridge_constant(quick):
    """What is certain about λ for the Θ_B-constrained fit: the λ-part of the error in
    ‖·‖_{Σ̂+λI} and the smallest C′ that makes the bound's C′√λ·B hold."""
    ns = (1000, 4000, 16000)
    seeds, beta, delta = (16 if quick else 32), 2.0, 0.1
    params = _rate_params(0.2, 1.5, beta=beta)
    B = float(params.B)
    spec = common_spec(quick)
    identity, c_min, lo, hi, worst, eucl = 0.0, {}, {}, {}, 0.0, []
    for n in ns:
        a, fits, data, inst = _errors(spec, params, seeds, n)
        diff = np.asarray(fits.theta) - np.asarray(inst.theta_star(beta))
        b = np.linalg.norm(diff, axis=1)  # Euclidean ‖θ̂ − θ*‖ ≤ 2B (both in Θ_B)
        x = np.asarray(data.x)[:, :n]
        s_max = float(np.linalg.eigvalsh(np.einsum("snd,sne->sde", x, x) / n)[:, -1].max())
        eucl.append(b)
        for scale in (0.1, 1.0, 10.0, 100.0, 1000.0):
            lam = scale * s_max
            err = sigma_norm_error(fits, data, inst.theta_star(beta), n, lam=lam)
            identity = max(identity, float(np.max(np.abs(err**2 - a**2 - lam * b**2) / err**2)))
            term = float(rdpo.ridge_term(lam=lam, B=B))  # the bound's λ-part at C′ = 1
            excess = np.quantile(err, 1 - delta) - np.quantile(a, 1 - delta)
            key = (n, scale)
            c_min[key] = float(excess / term)
            # per seed √λ·b ≤ ‖Δ‖_{Σ̂+λI} ≤ √λ·b·(1 + s_max/(2λ)); quantiles keep the order
            q_a, q_b = np.quantile(a, 1 - delta), np.quantile(b, 1 - delta)
            lo[key] = float((math.sqrt(lam) * q_b - q_a) / (math.sqrt(lam) * B))
            hi[key] = float((math.sqrt(lam) * q_b * (1 + s_max / (2 * lam)) - q_a) / (math.sqrt(lam) * B))
            worst = max(worst, c_min[key])
    rounding = 64 * np.finfo(np.float64).eps
    inside = all(lo[k] - rounding <= c_min[k] <= hi[k] + rounding for k in c_min)
    s_b, se_b = slope(np.repeat(ns, seeds), np.concatenate(eucl))
    ok = identity <= rounding and inside and worst <= 2.0 and abs(s_b + 0.5) <= Z999 * se_b
    show = {f"n={n}": [round(c_min[(n, s)], 4) for s in (0.1, 1.0, 10.0, 100.0, 1000.0)] for n in ns}
    return CheckResult(
        id="rdpo/ridge-term", reference="THEORY §2.3 (the C′√λ·B term; reconstructed shape, C′ not given)",
        claim="for the Θ_B-constrained fit λ enters only through the norm: ‖Δ‖²_{Σ̂+λI} − ‖Δ‖²_Σ̂ = λ‖Δ‖² "
              "exactly, so with C fitted at λ = 0 the smallest C′ making the bound's C′√λ·B hold is "
              "Q_{1−δ}(‖Δ‖)/B up to O(λ_max(Σ̂)/λ) and Q(‖Δ‖_Σ̂)/√λ (stable across λ ≫ λ_max(Σ̂)), "
              "never above 2 (‖Δ‖ ≤ 2B), and it shrinks like n^{−1/2} (the term is worst-case slack)",
        predicted={"identity": 0.0, "C′_min band": "[(√λQ(b) − Q(a))/(√λB), (√λQ(b)(1 + s/2λ) − Q(a))/(√λB)]",
                   "C′_min ≤": 2.0, "Euclidean error n slope": -0.5},
        measured={"identity (relative)": identity, "C′_min at λ/λ_max(Σ̂) = 0.1…1000": show,
                  "in band": inside, "max C′_min": round(worst, 4),
                  "Euclidean error n slope": round(s_b, 4), "stderr": round(se_b, 4)},
        tolerance={"identity and band": rounding, "slope": f"{Z999:.2f} stderr = {Z999 * se_b:.3f}"},
        why=f"δ = {delta}, {seeds} seeds per n, ε = 0.2, ‖ω*‖ = 1.5, β = {beta:g}, B = {B:g}; the λ-term "
            "is `theory.rdpo.ridge_term` (the λ-part of `estimation_bound`) at C′ = 1; the band follows from "
            "√λ‖Δ‖ ≤ ‖Δ‖_{Σ̂+λI} ≤ √λ‖Δ‖(1 + λ_max(Σ̂)/(2λ)) per seed (exact, so only rounding is "
            "allowed); the package's fit is the constrained MLE (no ridge penalty), so no bias in λ "
            "exists to measure", verdict=verdict(ok))


#: {check id: fn(quick) -> CheckResult | list[CheckResult]}, in run order.
CHECKS = {
    "rdpo/identities": identities,
    "rdpo/unbiased-monte-carlo": unbiased_monte_carlo,
    "rdpo/unboundedness": unboundedness,
    "rdpo/population-minimizers": population_minimizers,
    "rdpo/rate-n": rate_in_n,
    "rdpo/rate-d": rate_in_d,
    "rdpo/noise-factor": noise_factor,
    "rdpo/asymptotic-covariance": asymptotic_covariance,
    "rdpo/bound-constant": bound_constant,
    "rdpo/gamma-curvature": gamma_curvature,
    "rdpo/ridge-term": ridge_constant,
    "rdpo/suboptimality-gap": suboptimality_gap,
}
