"""Audit questions Q2 (unseen values), Q3 (non-orthogonal values), Q4 (anisotropic noise): their
pure functions, and end to end their files and report sections from `dpolab audit --quick`."""
import math

import numpy as np
import pytest
from scipy import stats

from dpolab.audit import common
from dpolab.audit import q2_unseen as q2
from dpolab.audit import q3_nonorthogonal as q3
from dpolab.audit import q4_noise as q4
from dpolab.sims.data import low_rank_spectrum
from dpolab.theory import extensions as closed_forms
from dpolab.theory import im_li

QUESTIONS = (q2, q3, q4)


# ---- pure functions --------------------------------------------------------------------------

def _mean_field_monte_carlo(rng, *, K, Q, d, tokens, rho, v, lb, unseen, lam, seen, n=4000):
    """n draws of X = s̃(Σ_j s_j g_j)·g̃ from the data model directly (numpy, own concept vectors)."""
    total = K + unseen
    c = np.zeros((total, d))
    c[np.arange(total), np.arange(total) + 1] = math.sqrt(1 - rho)
    c[:, total + 1] = math.sqrt(rho)
    u = 0 if seen else K
    group = [u] if tokens == "distinct" else list(range(K))
    s = np.repeat([1.0, -1.0], Q)
    sd = v * np.sqrt(lam)
    e1 = np.eye(d)[0]
    g = (lb * e1 + s[None, None, :, None] * c[group][None, :, None, :]
         + sd * rng.standard_normal((n, len(group), 2 * Q, d)))
    direction = np.einsum("j,ngjd->nd", s, g)
    sign = rng.choice([-1.0, 1.0], size=n)
    test = lb * e1 + sign[:, None] * c[u] + sd * rng.standard_normal((n, d))
    return sign * np.sum(direction * test, axis=1)


@pytest.mark.parametrize("case", [
    dict(K=3, tokens="yes_no", rho=0.3, v=0.3, unseen=1, spectrum=None, seen=False),
    dict(K=3, tokens="yes_no", rho=0.0, v=0.4, unseen=1, spectrum=None, seen=True),
    dict(K=2, tokens="distinct", rho=0.5, v=0.5, unseen=0, spectrum=(3, 0.8), seen=True),
])
def test_mean_field_matches_sampled_statistic(case):
    """mean_field's E and √Var of X agree with a direct numpy sample of X (4000 draws): the mean
    within 4 standard errors, the sd within 4·(1/√(2n)) relative (the sd of a sample sd)."""
    Q, d, lb = 6, 20, 0.5
    lam = np.ones(d) if case["spectrum"] is None else np.asarray(low_rank_spectrum(d, *case["spectrum"]))
    x = _mean_field_monte_carlo(np.random.default_rng(0), K=case["K"], Q=Q, d=d, tokens=case["tokens"],
                                rho=case["rho"], v=case["v"], lb=lb, unseen=case["unseen"], lam=lam,
                                seen=case["seen"])
    pred = closed_forms.mean_field(K=case["K"], Q=Q, d=d, tokens=case["tokens"], concept_cos=case["rho"],
                         v=case["v"], lb=lb, unseen=case["unseen"], seen=case["seen"],
                         spectrum=None if case["spectrum"] is None else lam)
    train = 2 * Q * pred["rate"]  # E of a training sample's statistic, in the same units as X
    assert abs(x.mean() - pred["mean_rel"] * train) <= 4 * x.std() / math.sqrt(len(x))
    assert abs(x.std() / (pred["sd_rel"] * train) - 1) <= 4 / math.sqrt(2 * len(x))


@pytest.mark.parametrize("total,d,rho", [(3, 8, 0.0), (6, 20, 0.7)])
def test_numpy_concepts_equal_the_simulation_ones(total, d, rho):
    import jax

    from dpolab.sims.config import DataSpec
    from dpolab.sims.data import concept_vectors

    sim = concept_vectors(jax.random.key(3), DataSpec(K=total, Q=1, d=d), 0.0, rho)
    np.testing.assert_allclose(closed_forms.concepts(total, d, rho), np.asarray(sim), rtol=0, atol=1e-15)


def test_mean_field_new_tokens_unseen_is_a_tie():
    pred = closed_forms.mean_field(K=4, Q=5, d=20, tokens="distinct", concept_cos=0.5, v=0.3, lb=0.5,
                         unseen=2, seen=False)
    assert pred["mean_rel"] == 0 and pred["sd_rel"] == 0 and pred["risk"] == 1


def test_mean_field_shared_token_rate():
    """With shared tokens and v → 0 every margin's drive is m = 1 + (K−1)ρ times the K-value one."""
    for K, rho in ((2, 0.0), (8, 0.5), (16, 0.95)):
        rate = closed_forms.mean_field(K=K, Q=5, d=40, tokens="yes_no", concept_cos=rho, v=0.0, lb=0.5)["rate"]
        assert rate == pytest.approx(1 + (K - 1) * rho, rel=1e-12)


def test_seed_and_pooled_intervals():
    point = np.array([0, 0, 1, 1, 1])
    values = np.array([1.0, 3.0, 2.0, 2.0, np.nan])
    mean, lo, hi = common.seed_mean_ci(values, point)
    assert mean.tolist() == [2.0, 2.0]
    assert hi[0] - mean[0] == pytest.approx(stats.norm.ppf(0.975) * math.sqrt(2) / math.sqrt(2), rel=1e-12)
    assert lo[1] == hi[1] == 2.0
    risk = np.array([0.1, 0.2, 0.0, 0.0, 0.5])
    n = np.array([10.0, 10.0, 4.0, 4.0, 4.0])
    r, lo, hi, total = common.pooled_risk_ci(risk, n, point)
    assert r[0] == 3 / 20 and total.tolist() == [20, 12]
    assert lo[0] == pytest.approx(stats.beta.ppf(0.025, 3, 18))
    assert hi[0] == pytest.approx(stats.beta.ppf(0.975, 4, 17))


def test_mean_field_sandwich_boundary():
    """The margin curve is concave and r_U linear, so with 10 checkpoints the mean-field sandwich
    breaks first at t_1 = τ_1/10: at the m with r(t_1) = r_U(t_1) = log 3/10, i.e. (from
    r + e^r = 1 + 2β²t·m/(Kτ)) m* = (log3/10 + 3^{1/10} − 1)/(2 log 3/50)."""
    K, beta = 8, 1.0
    holds = lambda m: closed_forms.mean_field_sandwich(K=K, rate=m, beta=beta, checkpoints=10)[0]  # noqa: E731
    assert holds(1.0) and not holds(8.0)
    lo, hi = 1.0, 8.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if holds(mid) else (lo, mid)
    r1 = im_li.LOG3 / 10
    assert lo == pytest.approx((r1 + math.exp(r1) - 1) / (2 * im_li.LOG3 / 50), rel=1e-9)


def test_calibrate_spike_recovers_a_spike():
    d = 120
    truth = np.asarray(low_rank_spectrum(d, 7, 0.8))
    rank, share, model = q4.calibrate_spike(d, q4.effective_rank(truth), truth)
    assert rank == 7 and share == pytest.approx(0.8) and model == pytest.approx(q4.effective_rank(truth))
    rank, share, model = q4.calibrate_spike(d, 15.0)
    assert share == q4.FALLBACK_SHARE and model == q4.effective_rank(low_rank_spectrum(d, rank, share))
    assert all(abs(math.log(model / 15.0)) <= abs(math.log(q4.effective_rank(
        low_rank_spectrum(d, r, share)) / 15.0)) for r in range(1, d))


# ---- end to end: `dpolab audit --quick` ------------------------------------------------------

def _data(out, name):
    with np.load(out / name / "data.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_q2_exact_checks_pass_and_can_fail(audit_quick):
    """The recursion reproduces the recorded held-out means; a recorded value off by 1e-9, or data
    regenerated with a different l_b, is caught (the check can fail)."""
    from dpolab.sims.sweep.engine import read_summary

    _, out = audit_quick
    data = _data(out, q2.NAME)
    assert q2.finding(data).verdict == "pass" and q2.exact_status(data)["all"]
    cols = read_summary(out / q2.NAME / "sweeps" / "unseen" / "summary.csv")
    spec = q2.sweep_spec(True)
    rows = np.flatnonzero(cols["tokens"] == "yes_no")[:2]
    good, _ = q2.recursion_check(spec, cols, rows)
    assert np.all(good["err_unseen"] <= good["tol"]) and np.all(good["err_seen"] <= good["tol"])
    cols["unseen_margin_mean"] = cols["unseen_margin_mean"] + 1e-9
    bad, _ = q2.recursion_check(spec, cols, rows)
    assert np.all(bad["err_unseen"] > bad["tol"])
    spec["fixed"] = dict(spec["fixed"], lb=0.55)
    bad, _ = q2.recursion_check(spec, read_summary(out / q2.NAME / "sweeps" / "unseen" / "summary.csv"), rows)
    assert np.all(bad["err_seen"] > bad["tol"])


def test_q2_new_tokens_give_exact_ties(audit_quick):
    data = _data(audit_quick[1], q2.NAME)
    new = data["row_tokens"] == 0
    assert new.any() and np.all(data["row_unseen_margin_mean"][new] == 0)
    assert np.all(data["row_unseen_risk"][new] == 1)


def test_q3_mean_field_classifies_the_quick_sandwich_cells(audit_quick):
    """Quick grid K = 8, ρ ∈ {0, 0.5, 0.95}: m = 1, 4.5, 7.65 with shared tokens (the last breaks
    r_U), m = 1 with new tokens; the measured sandwich must agree cell by cell."""
    data = _data(audit_quick[1], q3.NAME)
    assert np.array_equal(data["cos_sandwich"] >= 0.5, data["cos_mf_sandwich"] == 1)
    assert np.any(data["cos_mf_sandwich"] == 0) and np.all(data["cos_sandwich"][data["cos_shared"] == 0] == 1)


def test_q4_calibration_is_stated(audit_quick):
    data = _data(audit_quick[1], q4.NAME)
    source = str(data["cal_source"])
    assert source in ("real", "paper")
    if source == "paper":
        assert float(data["cal_r_eff"]) == pytest.approx((q4.PAPER_MEAN_SQ_DIST / q4.PAPER_COV_FROBENIUS) ** 2)
        assert "fallback" in q4.report(data)
    else:
        assert np.isfinite(float(data["cal_v_cal"])) and data["cal_spectrum"].size > 0
    spike = low_rank_spectrum(int(data["d"]), int(data["cal_rank"]), float(data["cal_share"]))
    assert float(data["cal_model_r_eff"]) == pytest.approx(q4.effective_rank(spike))
