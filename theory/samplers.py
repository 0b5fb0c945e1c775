"""Convergence of exact-gradient DPO to the KL-regularised optimum under pair samplers: the uniform
sampler's linear rate and the mixed samplers' quadratic map, in closed form (tabular bandit).

**The paper's claim** (Shi, Zhou & Du, "The Crucial Role of Samplers in Online DPO", ICLR 2025,
arXiv 2409.19605, as we know it; we could not read the paper here): in a tabular bandit (softmax
policy over A actions per prompt, Bradley–Terry preferences from a true reward r*), exact-gradient
DPO converges to π* ∝ π_ref·exp(r*/β) *linearly* with the vanilla (uniform) sampler and
*quadratically* with their mixed samplers DPO-Mix-R / DPO-Mix-P (uniform mixed with a reward- /
policy-dependent pair distribution, "logit mixing"). **Everything below is our reconstruction and
derivation**: the paper's constants, step sizes and exact mixture are not reproduced from it.

Setting (ours). Logits θ ∈ R^{S×A}, u = θ − θ_ref, per prompt x the DPO margin of the ordered pair
(y, y') is z = β(u_y − u_y'). A sampler is a measure W(x, y, y') on ordered pairs; with labels from
BT, p = σ(d*), d* = r*_y − r*_y', the population loss is L_W = Σ W [p ℓ(z) + (1 − p) ℓ(−z)],
ℓ(z) = −log σ(z). Its derivative in z is σ(z) − p, zero for every pair at z = d*, so every sampler
with connected support has the same minimiser u* = r*/β (+ a per-prompt constant, which the policy
ignores): θ* = θ_ref + r*/β. Errors e = θ − θ* are measured centred per prompt (gradients sum to 0
per prompt, so the mean never moves).

Hessian. With b = 1_y − 1_{y'} and s(d) = σ(d)σ(−d), ∂²/∂u² of a pair's term is β² s(z) b bᵀ, so

    H_x = β² Σ_{y,y'} W s(d*) b bᵀ = 2β² Lap(W_x ∘ s*_x)       (Lap(M) = diag(M·1) − M, M symmetrised).

Uniform sampler (W = 1/(S·A²), y, y' i.i.d.): s ≤ 1/4 bounds the curvature by λ_max(H) ≤
β²/(2SA) =: ℓ_s, and gradient descent with the step η = 1/ℓ_s = 2SA/β² contracts the error in the
linear regime by I − ηH, whose eigenvalues on the centred space lie in [0, 1). The error therefore
decays like ρⁿ with

    ρ_unif = 1 − η λ_min(H) = 1 − (4/A)·min_x λ₂(Lap(s*_x))      (λ₂ = algebraic connectivity),

independent of β (the curvature and the step both scale with β²); for A = 2: ρ = 1 − 4 s(d*) — one
step (ρ = 0) when r* is flat, slow (ρ → 1) when reward gaps are large. Next order: the remainder of
the gradient beyond H e is bounded with |σ''| ≤ 1/(6√3), giving ‖e_{n+1} − (I − ηH) e_n‖ ≤ 2√2·|σ''|_max·β·‖e_n‖²
(`uniform_second_order_bound`).

Mixed sampler (Mix-R). Choose W so that the curvature cancels: symmetrised W ∝ 1/s(d*) on every
pair. Since 1/s(d) = 2 + e^d + e^{−d}, this *is* a mixture of the uniform pair law (the constant 2)
and π⁺ ⊗ π⁻ with π^± ∝ exp(±r*) (the e^{±d} terms): per prompt α·Unif(A×A) + (1 − α)·π⁺⊗π⁻ with
α = A²/(A² + Z⁺Z⁻), Z^± = Σ_y exp(±r*_y), and prompts drawn ∝ A² + Z⁺_x Z⁻_x (our choice, so that one
step size serves all prompts). Then Σ_pairs 2W s = 1/N, N = Σ_x (A² + Z⁺_x Z⁻_x), and
H = (β²A/N)·I on the centred space: gradient descent with η = N/(β²A) *is* Newton's method.
Expanding to second order, with T = tanh(d*/2) (σ''/σ' = −tanh(d/2)) and δ_{yy'} = e_y − e_y',

    e_{n+1} = Q_R(e_n) + O(‖e_n‖³),   Q_R(e)_{x,k} = (β/(2A))·Σ_{y'} T_{k y'} (e_k − e_{y'})²,

with ‖e_{n+1} − Q_R(e_n)‖ ≤ β²‖e_n‖³/(24 s_min) (|σ'''| ≤ 1/8, s_min the smallest s(d*)): quadratic
convergence, ‖e_{n+1}‖ ≤ (β·max|T|/√2)‖e_n‖² + O(‖e_n‖³).

Mix-P (policy-dependent). The same mixture built from the current implicit reward r_θ = β(θ − θ_ref)
(π^± ∝ (π_θ/π_ref)^{±β}), re-built every step, with step N_θ/(β²A). The update is then
e_{n+1} = e_n − (1/(βA))·Σ_{pairs} φ(z) b with φ(z) = (σ(z) − p)/s(z) = (1 − 2p) + (1 − p)e^z − p e^{−z};
φ(d*) = 0, φ' = 1, φ'' = T at d*, and φ''' = φ' ≤ e^{|z − d*|}, so

    e_{n+1} = Q_P(e_n) + O(‖e_n‖³),   Q_P = −Q_R,   ‖e_{n+1} − Q_P(e_n)‖ ≤ (β²/3)·e^{√2β‖e_n‖}·‖e_n‖³.

Mix-R and Mix-P share the quadratic constant and differ in its sign. Our reading of "quadratic" is
local (near θ*): far from θ*, Mix-R's step weights 1/s(d*) can blow a far-away pair's gradient up
by e^{|d*|} (see the repro item `sampler-rates`), while Mix-P's weights follow the iterate.

References:
    Shi, Zhou & Du, ICLR 2025, arXiv 2409.19605 (claim: linear vs quadratic). Rafailov et al. 2023
    (DPO, π* ∝ π_ref exp(r*/β)). Derivations above: ours.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit

from dpolab.errors import InputError

#: max |σ''| = 1/(6√3) (at σ = 1/2 ± 1/(2√3)); max |σ'''| = 1/8 (at d = 0).
SIGMA2_MAX = 1.0 / (6.0 * np.sqrt(3.0))
SIGMA3_MAX = 1.0 / 8.0


def _reward(reward) -> np.ndarray:
    r = np.asarray(reward, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 2 or not np.all(np.isfinite(r)):
        raise InputError(f"reward of shape {r.shape} is not allowed: reward must be a finite (S, A) array, A >= 2")
    return r


def _beta(beta) -> float:
    if not (np.isfinite(beta) and beta > 0):
        raise InputError(f"beta={beta!r} is not allowed: beta must be a finite number > 0")
    return float(beta)


def pair_curvature(reward) -> np.ndarray:
    """s(d*) = σ(d*)σ(−d*) of every ordered pair: (S, A, A), d* = r*_y − r*_y'."""
    r = _reward(reward)
    d = r[:, :, None] - r[:, None, :]
    return expit(d) * expit(-d)


def laplacian(M) -> np.ndarray:
    """Graph Laplacian of the symmetrised weights M (…, A, A): diag(M̄·1) − M̄, M̄ = (M + Mᵀ)/2."""
    M = np.asarray(M, dtype=np.float64)
    sym = (M + np.swapaxes(M, -1, -2)) / 2
    sym = sym * (1 - np.eye(M.shape[-1]))
    return np.eye(M.shape[-1]) * sym.sum(-1)[..., None] - sym


def hessian(W, reward, beta) -> np.ndarray:
    """Per-prompt blocks (S, A, A) of the population DPO Hessian at θ*: 2β²·Lap(W ∘ s(d*)).

    Args:
        W: (S, A, A) the sampler's measure on ordered pairs. reward: (S, A) r*. beta: > 0.
    """
    return 2.0 * _beta(beta)**2 * laplacian(np.asarray(W, dtype=np.float64) * pair_curvature(reward))


def centred_eigenvalues(blocks) -> np.ndarray:
    """Eigenvalues (S, A − 1) of each block restricted to the centred space 1⊥ (ascending)."""
    A = blocks.shape[-1]
    basis = np.linalg.qr(np.eye(A) - 1.0 / A, mode="reduced")[0][:, : A - 1]  # spans 1⊥
    return np.linalg.eigvalsh(basis.T @ blocks @ basis)


def uniform_weights(S, A) -> np.ndarray:
    """The vanilla sampler: x uniform, y, y' i.i.d. uniform: W = 1/(S·A²), (S, A, A)."""
    return np.full((S, A, A), 1.0 / (S * A**2))


def uniform_step(S, A, beta) -> float:
    """η = 1/ℓ_s = 2SA/β², ℓ_s = β²/(2SA) the uniform sampler's curvature bound (s ≤ 1/4)."""
    return 2.0 * S * A / _beta(beta)**2


def linear_rate(W, reward, beta, eta) -> float:
    """ρ = max |1 − ηλ| over the centred spectrum of H: the error's asymptotic factor per step."""
    lam = centred_eigenvalues(hessian(W, reward, beta))
    return float(np.max(np.abs(1.0 - eta * lam)))


def uniform_rate(reward) -> float:
    """ρ_unif = 1 − (4/A)·min_x λ₂(Lap(s*_x)) (the uniform sampler at η = 2SA/β²; β-free)."""
    r = _reward(reward)
    return float(1.0 - 4.0 / r.shape[1] * centred_eigenvalues(laplacian(pair_curvature(r)))[:, 0].min())


def uniform_second_order_bound(beta) -> float:
    """C₂ with ‖e_{n+1} − (I − ηH)e_n‖ ≤ C₂‖e_n‖² (uniform sampler, η = 2SA/β²): 2√2·max|σ''|·β."""
    return 2.0 * np.sqrt(2.0) * SIGMA2_MAX * _beta(beta)


def mix_pair_weights(reward) -> tuple[np.ndarray, float]:
    """(W̄, N): the mixed sampler's symmetrised ordered-pair measure W̄ = 1/(2N·s(d*)) off the
    diagonal, and N = Σ_x (A² + Z⁺_x Z⁻_x) (closed form; the diagonal's mass is not returned)."""
    r = _reward(reward)
    A = r.shape[1]
    N = float(np.sum(A**2 + np.exp(r).sum(1) * np.exp(-r).sum(1)))
    W = 1.0 / (2.0 * N * pair_curvature(r))
    return W * (1 - np.eye(A)), N


def mix_newton_step(reward, beta) -> float:
    """η = N/(β²A): with it a gradient step under the mixed sampler is a Newton step at θ*."""
    return mix_pair_weights(reward)[1] / (_beta(beta)**2 * _reward(reward).shape[1])


def quadratic_map(e, reward, beta, sampler) -> np.ndarray:
    """Q(e): the second-order error map of Mix-R ("mix-r") or Mix-P ("mix-p", = −Q_R).

    Args:
        e: (..., S·A) centred errors θ − θ*. reward: (S, A) r*. beta: > 0.
    Returns:
        (..., S·A): Q_R(e)_{x,k} = ±(β/(2A)) Σ_{y'} tanh(d*_{ky'}/2)(e_k − e_{y'})².
    """
    if sampler not in ("mix-r", "mix-p"):
        raise InputError(f"sampler={sampler!r} is not allowed: sampler must be 'mix-r' or 'mix-p'")
    r = _reward(reward)
    S, A = r.shape
    e = np.asarray(e, dtype=np.float64)
    E = e.reshape(*e.shape[:-1], S, A)
    T = np.tanh((r[:, :, None] - r[:, None, :]) / 2)
    delta2 = (E[..., :, None] - E[..., None, :]) ** 2
    q = _beta(beta) / (2 * A) * np.sum(T * delta2, axis=-1)
    return (q if sampler == "mix-r" else -q).reshape(e.shape)


def cubic_bound(reward, beta, sampler, e_norm) -> np.ndarray:
    """C₃(e)·‖e‖³ bounding ‖e_{n+1} − Q(e_n)‖: β²‖e‖³/(24 s_min) (Mix-R), (β²/3)e^{√2β‖e‖}‖e‖³ (Mix-P)."""
    b, n = _beta(beta), np.asarray(e_norm, dtype=np.float64)
    if sampler == "mix-r":
        s = pair_curvature(reward)
        return b**2 * SIGMA3_MAX / (3.0 * s.min()) * n**3
    return b**2 / 3.0 * np.exp(np.sqrt(2.0) * b * n) * n**3
