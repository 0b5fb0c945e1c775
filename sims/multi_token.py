"""Multi-token responses (THEORY §1.7): an autodiff reference for the reward-velocity formula.

The token reward r(y; g) = β[log S(Wg)_y − log S(W_0 g)_y] changes under gradient flow
τ dW/dt = −∇L by the directional derivative of r along −∇L/τ; `autodiff_reward_velocity`
computes it with `jax.grad` and `jax.jvp`, independently of `dpolab.theory.im_li`.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class MultiTokenProblem(NamedTuple):
    """w: (V, d) current head. w0: (V, d) reference. contexts: (N, J, 2, d) teacher-forced states
    (s = 0 chosen, 1 rejected). tokens: (N, J, 2) response tokens. g_star: (d,) query context."""

    w: jnp.ndarray
    w0: jnp.ndarray
    contexts: jnp.ndarray
    tokens: jnp.ndarray
    g_star: jnp.ndarray
    beta: float
    tau: float

    def token_rewards(self, w, g, y):
        """r(y; g) for arrays of contexts g (..., d) and tokens y (...)."""
        logp = lambda m: jnp.take_along_axis(jax.nn.log_softmax(g @ m.T, axis=-1),
                                             y[..., None], axis=-1)[..., 0]
        return self.beta * (logp(w) - logp(self.w0))

    def margins(self, w):
        """(N,) r_i = Σ_j r(y_w^{(j)}) − Σ_j r(y_l^{(j)})."""
        tr = self.token_rewards(w, self.contexts, self.tokens)
        return tr[..., 0].sum(-1) - tr[..., 1].sum(-1)

    def formula_args(self):
        """Keyword arguments of `dpolab.theory.im_li_dynamics.multi_token_reward_velocity` (all V tokens; τ = 1
        form, so divide by τ)."""
        return dict(W=self.w, g_star=self.g_star, y=None, contexts=self.contexts,
                    tokens=self.tokens, weights=jax.nn.sigmoid(-self.margins(self.w)),
                    beta=self.beta)


def random_problem(key, *, V=7, d=4, N=3, J=2, beta=0.7, tau=1.0) -> MultiTokenProblem:
    """A random small problem with repeated tokens across positions, samples and roles."""
    k = jax.random.split(key, 5)
    w0 = jax.random.normal(k[0], (V, d))
    tokens = jax.random.randint(k[3], (N, J, 2), 0, V)
    tokens = tokens.at[0, 1].set(jnp.array([2, 2])).at[1, 0, 0].set(3).at[2, 1, 1].set(3)
    return MultiTokenProblem(w=w0 + 0.5 * jax.random.normal(k[1], (V, d)), w0=w0,
                             contexts=jax.random.normal(k[2], (N, J, 2, d)), tokens=tokens,
                             g_star=jax.random.normal(k[4], (d,)), beta=beta, tau=tau)


def autodiff_reward_velocity(p: MultiTokenProblem):
    """(V,) τ dr(y; g*)/dt for every token y under gradient flow of the multi-token DPO loss."""
    loss = lambda w: jnp.mean(jax.nn.softplus(-p.margins(w)))
    velocity = -jax.grad(loss)(p.w) / p.tau
    ys = jnp.arange(p.w.shape[0])
    reward = lambda w: p.token_rewards(w, jnp.broadcast_to(p.g_star, (ys.size, p.g_star.size)), ys)
    return p.tau * jax.jvp(reward, (p.w,), (velocity,))[1]
