"""Learning order between values: closed forms vs independent references (plain numpy, autodiff,
scipy on the full sample-level flow), golden values, the Euler rate, the simulator and bad input."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from dpolab.errors import InputError
from dpolab.sims import learning_order as sim
from dpolab.theory import learning_order as lo


def _clusters(norms, *, Q=5, d=8, v=0.0, tokens="distinct", cos=0.0, seed=0):
    """Plain numpy data: value k's clusters at ±κ_k·(e_{k+1} mixed with a shared e_{K+1}) + 0.5 e_0."""
    rng = np.random.default_rng(seed)
    K = len(norms)
    G, w, l, grp = [], [], [], []
    for k, kap in enumerate(norms):
        c = np.zeros(d)
        c[k + 1], c[K + 1] = math.sqrt(1 - cos), math.sqrt(cos)
        for s in (1, -1):
            G.append(0.5 * np.eye(d)[0] + s * kap * c + v * rng.standard_normal((Q, d)))
            a, b = (2 * k, 2 * k + 1) if tokens == "distinct" else (0, 1)
            w += [a if s > 0 else b] * Q
            l += [b if s > 0 else a] * Q
            grp += [k] * Q
    return np.concatenate(G), np.array(w), np.array(l), np.array(grp)


def _cross(G, w, l):
    """C_ij = (e_{w_i} − e_{l_i})·(e_{w_j} − e_{l_j}) g_i·g_j, by the preference-sharing factor."""
    share = ((w[:, None] == w[None]).astype(float) + (l[:, None] == l[None])
             - (w[:, None] == l[None]) - (l[:, None] == w[None]))
    return share * (G @ G.T)


def test_isolated_time_golden():
    # m + e^m = 1 + 2vt at m = 1: t = e/(2v); at m = 0.5: (0.5 + e^0.5 − 1)/(2v)
    assert lo.isolated_time(0.25, 1.0) == pytest.approx(math.e / 0.5, rel=1e-15)
    assert lo.isolated_time([0.1, 0.0, -1.0], 0.5).tolist()[0] == pytest.approx((math.exp(0.5) - 0.5) / 0.2)
    assert np.all(np.isinf(lo.isolated_time([0.0, -1.0], 0.5)))


def test_bands_golden():
    # dispersion: 2σ(ℓ)ℓ·Var(ρ); Euler for one isolated group: A = β²M/(N n) = 2v, b = A²/8, E = ηbt/2 + η²b/8
    assert lo.dispersion_band(0.05, 1.0) == pytest.approx(2 / (1 + math.exp(-1)) * 0.05, rel=1e-15)
    M, n, t = np.array([[8.0]]), np.array([2.0]), 3.0  # A = 2, v = 1
    m_late = lo.mean_field_margins(np.array([0.0, 3.3]), M, n, beta=1.0)[-1, 0]
    assert m_late + math.exp(m_late) == pytest.approx(1 + 2 * 3.3, rel=1e-9)
    expected = (0.01 * 0.5 * t / 2 + 1e-4 * 0.5 / 8) / (2 / (1 + math.exp(m_late)))
    assert lo.euler_band(M, n, beta=1.0, eta=0.01, times=[t])[0] == pytest.approx(expected, rel=1e-9)


def test_decoupled_prediction_is_the_closed_form_with_velocity_beta2_share_d2():
    norms = (0.5, 0.8, 1.0, 1.3)
    G, w, l, grp = _clusters(norms)
    p = lo.predict_order(G, w, l, grp, beta=2.0, level=1.0)
    v = 4.0 * (1 / 4) * np.asarray(norms) ** 2  # β² · n_k/N · D_k²
    np.testing.assert_allclose(p["distinguishability"], norms, rtol=1e-14)
    np.testing.assert_allclose(lo.initial_velocity(G, w, l, grp, beta=2.0)[1], v, rtol=1e-14)
    np.testing.assert_allclose(p["predicted_time"], math.e / (2 * v), rtol=1e-8)
    assert p["order"].tolist() == [3, 2, 1, 0]
    relabelled = lo.predict_order(G, w, l, 3 * grp + 7, beta=2.0, level=1.0)  # any int ids, sorted
    assert relabelled["groups"].tolist() == [7, 10, 13, 16] and relabelled["order"].tolist() == [16, 13, 10, 7]
    assert relabelled["predicted_time"].dtype == np.float64


@pytest.mark.parametrize("tokens,cos,v", [("yes_no", 0.3, 0.0), ("distinct", 0.0, 0.0), ("yes_no", 0.5, 0.0)],
                         ids=["yes_no-cos0.3", "distinct", "yes_no-cos0.5"])
def test_mean_field_equals_the_full_sample_flow_when_clusters_are_noise_free(tokens, cos, v):
    """Reference: scipy on the N-sample flow dr/dt = (β²/N) C σ(−r) with events on group means."""
    G, w, l, grp = _clusters((0.4, 0.7, 1.0), tokens=tokens, cos=cos, v=v)
    beta, level = 1.5, 0.8
    C, N = _cross(G, w, l), len(w)
    K = grp.max() + 1
    events = []
    for k in range(K):
        ev = lambda t, r, k=k: r[grp == k].mean() - level  # noqa: E731
        ev.direction = 1.0
        events.append(ev)
    sol = integrate.solve_ivp(lambda t, r: beta**2 / N * C @ (1 / (1 + np.exp(r))), (0, 1e3), np.zeros(N),
                              events=events, rtol=1e-11, atol=1e-13)
    ref = np.array([e[0] for e in sol.t_events])
    np.testing.assert_allclose(lo.predict_order(G, w, l, grp, beta=beta, level=level)["predicted_time"], ref,
                               rtol=1e-7)


def test_initial_velocity_matches_autodiff_of_the_dpo_loss():
    G, w, l, grp = _clusters((0.4, 0.7, 1.0), v=0.3, tokens="yes_no", cos=0.2, seed=3)
    beta, N, U = 0.7, len(w), int(max(w.max(), l.max())) + 1
    gj, wj, lj = jnp.asarray(G), jnp.asarray(w), jnp.asarray(l)

    def margins(dw):
        logits = gj @ dw.T
        return beta * (logits[jnp.arange(N), wj] - logits[jnp.arange(N), lj])

    loss = lambda dw: jnp.mean(jax.nn.softplus(-margins(dw)))  # noqa: E731
    dw0 = jnp.zeros((U, G.shape[1]))
    rdot = jax.jvp(margins, (dw0,), (-jax.grad(loss)(dw0),))[1]  # dr/dt under dW/dt = −∇L
    ref = [float(rdot[grp == k].mean()) for k in range(3)]
    np.testing.assert_allclose(lo.initial_velocity(G, w, l, grp, beta=beta)[1], ref, rtol=1e-12)


def test_distinguishability_is_half_the_class_mean_gap_and_dispersion_the_row_sums():
    G, w, l, grp = _clusters((0.4, 0.7), v=0.2, seed=1)
    D = lo.distinguishability(G, w, l, grp)[1]
    for k in range(2):
        pos, neg = G[(grp == k) & (w % 2 == 0)], G[(grp == k) & (w % 2 == 1)]
        assert D[k] == pytest.approx(np.linalg.norm(pos.mean(0) - neg.mean(0)) / 2, rel=1e-13)
    rows = 0.5 * _cross(G, w, l).sum(1) / len(w)
    var = [np.var(rows[grp == k] / rows[grp == k].mean()) for k in range(2)]
    np.testing.assert_allclose(lo.velocity_dispersion(G, w, l, grp, beta=1.0)[1], var, rtol=1e-12)


def test_gd_crossing_error_is_first_order_in_eta_and_inside_the_euler_band():
    """Plain-numpy GD on the noise-free coupled group recursion: |Δt| ∝ η (slope 1 ± 0.1), ≤ band."""
    G, w, l, grp = _clusters((0.4, 0.7, 1.0), tokens="yes_no", cos=0.3)
    ids, M, n = lo.centroid_gram(G, w, l, grp)
    t_flow = lo.predict_order(G, w, l, grp, beta=1.0, level=1.0)["predicted_time"]
    A = M / (n.sum() * n[:, None])
    etas, errs = (0.04, 0.02, 0.01, 0.005), []
    for eta in etas:
        m, ms = np.zeros(3), [np.zeros(3)]
        while ms[-1].min() < 1.0:
            m = m + eta * A @ (1 / (1 + np.exp(m)))
            ms.append(m)
        t_gd = sim.crossing_times(eta * np.arange(len(ms)), np.array(ms), 1.0)
        band = lo.euler_band(M, n, beta=1.0, eta=eta, times=t_flow)
        assert np.all(np.abs(t_gd - t_flow) <= band), (eta, t_gd - t_flow, band)
        errs.append(np.abs(t_gd - t_flow))
    for k in range(3):
        slope = stats.linregress(np.log(etas), np.log([e[k] for e in errs])).slope
        assert abs(slope - 1) <= 0.1, (k, slope)


def test_value_data_sets_distinguishability_and_the_simulator_crosses_in_order():
    data = sim.value_data(0, norms=(0.5, 1.0), Q=20, d=8, v=0.0, tokens="distinct")
    w, l, grp = sim.token_indices(data)
    assert lo.distinguishability(np.asarray(data.g), w, l, grp)[1] == pytest.approx([0.5, 1.0], rel=1e-14)
    t, means = sim.train_means(data, beta=1.0, eta=0.1, steps=150)
    assert means[0].tolist() == [0.0, 0.0]
    ts = sim.crossing_times(t, means, 1.0)
    pred = lo.isolated_time(0.5 * np.array([0.5, 1.0]) ** 2, 1.0)  # v_k = β²·(n_k/N)·κ_k², t = e/(2v)
    np.testing.assert_allclose(pred, [math.e / 0.25, math.e], rtol=1e-15)
    _, M, n = lo.centroid_gram(np.asarray(data.g), w, l, grp)
    assert np.all(np.abs(ts - pred) <= lo.euler_band(M, n, beta=1.0, eta=0.1, times=pred))


def test_crossing_times_interpolate_linearly_golden():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    means = np.array([[0.0, 0.0], [0.5, 0.1], [1.5, 0.2], [2.0, 0.3]])
    out = sim.crossing_times(t, means, 1.0)
    assert out[0] == pytest.approx(1.5) and np.isinf(out[1])


@pytest.mark.parametrize("field", ["w_eq_l", "beta", "level", "shape", "norms"])
def test_bad_input_names_the_field(field):
    G, w, l, grp = _clusters((0.5, 1.0))
    calls = {"w_eq_l": lambda: lo.predict_order(G, w, w, grp, beta=1.0, level=1.0),
             "beta": lambda: lo.predict_order(G, w, l, grp, beta=0.0, level=1.0),
             "level": lambda: lo.predict_order(G, w, l, grp, beta=1.0, level=-1.0),
             "shape": lambda: lo.predict_order(G, w[:-1], l, grp, beta=1.0, level=1.0),
             "norms": lambda: sim.value_data(0, norms=(0.5, -1.0), Q=2, d=6, v=0.0)}
    name = {"w_eq_l": "w, l", "shape": "w", "norms": "norms"}.get(field, field)
    with pytest.raises(InputError, match=name):
        calls[field]()
