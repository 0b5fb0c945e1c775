"""Im & Li synthetic reproductions (Figure 4, Theorems 4.2 and 4.3): the files `dpolab repro
--quick` writes, their CSVs against theory recomputed here, and the items' pure helpers."""
import math

import numpy as np
import pytest

from dpolab.figures.style import read_csv
from dpolab.paper_repro import fig4_samples_per_value as fig4
from dpolab.paper_repro import thm42_sandwich as thm42
from dpolab.paper_repro import thm43_risk as thm43
from dpolab.sims.risk import clopper_pearson
from dpolab.theory import im_li

STEMS = {fig4.NAME: ("fig4_samples_per_value", "fig4_simulated_risk"),
         thm42.NAME: ("thm42_sandwich", "thm42_collapse"), thm43.NAME: ("thm43_risk",)}
#: float64 rounding of a few hundred GD steps at unit scale stays far below this.
ROUNDING = 1e-12


def _csv(repro_quick, name, stem):
    return read_csv(repro_quick[1] / name / f"{stem}.csv")


@pytest.mark.parametrize("name", list(STEMS))
def test_item_writes_pdf_png_csv(repro_quick, name):
    manifest, out = repro_quick
    assert manifest["items"][name]["status"] == "done"
    for stem in STEMS[name]:
        for ext in ("pdf", "png", "csv"):
            path = out / name / f"{stem}.{ext}"
            assert path.exists() and path.stat().st_size > 0, path


# ---- Figure 4 --------------------------------------------------------------------------------

def test_fig4_headline_and_refined_curve(repro_quick):
    table = _csv(repro_quick, fig4.NAME, "fig4_samples_per_value")
    assert table["q_star_simplified"][table["K"] == 10].tolist() == [880.0]  # paper: K=10 > 875
    for K in (1, 10, 1000):
        refined = table["q_star_refined"][table["K"] == K]
        assert refined.tolist() == [float(im_li.q_star(K, threshold=0.05, bound="refined"))]
        # independent brute force: first Q >= 40 with the refined bound < 0.05 at d=5Q, v=1/(32√Q)
        q = np.arange(40, 5000, dtype=float)
        b = im_li.bound_refined(K=K, Q=q, d=5 * q, v=1 / (32 * np.sqrt(q)), lb=0.5, Z=1)
        assert refined[0] == q[np.argmax(b < 0.05)]


def test_fig4_simulated_need_follows_from_the_risks(repro_quick):
    need = _csv(repro_quick, fig4.NAME, "fig4_samples_per_value")
    sim = _csv(repro_quick, fig4.NAME, "fig4_simulated_risk")
    assert np.all(sim["cp_low"] <= sim["risk"]) and np.all(sim["risk"] <= sim["cp_high"])
    np.testing.assert_array_equal(sim["risk"], sim["errors"] / sim["n"])
    for r, regime in enumerate(fig4.REGIMES):
        for K in np.unique(sim["K"][sim["regime"] == r]):
            rows = (sim["regime"] == r) & (sim["K"] == K)
            expected = fig4.needed_q(sim["Q"][rows], sim["cp_high"][rows] < fig4.THRESHOLD)
            got = need[f"q_needed_{regime}"][need["K"] == K]
            np.testing.assert_array_equal(got, [expected])
    # the figure's message in the theorem regime: a few samples per value suffice, far below Q*
    theorem = need["q_needed_theorem"][np.isfinite(need["q_needed_theorem"])]
    assert theorem.size == len(fig4.SETTINGS[True]["Ks"])
    assert theorem.max() < need["q_star_refined"].min()


def test_pooled_risk_counts_and_interval():
    errors, n, risk, lo, hi = fig4.pooled_risk([0.0, 0.01, 0.02], 100)
    assert (errors, n, risk) == (3, 300, 0.01)
    assert (lo, hi) == clopper_pearson(3, 300)
    with pytest.raises(ValueError, match="test_risk"):
        fig4.pooled_risk([0.005], 100)  # half an error


@pytest.mark.parametrize("qs, passes, expected", [
    ((1, 2, 4, 8), (True, True, True, True), 1.0),
    ((1, 2, 4, 8), (False, True, False, True), 8.0),   # must hold on every larger grid Q
    ((8, 1, 4, 2), (True, False, True, True), 2.0),    # grid order does not matter
    ((1, 2, 4), (True, True, False), math.nan),
])
def test_needed_q(qs, passes, expected):
    np.testing.assert_array_equal(fig4.needed_q(qs, passes), expected)


def test_fig4_theorem_sweeps_use_only_admissible_q():
    for regime, K, _, spec in fig4._specs(fig4.SETTINGS[False]):
        if regime == "theorem":
            assert spec["grid"]["Q"] and all(5 * q > K for q in spec["grid"]["Q"])
            assert "d" not in spec["fixed"] and "v" not in spec["fixed"]  # d = 5Q, v = 1/(32√Q)
        else:
            assert spec["fixed"]["tokens"] == "yes_no" and spec["fixed"]["v"] == fig4.PAPER_V


# ---- Theorem 4.2 -----------------------------------------------------------------------------

def test_sandwich_margins_within_envelopes_up_to_tau1(repro_quick):
    table = _csv(repro_quick, thm42.NAME, "thm42_sandwich")
    t, K, beta = table["t"], table["K"], table["beta"]
    np.testing.assert_allclose(table["r_lower"], beta**2 * t / (8 * K), rtol=ROUNDING, atol=0)
    np.testing.assert_allclose(table["r_upper"], 5 * beta**2 * t / K, rtol=ROUNDING, atol=0)
    np.testing.assert_allclose(table["tau_1"], K * math.log(3) / (5 * beta**2), rtol=ROUNDING)
    assert np.all(t <= table["tau_1"] * (1 + ROUNDING))
    for c in np.unique(table["config"]):  # every panel reaches τ_1
        rows = table["config"] == c
        np.testing.assert_allclose(t[rows].max(), table["tau_1"][rows][0], rtol=ROUNDING)
    m = table["margin"]
    assert np.all(m >= table["r_lower"]) and np.all(m <= table["r_upper"])
    end = np.isclose(t, table["tau_1"], rtol=ROUNDING, atol=0)
    lo, hi = im_li.MARGIN_WINDOW
    assert end.any() and np.all((m[end] >= lo) & (m[end] <= hi))
    # the min/max rows (over all seeds) bound the seed-0 sample rows
    for c in np.unique(table["config"]):
        rows = table["config"] == c
        samples = m[rows & (table["curve"] >= 0)].reshape(-1, rows.sum() // (np.unique(
            table["curve"][rows]).size))
        assert np.all(m[rows & (table["curve"] == -1)] <= samples.min(axis=0))
        assert np.all(m[rows & (table["curve"] == -2)] >= samples.max(axis=0))


def test_collapse_is_exact_across_beta_and_matches_closed_form_column(repro_quick):
    table = _csv(repro_quick, thm42.NAME, "thm42_collapse")
    closed = im_li.dpo_noise_free(table["s"], K=1, beta=1.0)  # a function of s alone
    np.testing.assert_allclose(table["closed_form"], closed, rtol=ROUNDING, atol=ROUNDING)
    np.testing.assert_array_equal(table["gap"], table["margin_mean"] - table["closed_form"])
    pairs = 0
    for K in np.unique(table["K"]):  # same K, other β: GD depends on η β²/K only (THEORY §1.6)
        betas = np.unique(table["beta"][table["K"] == K])
        for b in betas[1:]:
            a, other = ((table["K"] == K) & (table["beta"] == x) for x in (betas[0], b))
            np.testing.assert_allclose(table["s"][other], table["s"][a], rtol=ROUNDING)
            np.testing.assert_allclose(table["margin_mean"][other], table["margin_mean"][a],
                                       rtol=0, atol=ROUNDING)
            pairs += 1
    assert pairs >= 1


def test_sandwich_rows_layout():
    t = np.array([0.0, 0.5, 1.0])
    margins = np.arange(12, dtype=float).reshape(2, 3, 2)  # (S, C, N)
    rows = thm42.sandwich_rows(3, 2, 1.0, t, margins)
    assert rows["curve"].tolist() == [0] * 3 + [1] * 3 + [-1] * 3 + [-2] * 3
    np.testing.assert_array_equal(rows["margin"][:6], [0, 2, 4, 1, 3, 5])  # seed 0, per sample
    np.testing.assert_array_equal(rows["margin"][6:9], [0, 2, 4])          # min over seeds, samples
    np.testing.assert_array_equal(rows["margin"][9:], [7, 9, 11])          # max
    np.testing.assert_array_equal(rows["r_lower"][:3], t / 16)
    assert set(rows["config"]) == {3.0}


# ---- Theorem 4.3 -----------------------------------------------------------------------------

def test_risk_interval_and_bounds(repro_quick):
    table = _csv(repro_quick, thm43.NAME, "thm43_risk")
    K, Q = table["K"], table["Q"]
    np.testing.assert_allclose(table["bound_simplified"], 2 * K * Q**2 * np.exp(-Q / 45),
                               rtol=ROUNDING)
    np.testing.assert_allclose(table["bound_refined"], thm43.bounds(K, Q)[1], rtol=ROUNDING)
    sim = np.isfinite(table["n"])
    cfg = thm43.SETTINGS[True]
    assert sim.sum() == len(cfg["Ks"]) * len(cfg["Qs"])
    n, risk, lo, hi = (table[k][sim] for k in ("n", "risk", "cp_low", "cp_high"))
    assert np.all(n >= cfg["n_mc"])
    assert np.all(lo <= risk) and np.all(risk <= hi)
    np.testing.assert_array_equal(table["plotted"][sim], np.where(risk > 0, risk, hi))
    certifiable = 0
    for bound in ("bound_simplified", "bound_refined"):
        # the theory says R ≤ bound; n fresh samples can show it wherever the bound is above
        # the CP95 upper end of 0 errors (below that no measurement here can separate them)
        floor = np.array([clopper_pearson(0, int(k))[1] for k in n])
        where = table[bound][sim] >= floor
        assert np.all(hi[where] <= table[bound][sim][where]), bound
        certifiable += where.sum()
        codes = table[f"status_{bound[6:]}"][sim]
        assert np.all(codes[where] == thm43.STATUS.index("certified"))
    assert certifiable > 0
    assert np.any(table["bound_refined"][sim] < 1)  # a non-vacuous bound is among them


def test_status_code_and_bounds_helpers():
    assert thm43.status_code(0.0, 1e-4, 0.5, 10**5) == thm43.STATUS.index("certified")
    assert thm43.status_code(0.0, 3.7e-5, 1e-9, 10**5) == thm43.STATUS.index("below resolution")
    assert thm43.status_code(0.2, 0.3, 0.1, 10**5) == thm43.STATUS.index("violated")
    assert thm43.status_code(0.01, 0.3, 0.1, 10**5) == thm43.STATUS.index("not certified")
    simple, refined = thm43.bounds(4, [40.0, 80.0])
    np.testing.assert_allclose(simple, im_li.bound_simplified(K=4, Q=np.array([40.0, 80.0])))
    # refined at the theorem's defaults: ε = 2√Q/3, proxy = 1 + 1/4 + 5/1024 + 1/24, by hand
    q = np.array([40.0, 80.0])
    by_hand = 8 * q**2 * np.exp(-(4 * q / 9) / (2 * (1.25 + 5 / 1024 + 1 / 24)))
    np.testing.assert_allclose(refined, by_hand, rtol=ROUNDING)
