"""Tests for dpolab.theory.losses: golden values, autodiff weights, flip identities, stability, registry."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from dpolab.theory import losses as L

ZS = np.linspace(-30.0, 30.0, 121)
EPSS = [0.0, 0.05, 0.1, 0.25, 0.4, 0.49]
NAMES = ["dpo", "cdpo", "rdpo", "ipo", "slic"]


def _ell(z):
    """ℓ(z) = log(1 + e^{−z}) in plain Python (stable for both signs)."""
    return math.log1p(math.exp(-z)) if z >= 0 else -z + math.log1p(math.exp(z))


def _sig(z):
    return 1.0 / (1.0 + math.exp(-z))


# ---- golden values, computed independently with `math` -------------------------------------

def test_golden_values():
    e = 0.1
    assert float(L.logistic_loss(0.0)) == pytest.approx(math.log(2.0), rel=1e-15)
    assert float(L.dpo(2.0)) == pytest.approx(math.log(1.0 + math.exp(-2.0)), rel=1e-14)
    # rDPO at z = 1, ε = 0.1 by hand: [0.9·log(1+e^{-1}) − 0.1·log(1+e)] / 0.8
    by_hand = (0.9 * math.log(1 + math.exp(-1)) - 0.1 * math.log(1 + math.e)) / 0.8
    assert float(L.rdpo(1.0, e)) == pytest.approx(by_hand, rel=1e-14)
    assert by_hand == pytest.approx(0.18826168751822, rel=1e-12)  # 30-digit Decimal value
    assert float(L.cdpo(-1.5, e)) == pytest.approx(0.9 * _ell(-1.5) + 0.1 * _ell(1.5), rel=1e-14)
    assert float(L.ipo(3.0)) == 4.0 and float(L.ipo(-0.5)) == 2.25
    assert float(L.slic(0.25)) == 0.75 and float(L.slic(2.0)) == 0.0
    assert float(L.debias(L.ipo, 2.0, 0.25)) == pytest.approx((0.75 * 1 - 0.25 * 9) / 0.5)
    assert float(L.debias(L.slic, 0.5, 0.2)) == pytest.approx((0.8 * 0.5 - 0.2 * 1.5) / 0.6)
    assert float(L.dpo_weight(1.0)) == pytest.approx(_sig(-1.0), rel=1e-15)
    assert float(L.rdpo_weight(1.0, e)) == pytest.approx(
        (0.9 * _sig(-1.0) + 0.1 * _sig(1.0)) / 0.8, rel=1e-14)
    assert float(L.cdpo_weight(1.0, e)) == pytest.approx(
        0.9 * _sig(-1.0) - 0.1 * _sig(1.0), rel=1e-14)
    assert float(L.ipo_weight(0.25)) == 1.5
    assert [float(L.slic_weight(z)) for z in (0.5, 1.0, 1.5)] == [1.0, 0.0, 0.0]


def _logsig(x):
    """log σ(x) in plain Python, as TRL's F.logsigmoid."""
    return -_ell(x)


@pytest.mark.parametrize("beta, h", [(0.1, 3.0), (0.5, -1.7)])
def test_trl_conventions_pinned(beta, h):
    """Each loss at z = βh equals the TRL/OpenRLHF formula on logits h, written out with `math`."""
    e, z = 0.2, beta * h
    trl_sigmoid = -_logsig(beta * h)                                         # "sigmoid", ls = 0
    trl_smoothed = -(1 - e) * _logsig(beta * h) - e * _logsig(-beta * h)     # "sigmoid", ls = ε
    trl_robust = (-(1 - e) * _logsig(beta * h) + e * _logsig(-beta * h)) / (1 - 2 * e)  # "robust"
    trl_hinge = max(0.0, 1 - beta * h)                                       # "hinge"
    beta_trl = beta / 2  # TRL's IPO (h − 1/(2β′))² with β′ = β/2, scaled by β², is (βh − 1)²
    trl_ipo = (h - 1 / (2 * beta_trl)) ** 2
    assert float(L.dpo(z)) == pytest.approx(trl_sigmoid, rel=1e-14)
    assert float(L.cdpo(z, e)) == pytest.approx(trl_smoothed, rel=1e-14)
    assert float(L.rdpo(z, e)) == pytest.approx(trl_robust, rel=1e-13)
    assert float(L.slic(z)) == pytest.approx(trl_hinge, rel=1e-15)
    assert float(L.ipo(z)) == pytest.approx(beta**2 * trl_ipo, rel=1e-13)
    # the inverse relation stated in the docstring: TRL_ipo(h; β′) = ipo(2β′h)/(4β′²)
    assert float(L.ipo(2 * beta_trl * h)) / (4 * beta_trl**2) == pytest.approx(trl_ipo, rel=1e-13)


def test_trl_conventions_golden_numbers():
    """The same formulas at β = 0.1, h = 3 (z = 0.3), ε = 0.2, from 40-digit Decimal arithmetic.

    Since ℓ(−z) = ℓ(z) + z, cdpo = ℓ(z) + εz and rdpo = ℓ(z) − εz/(1−2ε) = ℓ(0.3) + 0.06, − 0.1.
    """
    assert float(L.dpo(0.3)) == pytest.approx(0.5543552444685271188, rel=1e-14)
    assert float(L.cdpo(0.3, 0.2)) == pytest.approx(0.6143552444685271188, rel=1e-14)
    assert float(L.rdpo(0.3, 0.2)) == pytest.approx(0.4543552444685271188, rel=1e-13)
    assert float(L.ipo(0.3)) == pytest.approx(0.49, rel=1e-14)
    assert float(L.slic(0.3)) == pytest.approx(0.7, rel=1e-15)


def test_logistic_loss_matches_math_on_grid():
    got = np.asarray(L.logistic_loss(ZS))
    np.testing.assert_allclose(got, [_ell(z) for z in ZS], rtol=1e-14, atol=0)


# ---- weights are −d loss/dz ----------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_weight_is_minus_autodiff_derivative(name, eps):
    loss = L.get_loss(name)
    zs = ZS + 0.123  # keep off SLiC's kink at z = 1
    autodiff = jax.vmap(jax.grad(lambda z: loss.value(z, eps)))(jnp.asarray(zs))
    np.testing.assert_allclose(loss.weight(zs, eps), -autodiff, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("base", ["dpo", "ipo", "slic"])
def test_debias_weight_is_minus_autodiff_derivative(base):
    b = L.get_loss(base)
    zs, eps = jnp.asarray(ZS + 0.123), 0.2
    autodiff = jax.vmap(jax.grad(lambda z: L.debias(b.value, z, eps)))(zs)
    np.testing.assert_allclose(L.debias_weight(b.weight, zs, eps), -autodiff, rtol=1e-12,
                               atol=1e-14)


@pytest.mark.parametrize("name", ["dpo", "cdpo", "rdpo", "ipo"])
def test_check_grads_on_smooth_losses(name):
    value = L.get_loss(name).value
    z = jnp.asarray([-3.0, -0.4, 0.0, 0.7, 5.0])
    check_grads(lambda x: value(x, 0.2), (z,), order=2, modes=("fwd", "rev"))


def test_check_grads_slic_away_from_kink():
    z = jnp.asarray([-0.5, 0.3, 2.5])  # SLiC's kink at z = 1 is skipped
    check_grads(lambda x: L.slic(x), (z,), order=1, modes=("fwd", "rev"))


# ---- flip identities (THEORY §2.2) ---------------------------------------------------------

@pytest.mark.parametrize("eps", EPSS)
def test_unbiasedness_pointwise(eps):
    for base in (L.dpo, L.ipo, L.slic):
        hat = lambda z, base=base: L.debias(base, z, eps)  # noqa: E731
        np.testing.assert_allclose((1 - eps) * hat(ZS) + eps * hat(-ZS), base(ZS),
                                   rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose((1 - eps) * L.rdpo(ZS, eps) + eps * L.rdpo(-ZS, eps),
                               L.dpo(ZS), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eps", EPSS)
def test_cdpo_exact_bias(eps):
    expected = (1 - 2 * eps * (1 - eps)) * L.dpo(ZS) + 2 * eps * (1 - eps) * L.dpo(-ZS)
    np.testing.assert_allclose((1 - eps) * L.cdpo(ZS, eps) + eps * L.cdpo(-ZS, eps), expected,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eps", EPSS)
def test_debias_dpo_is_rdpo(eps):
    np.testing.assert_allclose(L.debias(L.dpo, ZS, eps), L.rdpo(ZS, eps), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("eps", EPSS)
def test_gradient_weight_identities(eps):
    s = np.array([_sig(-z) for z in ZS])
    np.testing.assert_allclose(L.dpo_weight(ZS, eps), s, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(L.cdpo_weight(ZS, eps), s - eps, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(L.rdpo_weight(ZS, eps), s + eps / (1 - 2 * eps), rtol=1e-12,
                               atol=1e-14)


@pytest.mark.parametrize("eps", EPSS)
def test_equal_curvature(eps):
    curvature = np.array([_sig(z) * _sig(-z) for z in ZS])
    for value in (L.dpo, L.cdpo, L.rdpo):
        d2 = jax.vmap(jax.grad(jax.grad(lambda z, value=value: value(z, eps))))(jnp.asarray(ZS))
        # 1/(1−2ε) amplifies the rounding of autodiff's σ′ = σ(1−σ) in the tails
        np.testing.assert_allclose(d2, curvature, rtol=1e-8, atol=1e-14 / (1 - 2 * eps))


@settings(max_examples=200, deadline=None)
@given(z=st.floats(-50.0, 50.0), eps=st.floats(0.0, 0.49))
def test_unbiasedness_property(z, eps):
    for base, hat in ((L.dpo, lambda x: L.rdpo(x, eps)),
                      (L.ipo, lambda x: L.debias(L.ipo, x, eps)),
                      (L.slic, lambda x: L.debias(L.slic, x, eps))):
        lhs = (1 - eps) * float(hat(z)) + eps * float(hat(-z))
        # the 1/(1−2ε) amplifies rounding by at most ~50 × |values| ≲ 50 × 2600
        assert lhs == pytest.approx(float(base(z)), rel=1e-12, abs=1e-9)


# ---- numerical stability -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", NAMES)
def test_finite_at_extreme_margins(dtype, name):
    loss = L.get_loss(name)
    z = jnp.asarray([-1e4, -1e3, 1e3, 1e4], dtype=dtype)
    for out in (loss.value(z, 0.1), loss.weight(z, 0.1), jax.vmap(jax.grad(
            lambda x: loss.value(x, 0.1)))(z)):
        assert out.dtype == dtype
        assert bool(jnp.all(jnp.isfinite(out)))
    if name == "dpo":  # ℓ(−1e4) = 1e4 exactly, ℓ(1e4) underflows to 0, not NaN
        np.testing.assert_allclose(loss.value(z, 0.0), [1e4, 1e3, 0.0, 0.0], rtol=1e-6)


def test_numpy_and_integer_input():
    assert float(L.dpo(np.float64(0.0))) == pytest.approx(math.log(2))
    assert float(L.ipo(np.int64(3))) == 4.0
    assert float(L.slic_weight(0)) == 1.0


# ---- registry and validation ---------------------------------------------------------------

def test_registry_names_and_fields():
    assert set(L.LOSSES) == set(NAMES)
    for name, entry in L.LOSSES.items():
        assert entry.name == name and L.get_loss(name) is entry
        assert entry.equation and entry.reference


def test_unknown_loss_rejected():
    with pytest.raises(ValueError) as info:
        L.get_loss("dpo2")
    msg = str(info.value)
    assert "loss" in msg and "dpo2" in msg
    assert all(name in msg for name in NAMES)


@pytest.mark.parametrize("eps", [0.5, -0.1, 0.7, float("nan")])
def test_bad_eps_rejected(eps):
    with pytest.raises(ValueError, match="eps") as info:
        L.validate_eps("rdpo", eps)
    assert str(eps) in str(info.value) and "0.5" in str(info.value)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.49])
def test_good_eps_accepted(eps):
    assert L.validate_eps("cdpo", eps) == eps
