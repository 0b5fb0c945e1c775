"""The mutant table: single-point changes to formulas and simulators that the checks must catch.

Each entry breaks one thing the package claims (a constant of a theorem, a sign of a gradient, a
normaliser of a loss, a sampling rule) in a temporary copy of the source (`dpolab.selftest`).
`checks` are registered checks (keys of a `CHECKS` table, run in quick mode) of which at least one
must return `fail`; `tests` are pytest node ids of which at least one must fail. A check or test
that stops killing its mutant has lost its power: `tests/test_mutants.py` makes that a red build.

Adding a formula or a simulator means adding its mutant here; a new check that is meant to guard
something names the mutant that proves it can fail.
"""
from __future__ import annotations

from typing import NamedTuple


class Mutant(NamedTuple):
    name: str
    path: str  # file in the checkout, e.g. "theory/im_li.py"
    old: str  # exact text, present exactly once
    new: str
    why: str  # what the change breaks
    checks: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()


_V = "tests/test_verify.py"
_IL = "tests/test_im_li.py"
_L = "tests/test_losses.py"
_S = "tests/test_sims.py"
_TP = "tests/test_train_paths.py"
_B = "tests/test_bandit.py"
_R = "tests/test_rdpo_theory.py"
_M = "tests/test_mixture_theory.py"
_K = "tests/test_ranking_theory.py"
_BT = "test_labels_follow_bradley_terry_and_the_optimum_is_theta0_plus_omega_over_beta"
_HELD = "test_held_out_margins_time_axis_and_the_recursion_in_plain_numpy"

M = Mutant
_ENV = "R_LOWER, R_LOWER_DELTA, R_UPPER = 1.0 / 8.0, 1.0 / 16.0, 5.0"
MUTANTS: tuple[Mutant, ...] = (
    # ---- theory/im_li.py: Theorem 4.2/4.3 closed forms and conditions -------------------------
    M("im_li.r_lower-8-to-4", "theory/im_li.py", _ENV, "R_LOWER, R_LOWER_DELTA, R_UPPER = 1.0 / 4.0, 1.0 / 16.0, 5.0",
      "Theorem 4.2's lower envelope with 1/4 for 1/8", ("im-li/thm4.2-sandwich",),
      (_IL + "::test_tau_1_and_envelopes_golden",)),
    M("im_li.r_lower-delta-16-to-12", "theory/im_li.py", _ENV,
      "R_LOWER, R_LOWER_DELTA, R_UPPER = 1.0 / 8.0, 1.0 / 12.0, 5.0",
      "Appendix C's lower envelope with 1/12 for 1/16", ("im-li/delta-orthogonal-window",),
      (_IL + "::test_tau_1_and_envelopes_golden",)),
    M("im_li.r_upper-5-to-3", "theory/im_li.py", _ENV, "R_LOWER, R_LOWER_DELTA, R_UPPER = 1.0 / 8.0, 1.0 / 16.0, 3.0",
      "Theorem 4.2's upper envelope with 3 for 5", ("im-li/thm4.2-sandwich", "im-li/sweep-metrics"),
      (_IL + "::test_tau_1_and_envelopes_golden",)),
    M("im_li.tau_1-5-to-4", "theory/im_li.py", "return K * tau * LOG3 / (5.0 * beta**2)",
      "return K * tau * LOG3 / (4.0 * beta**2)", "τ_1 25% late", ("im-li/thm4.2-window",),
      (_IL + "::test_tau_1_and_envelopes_golden",)),
    M("im_li.window-40-to-20", "theory/im_li.py", "MARGIN_WINDOW = (LOG3 / 40.0, LOG3)",
      "MARGIN_WINDOW = (LOG3 / 20.0, LOG3)", "the τ_1 window's lower end doubled",
      ("im-li/thm4.2-window",), (_IL + "::test_tau_1_and_envelopes_golden",)),
    M("im_li.bound_simplified-2-to-3", "theory/im_li.py", "return (2.0 * K * Q**2 * np.exp(-Q / 45.0))[()]",
      "return (3.0 * K * Q**2 * np.exp(-Q / 45.0))[()]", "Theorem 4.3's bound 3KQ²e^{−Q/45}",
      ("im-li/q-star-table",), (_IL + "::test_bound_simplified_golden_and_q_star_10",)),
    M("im_li.bound_refined-proxy", "theory/im_li.py", "proxy = _proxy_const(lb, Z, delta_orthogonal) + d * vs**2",
      "proxy = _proxy_const(lb, Z, delta_orthogonal) + 2 * d * vs**2",
      "the refined bound's variance proxy with 2dv² for dv² (a bound reconstructed from the appendix: "
      "no simulation measures its constant, so only a test holds it)", (),
      (_IL + "::test_q_star_matches_brute_force",)),
    M("im_li.dpo_noise_free-rate", "theory/im_li.py", "return 2.0 * beta**2 * t / (K * tau)",
      "return 2.0 * beta**2 * t / (K * tau) * 1.001", "noise-free margins 0.1% fast",
      ("im-li/noise-free-closed-form",), (_IL + "::test_dpo_noise_free_solves_its_equation",)),
    M("im_li.ipo_noise_free-4-to-2", "theory/im_li.py", "return (-np.expm1(-2.0 * _rate(t, K, beta, tau)))[()]",
      "return (-np.expm1(-1.0 * _rate(t, K, beta, tau)))[()]", "noise-free IPO at half its rate",
      ("im-li/ipo-closed-form",), (_IL + "::test_ipo_slic_golden_points",)),
    M("im_li.ipo_linear_exact-2-to-1", "theory/im_li.py",
      "scipy.linalg.expm(-2.0 * beta**2 * C * s / (N * tau))",
      "scipy.linalg.expm(-1.0 * beta**2 * C * s / (N * tau))", "the IPO matrix exponential at half rate",
      ("im-li/ipo-closed-form",), (_IL + "::test_ipo_linear_exact_equals_noise_free_closed_form",)),
    M("im_li.slic-cap", "theory/im_li.py", "return np.minimum(1.0, _rate(t, K, beta, tau))[()]",
      "return np.minimum(1.1, _rate(t, K, beta, tau))[()]", "SLiC's margin cap 1.1 for 1",
      ("im-li/slic-closed-form",), (_IL + "::test_ipo_slic_golden_points",)),
    M("im_li.conditions-d-4Q", "theory/im_li.py", "le(d, 5 * Q))", "le(d, 4 * Q))",
      "the condition d ≤ 5Q tested as d ≤ 4Q (the theorem's own default d = 5Q is refused)",
      ("im-li/thm4.2-sandwich",), (_IL + "::test_conditions_on_theorem_defaults_hold_and_violations_are_reported",)),
    M("im_li.default_v-32-to-16", "theory/im_li.py", "return (1.0 / (32.0 * np.sqrt(_f64(Q))))[()]",
      "return (1.0 / (16.0 * np.sqrt(_f64(Q))))[()]", "the theorem's noise level doubled (conditions broken)",
      ("im-li/thm4.2-sandwich",), (_IL + "::test_conditions_on_theorem_defaults_hold_and_violations_are_reported",)),
    # ---- theory/im_li_dynamics.py, theory/extensions.py --------------------------------------------
    M("dynamics.cross_terms-sign", "theory/im_li_dynamics.py",
      "factor = eq(yw_a, yw_b) - eq(yw_a, yl_b) - eq(yl_a, yw_b) + eq(yl_a, yl_b)",
      "factor = eq(yw_a, yw_b) - eq(yw_a, yl_b) + eq(yl_a, yw_b) + eq(yl_a, yl_b)",
      "a sign of the token factor in Lemma 4.1's C", ("im-li/recursion-exact",),
      (_IL + "::test_dpo_noise_free_matches_scalar_ode_and_full_lemma_4_1_system",)),
    M("dynamics.multi_token-beta", "theory/im_li_dynamics.py", "vel = beta**2 / N * jnp.einsum",
      "vel = beta / N * jnp.einsum", "the multi-token velocity with β for β²",
      ("im-li/multi-token-formula",), (_IL + "::test_multi_token_reward_velocity_matches_autodiff",)),
    M("extensions.recursion-gain", "theory/extensions.py", "        r = r + h * drift",
      "        r = r + 1.05 * h * drift", "the noise-free GD recursion 5% fast",
      ("audit/q6-after-tau1",),
      ("tests/test_audit_dynamics.py::test_noise_free_recursion_converges_to_the_flow_at_rate_one",)),
    # ---- theory/losses.py ---------------------------------------------------------------------------
    M("losses.rdpo_weight-sign", "theory/losses.py", "return dpo_weight(z) + eps / (1.0 - 2.0 * eps)",
      "return dpo_weight(z) - eps / (1.0 - 2.0 * eps)", "rDPO's weight with cDPO's sign",
      ("rdpo/identities", "im-li/fast-vs-autodiff", "audit/q9-flips"), (_L + "::test_golden_values",)),
    M("losses.cdpo_weight-eps", "theory/losses.py", "return dpo_weight(z) - eps\n",
      "return dpo_weight(z) - 2 * eps\n", "cDPO's weight shifted by 2ε", ("rdpo/identities",),
      (_L + "::test_golden_values",)),
    M("losses.debias-denominator", "theory/losses.py",
      "return ((1.0 - eps) * loss_fn(z, 0.0) - eps * loss_fn(-z, 0.0)) / (1.0 - 2.0 * eps)",
      "return ((1.0 - eps) * loss_fn(z, 0.0) - eps * loss_fn(-z, 0.0)) / (1.0 - eps)",
      "the de-biased loss divided by 1−ε", ("rdpo/identities", "rdpo/unbiased-monte-carlo"),
      (_L + "::test_golden_values",)),
    M("losses.ipo_weight-2-to-1", "theory/losses.py", "return 2.0 * (1.0 - _as_float(z))",
      "return 1.0 * (1.0 - _as_float(z))", "IPO's weight halved (not −f′)", ("im-li/ipo-closed-form",),
      (_L + "::test_golden_values",)),
    M("losses.slic_weight-kink", "theory/losses.py", "return (z < 1.0).astype(z.dtype)",
      "return (z < 1.2).astype(z.dtype)", "SLiC keeps pushing past its margin 1",
      ("im-li/slic-closed-form",), (_L + "::test_golden_values",)),
    M("losses.logistic-sign", "theory/losses.py", "return jax.nn.softplus(-_as_float(z))",
      "return jax.nn.softplus(_as_float(z))", "ℓ(z) = −log σ(−z)",
      ("im-li/fast-vs-autodiff", "im-li/thm4.2-window"), (_L + "::test_golden_values",)),
    # ---- sims/train.py: the fast exact trainer ----------------------------------------------------
    M("train.gradient-normaliser", "sims/train.py", "grad_a = -(beta / n) * s",
      "grad_a = -(beta / (n + 1)) * s", "the gradient averaged over N + 1",
      ("im-li/recursion-exact", "audit/q6-after-tau1", "audit/q8-unbalanced"),
      (_S + "::test_one_gd_step_golden_in_plain_numpy",)),
    M("train.gradient-beta", "sims/train.py", "grad_a = -(beta / n) * s",
      "grad_a = -(1.0 / n) * s", "the gradient without β",
      ("im-li/fast-vs-autodiff", "im-li/time-collapse", "audit/q7-beta"),
      (_S + "::test_one_gd_step_golden_in_plain_numpy",)),
    M("train.margin-sign", "sims/train.py",
      "return beta * (_take(logits, data.chosen) - _take(logits, data.rejected))",
      "return beta * (_take(logits, 2 * data.pair) - _take(logits, 2 * data.pair + 1))",
      "margins ignore which response won",
      ("im-li/fast-vs-autodiff",), (_S + "::test_one_gd_step_golden_in_plain_numpy",)),
    M("train.log_probs-partition", "sims/train.py",
      "lse = jax.nn.logsumexp(jnp.concatenate([data.ref_lse_rest[:, None], logits], axis=1), axis=1)",
      "lse = jax.nn.logsumexp(logits, axis=1)", "log-probs normalised over the used tokens only",
      ("im-li/fast-vs-autodiff",), (_S + "::test_log_probs_equal_a_full_vocabulary_softmax_in_numpy",)),
    M("train.log_probs-swap", "sims/train.py", "return take(data.chosen) - lse, take(data.rejected) - lse",
      "return take(data.rejected) - lse, take(data.chosen) - lse", "log π(y_w) and log π(y_l) swapped",
      ("im-li/no-flip-failure",), (_S + "::test_log_probs_equal_a_full_vocabulary_softmax_in_numpy",)),
    M("train.time-axis", "sims/train.py", "t = params.eta * train.stride * jnp.arange(train.n_checkpoints)",
      "t = params.eta * jnp.arange(train.n_checkpoints)", "checkpoint times ignore the stride",
      ("im-li/gd-to-flow",), (_S + "::" + _HELD,)),
    M("train.held-out-margins", "sims/train.py", "rt, lt, acct = summary(test, delta_w, params)",
      "rt, lt, acct = summary(data, delta_w, params)", "held-out margins measured on the training set",
      ("im-li/test-tracks-train", "im-li/fast-vs-autodiff"), (_S + "::" + _HELD,)),
    M("train.gram-scale", "sims/train.py", "scale = params.eta * params.beta**2 / n",
      "scale = params.eta * params.beta / n", "the Gram-block recursion with β for β²",
      ("im-li/recursion-exact",), (_TP + "::test_gram_and_feature_paths_agree_with_each_other_and_with_autodiff",)),
    M("train.gram-factor", "sims/blocks.py", "return 2.0 * sign_blocks[:, :, None] * sign_blocks[:, None, :] * gram",
      "return 1.0 * sign_blocks[:, :, None] * sign_blocks[:, None, :] * gram",
      "the per-pair cross terms without the preference-sharing factor 2",
      ("im-li/recursion-exact",), (_TP + "::test_gram_and_feature_paths_agree_with_each_other_and_with_autodiff",)),
    M("train.block-margin-sign", "sims/train.py",
      "return beta * sign_blocks * jnp.einsum(\"pid,pd->pi\", g_blocks, pair_difference(delta_w))",
      "return beta * jnp.einsum(\"pid,pd->pi\", g_blocks, pair_difference(delta_w))",
      "the feature path's step margins ignore which response won",
      ("im-li/fast-vs-autodiff", "im-li/recursion-exact"),
      (_TP + "::test_gram_and_feature_paths_agree_with_each_other_and_with_autodiff",)),
    M("train.block-padding", "sims/blocks.py", "return jnp.where(mask, x[jnp.asarray(blocks.index)], 0)",
      "return x[jnp.asarray(blocks.index)]", "padded block slots repeat sample 0 (counted twice)",
      ("im-li/recursion-exact",), (_TP + "::test_gram_and_feature_paths_agree_with_each_other_and_with_autodiff",)),
    # ---- sims/data.py: the synthetic mixture ------------------------------------------------------
    M("data.chosen-rejected-swap", "sims/data.py", "return 2 * self.pair + (self.sign < 0)",
      "return 2 * self.pair + (self.sign > 0)", "y_w and y_l are the same token",
      ("im-li/fast-vs-autodiff",), (_S + "::test_one_gd_step_golden_in_plain_numpy",)),
    M("data.cluster-sign", "sims/data.py", "sign += [1] * q + [-1] * q", "sign += [1] * q + [1] * q",
      "both clusters of a value prefer the same response (one cluster, not two)",
      ("im-li/noise-free-closed-form",), (_S + "::test_cluster_means_and_concepts",)),
    M("data.noise-scale", "sims/data.py", "return mean + params.v * noise",
      "return mean + 4 * params.v * noise", "cluster noise 4v for v",
      ("im-li/risk-functional",), (_S + "::test_cluster_means_and_concepts",)),
    M("data.delta-cos", "sims/data.py", "cos = 1.0 - delta**2 / 8.0", "cos = 1.0 - delta / 8.0",
      "Appendix C's defect δ/8 for δ²/8", ("im-li/delta-orthogonal-window",),
      (_S + "::test_cluster_means_and_concepts",)),
    M("data.flip-on-test", "sims/data.py", "label = jnp.where(flipped & (jnp.asarray(split) == 0), -label, label)",
      "label = jnp.where(flipped, -label, label)", "held-out and fresh labels flipped too",
      ("im-li/risk-functional",), (_S + "::test_flips_touch_only_the_training_split",)),
    # ---- sims/reference.py: the independent references --------------------------------------------
    M("reference.recursion-scale", "sims/reference.py", "scale = eta * beta**2 / n",
      "scale = eta * beta / n", "the reference recursion with β for β²",
      ("im-li/recursion-exact",), (_S + "::" + _HELD,)),
    M("reference.cross-terms-orientation", "sims/reference.py",
      "return cross_terms(a.g, a.chosen, a.rejected, b.g, b.chosen, b.rejected)",
      "return cross_terms(a.g, a.chosen, a.rejected, b.g, b.rejected, b.chosen)",
      "cross terms against the other sample's preference reversed",
      ("im-li/recursion-exact", "audit/q2-unseen"), (_S + "::" + _HELD,)),
    M("reference.autodiff-margin", "sims/reference.py",
      "return beta * ((pick(logp, yw) - pick(ref_, yw)) - (pick(logp, yl) - pick(ref_, yl)))",
      "return beta * (pick(logp, yw) - pick(logp, yl))", "the reference's margin forgets π_0 (depends on W_0)",
      ("im-li/margin-identity",), (_S + "::test_autodiff_reference_margins_are_log_ratio_differences",)),
    M("reference.flow-rate", "sims/reference.py",
      "return (beta**2 / (n * tau)) * (c @ np.asarray(weight(r, eps)))",
      "return (beta**2 / (n * tau)) * (c @ np.asarray(weight(r, eps))) * 1.01", "the flow 1% fast",
      ("im-li/gd-to-flow",), (_S + "::test_gradient_flow_equals_the_ipo_matrix_exponential",)),
    # ---- sims/risk.py ------------------------------------------------------------------------------
    M("risk.error-sign", "sims/risk.py", "return jnp.sum(reward_margins(fresh, delta_w, params.beta) <= 0)",
      "return jnp.sum(reward_margins(fresh, delta_w, params.beta) >= 0)", "risk counts correct rankings",
      ("im-li/thm4.3-risk", "im-li/risk-functional"),
      (_V + "::test_risk_check_fails_when_risk_is_measured_with_the_wrong_sign",)),
    M("risk.count-n", "sims/risk.py", "n = batches * 2 * spec.K * per_cluster",
      "n = batches * spec.K * per_cluster", "the risk's sample count halved (risk doubled)",
      ("im-li/risk-functional",), (_S + "::test_monte_carlo_risk_equals_the_exact_gaussian_risk",)),
    M("risk.clopper-pearson-level", "sims/risk.py", "alpha = 1 - level", "alpha = 2 * (1 - level)",
      "a 90% interval reported as 95% (a width no simulation here can tell from the right one)", (),
      (_S + "::test_clopper_pearson_golden",)),
    # ---- theory/rdpo.py and sims/bandit.py ---------------------------------------------------------
    M("rdpo.noise_factor", "theory/rdpo.py", "return (1.0 / (1.0 - 2.0 * validate_eps(eps)))[()]",
      "return (1.0 / (1.0 - validate_eps(eps)))[()]", "the noise factor 1/(1−ε) for 1/(1−2ε)",
      ("rdpo/noise-factor",), (_R + "::test_gamma_margin_rate_golden",)),
    M("rdpo.observed_win_prob", "theory/rdpo.py", "return (p + eps * (1.0 - 2.0 * p))[()]",
      "return (p + eps * (1.0 - p))[()]", "flipped win probability p + ε(1−p)",
      ("rdpo/population-minimizers",), (_R + "::test_observed_win_prob_golden",)),
    M("rdpo.score_variance", "theory/rdpo.py", "return (q * (1.0 - q) / (1.0 - 2.0 * _f64(eps)) ** 2)[()]",
      "return (q * (1.0 - q) / (1.0 - 2.0 * _f64(eps)))[()]", "Var(w) of rDPO without the square",
      ("rdpo/asymptotic-covariance",), (_R + "::test_score_variance_golden",)),
    M("rdpo.rate-d", "theory/rdpo.py", "return np.sqrt((_f64(d) + np.log(1.0 / _f64(delta))) / _f64(n))[()]",
      "return np.sqrt((_f64(d) ** 2 + np.log(1.0 / _f64(delta))) / _f64(n))[()]",
      "the bound's rate √(d²/n) for √(d/n)", ("rdpo/bound-constant",), (_R + "::test_gamma_margin_rate_golden",)),
    M("rdpo.optimal-policy-beta", "theory/rdpo.py", "np.log(_f64(pi_sft)) + _f64(reward) / beta",
      "np.log(_f64(pi_sft)) + 2 * _f64(reward) / beta", "π* ∝ π_sft·exp(2r/β)",
      ("rdpo/suboptimality-gap",), (_R + "::test_policies_and_objective_golden",)),
    M("bandit.theta_star-beta", "sims/bandit.py", "return self.theta0 + self.omega / beta",
      "return self.theta0 + self.omega", "θ* = θ_0 + ω* (β dropped)", ("rdpo/rate-n",), (_B + "::" + _BT,)),
    M("bandit.flip-rate", "sims/bandit.py", "flipped = jax.random.uniform(k_f, (spec.n,)) < params.eps",
      "flipped = jax.random.uniform(k_f, (spec.n,)) < params.eps / 2", "labels flipped at ε/2",
      ("rdpo/noise-factor",), (_B + "::test_instance_and_pairs_respect_the_model",)),
    M("bandit.margin-reference", "sims/bandit.py", "margins = lambda theta: beta * (x @ (theta - inst.theta0))",
      "margins = lambda theta: beta * (x @ theta)", "the fit's margin forgets the reference θ_0",
      ("rdpo/rate-n",), (_B + "::test_fit_reaches_the_stationary_point",)),
    M("bandit.bt-label", "sims/bandit.py", "p_a = jax.nn.sigmoid(diff @ inst.omega)",
      "p_a = jax.nn.sigmoid(2 * diff @ inst.omega)", "Bradley–Terry at twice the reward",
      ("rdpo/rate-n",), (_B + "::" + _BT,)),
    M("bandit.projection", "sims/bandit.py", "return theta * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-300))",
      "return theta", "the fit is never projected onto the ball", ("rdpo/unboundedness",), (_B + "::test_projection",)),
    M("bandit.pair-difference", "sims/bandit.py", "    diff = phi_a - phi_b\n",
      "    diff = (phi_a - phi_b).at[:, 0].set(0.0)\n", "pairs lose one feature coordinate (d − 1 identified)",
      ("rdpo/rate-d",), (_B + "::" + _BT,)),
    # ---- theory/mixture.py and theory/ranking.py -------------------------------------------------
    M("mixture.subgroup-bound-2", "theory/mixture.py", "return float(2.0 * _offdiag_mean(var))",
      "return float(1.0 * _offdiag_mean(var))", "the subgroup lower bound halved",
      ("mixture/subgroup-bound",), (_M + "::test_opposite_groups_collapse_to_a_constant_fit",)),
    M("mixture.population-weights", "theory/mixture.py",
      "return np.tensordot(_check_weights(weights, a.shape[0]), a, axes=1)",
      "return np.tensordot(_check_weights(weights, a.shape[0])[::-1], a, axes=1)",
      "group weights applied in reverse order", ("mixture/irreducible-kl",), (_M + "::test_win_probs_golden",)),
    M("mixture.kl-offset", "theory/mixture.py", "return np.maximum(kl, 0.0)", "return np.maximum(kl, 0.0) + 1e-6",
      "the Bernoulli KL off by 1e-6", ("mixture/centroid-collapse",), (_M,)),
    M("ranking.optimal-log-ratio-beta", "theory/ranking.py",
      "return _f64(log_ref_ratio) + (np.log(a) - np.log1p(-a)) / beta",
      "return _f64(log_ref_ratio) + (np.log(a) - np.log1p(-a)) * beta", "Thm 3.1's optimum with ·β for /β",
      ("ranking/thm3.1-optimum",), (_K + "::test_golden_values",)),
    M("ranking.loss-threshold-gamma", "theory/ranking.py", "return _softplus(-(beta * (gamma * _f64(c))))",
      "return _softplus(-(beta * _f64(c)))", "the ranking loss threshold ignores γ",
      ("ranking/thm4.1-equivalence",), (_K + "::test_golden_values",)),
    M("ranking.idealized-threshold", "theory/ranking.py",
      "return optimal_log_ratio(log_ref_ratio, alpha, beta=beta, unanimous=unanimous) > 0.0",
      "return optimal_log_ratio(log_ref_ratio, alpha, beta=beta, unanimous=unanimous) > 0.1",
      "the idealized model ranks a pair right only past a margin 0.1", ("ranking/soft-label-fit",),
      (_K + "::test_idealized_ranking_accuracy_and_unanimous_clamp",)),
    # ---- sims/sweep: the sweep engine's Theorem 4.2 metrics ---------------------------------------
    M("sweep.sandwich-lower", "sims/sweep/simulations.py",
      "inside = (traj.margins >= im_li.R_LOWER * rate) & (traj.margins <= im_li.R_UPPER * rate)",
      "inside = (traj.margins >= 8 * im_li.R_LOWER * rate) & (traj.margins <= im_li.R_UPPER * rate)",
      "the sweep's sandwich with r_L eight times too high", ("im-li/sweep-metrics",),
      ("tests/test_sweep_params.py::test_unseen_values_sandwich_and_unbalanced",)),
    M("sweep.window", "sims/sweep/simulations.py", "w_lo, w_hi = im_li.MARGIN_WINDOW  # Theorem 4.2's window at τ_1",
      "w_lo, w_hi = 0.0, im_li.LOG3", "the sweep's window [0, log 3] for Theorem 4.2's [log3/40, log3]",
      ("im-li/sweep-metrics",), ("tests/test_sweep_params.py::test_in_window_is_theorem_42s_window",)),
)

# ---- issue #12, Im & Li side: Lemma B.1, Appendix C's bound, entanglement, multi-token W_0 --------
_COV = "tests/test_im_li_coverage.py"
MUTANTS += (
    M("im_li.concentration_eps-16-to-12", "theory/im_li.py",
      "return (1.0 / (16.0 * _f64(v) * (_f64(Z) + 2.0)))[()]", "return (1.0 / (12.0 * _f64(v) * (_f64(Z) + 2.0)))[()]",
      "Lemma B.1's ε = 1/(12v(Z+2)): the Gram band a third wider (and the refined bounds smaller)",
      ("im-li/lemma-b1-gram-band",), (_COV + "::test_lemma_b1_eps_band_and_means_golden",)),
    M("im_li.gram_mean-diagonal", "theory/im_li.py",
      "return lb**2 + sign[:, None] * sign[None, :] * same + d * v**2 * np.eye(value.size)",
      "return lb**2 + sign[:, None] * sign[None, :] * same", "the Gram diagonal's mean without dv²",
      ("im-li/lemma-b1-gram-band",), (_COV + "::test_lemma_b1_eps_band_and_means_golden",)),
    M("reference.gram-tails-band", "sims/reference.py", "u = 1.0 / (8.0 * (Z + 2.0))", "u = 1.0 / (8.0 * (Z + 1.0))",
      "the reference's exact Gram tails at the band 1/(8(Z+1))", ("im-li/lemma-b1-gram-band",),
      (_COV + "::test_gram_entry_tails_match_numpy_monte_carlo",)),
    M("risk.log_gaussian-sigma", "sims/risk.py", "sigma = beta * v * np.linalg.norm(diff, axis=1)",
      "sigma = beta * np.linalg.norm(diff, axis=1)", "the exact Gaussian risk's margin sd without the noise scale v",
      ("im-li/c6-refined-bound", "im-li/risk-functional"), (_COV + "::test_log_gaussian_risk_golden",)),
)
