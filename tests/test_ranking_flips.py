"""DPO^γ training from the reference (dpolab.sims.ranking_flips) against a plain NumPy loop;
Theorem 4.1 along training; the γ trend of flips on separable pairs; bad settings."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpolab.sims.ranking_flips import FlipPairs, FlipParams, FlipSpec, make_flip_training
from dpolab.theory import ranking as R


def _train(pairs, theta0, *, beta, gammas, eta, spec):
    params = FlipParams(beta=jnp.full(len(gammas), beta), gamma=jnp.asarray(gammas), eta=jnp.full(len(gammas), eta))
    run = jax.jit(jax.vmap(make_flip_training(spec), in_axes=(None, None, 0)))
    return run(pairs, jnp.asarray(theta0), params)


def test_training_matches_a_plain_numpy_loop():
    """θ ← θ − η ∇ mean_i [α ℓ(z_i) + (1−α) ℓ(−z_i)], z = β(θᵀx − γθ_0ᵀx), written out by hand."""
    rng = np.random.default_rng(0)
    S, A, d, n, beta, gamma, eta = 3, 4, 3, 10, 0.7, 0.4, 0.5
    phi = rng.normal(size=(S, A, d))
    state = rng.integers(0, S, n)
    chosen = rng.integers(0, A, n)
    rejected = (chosen + 1 + rng.integers(0, A - 1, n)) % A
    alpha, theta0 = rng.uniform(0.6, 0.999, n), rng.normal(size=d)
    spec = FlipSpec(steps=30, stride=5)
    traj = _train(FlipPairs(jnp.asarray(phi), jnp.asarray(state), jnp.asarray(chosen), jnp.asarray(rejected),
                            jnp.asarray(alpha)), theta0, beta=beta, gammas=[gamma], eta=eta, spec=spec)
    x = phi[state, chosen] - phi[state, rejected]
    np.testing.assert_allclose(np.asarray(traj.log_ref_ratio[0]), x @ theta0, rtol=1e-13, atol=1e-13)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    theta, expected = theta0.copy(), [x @ theta0]
    for k in range(1, 31):
        z = beta * (x @ theta - gamma * x @ theta0)
        theta = theta + eta * beta * ((alpha * sig(-z) - (1 - alpha) * sig(z)) @ x) / n
        if k % 5 == 0:
            expected.append(x @ theta)
    np.testing.assert_allclose(np.asarray(traj.log_ratio[0]), np.array(expected), rtol=1e-12, atol=1e-12)
    z = beta * (np.array(expected) - gamma * x @ theta0)
    np.testing.assert_allclose(np.asarray(traj.loss[0]), np.logaddexp(0, -z), rtol=1e-12)


def test_thm41_along_training_and_smaller_gamma_flips_more():
    """Separable pairs (x_s = e_s): per pair, a flip happens exactly when the loss falls below
    −log σ(βγc); the flipped sets shrink as γ grows and a flip is never undone."""
    c = np.array([0.5, 1.0, 2.0, 3.0, 4.0, 6.0, -1.0, -3.0])  # c = −R_ref: six mis-ranked pairs
    n, beta = len(c), 1.5
    phi = np.stack([np.eye(n) / 2, -np.eye(n) / 2], axis=1)
    pairs = FlipPairs(jnp.asarray(phi), jnp.arange(n), jnp.zeros(n, int), jnp.ones(n, int),
                      jnp.asarray(R.clamp_alpha(np.ones(n))))
    gammas = [0.0, 0.5, 1.0]
    traj = _train(pairs, -c, beta=beta, gammas=gammas, eta=0.5 * n, spec=FlipSpec(steps=60, stride=1))
    u, loss = np.asarray(traj.log_ratio), np.asarray(traj.loss)
    for i, g in enumerate(gammas):
        np.testing.assert_array_equal(loss[i] <= R.loss_threshold(c, beta=beta, gamma=g), R.ranking_correct(u[i]))
    flipped = (u >= 0) & (c > 0)
    assert not np.any(flipped[:, :-1] & ~flipped[:, 1:])  # never undone
    assert not np.any(flipped[1:] & ~flipped[:-1])  # nested: γ = 0 ⊇ 1/2 ⊇ 1
    counts = flipped[:, -1].sum(-1)
    assert counts[0] > counts[1] > counts[2] > 0 and counts[0] <= 6
    assert np.all(R.ranking_correct(u[:, :, c < 0]))  # correctly ranked pairs stay so


@pytest.mark.parametrize("kw, field", [(dict(steps=0), "steps"), (dict(stride=1.5), "stride"),
                                       (dict(steps=10, stride=3), "stride"), (dict(steps=True), "steps")])
def test_flip_spec_rejects_bad_values(kw, field):
    with pytest.raises(ValueError, match=field):
        FlipSpec(**kw)
