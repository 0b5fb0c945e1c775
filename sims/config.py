"""Validated configurations for the Im & Li simulations.

A simulation is split into *static* settings (shapes, names, step counts: they fix what is
compiled) held in frozen dataclasses, and *dynamic* parameters (β, η, v, l_b, ...) held in a
`SimParams` pytree so that seeds and parameters can be vmapped. Every value is checked on the
host before anything is compiled; a bad one raises `ValueError` naming the field, the value and
what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from dpolab.errors import InputError
from dpolab.theory import im_li
from dpolab.theory.losses import LOSSES

TOKEN_MODES = ("distinct", "shared", "yes_no")
OPTIMIZERS = ("gd", "adam")
PATHS = ("auto", "features", "gram")


def _fail(field, value, allowed):
    raise InputError(f"{field}={value!r} is not allowed: {field} must be {allowed}")


def _check_int(field, value, lo):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        _fail(field, value, f"an integer >= {lo}")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Static shape of the value-mixture data (THEORY §1.3).

    Attributes:
      K: number of values (concepts); each is a pair of clusters C_{k,+}, C_{k,-}.
      Q: training samples per cluster: an int, or a tuple of K ints (unbalanced values).
      d: feature dimension; needs d >= K + 1 (e_1 plus K orthogonal concept directions).
      n_test: held-out samples per cluster (a fresh test set from the same distribution).
      tokens: "distinct" (value k has its own pair, Z = 1), "shared" (groups of Z values share
        one pair) or "yes_no" (one pair for all values, Z = K; the paper's experiments).
      Z: group size for tokens="shared"; ignored otherwise.
      vocab: reference vocabulary size V used for exact log-probabilities.
      noise_spectrum: optional d per-coordinate variances (relative); noise covariance is then
        v² diag(noise_spectrum) instead of v² I.
    """

    K: int = 4
    Q: int | tuple[int, ...] = 50
    d: int = 250
    n_test: int = 50
    tokens: str = "distinct"
    Z: int = 1
    vocab: int = 64
    noise_spectrum: tuple[float, ...] | None = None

    def __post_init__(self):
        _check_int("K", self.K, 1)
        if isinstance(self.Q, (tuple, list)):
            if len(self.Q) != self.K:
                _fail("Q", self.Q, f"an int or a tuple of K={self.K} ints")
            for q in self.Q:
                _check_int("Q", q, 1)
            object.__setattr__(self, "Q", tuple(int(q) for q in self.Q))
        else:
            _check_int("Q", self.Q, 1)
        _check_int("d", self.d, 2)
        if self.d <= self.K:
            _fail("d", self.d, f"> K={self.K} (e_1 and K orthogonal concept vectors need d >= K + 1)")
        _check_int("n_test", self.n_test, 0)
        if self.tokens not in TOKEN_MODES:
            _fail("tokens", self.tokens, f"one of {TOKEN_MODES}")
        _check_int("Z", self.Z, 1)
        _check_int("vocab", self.vocab, 2)
        if self.vocab < 2 * self.n_pairs:
            _fail("vocab", self.vocab, f">= {2 * self.n_pairs} (two tokens per value pair)")
        if self.noise_spectrum is not None:
            spec = np.asarray(self.noise_spectrum, dtype=float)
            if spec.shape != (self.d,) or not np.all(np.isfinite(spec)) or np.any(spec < 0):
                _fail("noise_spectrum", f"<array of shape {spec.shape}>",
                      f"{self.d} finite non-negative variances")
            object.__setattr__(self, "noise_spectrum", tuple(float(s) for s in spec))

    @property
    def q_per_value(self) -> tuple[int, ...]:
        return self.Q if isinstance(self.Q, tuple) else (self.Q,) * self.K

    @property
    def n_train(self) -> int:
        return 2 * sum(self.q_per_value)

    @property
    def n_pairs(self) -> int:
        """Number of distinct (unordered) response-token pairs."""
        if self.tokens == "distinct":
            return self.K
        if self.tokens == "yes_no":
            return 1
        return math.ceil(self.K / self.Z)

    @property
    def z_effective(self) -> int:
        """Z of THEORY §1.3: the most value pairs any one token appears in."""
        return {"distinct": 1, "yes_no": self.K}.get(self.tokens, min(self.Z, self.K))


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """Static settings of the last-layer trainer.

    Attributes:
      loss: a name from `dpolab.theory.losses.LOSSES` (dpo, cdpo, rdpo, ipo, slic).
      optimizer: "gd" (plain gradient descent, step η) or "adam" (optax scale_by_adam, step η).
      steps: number of optimiser steps (time t = steps·η with τ = 1).
      stride: record every `stride` steps; steps must be a multiple of stride.
      path: "auto" (the cheaper exact path by `dpolab.sims.blocks.training_path`'s rule),
        "features" (dense passes over the features) or "gram" (the margin recursion on the
        per-pair Gram blocks; GD only).
      float32: train in float32 (features, reference logits and parameters cast down), for sweeps
        that do not need float64; compare with `dpolab.sims.blocks.margin_tolerance`.
    """

    loss: str = "dpo"
    optimizer: str = "gd"
    steps: int = 100
    stride: int = 1
    path: str = "auto"
    float32: bool = False

    def __post_init__(self):
        if self.loss not in LOSSES:
            _fail("loss", self.loss, f"one of {tuple(LOSSES)}")
        if self.optimizer not in OPTIMIZERS:
            _fail("optimizer", self.optimizer, f"one of {OPTIMIZERS}")
        _check_int("steps", self.steps, 0)
        _check_int("stride", self.stride, 1)
        if self.steps % self.stride:
            _fail("stride", self.stride, f"a divisor of steps={self.steps}")
        if self.path not in PATHS:
            _fail("path", self.path, f"one of {PATHS}")
        if self.path == "gram" and self.optimizer != "gd":
            _fail("path", self.path, f"'auto' or 'features' with optimizer={self.optimizer!r} "
                  "(the Gram recursion is exact for plain GD only)")
        if not isinstance(self.float32, bool):
            _fail("float32", self.float32, "True or False")

    @property
    def n_checkpoints(self) -> int:
        return self.steps // self.stride + 1


class SimParams(NamedTuple):
    """Dynamic parameters (a pytree: every leaf may carry leading vmap axes).

    beta: DPO temperature β > 0. eta: step size η > 0. eps: loss flip rate ε in [0, 1/2).
    v: noise scale >= 0. lb: bias length l_b >= 0. delta: concept-vector tilt δ in [0, 1]
    (|<c_i, e_{c_i}>| = 1 − δ²/8). ref_scale: std of reference logits per unit feature norm.
    concept_cos: pairwise cosine ρ in [0, 1) of the concept vectors (ρ = 0: orthogonal values,
    THEORY §1.3; ρ > 0 mixes in a direction shared by all values, see `dpolab.sims.data.concept_vectors`).
    flip: probability in [0, 1/2) that a training label is flipped (preferred and rejected swapped;
    the features stay those of the sample's cluster; held-out splits are never flipped).
    """

    beta: jnp.ndarray
    eta: jnp.ndarray
    eps: jnp.ndarray
    v: jnp.ndarray
    lb: jnp.ndarray
    delta: jnp.ndarray
    ref_scale: jnp.ndarray
    concept_cos: jnp.ndarray
    flip: jnp.ndarray


_RANGES = {
    "beta": (lambda x: x > 0, "> 0"),
    "eta": (lambda x: x > 0, "> 0"),
    "eps": (lambda x: (x >= 0) & (x < 0.5), "in [0, 1/2)"),
    "v": (lambda x: x >= 0, ">= 0"),
    "lb": (lambda x: x >= 0, ">= 0 (the bias direction's length)"),
    "delta": (lambda x: (x >= 0) & (x <= 1), "in [0, 1]"),
    "ref_scale": (lambda x: x >= 0, ">= 0"),
    "concept_cos": (lambda x: (x >= 0) & (x < 1), "in [0, 1)"),
    "flip": (lambda x: (x >= 0) & (x < 0.5), "in [0, 1/2)"),
}


def make_params(*, beta, eta, v, lb=0.5, eps=0.0, delta=0.0, ref_scale=1.0, concept_cos=0.0,
                flip=0.0) -> SimParams:
    """Validates dynamic parameters (scalars or arrays) and returns a `SimParams`."""
    values = dict(beta=beta, eta=eta, eps=eps, v=v, lb=lb, delta=delta, ref_scale=ref_scale,
                  concept_cos=concept_cos, flip=flip)
    for field, value in values.items():
        arr = np.asarray(value, dtype=float)
        ok, allowed = _RANGES[field]
        if not np.all(np.isfinite(arr)) or not np.all(ok(arr)):
            bad = arr if arr.ndim == 0 else arr[~(np.isfinite(arr) & ok(np.nan_to_num(arr)))]
            _fail(field, bad.tolist(), f"finite and {allowed}")
    return SimParams(**{k: jnp.asarray(v) for k, v in values.items()})


def theorem_regime(*, K, Q, beta=1.0, steps=50, n_test=None, tokens="distinct", loss="dpo",
                   v=None, delta=0.0, lb=0.5, stride=1):
    """A configuration inside Theorem 4.2's conditions that trains exactly to τ_1.

    d = 5Q, v = 1/(32√Q), l_b = 1/2, distinct tokens (Z = 1), GD with η = τ_1/steps so that the
    last checkpoint is t = τ_1 = Kτ·log3/(5β²) (τ = 1). Returns (DataSpec, TrainSpec, SimParams).
    """
    spec = DataSpec(K=K, Q=Q, d=im_li.default_d(Q), n_test=Q if n_test is None else n_test, tokens=tokens)
    eta = im_li.tau_1(K=K, beta=beta) / steps
    params = make_params(beta=beta, eta=eta, v=im_li.default_v(Q) if v is None else v,
                         lb=lb, delta=delta)
    return spec, TrainSpec(loss=loss, optimizer="gd", steps=steps, stride=stride), params
