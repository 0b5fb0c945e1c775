"""The real-embedding track after extraction: training, diagnosis and the `real` check suite."""
import csv
import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
if not os.environ.get("DPOLAB_PERSONA_DIR"):
    pytest.skip("DPOLAB_PERSONA_DIR is not set (make test sets it to ../shared/data)", allow_module_level=True)

from dpolab.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    out = tmp_path_factory.mktemp("features")
    assert main(["llm", "extract", "--k-set", "2", "--limit", "20", "--out", str(out)]) == 0
    return out


def test_train_paper_and_gd_protocols(features, tmp_path, capsys):
    for protocol in ("paper", "gd"):
        out = tmp_path / protocol
        assert main(["llm", "train", "--features", str(features), "--k-sets", "2", "--seeds", "2",
                     "--protocol", protocol, "--out", str(out)]) == 0
        with open(out / "summary.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 2 and all(float(r["train_margin"]) > 0 for r in rows)
        traj = np.load(out / "K2_seed0.npz")
        assert traj["margin_mean"][0] == 0.0 and np.all(np.isfinite(traj["loss"]))
        assert traj["loss"][-1] < traj["loss"][0] == pytest.approx(np.log(2), abs=1e-12)
        assert traj["per_value_margin"].shape == (101, 2)
        assert traj["margins"].shape == (101, len(traj["value"])) and traj["logp_chosen"].shape[0] == 101
        np.testing.assert_allclose(traj["margins"].mean(axis=1), traj["margin_mean"], rtol=1e-12)
    assert main(["llm", "train", "--features", str(features), "--k-sets", "2", "--out",
                 str(tmp_path / "paper")]) == 2  # never overwrites
    assert "--force replaces it" in capsys.readouterr().err
    assert main(["llm", "train", "--features", str(features), "--k-sets", "2", "--seeds", "1", "--out",
                 str(tmp_path / "paper"), "--force"]) == 0
    assert not (tmp_path / "paper" / "K2_seed1.npz").exists()  # the earlier run was replaced


def test_diagnose(features, tmp_path):
    out = tmp_path / "diag"
    assert main(["diagnose", str(features), "--quick", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["conditions"]["d"] == 640 and report["conditions"]["Z"] == 2
    assert -1 <= report["conditions"]["structure"]["mean_cosine_before"] <= 1
    assert report["data"]["groups"] == ["desire-for-no-human-oversight-sometimes", "agreeableness"]


def test_real_suite_quick_has_no_failures():
    import jax

    jax.config.update("jax_enable_x64", True)
    from dpolab.verify import run_checks

    results = run_checks("real", quick=True)
    assert {r.id for r in results} == {"real/exact-logprobs", "real/k-ordering", "real/test-tracks-train",
                                       "real/data-model", "real/displacement-yes-no", "real/learning-order"}
    assert all(r.verdict != "fail" for r in results), [(r.id, r.measured) for r in results]
    assert next(r for r in results if r.id == "real/exact-logprobs").measured < 1e-4


def test_hh_rdpo_pipeline(tmp_path):
    from pathlib import Path

    from dpolab.sims.llm.hh import extract_hh, rdpo_on_real, write_results

    hh = Path(os.environ["DPOLAB_PERSONA_DIR"]).parents[1] / "hh-rlhf" / "harmless-base-test.jsonl.gz"
    if not hh.exists():
        pytest.skip("no HH-RLHF data beside the persona data")
    features = extract_hh(hh, 12, tmp_path)
    stamp = features.stat().st_mtime_ns
    assert extract_hh(hh, 12, tmp_path).stat().st_mtime_ns == stamp  # reused
    with np.load(features) as f:
        assert f["phi_chosen"].shape == (12, 640) and np.all(np.isfinite(f["phi_rejected"]))
    rows = rdpo_on_real(features, eps_grid=(0.0, 0.3), seeds=1, steps=20)
    assert len(rows) == 2 * 3 and all(0 <= r["test_accuracy"] <= 1 for r in rows)
    assert "rdpo" in write_results(rows, tmp_path) and (tmp_path / "hh_results.csv").exists()


def test_llm_bench_quick_reports_throughput_and_reuse():
    from dpolab.bench import run_suite
    from dpolab.bench.harness import format_table

    result = run_suite("llm", quick=True)
    assert result["all_reused"] is True and result["statements"] == 16
    assert result["statements_per_second"] > 0 and result["reuse_speedup"] > 1
    assert "reused" in format_table(result)
