"""Independent implementations the fast path is checked against (THEORY §1.1–1.2).

- `full_vocab_autodiff`: the whole V × d head, the real log-softmax DPO-family loss and
  `jax.grad`, the way the paper's code trains. Shares nothing with `dpolab.sims.train` but the
  optimiser and the loss functions.
- `margin_recursion`: the exact discrete GD recursion r(n+1) = r(n) + (ηβ²/N) C w(r(n)) on the
  cross-term matrix C, for training and held-out samples.
- `gradient_flow`: Lemma 4.1, τ dr/dt = (β²/N) C w(r), integrated with `scipy.integrate.solve_ivp`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.integrate import solve_ivp

from dpolab.theory.im_li_dynamics import cross_terms
from dpolab.theory.losses import get_loss


def full_vocab_autodiff(g, y_w, y_l, w0, *, beta, eta, eps=0.0, steps, loss="dpo",
                        optimizer="gd", g_test=None, y_w_test=None, y_l_test=None):
    """Trains the full head W (V × d) from W_0 by autodiff of the log-softmax loss.

    Args:
      g: (N, d) features. y_w, y_l: (N,) vocabulary ids. w0: (V, d) reference head.
      g_test, y_w_test, y_l_test: optional held-out samples, (M, d) and (M,).
    Returns:
      dict of (steps+1, ·) arrays: margins, test_margins, logp_chosen, logp_rejected, loss,
      and the final W.
    """
    fn = get_loss(loss)

    def margins(w, g_, yw, yl):
        logp = jax.nn.log_softmax(g_ @ w.T, axis=1)
        ref_ = jax.nn.log_softmax(g_ @ w0.T, axis=1)
        pick = lambda a, y: jnp.take_along_axis(a, y[:, None], axis=1)[:, 0]
        return beta * ((pick(logp, yw) - pick(ref_, yw)) - (pick(logp, yl) - pick(ref_, yl)))

    def objective(w):
        return jnp.mean(fn.value(margins(w, g, y_w, y_l), eps))

    opt = optax.sgd(eta) if optimizer == "gd" else optax.adam(eta)
    has_test = g_test is not None

    def observe(w):
        logp = jax.nn.log_softmax(g @ w.T, axis=1)
        out = dict(margins=margins(w, g, y_w, y_l), loss=objective(w),
                   logp_chosen=jnp.take_along_axis(logp, y_w[:, None], axis=1)[:, 0],
                   logp_rejected=jnp.take_along_axis(logp, y_l[:, None], axis=1)[:, 0])
        if has_test:
            out["test_margins"] = margins(w, g_test, y_w_test, y_l_test)
        return out

    def step(carry, _):
        w, state = carry
        updates, state = opt.update(jax.grad(objective)(w), state, w)
        w = optax.apply_updates(w, updates)
        return (w, state), observe(w)

    (w, _), recs = jax.lax.scan(step, (w0, opt.init(w0)), None, length=steps)
    first = observe(w0)
    out = {k: jnp.concatenate([first[k][None], recs[k]]) for k in first}
    out["w"] = w
    return out


def dataset_cross_terms(a, b):
    """C between two `Dataset`s (rows of a against rows of b), tokens in used-token space."""
    return cross_terms(a.g, a.chosen, a.rejected, b.g, b.chosen, b.rejected)


def margin_recursion(c_train, c_test, *, beta, eta, steps, loss="dpo", eps=0.0):
    """Exact GD margin recursion (THEORY §1.2) for train and held-out samples.

    Args:
      c_train: (N, N) cross terms of the training samples. c_test: (M, N) held-out rows against
        the training samples. beta, eta, eps: floats. steps: int.
    Returns:
      (steps+1, N) train margins and (steps+1, M) held-out margins.
    """
    weight = get_loss(loss).weight
    n = c_train.shape[0]
    scale = eta * beta**2 / n

    def step(carry, _):
        r, rt = carry
        w = weight(r, eps)
        nxt = (r + scale * c_train @ w, rt + scale * c_test @ w)
        return nxt, nxt

    init = (jnp.zeros(n), jnp.zeros(c_test.shape[0]))
    _, (r, rt) = jax.lax.scan(step, init, None, length=steps)
    return (jnp.concatenate([init[0][None], r]), jnp.concatenate([init[1][None], rt]))


def gradient_flow(c_train, t_eval, *, beta, tau=1.0, loss="dpo", eps=0.0, rtol=1e-11,
                  atol=1e-13):
    """Lemma 4.1 by `solve_ivp` (DOP853): (len(t_eval), N) margins at the times t_eval."""
    weight = get_loss(loss).weight
    c = np.asarray(c_train)
    n = c.shape[0]

    def rhs(_, r):
        return (beta**2 / (n * tau)) * (c @ np.asarray(weight(r, eps)))

    sol = solve_ivp(rhs, (0.0, float(t_eval[-1])), np.zeros(n), t_eval=np.asarray(t_eval),
                    method="DOP853", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"gradient flow integration failed: {sol.message}")
    return sol.y.T


#: Kinds of Gram entries g_iᵀg_j of the data model (THEORY §1.3) whose law `gram_entry_tails` knows.
GRAM_KINDS = ("diagonal", "same-cluster", "opposite-cluster", "other-value")


def gram_entry_tails(kind, *, v, d, lb, Z):
    """Exact (P(dev > u), P(dev < −u)) of one Gram entry's deviation from its mean, u = 2εv.

    Written from THEORY §1.3 alone (it calls nothing in `dpolab.theory`): g = μ + vξ,
    ξ ~ N(0, I_d), μ = l_b e_1 ± c_k with orthonormal c_k ⟂ e_1, so ‖μ‖² = l_b² + 1 and
    μ_iᵀμ_j = l_b² + 1 (same cluster), l_b² − 1 (the value's other cluster), l_b² (another value);
    ε = 1/(16v(Z+2)), so u = 1/(8(Z+2)).
    - diagonal: ‖g‖²/v² is non-central χ²_d(‖μ‖²/v²); dev = ‖g‖² − ‖μ‖² − dv².
    - i ≠ j (independent ξ_i, ξ_j): given g_i, g_iᵀg_j ~ N(g_iᵀμ_j, v²‖g_i‖²). With b = μ_j,
      z = b̂ᵀξ_i ~ N(0, 1), a = μ_i = a₁b̂ + a_⊥: dev | z, Y ~ N(v‖b‖z, v²((a₁ + vz)² + v²Y)),
      Y = ‖a_⊥/v + ξ_⊥‖² ~ non-central χ²_{d−1}(‖a_⊥‖²/v²) independent of z. The two-dimensional
      expectation is Gauss–Hermite in z (120 nodes) and the trapezoid rule over Y's density on its
      [1e-15, 1 − 1e-15] quantile range (8001 points); both errors are < 1e-9 here.

    Returns: (upper, lower) tail probabilities, floats.
    """
    from scipy import stats
    from scipy.special import ndtr

    if kind not in GRAM_KINDS:
        raise ValueError(f"kind={kind!r} is not allowed: kind must be one of {GRAM_KINDS}")
    u = 1.0 / (8.0 * (Z + 2.0))
    norm2 = lb**2 + 1.0
    if kind == "diagonal":
        law = stats.ncx2(d, norm2 / v**2)
        mean = norm2 + d * v**2
        return float(law.sf((mean + u) / v**2)), float(law.cdf((mean - u) / v**2))
    inner = {"same-cluster": lb**2 + 1.0, "opposite-cluster": lb**2 - 1.0, "other-value": lb**2}[kind]
    a1 = inner / np.sqrt(norm2)
    perp2 = max(norm2 - a1**2, 0.0)
    law = stats.ncx2(d - 1, perp2 / v**2) if perp2 > 0 else stats.chi2(d - 1)
    y = np.linspace(law.ppf(1e-15), law.isf(1e-15), 8001)
    wy = law.pdf(y)
    z, wz = np.polynomial.hermite_e.hermegauss(120)
    wz = wz / np.sqrt(2 * np.pi)
    m = v * np.sqrt(norm2) * z[:, None]
    s = v * np.sqrt((a1 + v * z[:, None]) ** 2 + v**2 * y[None, :])
    tails = []
    for side in (ndtr((m - u) / s), ndtr((-u - m) / s)):
        over_y = np.trapezoid(side * wy[None, :], y, axis=1) / np.trapezoid(wy, y)
        tails.append(float(wz @ over_y))
    return tuple(tails)
