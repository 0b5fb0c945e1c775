"""Tests for likelihood displacement: closed forms (dpolab.theory.displacement) vs hand-computed
golden values, autodiff and a brute-force full-vocabulary softmax; the simulator
(dpolab.sims.displacement) vs an explicit W; the one-pair identity; rates in η; bad inputs."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dpolab.checks import displacement as checks
from dpolab.errors import InputError
from dpolab.sims import displacement as sim
from dpolab.sims.config import DataSpec, make_params
from dpolab.sims.data import reference_head, split_keys
from dpolab.theory import displacement as D


def _softmax_logp(W, G):
    """Plain numpy full-vocabulary log-softmax, (N, V)."""
    z = G @ W.T
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_single_sample_golden():
    # N = 1, g = (1, 0), π = (1/2, 1/4) on the used tokens, 1/4 elsewhere, β = 1, r = 0 (weight 1/2):
    # A = (1/2, −1/2); chosen = 1/2 − (1/4 − 1/8) = 3/8; rejected = −1/2 − 1/8 = −5/8; margin 1
    logp = np.log([[0.5, 0.25]])
    v = D.logp_velocity([[1.0, 0.0]], np.array([0]), np.array([1]), logp, [0.0], beta=1.0)
    assert v["chosen"][0] == pytest.approx(0.375, abs=1e-15)
    assert v["rejected"][0] == pytest.approx(-0.625, abs=1e-15)
    assert v["margin"][0] == pytest.approx(1.0, abs=1e-15)
    s = D.step_change([[1.0, 0.0]], np.array([0]), np.array([1]), logp, [0.0], beta=1.0, eta=1.0)
    lognorm = math.log(0.5 * math.exp(0.5) + 0.25 * math.exp(-0.5) + 0.25)
    assert s["chosen"][0] == pytest.approx(0.5 - lognorm, abs=1e-15)
    assert s["rejected"][0] == pytest.approx(-0.5 - lognorm, abs=1e-15)
    assert s["margin"][0] == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("beta", [0.1, 1.0, 3.0], ids=["beta0.1", "beta1", "beta3"])
def test_rejecting_ones_chosen_token_displaces_it_golden(beta):
    # equal features; sample 1 prefers 0 ≻ 1, sample 2 prefers 2 ≻ 0: A = (0, −β/4, β/4), so sample 1's
    # margin grows by β²/4 while its chosen log-prob moves by −(β/4)(π_2 − π_1): displaced iff π_2 > π_1
    G = np.ones((2, 1))
    w, l = np.array([0, 2]), np.array([1, 0])
    p = np.array([0.2, 0.1, 0.5])
    logp = np.log(np.tile(p, (2, 1)))
    v = D.logp_velocity(G, w, l, logp, np.zeros(2), beta=beta)
    assert v["margin"] == pytest.approx([beta**2 / 4, beta**2 / 4], abs=1e-15)
    assert v["chosen"][0] == pytest.approx(-(beta / 4) * (0.5 - 0.1), abs=1e-15)
    assert v["chosen"][1] == pytest.approx(beta / 4 - (beta / 4) * (0.5 - 0.1), abs=1e-15)
    assert D.displaced(v).tolist() == [True, False]


def test_velocity_and_step_match_autodiff_and_brute_force():
    G, w, l, W, W0 = checks._explicit_problem(11)
    beta, eta, U = 0.8, 0.03, 5
    ref = checks.autodiff_reference(G, w, l, W, W0, beta=beta, weight_fn=lambda r: 1 / (1 + jnp.exp(r)))
    logp_full = _softmax_logp(W, G)
    v = D.logp_velocity(G, w, l, logp_full[:, :U], ref["r"], beta=beta)
    for key in ("chosen", "rejected", "margin"):
        np.testing.assert_allclose(v[key], ref[key], rtol=0, atol=1e-13)
    # brute force: explicit GD step on the full W with the gradient written out in numpy
    r = ref["r"]
    weight = 1 / (1 + np.exp(r))
    E = np.zeros((len(w), W.shape[0]))
    E[np.arange(len(w)), w] += weight
    E[np.arange(len(w)), l] -= weight
    W1 = W + eta * (beta / len(w)) * E.T @ G
    after = _softmax_logp(W1, G)
    s = D.step_change(G, w, l, logp_full[:, :U], r, beta=beta, eta=eta)
    rows = np.arange(len(w))
    np.testing.assert_allclose(s["chosen"], after[rows, w] - logp_full[rows, w], atol=1e-13)
    np.testing.assert_allclose(s["rejected"], after[rows, l] - logp_full[rows, l], atol=1e-13)


def test_large_steps_use_the_overflow_free_partition():
    G, w, l, W, _ = checks._explicit_problem(3)
    logp_full = _softmax_logp(W, G)
    big = 40.0  # logit moves of O(10–100): e^δ would lose the log1p form's accuracy
    s = D.step_change(G, w, l, logp_full[:, :5], np.zeros(len(w)), beta=1.0, eta=big)
    E = np.zeros((len(w), W.shape[0]))
    E[np.arange(len(w)), w] += 0.5
    E[np.arange(len(w)), l] -= 0.5
    after = _softmax_logp(W + big * E.T @ G / len(w), G)
    rows = np.arange(len(w))
    np.testing.assert_allclose(s["chosen"], after[rows, w] - logp_full[rows, w], atol=1e-10)


def test_step_over_eta_converges_to_velocity_at_rate_one():
    G, w, l, W, _ = checks._explicit_problem(5)
    logp = _softmax_logp(W, G)[:, :5]
    v = D.logp_velocity(G, w, l, logp, np.zeros(len(w)), beta=1.0)
    etas = np.array([1e-2, 3e-3, 1e-3, 3e-4])
    errs = [np.abs(D.step_change(G, w, l, logp, np.zeros(len(w)), beta=1.0, eta=e)["chosen"] / e
                   - v["chosen"]).max() for e in etas]
    assert abs(stats.linregress(np.log(etas), np.log(errs)).slope - 1.0) <= 0.05


def test_simulator_logp_is_the_full_vocabulary_softmax_of_an_explicit_w():
    spec = DataSpec(K=3, Q=5, d=8, vocab=12)
    params = make_params(beta=1.0, eta=0.2, v=0.4, concept_cos=0.3, ref_scale=2.0)
    key = jax.random.key(4)
    data = sim.sample_token_data(key, spec, params, "chain")
    U = sim.token_pairs("chain", 3)[2]
    traj = jax.jit(sim.make_token_trainer(n_tokens=U, steps=3))(data, 1.0, 0.2)
    W = np.array(reference_head(split_keys(key, 0)[1], spec, params.ref_scale))
    G, w, l = np.asarray(data.g), np.asarray(data.chosen), np.asarray(data.rejected)
    np.testing.assert_allclose(np.asarray(traj.logp[0]), _softmax_logp(W, G)[:, :U], atol=1e-12)
    for c in range(3):  # three explicit GD steps on the full W, gradient in numpy
        lp, lp0 = _softmax_logp(W, G), np.asarray(traj.logp[0])
        rows = np.arange(len(w))
        r = (lp[rows, w] - lp0[rows, w]) - (lp[rows, l] - lp0[rows, l])
        E = np.zeros((len(w), W.shape[0]))
        E[rows, w] += 1 / (1 + np.exp(r))
        E[rows, l] -= 1 / (1 + np.exp(r))
        W = W + 0.2 * E.T @ G / len(w)
        np.testing.assert_allclose(np.asarray(traj.logp[c + 1]), _softmax_logp(W, G)[:, :U], atol=1e-12)


@pytest.mark.parametrize("optimizer", ["gd", "adam"], ids=["gd", "adam"])
def test_one_pair_chosen_change_has_the_margins_sign_at_every_step(optimizer):
    data, U = checks.instance("one-pair", 2, flip=0.25)
    traj = jax.jit(sim.make_token_trainer(n_tokens=U, steps=30, stride=10, optimizer=optimizer))(
        data, 0.5, 0.3 if optimizer == "gd" else 0.05)
    lp, r = np.asarray(traj.logp), np.asarray(traj.margins)
    w, l = np.asarray(data.chosen), np.asarray(data.rejected)
    rows = np.arange(len(w))
    for c in range(1, lp.shape[0]):
        change = lp[c, rows, w] - lp[0, rows, w]
        pred = D.single_pair_chosen_change(r[c], lp[0, rows, w], lp[0, rows, l], beta=0.5)
        np.testing.assert_allclose(change, pred, atol=1e-12)
        assert np.all(np.sign(change) == np.sign(r[c]))
        G = np.asarray(data.g)
        v = D.logp_velocity(G, w, l, lp[c], r[c], beta=0.5)
        np.testing.assert_allclose(v["chosen"], D.single_pair_ratio(lp[c], w, l, beta=0.5) * v["margin"],
                                   atol=1e-13)
    assert (r[-1] < 0).any() and (r[-1] > 0).any()  # both signs occur: the identity is not vacuous


def test_displaced_set_at_zero_margin_is_beta_invariant_and_structures_differ():
    fractions = {}
    for structure in sim.STRUCTURES:
        data, U = checks.instance(structure, 4, v=0.5, concept_cos=0.9)
        G, w, l = np.asarray(data.g), np.asarray(data.chosen), np.asarray(data.rejected)
        lp = np.asarray(sim.used_logp(data, jnp.zeros((U, G.shape[1]))))
        masks = [D.displaced(D.logp_velocity(G, w, l, lp, np.zeros(len(w)), beta=b)) for b in (0.1, 1.0, 7.0)]
        assert all(np.array_equal(masks[0], m) for m in masks)
        fractions[structure] = masks[0].mean()
    assert fractions["one-pair"] == 0.0
    assert fractions["chain"] > 0.0  # the chain's shared tokens displace (a measured example)


def test_rdpo_weight_is_passed_through():
    G, w, l, W, W0 = checks._explicit_problem(2)
    logp = _softmax_logp(W, G)[:, :5]
    r = np.zeros(len(w))
    base = D.logp_velocity(G, w, l, logp, r, beta=1.0)
    shifted = D.logp_velocity(G, w, l, logp, r, beta=1.0, weight=np.full(len(w), 0.5 + 0.25))
    for key in base:
        np.testing.assert_allclose(shifted[key], 1.5 * base[key], atol=1e-14)


@pytest.mark.parametrize("field", ["G", "w_range", "w_equals_l", "logp_mass", "r_shape", "beta", "eta",
                                   "structure"], ids=lambda f: f)
def test_bad_input_names_the_field(field):
    G, w, l, logp, r = np.ones((2, 3)), np.array([0, 1]), np.array([1, 0]), np.log(np.full((2, 2), 0.3)), np.zeros(2)
    kwargs = dict(G=G, w=w, l=l, logp=logp, r=r)
    bad = {"G": ("G", np.full((2, 3), np.nan)), "w_range": ("w", np.array([0, 5])),
           "w_equals_l": ("w", np.array([1, 0])), "logp_mass": ("logp", np.log(np.full((2, 2), 0.7))),
           "r_shape": ("r", np.zeros(3))}
    if field == "structure":
        with pytest.raises(InputError, match="structure"):
            sim.token_pairs("ring", 3)
        return
    if field in ("beta", "eta"):
        with pytest.raises(InputError, match=field):
            D.step_change(**kwargs, beta=-1.0 if field == "beta" else 1.0, eta=0.0 if field == "eta" else 1.0)
        return
    name, value = bad[field]
    kwargs[name] = value
    with pytest.raises(InputError, match=name if field != "w_equals_l" else "differ"):
        D.logp_velocity(**kwargs, beta=1.0)


def test_flips_swap_labels_at_the_flip_rate():
    spec = DataSpec(K=2, Q=400, d=6, vocab=8)
    cluster_sign = np.repeat([1, -1, 1, -1], 400)
    for flip in (0.0, 0.3):
        params = make_params(beta=1.0, eta=0.1, v=0.1, flip=flip)
        data = sim.sample_token_data(jax.random.key(1), spec, params, "chain")
        a = np.array([0, 1])[np.asarray(data.value)]  # chain: value k's + cluster prefers token k
        flipped = (np.asarray(data.chosen) == a) != (cluster_sign > 0)
        ci = stats.binomtest(int(flipped.sum()), flipped.size, flip).proportion_ci(0.999)
        assert ci.low <= flip <= ci.high
        assert np.all(np.asarray(data.chosen) != np.asarray(data.rejected))


def test_the_repro_items_full_run_builds_its_data_at_every_K():
    """`repro`'s likelihood-displacement item at full size (K up to 16) once asked for K = 16 with 24
    tokens, which `DataSpec` refuses (2K needed): the full `repro` stopped there. Every structure at
    every K of the full run beyond the quick one (which the session's `repro --quick` runs) must
    build, with unused tokens left; the quick sizes keep their 24 tokens."""
    from dpolab.paper_repro import likelihood_displacement as item

    for K in sorted(set(item.FULL_KS) - set(item.QUICK_KS)):
        for structure in sim.STRUCTURES:
            data = item._data(structure, K, 0, 0.2)
            assert data.ref_logits.shape[1] < item.vocab(K), (structure, K)
    assert all(item.vocab(K) == 24 for K in item.QUICK_KS)
