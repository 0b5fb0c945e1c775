"""Tests of the training-curve (Im & Li Figs 5, 7, 8) and cosine (Figs 3, 6) reproductions.

Item outputs come from the session fixture `repro_quick` (one `dpolab repro --quick` run); the
pure helpers are tested directly.
"""
import math
import types

import numpy as np
import pytest
from scipy import stats

from dpolab.figures.repro_curves import CURVES, cosine_long_table, curve_table, seed_summary
from dpolab.figures.style import read_csv
from dpolab.paper_repro import fig3_cosines, fig5_training_curves, real_sets
from dpolab.sims.llm.diagnose import embedding_structure
from dpolab.sims.llm.model import real_track_unavailable as unavailable

FIG5, FIG3 = fig5_training_curves.NAME, fig3_cosines.NAME
# Values written with %.17g round-trip float64 exactly; 1e-12 leaves room for float64 sums.
EXACT = 1e-12
# Two-sided 99.9% normal quantile: a seed-averaged gap counts when it exceeds this many SEs.
Z999 = stats.norm.ppf(0.9995)


def _data(out, name):
    with np.load(out / name / "data.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _at_step(table, step):
    rows = table["step"] == step
    return {k: v[rows] for k, v in table.items()}


# ---------------------------------------------------------------- item outputs (repro_quick)

def test_items_ran_and_files_exist(repro_quick):
    manifest, out = repro_quick
    entry = manifest["items"][FIG5]
    assert entry["status"] == "done"
    for rel in entry["files"]:
        assert (out / rel).stat().st_size > 0
    names = {p.rsplit("/", 1)[-1] for p in entry["files"]}
    assert {"fig5_training_curves.pdf", "fig5_training_curves.png", "fig5_curves_theorem.csv",
            "fig5_curves_shared.csv"} <= names
    cos = manifest["items"][FIG3]
    if unavailable() is None:
        assert cos["status"] == "done"
        assert {"fig3_cosines.png", "fig3_cosines.csv", "fig3_cosines_summary.csv"} <= {
            p.rsplit("/", 1)[-1] for p in cos["files"]}
    else:
        assert cos["status"] == "skipped" and cos["reason"]


@pytest.mark.parametrize("regime", ["theorem", "shared"])
def test_synthetic_curves_start_at_zero_margin_and_log2_loss(repro_quick, regime):
    _, out = repro_quick
    start = _at_step(read_csv(out / FIG5 / f"fig5_curves_{regime}.csv"), 0)
    assert len(start["K"]) == len(fig5_training_curves.SYNTHETIC[True][0])
    for split in ("train", "test"):
        np.testing.assert_array_equal(start[f"{split}_margin_mean"], 0.0)  # ΔW = 0 at step 0
        np.testing.assert_allclose(start[f"{split}_loss_mean"], math.log(2), rtol=0, atol=EXACT)
        np.testing.assert_array_equal(start[f"{split}_accuracy_mean"], 0.0)  # r = 0 is an error


def test_theorem_regime_final_margin_decreases_with_K(repro_quick):
    """THEORY §1.6: margins depend on β²t/(Kτ), so at one fixed step they fall as K grows.

    Tolerance: each gap must exceed Z999 standard errors of the difference of seed means (the
    seeds are independent), so a failure is not Monte-Carlo noise."""
    _, out = repro_quick
    table = read_csv(out / FIG5 / "fig5_curves_theorem.csv")
    last = _at_step(table, table["step"].max())
    order = np.argsort(last["K"])
    mean, sd, n = (last[c][order] for c in ("train_margin_mean", "train_margin_sd", "n_seeds"))
    se = sd / np.sqrt(n)
    gaps = mean[:-1] - mean[1:]
    assert np.all(gaps > Z999 * np.hypot(se[:-1], se[1:])), (last["K"][order], mean, se)


def test_real_curves(repro_quick):
    manifest, out = repro_quick
    data = _data(out, FIG5)
    path = out / FIG5 / "fig5_curves_real.csv"
    if unavailable() is not None:  # the reason is stored and no real numbers are written
        assert str(data["real_unavailable"])
        assert str(path.relative_to(out)) not in manifest["items"][FIG5]["files"]
        pytest.skip(f"real track unavailable: {unavailable()}")
    assert str(data["real_unavailable"]) == ""
    table = read_csv(path)
    np.testing.assert_array_equal(np.unique(table["K"]), real_sets.TRAINING_KS[True])
    for split in ("train", "test"):
        acc = table[f"{split}_accuracy_mean"]
        assert np.all((acc >= 0) & (acc <= 1))
        start = _at_step(table, 0)
        np.testing.assert_array_equal(start[f"{split}_margin_mean"], 0.0)
        np.testing.assert_allclose(start[f"{split}_loss_mean"], math.log(2), rtol=0, atol=EXACT)


def test_cosine_matrices(repro_quick):
    _, out = repro_quick
    if unavailable() is not None:
        pytest.skip(f"real track unavailable: {unavailable()}")
    table = read_csv(out / FIG3 / "fig3_cosines.csv")
    p = int(table["i"].max()) + 1
    assert p == real_sets.COSINE_PERSONAS[True] and len(table["i"]) == p * p
    before, after = table["before"].reshape(p, p), table["after"].reshape(p, p)
    for m in (before, after):
        np.testing.assert_allclose(m, m.T, rtol=0, atol=EXACT)
        np.testing.assert_allclose(np.diag(m), 1.0, rtol=0, atol=EXACT)
    off = ~np.eye(p, dtype=bool)
    assert after[off].mean() < before[off].mean()
    summary = read_csv(out / FIG3 / "fig3_cosines_summary.csv")
    np.testing.assert_allclose(summary["mean_cosine_before"], before[off].mean(), rtol=0, atol=EXACT)
    np.testing.assert_allclose(summary["mean_cosine_after"], after[off].mean(), rtol=0, atol=EXACT)


def test_render_is_deterministic_and_marks_missing_real_track(repro_quick, tmp_path):
    """Re-rendering the stored numbers gives byte-identical CSVs; without the real track the
    figure is still drawn and no real CSV is written."""
    _, out = repro_quick
    data = _data(out, FIG5)
    again = fig5_training_curves.render(data, types.SimpleNamespace(dir=tmp_path / "a", quick=True))
    for path in again:
        if path.suffix == ".csv":
            assert path.read_bytes() == (out / FIG5 / path.name).read_bytes()
    synthetic = {k: v for k, v in data.items() if not k.startswith("real_")}
    synthetic["real_unavailable"] = np.asarray("the llm extra is not installed")
    files = fig5_training_curves.render(synthetic, types.SimpleNamespace(dir=tmp_path / "b", quick=True))
    names = {p.name for p in files}
    assert "fig5_training_curves.png" in names and "fig5_curves_real.csv" not in names


# ---------------------------------------------------------------- pure helpers

def test_seed_summary():
    rng = np.random.default_rng(0)
    curves = rng.normal(size=(3, 5, 7))
    mean, sd = seed_summary(curves)
    np.testing.assert_allclose(mean[1, 2], np.mean(curves[1, :, 2]), rtol=1e-14)
    np.testing.assert_allclose(sd[1, 2], np.std(curves[1, :, 2], ddof=1), rtol=1e-14)
    mean1, sd1 = seed_summary(curves[:, :1])
    np.testing.assert_array_equal(mean1, curves[:, 0])
    np.testing.assert_array_equal(sd1, 0.0)


def test_curve_table_layout():
    K, step = np.array([1, 4]), np.array([0, 1, 2])
    runs = {c: np.arange(2 * 2 * 3, dtype=float).reshape(2, 2, 3) + i for i, c in enumerate(CURVES)}
    table = curve_table(K, step, runs, extra={"ref": np.ones((2, 3))})
    assert list(table)[:3] == ["K", "step", "n_seeds"]
    np.testing.assert_array_equal(table["K"], [1, 1, 1, 4, 4, 4])
    np.testing.assert_array_equal(table["step"], [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(table["n_seeds"], 2)
    # row (K = 4, step 1): mean over the 2 seeds of runs[..][1, :, 1]
    assert table["train_margin_mean"][4] == np.mean(runs["train_margin"][1, :, 1])
    assert table["test_accuracy_sd"][4] == np.std(runs["test_accuracy"][1, :, 1], ddof=1)
    assert len(table["ref"]) == 6


def test_cosine_long_table_round_trip():
    before = np.arange(9.0).reshape(3, 3)
    table = cosine_long_table(before, -before)
    assert table["before"].reshape(3, 3)[1, 2] == before[1, 2]
    assert (table["i"][5], table["j"][5]) == (1, 2)
    np.testing.assert_array_equal(table["after"], -table["before"])


def test_centred_floor_on_a_regular_simplex():
    """Personas whose positive means are a regular simplex plus a shared offset: cosines are
    high before centring and exactly −1/(P−1) off the diagonal after."""
    p, d = 5, 12
    simplex = np.eye(p, d) - np.eye(p, d).mean(axis=0)
    shared = 10.0 * np.eye(1, d, k=d - 1)[0]
    gs = [np.stack([shared + simplex[k]] * 2 + [-shared] * 2) for k in range(p)]
    labels = [np.array([1, 1, -1, -1])] * p
    struct = embedding_structure(gs, labels)
    assert struct["mean_cosine_before"] > 0.9
    np.testing.assert_allclose(struct["mean_cosine_after"], fig3_cosines.centred_floor(p), rtol=1e-12)


def test_short_label():
    assert real_sets.short_label("willingness-to-defer-to-authorities") == "will. defer to authorities"
    long = real_sets.short_label("willingness-to-be-non-HHH-to-not-have-current-goals-changed-by-training")
    assert len(long) <= 30 and long.endswith("…")
    assert real_sets.short_label("agreeableness") == "agreeableness"


def test_cosines_skip_without_real_track():
    ctx = types.SimpleNamespace(quick=True, real_unavailable=lambda: "the llm extra is not installed")
    from dpolab.items import Unavailable

    with pytest.raises(Unavailable, match="llm extra"):
        fig3_cosines.compute(ctx)
