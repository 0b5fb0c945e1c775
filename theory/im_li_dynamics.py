"""The Im & Li dynamics in JAX: the cross terms of Lemma 4.1 and the multi-token reward velocity.

They live apart from `dpolab.theory.im_li` (numpy/scipy closed forms) so that the closed forms, and
the figures that use them, load without JAX.

References:
    [IL] S. Im, S. Li, "Can DPO Learn Diverse Human Values? A Theoretical Scaling Law",
    arXiv 2408.03459 (v5); THEORY.md §1.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_terms(g_a, yw_a, yl_a, g_b, yw_b, yl_b):
    """Cross-term matrix C_ij = (e_{w,a_i} - e_{l,a_i})^T (e_{w,b_j} - e_{l,b_j}) g_a_i^T g_b_j.

    Args:
        g_a: (n_a, d) features; yw_a, yl_a: (n_a,) int chosen/rejected tokens. Same for b.

    Returns:
        (n_a, n_b) jnp array; token factor in {2, -2, +-1, 0} times the Gram matrix.

    References:
        [IL] Lemma 4.1.
    """
    g_a, g_b = jnp.asarray(g_a), jnp.asarray(g_b)
    eq = lambda p, q: (jnp.asarray(p)[:, None] == jnp.asarray(q)[None, :]).astype(g_a.dtype)  # noqa: E731
    factor = eq(yw_a, yw_b) - eq(yw_a, yl_b) - eq(yl_a, yw_b) + eq(yl_a, yl_b)
    return factor * (g_a @ g_b.T)


def multi_token_reward_velocity(W, g_star, y, contexts, tokens, weights, *, beta, N=None):
    """tau d r(y; g*)/dt under gradient flow of multi-token DPO (THEORY.md §1.7).

    tau dr(y; g*)/dt = (beta^2/N) sum_i sigma(-r_i) sum_j sum_s eps_s (g_ijs^T g*)
        [1{y = y_ijs} - S(W g_ijs)_y - S(W g*)_{y_ijs} + S(W g*)^T S(W g_ijs)],
    eps_w = +1, eps_l = -1, S = softmax; r(y; g) = beta [log S(W g)_y - log S(W_0 g)_y].
    W_0 enters only through the margins r_i inside `weights`. Matches autodiff (tests).

    Args:
        W: (V, d) unembedding. g_star: (d,) query context. y: int (array) of tokens, None = all.
        contexts: (N, J, 2, d) teacher-forced states g(i, j, s), s = 0 chosen, 1 rejected.
        tokens: (N, J, 2) int response tokens y^{(j)}_{s,i}.
        weights: (N,) sigma(-r_i) (or -f'(r_i) for other GPO losses).
        beta: DPO temperature. N: loss normaliser (default contexts.shape[0]).

    Returns:
        jnp array of velocities, shape of y (or (V,)).

    References:
        [IL] multi-token gradient decomposition (the paper's printed probability factor appears
        to carry a sign error; this form is the autodiff-verified one).
    """
    W, contexts = jnp.asarray(W), jnp.asarray(contexts)
    N = contexts.shape[0] if N is None else N
    s_star = jax.nn.softmax(W @ g_star)  # (V,)
    s_ctx = jax.nn.softmax(contexts @ W.T, axis=-1)  # (N, J, 2, V)
    coef = jnp.asarray(weights)[:, None, None] * jnp.array([1.0, -1.0]) * (contexts @ g_star)
    bracket = (jax.nn.one_hot(tokens, W.shape[0], dtype=s_ctx.dtype) - s_ctx
               - s_star[tokens][..., None] + (s_ctx @ s_star)[..., None])
    vel = beta**2 / N * jnp.einsum("njs,njsv->v", coef, bracket)
    return vel if y is None else vel[jnp.asarray(y)]
