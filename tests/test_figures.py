"""Figures are drawn from stored npz results: files exist, CSVs hold the plotted numbers, reruns
are byte-identical, and nothing in figures/ pulls in jax or the simulation layer."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpolab.figures import im_li
from dpolab.figures.style import read_csv, save, write_csv

LOG3 = math.log(3.0)


def _write_results(d, *, skip=()):
    """Small synthetic results in the key formats `dpolab verify` stores."""
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    if "sandwich" not in skip:
        arrays = {}
        for K, beta, N in ((1, 1.0, 6), (4, 1.0, 12), (4, 0.5, 12)):
            tau1 = K * LOG3 / (5 * beta**2)
            t = np.linspace(0.0, tau1, 11)
            s = beta**2 * t / K
            growth = 0.8 + 0.4 * rng.random(N)
            margins = s[:, None] * growth[None, :]
            arrays.update({f"K{K}_beta{beta:g}_t": t, f"K{K}_beta{beta:g}_margins": margins,
                           f"K{K}_beta{beta:g}_min": 0.9 * margins.min(1),
                           f"K{K}_beta{beta:g}_max": 1.1 * margins.max(1)})
        np.savez(d / "im-li__thm4.2-sandwich.npz", Q=20.0, seeds=3.0, **arrays)
    if "q_star" not in skip:
        K = np.array([1, 2, 5, 10, 100, 1000])
        simple = np.array([700.0, 760, 820, 880, 1010, 1140])
        refined = np.array([650.0, 700, np.nan, 800, 930, 1050])
        np.savez(d / "im-li__q-star-table.npz", K=K, q_star_simplified=simple, q_star_refined=refined)
    if "shared_tokens" not in skip:
        K = np.array([1, 2, 4, 8, 16])
        v = 0.3
        rough = np.array([0.5 * math.erfc(1 / (v * math.sqrt(k)) / math.sqrt(2)) for k in K])
        shared = np.column_stack([rough, rough * 0.8, rough * 1.2 + 1e-4])
        distinct = np.column_stack([np.zeros(5), np.zeros(5), np.full(5, 1.5e-4)])
        np.savez(d / "im-li__shared-token-risk.npz", K=K, risk_shared=shared,
                 risk_distinct=distinct, rough_prediction=rough)
    if "gd_to_flow" not in skip:
        eta = 4.0 / np.array([8, 16, 32, 64])
        np.savez(d / "im-li__gd-to-flow.npz", eta=eta, max_error=0.03 * eta * (1 + 0.1 * eta))
    return d


EXPECTED = ("thm42_sandwich", "thm42_collapse", "q_star", "shared_tokens", "gd_to_flow")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs")
    results = _write_results(root / "results")
    return results, im_li.make_all(results, root / "a"), im_li.make_all(results, root / "b")


def test_make_all_writes_pdf_png_csv(two_runs):
    _, paths, _ = two_runs
    names = {p.name for p in paths}
    for stem in EXPECTED:
        for ext in ("pdf", "png", "csv"):
            assert f"{stem}.{ext}" in names
    for p in paths:
        assert p.exists() and p.stat().st_size > 0
    assert paths[0].read_bytes()[:5] == b"%PDF-"
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reruns_are_byte_identical(two_runs):
    # PNG (Software metadata dropped) and PDF (CreationDate dropped) are deterministic too.
    _, a, b = two_runs
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes(), pa.name


def test_q_star_csv_holds_the_input(two_runs):
    results, paths, _ = two_runs
    table = read_csv(next(p for p in paths if p.name == "q_star.csv"))
    with np.load(results / "im-li__q-star-table.npz") as z:
        np.testing.assert_array_equal(table["K"], z["K"])
        np.testing.assert_array_equal(table["q_star_simplified"], z["q_star_simplified"])
        np.testing.assert_array_equal(table["q_star_refined"], z["q_star_refined"])  # NaN too
        # reference 45·log K through the simplified value at K = 10
        np.testing.assert_allclose(table["reference_45logK"],
                                   880 + 45 * np.log(z["K"] / 10.0), rtol=1e-13)


def test_thm42_csvs_hold_the_check_arrays_in_the_repro_layout(two_runs):
    """The verify check's arrays are drawn by the repro item's plotters: the CSVs hold them in
    long format, with r_L, r_U, τ_1 and the noise-free closed form computed here by hand."""
    from scipy.special import lambertw

    results, paths, _ = two_runs
    table = read_csv(next(p for p in paths if p.name == "thm42_sandwich.csv"))
    assert list(table) == ["config", "K", "beta", "tau_1", "curve", "t", "margin", "r_lower", "r_upper"]
    collapse = read_csv(next(p for p in paths if p.name == "thm42_collapse.csv"))
    with np.load(results / "im-li__thm4.2-sandwich.npz") as z:
        t, r = z["K4_beta0.5_t"], z["K4_beta0.5_margins"]
        rows = (table["K"] == 4) & (table["beta"] == 0.5)
        for i in range(r.shape[1]):
            np.testing.assert_array_equal(table["margin"][rows & (table["curve"] == i)], r[:, i])
        np.testing.assert_array_equal(table["margin"][rows & (table["curve"] == -1)], z["K4_beta0.5_min"])
        np.testing.assert_array_equal(table["margin"][rows & (table["curve"] == -2)], z["K4_beta0.5_max"])
        first = rows & (table["curve"] == 0)
        np.testing.assert_allclose(table["r_lower"][first], 0.25 * t / 32, rtol=1e-15)
        np.testing.assert_allclose(table["r_upper"][first], 5 * 0.25 * t / 4, rtol=1e-15)
        np.testing.assert_allclose(table["tau_1"][rows], 4 * LOG3 / (5 * 0.25), rtol=1e-15)
        c = (collapse["K"] == 4) & (collapse["beta"] == 0.5)
        s = 0.25 * t / 4
        np.testing.assert_allclose(collapse["s"][c], s, rtol=1e-15)
        np.testing.assert_array_equal(collapse["margin_mean"][c], r.mean(1))
        closed = 1 + 2 * s - lambertw(np.exp(1 + 2 * s)).real  # r + e^r = 1 + 2s
        np.testing.assert_allclose(collapse["closed_form"][c], closed, rtol=1e-12, atol=1e-15)
        assert len(collapse["s"]) == sum(len(z[k]) for k in z.files if k.endswith("_t"))


def test_shared_tokens_and_gd_csv(two_runs):
    results, paths, _ = two_runs
    shared = read_csv(next(p for p in paths if p.name == "shared_tokens.csv"))
    gd = read_csv(next(p for p in paths if p.name == "gd_to_flow.csv"))
    with np.load(results / "im-li__shared-token-risk.npz") as z:
        np.testing.assert_array_equal(shared["shared_cp95_high"], z["risk_shared"][:, 2])
        np.testing.assert_array_equal(shared["risk_distinct"], z["risk_distinct"][:, 0])
        np.testing.assert_array_equal(shared["rough_prediction"], z["rough_prediction"])
    assert im_li._infer_v(shared["K"], shared["rough_prediction"]) == pytest.approx(0.3, rel=1e-9)
    with np.load(results / "im-li__gd-to-flow.npz") as z:
        np.testing.assert_array_equal(gd["max_error"], z["max_error"])
        ratio = gd["slope1_reference"] / z["eta"]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)  # a slope-1 line


def test_missing_inputs_are_skipped(tmp_path):
    results = _write_results(tmp_path / "results", skip=("sandwich", "shared_tokens", "gd_to_flow"))
    paths = im_li.make_all(results, tmp_path / "figs")
    assert sorted(p.name for p in paths) == ["q_star.csv", "q_star.pdf", "q_star.png"]
    assert im_li.make_all(tmp_path / "empty", tmp_path / "none") == []


def test_make_all_accepts_a_verify_out_folder(tmp_path):
    _write_results(tmp_path / "results", skip=("sandwich", "shared_tokens", "q_star"))
    paths = im_li.make_all(tmp_path, tmp_path / "figs")
    assert sorted(p.name for p in paths) == ["gd_to_flow.csv", "gd_to_flow.pdf", "gd_to_flow.png"]


def test_csv_is_repr_exact_and_validated(tmp_path):
    x = np.array([0.1, 1 / 3, np.pi * 1e-300, np.nan, 2.0**60])
    p = write_csv(tmp_path / "t.csv", {"x": x, "i": np.arange(5)})
    back = read_csv(p)
    np.testing.assert_array_equal(back["x"], x)
    assert p.read_text().splitlines()[0] == "x,i"
    with pytest.raises(ValueError, match="equal lengths"):
        write_csv(tmp_path / "bad.csv", {"a": [1, 2], "b": [1]})
    with pytest.raises(ValueError, match="1-D"):
        write_csv(tmp_path / "bad.csv", {"a": np.zeros((2, 2))})


def test_save_closes_the_figure(tmp_path):
    import matplotlib.pyplot as plt

    fig = plt.figure()
    paths = save(fig, tmp_path, "empty")
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    assert not plt.fignum_exists(fig.number)


def test_figures_does_not_import_jax_or_the_simulations():
    """Importing every figures module loads no JAX and no simulation code (the statistics of
    `dpolab.sims.risk` are numpy/scipy only)."""
    names = sorted(p.stem for p in Path(im_li.__file__).parent.glob("*.py") if p.stem != "__init__")
    code = (f"import sys; import {', '.join('dpolab.figures.' + n for n in names)}; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib') or "
            "(m.startswith('dpolab.sims.') and m != 'dpolab.sims.risk')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
