"""`verify --suite real`, `repro` and `audit` on any causal LM (issue #14): the shared
`--model/--device/--dtype/--batch-size/--cache-dir` flags reach every extraction, the model is
recorded, and each (model, revision, dtype) has its own feature cache, so a run never reads another
model's features. Runs on the CPU with the tiny random model (`dpolab.sims.llm.tiny`)."""
import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from dpolab.cli import main  # noqa: E402
from dpolab.sims.llm import backbone, tiny  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-runs")
    return {"model": tiny.build_tiny_model(root / "model"),
            "personas": tiny.write_personas(root / "personas", statements=24), "root": root}


def _flags(files, cache, dtype="float32"):
    return ["--model", str(files["model"]), "--device", "cpu", "--dtype", dtype, "--batch-size", "5",
            "--cache-dir", str(cache)]


def test_verify_real_on_the_tiny_model_records_it_and_keeps_its_own_cache(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DPOLAB_PERSONA_DIR", str(files["personas"]))
    cache, out = tmp_path / "cache", tmp_path / "verify"
    assert main(["verify", "--suite", "real", "--quick", "--quiet", "--out", str(out)]
                + _flags(files, cache)) == 0, capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    ref = backbone.resolve_model(str(files["model"]))
    assert report["meta"]["model"] == {"model": str(files["model"].resolve()), "revision": ref.revision,
                                       "dtype": "float32", "kind": "local", "device": "cpu", "batch_size": 5}
    assert str(files["model"].resolve()) in (out / "report.md").read_text()
    exact = next(c for c in report["checks"] if c["id"] == "real/exact-logprobs")
    assert exact["verdict"] == "pass" and exact["measured"] < 1e-4
    vocab = len(tiny.build_tokenizer())
    assert f"other {vocab - 2:,} tokens" in exact["claim"]  # this model's vocabulary, not Gemma's
    data_model = next(c for c in report["checks"] if c["id"] == "real/data-model")
    assert str(files["model"].resolve()) in data_model["why"]
    # one feature folder, this model's; the packaged Gemma's cache was never read or written
    folders = [p.name for p in (cache / "features").iterdir()]
    assert folders == [ref.slug("float32")], folders
    manifest = json.loads((cache / "features" / folders[0] / "limit60" / "manifest.json").read_text())
    assert manifest["model_key"] == ref.key("float32") and manifest["batch_size"] == 5

    # --resume with another dtype: the stored real checks were made with another model key, so they run
    # again, on features in a second folder; the first is left as it was
    first = {p.name: p.stat().st_mtime_ns for p in (cache / "features" / folders[0]).rglob("*")}
    assert main(["verify", "--suite", "real", "--quick", "--quiet", "--resume", "--out", str(out)]
                + _flags(files, cache, "bfloat16")) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["meta"]["model"]["dtype"] == "bfloat16"
    assert sorted(p.name for p in (cache / "features").iterdir()) == sorted([folders[0], ref.slug("bfloat16")])
    assert {p.name: p.stat().st_mtime_ns for p in (cache / "features" / folders[0]).rglob("*")} == first
    stored = json.loads((out / "checks" / "real__exact-logprobs.json").read_text())["meta"]["settings"]
    assert stored == {"model": ref.key("bfloat16")}


def test_repro_item_on_the_tiny_model_is_keyed_by_the_model(files, tmp_path, capsys):
    out, cache = tmp_path / "repro", tmp_path / "cache"
    ref = backbone.resolve_model(str(files["model"]))
    argv = ["repro", "--quick", "--quiet", "--only", "fig3-cosines", "--persona-dir", str(files["personas"]),
            "--out", str(out)]
    assert main(argv + _flags(files, cache)) == 0, capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["items"]["fig3-cosines"]["status"] == "done"
    assert manifest["model"]["model"] == str(files["model"].resolve()) and manifest["model"]["dtype"] == "float32"
    stored = json.loads((out / "fig3-cosines" / "data.json").read_text())["meta"]["settings"]
    assert stored["real"] == ref.key("float32")
    assert [p.name for p in (cache / "features").iterdir()] == [ref.slug("float32")]
    data = (out / "fig3-cosines" / "data.npz").read_bytes()
    written = {p.name: p.stat().st_mtime_ns for p in (out / "fig3-cosines").glob("data.*")}

    # the same model again: loaded from the store; another dtype: computed again, in its own folder
    assert main(argv + ["--resume"] + _flags(files, cache)) == 0
    assert (out / "fig3-cosines" / "data.npz").read_bytes() == data
    # not computed again: the stored record is not rewritten (a timing would depend on the load)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "fig3-cosines").glob("data.*")} == written
    assert main(argv + ["--resume"] + _flags(files, cache, "bfloat16")) == 0
    stored = json.loads((out / "fig3-cosines" / "data.json").read_text())["meta"]["settings"]
    assert stored["real"] == ref.key("bfloat16")
    assert sorted(p.name for p in (cache / "features").iterdir()) == sorted([ref.slug("float32"),
                                                                            ref.slug("bfloat16")])
    assert json.loads((out / "manifest.json").read_text())["model"]["dtype"] == "bfloat16"
    assert [p.name for p in cache.iterdir()] == ["features"]  # a local model needs no dpolab model copy


def test_audit_records_the_model_in_its_report(files, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["audit", "--quick", "--quiet", "--only", "q4-noise", "--persona-dir", str(files["personas"]),
                 "--out", str(out)] + _flags(files, tmp_path / "cache")) == 0, capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["model"] == str(files["model"].resolve())
    assert f"Real features (where a question uses them): {files['model'].resolve()}" in (out / "audit.md").read_text()
    ref = backbone.resolve_model(str(files["model"]))
    assert [p.name for p in (tmp_path / "cache" / "features").iterdir()] == [ref.slug("float32")]


def test_a_run_with_a_new_out_reuses_the_features_an_earlier_run_extracted(files, tmp_path, monkeypatch, capsys):
    """The feature cache is shared by runs (`Backbone.feature_cache`): a second `repro` into another
    folder gets the same numbers without running the model."""
    import importlib

    extract_module = importlib.import_module("dpolab.sims.llm.extract")  # the module, not the function
    cache = tmp_path / "cache"
    argv = ["repro", "--quick", "--quiet", "--only", "fig3-cosines", "--persona-dir", str(files["personas"])]
    assert main(argv + ["--out", str(tmp_path / "first")] + _flags(files, cache)) == 0, capsys.readouterr()

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran although these features were extracted by the first run")

    monkeypatch.setattr(extract_module, "final_hidden_states", no_model)
    assert main(argv + ["--out", str(tmp_path / "second")] + _flags(files, cache)) == 0, capsys.readouterr()
    for name in ("first", "second"):
        assert json.loads((tmp_path / name / "manifest.json").read_text())["items"]["fig3-cosines"]["status"] == "done"
    assert ((tmp_path / "first" / "fig3-cosines" / "data.npz").read_bytes()
            == (tmp_path / "second" / "fig3-cosines" / "data.npz").read_bytes())
    assert not (tmp_path / "second" / "_features").exists()


def test_an_unwritable_feature_cache_names_the_cache_flag(files, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    argv = ["repro", "--quick", "--quiet", "--only", "fig3-cosines", "--persona-dir", str(files["personas"]),
            "--out", str(tmp_path / "out")]
    assert main(argv + _flags(files, blocker / "cache")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--cache-dir" in err and "a-file" in err, err
