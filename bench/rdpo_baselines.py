"""Baselines of the "rdpo" suite: the same rDPO fits, the ways a researcher would write them.

- `scipy_grid_loop`: a Python loop of `scipy.optimize.minimize(method="L-BFGS-B")` fits, one per
  configuration, on the NumPy objective `rdpo_objective_np` with its analytic gradient;
- `numpy_newton_grid`: every configuration of the grid at once in vectorised NumPy — damped Newton
  with batched d × d solves and a per-fit backtracking line search (the loss is convex: its
  curvature in z is σ(z)σ(−z) for every ε < 1/2), the best NumPy we could write for d = 4.

References:
    [rDPO] Chowdhury et al., "Provably Robust DPO", arXiv 2403.00409 (the de-biased loss).
"""
from __future__ import annotations

import contextlib
import ctypes

import numpy as np
from scipy import optimize
from scipy.special import expit

# L-BFGS-B settings of the baseline (tight: it stops on the gradient, never on a small f change).
SCIPY_OPTIONS = dict(gtol=1e-10, ftol=0.0, maxiter=10_000, maxfun=20_000)


def rdpo_objective_np(theta, x, theta0, *, beta, eps):
    """rDPO empirical loss and its gradient in NumPy (the baseline's objective).

    L(θ) = mean_i [(1−ε)·softplus(−z_i) − ε·softplus(z_i)] / (1−2ε), z = β X(θ − θ_0), with
    softplus(u) = logaddexp(0, u); ∇L = −β Xᵀ w / n, w = [(1−ε)σ(−z) + εσ(z)] / (1−2ε).

    Args:
      theta: (d,) parameter. x: (n, d) pair features (observed winner minus loser).
      theta0: (d,) reference parameter. beta: β > 0. eps: ε in [0, 1/2).
    Returns:
      (loss, gradient (d,)), float64.

    References:
      [rDPO] (the de-biased loss); `dpolab.theory.losses.rdpo`.
    """
    z = beta * (x @ (theta - theta0))
    sp_pos, sp_neg = np.logaddexp(0.0, z), np.logaddexp(0.0, -z)  # softplus(z), softplus(−z)
    scale = 1.0 / (1.0 - 2.0 * eps)
    loss = scale * np.mean((1.0 - eps) * sp_neg - eps * sp_pos)
    # σ(−z) = exp(−softplus(z)), σ(z) = exp(−softplus(−z)): no overflow for large |z|
    w = scale * ((1.0 - eps) * np.exp(-sp_pos) + eps * np.exp(-sp_neg))
    return loss, -beta * (w @ x) / x.shape[0]


def scipy_rdpo_fit(x, theta0, *, beta, eps, options=None):
    """Unconstrained rDPO fit by `scipy.optimize.minimize(method="L-BFGS-B")` from θ_0.

    Args:
      x: (n, d) float64 pair features. theta0: (d,) start and reference parameter.
      beta, eps: β and ε of the loss. options: L-BFGS-B options (default `SCIPY_OPTIONS`).
    Returns:
      `scipy.optimize.OptimizeResult` (x: (d,) θ̂, fun, nit, nfev, message).
    """
    objective = lambda theta: rdpo_objective_np(theta, x, theta0, beta=beta, eps=eps)
    return optimize.minimize(objective, np.array(theta0, dtype=np.float64), jac=True,
                             method="L-BFGS-B",
                             options=dict(SCIPY_OPTIONS if options is None else options))


def openblas_thread_controls():
    """(get_num_threads, set_num_threads) ctypes functions of every OpenBLAS loaded in this process
    (NumPy's and SciPy's wheels each bundle one); empty where none is found (e.g. not Linux)."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({ln.split()[-1] for ln in f
                            if "openblas" in ln.lower() and ln.split()[-1].startswith("/")})
    except OSError:
        return []
    controls = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        names = [(f"{prefix}_get_num_threads{suffix}", f"{prefix}_set_num_threads{suffix}")
                 for prefix in ("scipy_openblas", "openblas") for suffix in ("64_", "")]
        found = [(getattr(lib, g), getattr(lib, s)) for g, s in names
                 if hasattr(lib, g) and hasattr(lib, s)]
        if found:
            controls.append(found[0])
    return controls


@contextlib.contextmanager
def single_threaded_blas():
    """Pins every OpenBLAS loaded in this process to one thread; restores the old counts after.

    L-BFGS-B on a d = 4 problem makes many tiny BLAS calls; with OpenBLAS's default thread pool
    each may pay a thread wake-up, which on a busy 2-core host made the baseline loop ~20× slower.
    One thread is the baseline's best setting, so it is timed that way (what threadpoolctl does,
    without the dependency). Yields the number of libraries pinned (0: none found, run as is).
    """
    controls = openblas_thread_controls()
    old = [int(get()) for get, _ in controls]
    for _, put in controls:
        put(1)
    try:
        yield len(controls)
    finally:
        for (_, put), n in zip(controls, old):
            put(n)


def scipy_grid_loop(x, theta0, *, beta, eps_values, ns, options=None):
    """The baseline: one L-BFGS-B fit per (n, ε, seed), in a Python loop.

    Args:
      x: (E, R, n_max, d) float64 features. theta0: (d,). beta: β. eps_values: (E,) flip rates.
      ns: (M,) sample sizes (fit m uses the first ns[m] pairs).
    Returns:
      (theta (M, E, R, d), fun (M, E, R), nit (M, E, R), messages: list of distinct messages).
    """
    n_eps, n_seeds, _, d = x.shape
    theta = np.empty((len(ns), n_eps, n_seeds, d))
    fun = np.empty(theta.shape[:3])
    nit = np.empty(theta.shape[:3], dtype=int)
    messages = set()
    for m, n in enumerate(ns):
        for e, eps in enumerate(eps_values):
            for r in range(n_seeds):
                res = scipy_rdpo_fit(x[e, r, :n], theta0, beta=beta, eps=float(eps),
                                     options=options)
                theta[m, e, r], fun[m, e, r], nit[m, e, r] = res.x, res.fun, res.nit
                messages.add(str(res.message))
    return theta, fun, nit, sorted(messages)


def numpy_newton_grid(x, theta0, *, beta, eps_values, ns, pair=None, rows=None, gtol=1e-10, max_iter=100):
    """Every (n, ε, seed) rDPO fit of the grid at once: vectorised damped Newton in NumPy.

    Args:
      x: (E, R, n_max, d) float64 features. theta0: (d,) start and reference parameter.
      beta: β. eps_values: (E,) flip rates. ns: (M,) sample sizes (fit m uses the first ns[m] pairs).
      pair, rows: optional (E, R, n_max) pair numbers and (P, d) pair rows with x[e, r, i] =
        rows[pair[e, r, i]] (`dpolab.sims.bandit.pair_rows`): every fit then reads its counts over
        the P rows, which all fits share (the fast path's grouped rule), instead of its own rows.
      gtol: stop when every fit's max-abs gradient is below it (as the SciPy baseline's gtol).
      max_iter: the most Newton iterations.
    Returns:
      (theta (M, E, R, d), loss (M, E, R), iterations used).
    """
    n_eps, n_seeds, n_max, d = x.shape
    m = len(ns)
    eps = np.broadcast_to(np.asarray(eps_values, float)[None, :, None], (m, n_eps, n_seeds)).reshape(-1, 1)
    scale = 1.0 / (1.0 - 2.0 * eps)
    if pair is None:
        xs = np.broadcast_to(x, (m,) + x.shape).reshape(-1, n_max, d)  # (F, n_max, d), F = M·E·R
        xt = np.ascontiguousarray(xs.transpose(0, 2, 1))  # (F, d, n_max), for the Hessian's BLAS calls
        share = (np.arange(n_max)[None, :] < np.asarray(ns)[:, None]) / np.asarray(ns)[:, None]
        share = np.broadcast_to(share[:, None, None, :], (m, n_eps, n_seeds, n_max)).reshape(-1, n_max)
        margins = lambda delta: np.matmul(xs, delta[..., None])[..., 0]
        reduce = lambda v: np.matmul(v[:, None, :], xs)[:, 0, :]
        moment = lambda c: np.matmul(xt * c[:, None, :], xs)
    else:
        share = np.stack([np.bincount(pair[e, r, :n], minlength=len(rows)) / n
                          for n in ns for e in range(n_eps) for r in range(n_seeds)])  # (F, P)
        outer = (rows[:, :, None] * rows[:, None, :]).reshape(len(rows), d * d)
        margins = lambda delta: delta @ rows.T
        reduce = lambda v: v @ rows
        moment = lambda c: (c @ outer).reshape(-1, d, d)

    def loss_and_z(theta):
        z = beta * margins(theta - theta0)
        sp_pos = np.logaddexp(0.0, z)
        sp_neg = sp_pos - z  # softplus(−z) = softplus(z) − z
        return np.sum(share * scale * ((1.0 - eps) * sp_neg - eps * sp_pos), axis=1), z

    theta = np.broadcast_to(np.asarray(theta0, float), (share.shape[0], d)).copy()
    loss, z = loss_and_z(theta)
    iters = 0
    while iters < max_iter:
        sig_neg = expit(-z)  # σ(−z); σ(z) = 1 − σ(−z)
        w = scale * ((1.0 - eps) * sig_neg + eps * (1.0 - sig_neg))
        grad = -beta * reduce(share * w)
        if np.max(np.abs(grad)) < gtol:
            break
        hess = beta**2 * moment(share * sig_neg * (1.0 - sig_neg)) + 1e-12 * np.eye(d)
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        t = np.ones((share.shape[0], 1))
        for _ in range(40):  # per-fit backtracking (Armijo) until every fit's loss decreases enough
            new_loss, new_z = loss_and_z(theta - t * step)
            bad = new_loss > loss - 1e-4 * t[:, 0] * np.sum(grad * step, axis=1) + 1e-15
            if not np.any(bad):
                break
            t[bad] *= 0.5
        theta, loss, z = theta - t * step, new_loss, new_z
        iters += 1
    shape = (m, n_eps, n_seeds)
    return theta.reshape(shape + (d,)), loss.reshape(shape), iters
