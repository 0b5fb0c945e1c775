"""Canonical pairwise preference losses of the margin z = β·h and their gradient weights.

Every loss has the uniform signature ``loss(z, eps)`` (``eps`` is ignored by ``dpo``, ``ipo`` and
``slic``) and a closed-form weight w(z) = −d loss/dz, which is what a trainer uses in place of
σ(−r) (THEORY §1.2: the GPO weight −f′). ``z`` may be a scalar or an array of any shape (numpy or
JAX); outputs have the same shape. All forms are built from softplus / sigmoid, so values and
weights stay finite for |z| up to 1e4 in float32 and float64. ``eps`` is traceable (it may be
vmapped); check a concrete one with :func:`validate_eps` before compiling.

Conventions of widely used implementations. Hugging Face TRL's ``DPOTrainer`` computes
``logits`` = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)] =: h and applies its
losses to β·h; our z is that β·h, so (with ε = TRL's ``label_smoothing``):

* ``dpo``  = TRL ``loss_type="sigmoid"``, label_smoothing 0: −log σ(βh).
* ``cdpo`` = TRL ``loss_type="sigmoid"`` with label_smoothing ε (label-smoothed DPO, after
  Mitchell's cDPO note; in TRL up to 0.28 per the project's notes) and OpenRLHF's ``DPOLoss`` with
  ``label_smoothing``: −(1−ε)log σ(βh) − ε log σ(−βh).
* ``rdpo`` = TRL ``loss_type="robust"``: (−(1−ε)log σ(βh) + ε log σ(−βh))/(1−2ε).
* ``slic`` = TRL ``loss_type="hinge"``: max(0, 1 − βh) (with the reference model; the SLiC-HF
  paper's calibration loss has no reference and a margin δ).
* ``ipo`` differs. With TRL's temperature β′, TRL's ``loss_type="ipo"`` is (h − 1/(2β′))², and
  for IPO TRL first *averages* each response's log-probabilities over its tokens (h is a
  difference of per-token means); ours is (z − 1)² with z = βh built from *summed*
  (sequence-level) log-ratios, the GPO convention of [IL] (THEORY §1.2). For single-token
  responses the two h agree, and then ipo(βh) = (βh − 1)² = β²(h − 1/β)²
  = β²·TRL_ipo(h; β_TRL = β/2); equivalently TRL_ipo(h; β′) = ipo(2β′h)/(4β′²). So our target
  log-ratio is h = 1/β (z* = 1) where TRL's is h = 1/(2β′) (a factor 2 in β), and our loss is
  TRL's scaled by β² (which rescales gradients, i.e. the effective learning rate).

All of these are per pair; TRL averages them over the batch, as our trainers average over pairs.

References:
    [DPO] Rafailov et al., "Direct Preference Optimization", NeurIPS 2023, arXiv 2305.18290.
    [rDPO] Chowdhury, Kini, Natarajan, "Provably Robust DPO", ICML 2024, arXiv 2403.00409
        (cDPO, rDPO and the de-biased loss φ̂_ε; THEORY §2.2).
    [IPO] Azar et al., "A General Theoretical Paradigm to Understand Learning from Human
        Preferences", arXiv 2310.12036.
    [SLiC] Zhao et al., "SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
        arXiv 2305.10425.
    [TRL] von Werra et al., Hugging Face TRL, ``trl/trainer/dpo_trainer.py`` (``dpo_loss``:
        loss types sigmoid, robust, hinge, ipo); OpenRLHF ``openrlhf/models/loss.py`` (DPOLoss).
    [IL] Im & Li, "Can DPO Learn Diverse Human Values?", arXiv 2408.03459 (GPO weight −f′,
        IPO as f(r) = (r − 1)², SLiC as f(r) = max(0, 1 − r); THEORY §1.2).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from dpolab.errors import InputError

Array = jax.Array
LossFn = Callable[..., Array]


def _as_float(z) -> Array:
    """Returns z as a JAX array of a floating dtype (integers promote to the default float)."""
    z = jnp.asarray(z)
    return z if jnp.issubdtype(z.dtype, jnp.floating) else z.astype(jnp.result_type(float))


def logistic_loss(z) -> Array:
    """ℓ(z) = −log σ(z), computed as softplus(−z) (never log(sigmoid)).

    Args:
        z: margins, any shape.

    Returns:
        ℓ(z), same shape as ``z``.

    References:
        [DPO] Eq. 7; THEORY notation.
    """
    return jax.nn.softplus(-_as_float(z))


def dpo(z, eps=0.0) -> Array:
    """DPO loss ℓ(z) = softplus(−z); ``eps`` is ignored.

    Same as TRL ``loss_type="sigmoid"`` with label_smoothing 0 at z = β·logits. References:
    [DPO] Eq. 7.
    """
    del eps
    return logistic_loss(z)


def cdpo(z, eps) -> Array:
    """Conservative DPO (label smoothing): (1−ε)ℓ(z) + εℓ(−z).

    Biased under flips: E_flip = (1 − 2ε(1−ε))ℓ(z) + 2ε(1−ε)ℓ(−z). This is label-smoothed DPO:
    TRL's ``loss_type="sigmoid"`` with ``label_smoothing`` = ε (up to TRL 0.28 per the project's
    notes) and OpenRLHF's ``DPOLoss(label_smoothing=ε)``, both at z = β·logits.
    References: [rDPO]; Mitchell, "A note on DPO with noisy preferences" (cDPO); THEORY §2.2.
    """
    return (1.0 - eps) * logistic_loss(z) + eps * logistic_loss(-_as_float(z))


def rdpo(z, eps) -> Array:
    """Robust DPO: ℓ̂_ε(z) = [(1−ε)ℓ(z) − εℓ(−z)] / (1 − 2ε), for 0 ≤ ε < 1/2.

    Unbiased: (1−ε)ℓ̂_ε(z) + εℓ̂_ε(−z) = ℓ(z). Unbounded below as z → ∞ (slope −ε/(1−2ε)).
    Identical to TRL's ``loss_type="robust"`` with ``label_smoothing`` = ε at z = β·logits:
    (−(1−ε)log σ(z) + ε log σ(−z))/(1−2ε).
    References: [rDPO]; THEORY §2.2.
    """
    return debias(dpo, z, eps)


def ipo(z, eps=0.0) -> Array:
    """IPO in the GPO convention of [IL]: f(z) = (z − 1)²; ``eps`` is ignored.

    [IPO]'s own target margin 1/(2τ) is absorbed into the scale of z. Not TRL's IPO: TRL's
    ``loss_type="ipo"`` is (h − 1/(2β′))² on per-token-averaged log-ratios h; ours uses summed
    log-ratios and z = βh, and for single tokens ipo(βh) = β²·TRL_ipo(h; β′ = β/2) (module
    docstring). References: [IPO] Eq. 17; [IL] (THEORY §1.2).
    """
    del eps
    return (_as_float(z) - 1.0) ** 2


def slic(z, eps=0.0) -> Array:
    """SLiC hinge loss max(0, 1 − z); ``eps`` is ignored.

    Same as TRL ``loss_type="hinge"`` (max(0, 1 − β·logits)). References: [SLiC]; [IL].
    """
    del eps
    return jnp.maximum(0.0, 1.0 - _as_float(z))


def debias(loss_fn: LossFn, z, eps) -> Array:
    """De-biased loss φ̂_ε(z) = [(1−ε)φ(z) − εφ(−z)] / (1 − 2ε) of any base loss φ.

    Args:
        loss_fn: base loss φ with signature ``loss_fn(z, eps)`` (called with eps = 0).
        z: margins, any shape.
        eps: flip rate, 0 ≤ ε < 1/2 (not checked here; see :func:`validate_eps`).

    Returns:
        φ̂_ε(z), same shape as ``z``. ``debias(dpo, ·)`` is rDPO; ``debias(ipo, ·)`` rIPO.

    References:
        [rDPO] (general de-biasing); THEORY §2.2.
    """
    z = _as_float(z)
    return ((1.0 - eps) * loss_fn(z, 0.0) - eps * loss_fn(-z, 0.0)) / (1.0 - 2.0 * eps)


def dpo_weight(z, eps=0.0) -> Array:
    """DPO weight w(z) = −ℓ′(z) = σ(−z). References: [DPO] §4; [IL] Lemma 4.1."""
    del eps
    return jax.nn.sigmoid(-_as_float(z))


def cdpo_weight(z, eps) -> Array:
    """cDPO weight (1−ε)σ(−z) − εσ(z) = σ(−z) − ε; negative once z > log((1−ε)/ε). [rDPO]."""
    return dpo_weight(z) - eps


def rdpo_weight(z, eps) -> Array:
    """rDPO weight [(1−ε)σ(−z) + εσ(z)]/(1−2ε) = σ(−z) + ε/(1−2ε); never switches off. [rDPO]."""
    return dpo_weight(z) + eps / (1.0 - 2.0 * eps)


def ipo_weight(z, eps=0.0) -> Array:
    """IPO weight −f′(z) = 2(1 − z). References: [IL] (GPO weight −f′), [IPO]."""
    del eps
    return 2.0 * (1.0 - _as_float(z))


def slic_weight(z, eps=0.0) -> Array:
    """SLiC subgradient weight 1[z < 1]; at the kink z = 1 we choose the subgradient 0.

    References: [SLiC]; [IL] (GPO weight −f′).
    """
    del eps
    z = _as_float(z)
    return (z < 1.0).astype(z.dtype)


def debias_weight(weight_fn: LossFn, z, eps) -> Array:
    """Weight of φ̂_ε: ŵ(z) = [(1−ε)w(z) + εw(−z)] / (1 − 2ε), with w = −φ′. References: [rDPO]."""
    z = _as_float(z)
    return ((1.0 - eps) * weight_fn(z, 0.0) + eps * weight_fn(-z, 0.0)) / (1.0 - 2.0 * eps)


class PairwiseLoss(NamedTuple):
    """A registered pairwise loss: value(z, eps), its weight −d value/dz, equation and source."""

    name: str
    value: LossFn
    weight: LossFn
    equation: str
    reference: str


LOSSES: dict[str, PairwiseLoss] = {
    "dpo": PairwiseLoss("dpo", dpo, dpo_weight, "ℓ(z) = softplus(−z); w = σ(−z)",
                        "Rafailov et al. 2023, arXiv 2305.18290"),
    "cdpo": PairwiseLoss("cdpo", cdpo, cdpo_weight, "(1−ε)ℓ(z) + εℓ(−z); w = σ(−z) − ε",
                         "Chowdhury et al. 2024, arXiv 2403.00409 (cDPO)"),
    "rdpo": PairwiseLoss("rdpo", rdpo, rdpo_weight,
                         "[(1−ε)ℓ(z) − εℓ(−z)]/(1−2ε); w = σ(−z) + ε/(1−2ε)",
                         "Chowdhury et al. 2024, arXiv 2403.00409 (rDPO)"),
    "ipo": PairwiseLoss("ipo", ipo, ipo_weight, "(z − 1)²; w = 2(1 − z)",
                        "Azar et al. 2023, arXiv 2310.12036; Im & Li, arXiv 2408.03459"),
    "slic": PairwiseLoss("slic", slic, slic_weight, "max(0, 1 − z); w = 1[z < 1]",
                         "Zhao et al. 2023, arXiv 2305.10425; Im & Li, arXiv 2408.03459"),
}


def get_loss(name: str) -> PairwiseLoss:
    """Looks up a registered loss by its canonical name.

    Args:
        name: one of ``dpo, cdpo, rdpo, ipo, slic``.

    Returns:
        The :class:`PairwiseLoss` entry.

    Raises:
        ValueError: naming the field ``loss``, the value given and the allowed names.
    """
    if name not in LOSSES:
        raise InputError(f"loss must be one of {sorted(LOSSES)}; got {name!r}")
    return LOSSES[name]


def validate_eps(name: str, eps) -> float:
    """Checks a concrete flip rate 0 ≤ ε < 1/2 for loss ``name`` (also checks the name).

    Args:
        name: canonical loss name (see :func:`get_loss`).
        eps: flip rate, a Python or numpy scalar.

    Returns:
        ``eps`` as a float.

    Raises:
        ValueError: naming the field ``eps``, the value given and the allowed range [0, 0.5).
    """
    get_loss(name)
    value = float(eps)
    if not 0.0 <= value < 0.5:  # also rejects NaN
        raise InputError(f"eps must satisfy 0 <= eps < 0.5 (loss {name!r}); got {eps!r}")
    return value
