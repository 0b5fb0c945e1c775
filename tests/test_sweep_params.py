"""The value-mixture options the audit sweeps: label flips, correlated concepts, low-rank noise,
unseen and unbalanced values, the recorded-checkpoint sandwich metric."""
import math

import jax
import numpy as np
import pytest
from scipy import stats

from dpolab.results import load, rows
from dpolab.sims.config import DataSpec, make_params
from dpolab.sims.data import concept_vectors, layout, low_rank_spectrum, sample_dataset
from dpolab.sims.sweep.run import run_spec
from dpolab.sims.sweep.spec import parse_spec


def test_flip_rate_and_clean_test_split():
    spec = DataSpec(K=2, Q=2000, d=8, n_test=500)
    key = jax.random.key(3)
    _, sign, _ = layout(spec, spec.q_per_value)
    clean = sample_dataset(key, spec, make_params(beta=1, eta=1, v=0.1), 0)
    assert np.array_equal(np.asarray(clean.sign), sign)          # flip = 0 changes nothing
    noisy = sample_dataset(key, spec, make_params(beta=1, eta=1, v=0.1, flip=0.3), 0)
    np.testing.assert_array_equal(np.asarray(noisy.g), np.asarray(clean.g))  # same features
    flipped = int(np.sum(np.asarray(noisy.sign) != sign))
    n = sign.size
    assert stats.binomtest(flipped, n, 0.3).pvalue > 1e-3          # rate 0.3 within sampling error
    test = sample_dataset(key, spec, make_params(beta=1, eta=1, v=0.1, flip=0.3), 1)
    assert np.array_equal(np.asarray(test.sign), layout(spec, (500, 500))[1])


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.9])
def test_concept_cosine_is_exact(rho):
    c = np.asarray(concept_vectors(jax.random.key(0), DataSpec(K=4, d=9), 0.0, rho))
    gram = c @ c.T
    np.testing.assert_allclose(np.diag(gram), 1.0, atol=1e-15)
    np.testing.assert_allclose(gram[~np.eye(4, dtype=bool)], rho, atol=1e-15)
    np.testing.assert_allclose(c[:, 0], 0.0, atol=0)                 # still ⟂ e_1


def test_low_rank_spectrum():
    spec = np.asarray(low_rank_spectrum(100, 5, 0.8))
    assert spec.sum() == pytest.approx(100.0, rel=1e-14)
    top = np.sort(spec)[-5:]
    assert top.sum() == pytest.approx(80.0, rel=1e-14) and np.sort(spec)[-6] == pytest.approx(20 / 95)
    with pytest.raises(ValueError, match="noise_rank=100 is not allowed"):
        low_rank_spectrum(100, 100, 0.5)
    with pytest.raises(ValueError, match="noise_share=1.0 is not allowed"):
        low_rank_spectrum(100, 5, 1.0)


def _sweep(tmp_path, fixed, grid, seeds=2):
    spec = parse_spec({"sweep": {"simulation": "im-li", "seeds": seeds, "chunk_size": 8},
                       "fixed": fixed, "grid": grid})
    run_spec(spec, tmp_path / "s", quiet=True)
    return rows(load(tmp_path / "s"))


def test_unseen_values_sandwich_and_unbalanced(tmp_path):
    cols = _sweep(tmp_path, {"Q": 20, "n_test": 30, "steps": 20, "checkpoints": 10, "unseen": 2,
                             "q_last": 5}, {"K": [1, 3]})
    # an unseen value with new tokens never moves (its rows get no gradient): margin 0, all errors
    np.testing.assert_array_equal(cols["unseen_margin_mean"], 0.0)
    np.testing.assert_array_equal(cols["unseen_risk"], 1.0)
    # the theorem regime keeps every training margin in the sandwich at every recorded checkpoint
    np.testing.assert_array_equal(cols["sandwich_frac"], 1.0)
    assert np.all(cols["test_risk"] == 0) and np.all(cols["q_last"] == 5)
    # the last value's margin is its own: r_L(τ_1) ≤ margin ≤ r_U(τ_1) holds for it too
    lo, hi = math.log(3) / 40, math.log(3)
    assert np.all((cols["margin_mean_last"] >= lo) & (cols["margin_mean_last"] <= hi))


def test_bad_audit_parameters_are_named(tmp_path):
    with pytest.raises(ValueError, match="checkpoints=3 is not allowed"):
        _sweep(tmp_path, {"steps": 20, "checkpoints": 3}, {"K": [1]})
    with pytest.raises(ValueError, match="concept_cos=0.5 is not allowed with d=2"):
        _sweep(tmp_path, {"d": 2, "concept_cos": 0.5}, {"K": [1]})
    with pytest.raises(ValueError, match="flip"):
        _sweep(tmp_path, {"flip": 0.5}, {"K": [1]})


def test_in_window_is_theorem_42s_window(tmp_path):
    """A run stopped at τ_1/20 ends with margins ≈ 0.01, below the window's low end log3/40: none is
    in the window; at τ_1 all are."""
    cols = _sweep(tmp_path, {"K": 2, "Q": 10, "n_test": 5, "steps": 10}, {"t_mult": [0.05, 1.0]}, seeds=1)
    early = cols["t_mult"] == 0.05
    assert np.all(cols["margin_max"][early] < math.log(3) / 40)
    np.testing.assert_array_equal(cols["in_window"][early], 0.0)
    np.testing.assert_array_equal(cols["in_window"][~early], 1.0)
