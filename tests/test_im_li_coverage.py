"""Issue #12 (Im & Li side): Lemma B.1's ε, band and Gram means, the exact tails of the Gram entries,
the exact Gaussian risk of a trained head, concepts at cosine ρ (value entanglement), and multi-token
margins' dependence on W_0. Each test is the test-side killer of a mutant in `dpolab.mutants`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dpolab.sims.config import DataSpec
from dpolab.theory import im_li as IL


def test_lemma_b1_eps_band_and_means_golden():
    # ε = 1/(16 v (Z+2)) by hand: v = 1/32, Z = 1 → 2/3; the band 2εv = 1/(8(Z+2)) = 1/24
    assert IL.concentration_eps(v=1 / 32, Z=1) == pytest.approx(2 / 3, rel=1e-15)
    assert IL.gram_band(v=0.013, Z=2) == pytest.approx(1 / 32, rel=1e-15)
    value, sign = np.array([0, 0, 1]), np.array([1, -1, 1])
    lb, v, d = 0.5, 0.1, 7
    expected = np.array([[lb**2 + 1 + d * v**2, lb**2 - 1, lb**2],
                         [lb**2 - 1, lb**2 + 1 + d * v**2, lb**2],
                         [lb**2, lb**2, lb**2 + 1 + d * v**2]])
    np.testing.assert_allclose(IL.gram_mean(value, sign, lb=lb, v=v, d=d), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("kind", ["diagonal", "opposite-cluster", "other-value"])
def test_gram_entry_tails_match_numpy_monte_carlo(kind):
    """The quadrature tails against 400 000 plain-numpy draws of the entry (99.9% binomial band)."""
    from dpolab.sims.reference import gram_entry_tails

    v, d, lb, n = 0.03, 6, 0.5, 400_000
    rng = np.random.default_rng(1)
    a = np.zeros(d)
    a[0], a[1] = lb, 1.0
    b = {"diagonal": a, "opposite-cluster": a * [1, -1, 1, 1, 1, 1],
         "other-value": np.r_[lb, 0.0, 1.0, 0.0, 0.0, 0.0]}[kind]
    gi = a + v * rng.standard_normal((n, d))
    gj = gi if kind == "diagonal" else b + v * rng.standard_normal((n, d))
    dev = np.sum(gi * gj, axis=1) - (a @ b + (d * v**2 if kind == "diagonal" else 0.0))
    u = 1 / 24
    for count, p in zip(((dev > u).sum(), (dev < -u).sum()), gram_entry_tails(kind, v=v, d=d, lb=lb, Z=1)):
        lo, hi = stats.binomtest(int(count), n).proportion_ci(0.999)
        assert lo <= p <= hi and 0.05 < p < 0.5, (kind, count / n, p)


def test_log_gaussian_risk_golden():
    """One value, D = 2c − e_1: μ_s = β(2 − s l_b), σ = βv‖D‖ = βv√5, risk = mean_s Φ(−μ_s/σ)."""
    from dpolab.sims.risk import log_gaussian_risk

    c = np.array([[0.0, 1.0, 0.0]])
    delta_w = np.stack([2 * c[0] - np.eye(3)[0], np.zeros(3)])
    beta, lb, v = 0.7, 0.5, 0.8
    exact = np.mean([stats.norm.cdf(-(2 - s * lb) / (v * np.sqrt(5))) for s in (1, -1)])
    assert np.exp(log_gaussian_risk(delta_w, c, [0], beta=beta, lb=lb, v=v)) == pytest.approx(exact, rel=1e-12)
    # far below float64's range: the cluster with μ = 1.5β dominates, log Φ(−x) = −x²/2 − log(x√(2π))
    # − 1/x² + O(x⁻⁴) (Mills ratio), minus log 2 for the cluster average
    x = 1.5 / (1e-3 * np.sqrt(5))
    asymptotic = -x**2 / 2 - np.log(x * np.sqrt(2 * np.pi)) - 1 / x**2 - np.log(2)
    assert log_gaussian_risk(delta_w, c, [0], beta=beta, lb=lb, v=1e-3) == pytest.approx(asymptotic, rel=1e-12)


def test_concept_cos_gives_unit_vectors_at_pairwise_cosine_rho():
    from dpolab.sims.data import concept_vectors

    rho = 0.3
    c = np.asarray(concept_vectors(jax.random.key(2), DataSpec(K=3, d=8), 0.0, rho))
    np.testing.assert_allclose(c @ c.T, np.full((3, 3), rho) + (1 - rho) * np.eye(3), atol=1e-15)
    assert np.all(c[:, 0] == 0)


def test_multi_token_margins_depend_on_w0_single_token_do_not():
    """Same ΔW, two references: the multi-token margins differ by the log-partition terms (plain numpy),
    the single-token ones (one state for chosen and rejected) do not."""
    from scipy.special import logsumexp

    from dpolab.sims.multi_token import random_problem

    p = random_problem(jax.random.key(0))
    w0b = p.w0 + jax.random.normal(jax.random.key(1), p.w0.shape)
    q = p._replace(w=w0b + p.w - p.w0, w0=w0b)
    g = np.asarray(p.contexts)

    def lse_change(w, w0):  # Σ_j [ΔLSE(chosen state) − ΔLSE(rejected state)]
        change = logsumexp(g @ np.asarray(w).T, axis=-1) - logsumexp(g @ np.asarray(w0).T, axis=-1)
        return change[..., 0].sum(-1) - change[..., 1].sum(-1)

    predicted = -p.beta * (lse_change(p.w, p.w0) - lse_change(q.w, q.w0))
    measured = np.asarray(p.margins(p.w) - q.margins(q.w))
    np.testing.assert_allclose(measured, predicted, rtol=1e-12, atol=1e-13)
    assert np.min(np.abs(predicted)) > 0.05
    single = p._replace(contexts=jnp.repeat(p.contexts[:, :1, :1], 2, axis=2), tokens=p.tokens[:, :1])
    other = single._replace(w=q.w, w0=q.w0)
    np.testing.assert_allclose(single.margins(single.w), other.margins(other.w), rtol=0, atol=1e-13)
