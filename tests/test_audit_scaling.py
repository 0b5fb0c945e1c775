"""Audit Q1 (is Θ(log K) observable?) and Q8 (unbalanced values): the pure analysis functions, the
exactness claims the modules rely on, and the quick audit's stored results, figures and report."""
import math

import numpy as np
import pytest
from scipy import stats

from dpolab.audit import q1_log_k as q1
from dpolab.audit import q8_unbalanced as q8
from dpolab.figures.audit_scaling import Q1_REGIMES
from dpolab.figures.style import read_csv
from dpolab.sims.risk import mean_ci
from dpolab.theory import extensions as closed_forms
from dpolab.theory import im_li

# ---- Q1: Q_emp rule, bootstrap, grid rule, fits ----------------------------------------------------

def test_crossing_interpolates_in_log_q_at_the_last_crossing():
    qs = np.array([8.0, 16.0, 32.0, 64.0])
    # by hand: last point >= 0.05 is Q = 16 (0.06), next 0.02: fraction (0.06-0.05)/0.04 = 1/4
    assert q1.crossing(qs, [0.1, 0.06, 0.02, 0.01], 0.05) == pytest.approx(16 * 2**0.25, rel=1e-14)
    # non-monotone: the crossing after which the curve stays below (between 32 and 64)
    assert q1.crossing(qs, [0.1, 0.03, 0.07, 0.03], 0.05) == pytest.approx(32 * 2**0.5, rel=1e-14)
    assert q1.crossing(qs, [0.04, 0.03, 0.02, 0.01], 0.05) == 8.0       # censored: <= Q_min
    assert q1.crossing(qs, [0.1, 0.03, 0.02, 0.05], 0.05) == math.inf   # never below for good
    batch = q1.crossing(qs, [[0.1, 0.06, 0.02, 0.01], [0.04] * 4], np.array([0.05, 0.05]))
    assert batch.shape == (2,) and batch[1] == 8.0


def test_bootstrap_crossing_interval():
    qs = np.array([8.0, 16.0, 32.0])
    same = np.tile(np.array([[0.1], [0.04], [0.02]]), (1, 6))  # no seed variance: the CI collapses
    est, lo, hi = q1.bootstrap_crossing(qs, same, 0.05)
    assert est == lo == hi == pytest.approx(q1.crossing(qs, same[:, 0], 0.05))
    rng = np.random.default_rng(1)
    noisy = np.clip(np.array([[0.1], [0.05], [0.02]]) + 0.01 * rng.standard_normal((3, 40)), 0, 1)
    est, lo, hi = q1.bootstrap_crossing(qs, noisy, 0.05)
    assert lo <= est <= hi and lo < hi
    # relative threshold: curve end + slack, recomputed per replicate
    est, _, _ = q1.bootstrap_crossing(qs, same, None, slack=0.03)
    assert est == pytest.approx(q1.crossing(qs, same[:, 0], 0.05))


def test_grid_rule_uses_the_clopper_pearson_upper_end():
    qs = np.array([8.0, 16.0, 32.0])
    # 0/100: CP95 upper = 1 - 0.025**(1/100) = 0.0362 < 0.05; 0/50: 0.0711 > 0.05
    assert 1 - 0.025 ** (1 / 100) < 0.05 < 1 - 0.025 ** (1 / 50)
    assert q1.grid_rule(qs, [50, 0, 0], [100, 100, 100], 0.05) == 16.0
    assert q1.grid_rule(qs, [0, 0, 0], [50, 100, 100], 0.05) == 16.0
    assert q1.grid_rule(qs, [0, 3, 0], [100, 100, 100], 0.05) == 32.0   # must stay below
    assert q1.grid_rule(qs, [0, 0, 10], [100, 100, 100], 0.05) == math.inf


def test_linear_fit_and_fits():
    x = np.arange(5.0)
    slope, lo, hi, r2, n = q1.linear_fit(x, 3 + 2 * x)
    assert (slope, r2, n) == (pytest.approx(2.0, rel=1e-12), pytest.approx(1.0), 5.0)
    assert lo == pytest.approx(2.0, abs=1e-9) and hi == pytest.approx(2.0, abs=1e-9)
    y = 3 + 2 * x + np.array([0.3, -0.1, -0.4, 0.2, 0.1])
    slope, lo, hi, r2, _ = q1.linear_fit(x, y)
    # the t interval by hand: SE = sqrt(SSE/(n-2)/Sxx)
    resid = y - np.polyval(np.polyfit(x, y, 1), x)
    se = math.sqrt(resid @ resid / 3 / np.sum((x - x.mean()) ** 2))
    assert hi - slope == pytest.approx(3.182446305284263 * se, rel=1e-9)
    assert np.isnan(q1.linear_fit([1, 2], [1, 2])[0])
    Ks = np.array([1.0, 2, 4, 8, 16])
    f = q1.fits(Ks, 45 * np.log(Ks) + 10, np.zeros(5))
    assert f[0, 0] == pytest.approx(45) and f[0, 3] == pytest.approx(1) and f[1, 3] < 0.95
    assert q1.log_growth(f)
    flat = q1.fits(Ks, np.array([30.0, 31, 29, 30, 30.5]), np.zeros(5))
    assert not q1.log_growth(flat)
    # censored and infinite Q_emp are left out of the fit
    assert q1.fits(Ks, np.array([8, 8, 20, 40, np.inf]), [1, 1, 0, 0, 0])[0, 4] == 2


def test_summarize_pools_errors_and_flags_censoring():
    qs = np.array([8.0, 16.0])
    risk = np.zeros((2, 2, 4))
    risk[1, 0] = 0.1  # K index 1: 0.1 at Q = 8, 0 at Q = 16
    s = q1.summarize(qs, risk, np.array([100.0, 200.0]))
    assert s["censored"].tolist() == [1.0, 0.0]
    assert s["q_emp"][0] == 8.0 and 8 < s["q_emp"][1] < 16
    assert s["hi"][1, 0] == pytest.approx(q1.clopper_pearson(80, 800)[1])


def test_one_value_is_the_same_model_in_both_token_modes():
    """simulated() takes the shared regime's K = 1 from the distinct sweep: with K = 1 both token
    modes give one pair and identical data for the same key."""
    import jax

    from dpolab.sims.config import DataSpec, make_params
    from dpolab.sims.data import sample_dataset

    params = make_params(beta=1.0, eta=0.1, v=0.3)
    a, b = (sample_dataset(jax.random.key(5), DataSpec(K=1, Q=4, d=10, tokens=t), params, 0)
            for t in ("distinct", "yes_no"))
    for x, y in zip(a, b):
        assert np.array_equal(np.asarray(x), np.asarray(y))


# ---- Q1: real track helpers -------------------------------------------------------------------------

def test_label_split_is_balanced_and_disjoint():
    labels = np.array([1, -1] * 10)
    train, test = q1.label_split(labels, hold=3, q=5, rng=np.random.default_rng(0))
    assert len(set(train) & set(test)) == 0
    assert (labels[train] == 1).sum() == 5 and (labels[test] == -1).sum() == 3
    with pytest.raises(ValueError, match="q=8 is not allowed"):
        q1.label_split(labels, hold=3, q=8, rng=np.random.default_rng(0))


def _fake_persona(rng, n=24, d=6):
    from dpolab.sims.llm.train import PersonaFeatures

    lp = rng.standard_normal((n, 2)) - 3.0
    return PersonaFeatures(g=rng.standard_normal((n, d)), label=np.array([1, -1] * (n // 2)),
                           ref_logp_yes=lp[:, 0], ref_logp_no=lp[:, 1],
                           ref_lse=rng.standard_normal(n), ref_lse_rest=rng.standard_normal(n))


def test_tiling_a_training_set_leaves_the_adam_trajectory_unchanged():
    """real_errors tiles every training set to Q_max per label: the mean loss is the same."""
    import jax

    from dpolab.sims.config import TrainSpec, make_params
    from dpolab.sims.llm.train import PAPER_PROTOCOL, to_dataset
    from dpolab.sims.train import make_trainer

    rng = np.random.default_rng(3)
    feats = [_fake_persona(rng), _fake_persona(rng)]
    rows = [np.arange(0, 6), np.arange(4, 10)]
    test = to_dataset(feats, [np.arange(18, 24)] * 2)
    p = PAPER_PROTOCOL
    run = jax.jit(make_trainer(TrainSpec(optimizer="adam", steps=p["steps"], stride=10), 1))
    params = make_params(beta=p["beta"], eta=p["eta"], v=0.0)
    a = run(to_dataset(feats, rows), test, params)
    b = run(to_dataset(feats, [np.tile(r, 4) for r in rows]), test, params)
    assert np.abs(np.asarray(a.test_margins) - np.asarray(b.test_margins)).max() < 1e-13
    assert np.asarray(a.test_margins)[-1].std() > 0  # training moved the held-out margins


def test_real_errors_shape_and_tiling_guard():
    rng = np.random.default_rng(4)
    feats = [_fake_persona(rng)]
    err = q1.real_errors(feats, [1, 2, 4], hold=2, reps=3)
    assert err.shape == (3, 3) and np.all((err >= 0) & (err <= 1))
    with pytest.raises(ValueError, match="multiple of every Q"):
        q1.real_errors(feats, [3, 4], hold=2, reps=2)


# ---- Q8: share law, window, recursion --------------------------------------------------------------

def test_share_law_balanced_limit_and_window():
    # q_last = Q: the balanced closed form r + e^r = 1 + 2 log3/5 at tau_1 (r ~ 0.208)
    r = closed_forms.share_margin(K=4, Q=50, q_last=50)
    assert r + math.exp(r) == pytest.approx(1 + 2 * math.log(3) / 5, rel=1e-13)
    q = closed_forms.window_q_min(K=4, Q=50)
    low = im_li.MARGIN_WINDOW[0]
    assert closed_forms.share_margin(K=4, Q=50, q_last=q) >= low > closed_forms.share_margin(K=4, Q=50, q_last=q - 1)
    assert q8.equal_total_q(4, 50, 5) == 39 and q8.equal_total_q(4, 50, 10) == 40


def test_recursion_converges_to_the_share_law_at_rate_one():
    """The exact GD recursion on noise-free unbalanced data approaches the share-law flow with an
    O(η) error: halving η (doubling steps to the same τ_1) halves the gap."""
    K, Q, q, d = 3, 6, 2, 8
    tau = im_li.tau_1(K=K, beta=1.0)
    gaps = []
    for steps in (50, 100, 200):
        r, tol = q8.recursion_margin(K=K, Q=Q, q_last=q, d=d, eta=tau / steps, steps=steps)
        gaps.append(abs(r - closed_forms.share_margin(K=K, Q=Q, q_last=q)))
    ratios = np.array(gaps[:-1]) / np.array(gaps[1:])
    assert np.all((ratios > 1.8) & (ratios < 2.2)), ratios
    assert tol < 1e-11


def test_differs_and_mean_ci():
    a = np.array([0.10, 0.12, 0.11, 0.13])
    assert q8._differs(a, a - 0.1) == 1 and q8._differs(a - 0.1, a) == -1 and q8._differs(a, a) == 0
    m, h = mean_ci(a)
    assert m == pytest.approx(0.115) and h == pytest.approx(stats.norm.ppf(0.975) * a.std(ddof=1) / 2, rel=1e-12)


# ---- end to end: the quick audit's stored results ---------------------------------------------------

def _load(out, name):
    with np.load(out / name / "data.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def check_q1(manifest, out):
    entry = manifest["items"][q1.NAME]
    assert entry["status"] == "done", entry
    data = _load(out, q1.NAME)
    for stem in ("q1_risk_vs_q", "q1_q_emp"):
        for ext in ("png", "pdf", "csv"):
            assert f"{q1.NAME}/{stem}.{ext}" in entry["files"]
    table = read_csv(out / q1.NAME / "q1_q_emp.csv")
    theorem = table["regime"] == 0
    assert np.array_equal(table["q_emp"][theorem], data["theorem_q_emp"])
    bound_rows = table["regime"] == len(Q1_REGIMES) + 1  # after the regimes and real
    assert np.allclose(table["q_emp"][bound_rows], data["qstar_simplified"])
    # the worst of K values' risks is at least their mean, and equal to it for K = 1
    assert np.all(data["distinct_worst_mean"] >= data["distinct_mean"] - 1e-15)
    np.testing.assert_array_equal(data["distinct_worst_mean"][0], data["distinct_mean"][0])
    # theorem regime: per-sample error ~ Phi(-32 sqrt(Q)) -- no error can occur
    assert data["theorem_mean"].max() == 0 and np.all(data["theorem_censored"] == 1)
    # distinct tokens: a value's risk does not depend on K (pooled CP95 intervals overlap)
    lo, hi = data["distinct_lo"], data["distinct_hi"]
    assert np.all(lo.max(0) <= hi.min(0))
    assert data["qstar_simplified"][0] == im_li.q_star(1, threshold=0.05)
    text = (out / "audit.md").read_text()
    section = q1.report(data)
    assert section.startswith("## Q1.") and section in text and "**Verdict:**" in section
    for link in ("q1_risk_vs_q.png", "q1_q_emp.png"):
        assert f"]({q1.NAME}/{link})" in section and (out / q1.NAME / link).exists()
    changed = dict(data, theorem_hi=data["theorem_hi"] + 0.01)  # text is formatted from the data
    assert q1.report(changed) != section
    result = q1.finding(data)
    assert result.id == f"audit/{q1.NAME}" and result.verdict == "finding"
    if int(data["real_available"]):
        assert data["real_err"].shape == (len(data["real_Ks"]), len(data["real_Qs"]),
                                          data["real_err"].shape[-1])
    else:
        assert "not run here" in section


def check_q8(manifest, out):
    entry = manifest["items"][q8.NAME]
    assert entry["status"] == "done", entry
    data = _load(out, q8.NAME)
    assert {f"{q8.NAME}/q8_unbalanced.{e}" for e in ("png", "pdf", "csv")} <= set(entry["files"])
    table = read_csv(out / q8.NAME / "q8_unbalanced.csv")
    assert np.array_equal(table["recursion_v0"], data["recursion"])
    # exact: every seed's v = 0 minority margin is the recursion's (rounding bound)
    status = q8.exact_status(data)
    assert status["ok"], status
    # the minority's margin shrinks with its share; at q_last = Q it is the balanced one
    assert np.all(np.diff(data["minority_margin"][:, 0, 0]) > 0)
    assert data["share_pred"][-1] == pytest.approx(im_li.dpo_noise_free(
        im_li.tau_1(K=int(data["K"]), beta=1.0), K=int(data["K"]), beta=1.0))
    section = q8.report(data)
    assert section.startswith("## Q8.") and section in (out / "audit.md").read_text()
    assert f"]({q8.NAME}/q8_unbalanced.png)" in section and "**Verdict:** pass" in section
    assert q8.finding(data).verdict == "pass"
    broken = dict(data, recursion=data["recursion"] * (1 + 1e-6))
    assert q8.finding(broken).verdict == "fail"


def test_q1_quick_audit(audit_quick):
    check_q1(*audit_quick)


def test_q8_quick_audit(audit_quick):
    check_q8(*audit_quick)


