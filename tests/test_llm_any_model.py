"""The real-model track on any causal LM, without a download: a tiny random-weight Llama-architecture
model (`dpolab.sims.llm.tiny`) saved to a folder goes through extract → train → diagnose → hh with
`--model DIR --device cpu`, the same code path as the packaged Gemma or a hub model; plus device and
dtype selection and the bad inputs of issues #14 and #16 (exit 2, one line, nothing left in --out)."""
import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from dpolab.cli import main  # noqa: E402
from dpolab.errors import InputError  # noqa: E402
from dpolab.sims.llm import backbone, tiny  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"model": tiny.build_tiny_model(root / "model"), "personas": tiny.write_personas(root / "personas"),
            "hh": tiny.write_hh(root / "hh.jsonl.gz"), "root": root}


@pytest.fixture(scope="module")
def features(files):
    out = files["root"] / "features"
    assert main(["llm", "extract", "--persona-dir", str(files["personas"]), "--k-set", "1,2", "--limit", "8",
                 "--model", str(files["model"]), "--device", "cpu", "--dtype", "float32", "--batch-size", "3",
                 "--quiet", "--out", str(out)]) == 0
    return out


def _one_line_error(capsys, flag):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert flag in err, err
    return err


def test_features_are_the_models_own_logprobs(files, features):
    """g, the reference log-probs and the head rows reproduce an independent unpadded forward pass
    of the model, in float64 over the full vocabulary; the head is the real (untied) unembedding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpolab.sims.llm.extract import load_features
    from dpolab.sims.llm.persona import load_persona

    manifest = json.loads((features / "manifest.json").read_text())
    assert manifest["model_key"]["model"] == str(files["model"].resolve())
    assert manifest["model_key"]["dtype"] == "float32" and manifest["device"] == "cpu"
    assert manifest["hidden_size"] == 32 and manifest["tied_head"] is False
    model = AutoModelForCausalLM.from_pretrained(str(files["model"]), dtype=torch.float64).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(files["model"]))
    yes, no = manifest["token_ids"]["yes"], manifest["token_ids"]["no"]
    head = model.get_output_embeddings().weight.detach().numpy()
    assert not np.allclose(head, model.get_input_embeddings().weight.detach().numpy())
    stored = load_features(features)
    assert list(stored) == ["p112", "p029", "p001"]  # the paper's K = 1 and K = 2 sets
    questions = load_persona(files["personas"], "p029", 8).question
    f = stored["p029"]
    assert f["g"].shape == (8, 32) and len(set(f["n_tokens"].tolist())) > 1  # batches were padded
    np.testing.assert_array_equal(f["head_yes_no"], head[[yes, no]].astype(np.float32))
    for i in range(8):
        with torch.inference_mode():
            logits = model(**tokenizer(questions[i], return_tensors="pt")).logits[0, -1]
        logp = torch.log_softmax(logits, dim=-1).numpy()
        np.testing.assert_allclose([f["ref_logp_yes"][i], f["ref_logp_no"][i]], logp[[yes, no]], atol=1e-4)
        np.testing.assert_allclose(f["g"][i].astype(np.float64) @ head[[yes, no]].T, logits[[yes, no]].numpy(),
                                   atol=1e-4)
        rest = np.delete(logits.numpy(), [yes, no])
        np.testing.assert_allclose(f["ref_lse_rest"][i], np.log(np.sum(np.exp(rest - rest.max()))) + rest.max(),
                                   atol=1e-4)


def test_a_tied_head_is_read_as_the_unembedding(files, tmp_path):
    from dpolab.sims.llm.extract import extract, load_features

    model = tiny.build_tiny_model(tmp_path / "tied", tied=True)
    extract(files["personas"], ["p000"], 4, tmp_path / "f", model=str(model), device="cpu", progress=False)
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert manifest["tied_head"] is True
    from safetensors.numpy import load_file

    weights = load_file(str(model / "model.safetensors"))
    embed = weights["model.embed_tokens.weight"]
    yes, no = manifest["token_ids"]["yes"], manifest["token_ids"]["no"]
    np.testing.assert_array_equal(load_features(tmp_path / "f")["p000"]["head_yes_no"], embed[[yes, no]])


def test_train_and_diagnose_on_the_tiny_model(files, features, tmp_path):
    out = tmp_path / "train"
    assert main(["llm", "train", "--features", str(features), "--persona-dir", str(files["personas"]),
                 "--k-sets", "1,2", "--seeds", "2", "--model", str(files["model"]), "--out", str(out)]) == 0
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["K"], r["seed"]) for r in rows] == [("1", "0"), ("1", "1"), ("2", "0"), ("2", "1")]
    traj = np.load(out / "K2_seed0.npz")
    assert traj["loss"][0] == pytest.approx(np.log(2), abs=1e-12) and traj["loss"][-1] < traj["loss"][0]
    assert json.loads((out / "manifest.json").read_text())["features_model"]["dtype"] == "float32"
    assert main(["diagnose", str(features), "--quick", "--out", str(tmp_path / "diag")]) == 0
    report = json.loads((tmp_path / "diag" / "report.json").read_text())
    assert report["conditions"]["d"] == 32 and report["conditions"]["Z"] == 3
    assert report["model"]["model"] == str(files["model"].resolve())


def test_reuse_and_one_model_per_folder(files, features, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in features.iterdir()}
    args = ["llm", "extract", "--persona-dir", str(files["personas"]), "--k-set", "2", "--limit", "8",
            "--device", "cpu", "--out", str(features)]
    assert main(args + ["--model", str(files["model"])]) == 0
    assert "0 statements extracted" in capsys.readouterr().out  # reused, the model not even loaded
    assert {p.name: p.read_bytes() for p in features.iterdir()} == before
    # another dtype, or another model (a different revision), is refused in this folder
    assert main(args + ["--model", str(files["model"]), "--dtype", "bfloat16"]) == 2
    assert "one folder holds one model's features" in _one_line_error(capsys, "out")
    other = tiny.build_tiny_model(tmp_path / "other", seed=1)
    assert backbone.resolve_model(str(other)).revision != backbone.resolve_model(str(files["model"])).revision
    assert main(args + ["--model", str(other)]) == 2
    _one_line_error(capsys, "out")
    assert {p.name: p.read_bytes() for p in features.iterdir()} == before
    # train / diagnose with --model refuse features of another model
    assert main(["diagnose", str(features), "--model", str(other), "--out", str(tmp_path / "diag")]) == 2
    _one_line_error(capsys, "--model")
    assert not (tmp_path / "diag").exists()


def test_bfloat16_features_agree_with_float32(files, features, tmp_path):
    from dpolab.sims.llm.extract import load_features

    out = tmp_path / "bf16"
    assert main(["llm", "extract", "--persona-dir", str(files["personas"]), "--personas", "p029", "--limit", "8",
                 "--model", str(files["model"]), "--device", "cpu", "--dtype", "bfloat16", "--quiet",
                 "--out", str(out)]) == 0
    low, high = load_features(out)["p029"], load_features(features)["p029"]
    assert low["g"].dtype == np.float32
    # bfloat16 keeps 8 bits of mantissa: relative error ~2^-8 per operation, a few % after 2 layers
    scale = np.abs(high["g"]).max()
    assert 0 < np.abs(low["g"] - high["g"]).max() < 0.1 * scale


def test_device_and_dtype_selection(monkeypatch):
    if torch.cuda.is_available():
        assert backbone.resolve_device("auto") == "cuda"
    else:
        assert backbone.resolve_device("auto") == backbone.resolve_device(None) == "cpu"
        with pytest.raises(InputError, match="--device: 'cuda' was requested but torch .* sees no CUDA GPU"):
            backbone.resolve_device("cuda")
    assert backbone.resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="--device: 'tpu' is not allowed"):
        backbone.resolve_device("tpu")
    for name in backbone.DTYPES:  # torch on CPU computes in all three
        assert backbone.resolve_dtype(name, "cpu") == getattr(torch, name)
    with pytest.raises(InputError, match="--dtype: 'float64' is not allowed"):
        backbone.resolve_dtype("float64", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert backbone.resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "Tesla V100")
    with pytest.raises(InputError, match="--dtype: 'bfloat16' is not supported by Tesla V100"):
        backbone.resolve_dtype("bfloat16", "cuda")


def test_a_dtype_the_device_cannot_run_is_refused(monkeypatch):
    def unsupported(*args, **kwargs):
        raise RuntimeError('"rms_norm" not implemented for \'Half\'')

    monkeypatch.setattr(torch.nn.functional, "rms_norm", unsupported)
    with pytest.raises(InputError, match=r"--dtype: 'float16' cannot run on cpu here \(\"rms_norm\" not impl"):
        backbone.resolve_dtype("float16", "cpu")


def test_float16_overflow_names_the_dtype_and_leaves_nothing(files, tmp_path, capsys):
    """A model whose residual stream exceeds float16's range (65,504): refused naming --dtype (the
    packaged Gemma does this on CPU), while float32 runs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(files["model"]))
    with torch.no_grad():  # every MLP adds ~1e3 to a residual stream already at 6e4
        model.get_input_embeddings().weight.fill_(6e4)
        for layer in model.model.layers:
            for proj in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                proj.weight.fill_(1.0)
    big = tmp_path / "big"
    model.save_pretrained(str(big))
    AutoTokenizer.from_pretrained(str(files["model"])).save_pretrained(str(big))
    args = ["llm", "extract", "--persona-dir", str(files["personas"]), "--personas", "p000", "--limit", "2",
            "--model", str(big), "--device", "cpu", "--quiet"]
    capsys.readouterr()
    assert main(args + ["--dtype", "float16", "--out", str(tmp_path / "f16")]) == 2
    assert "'float16' overflows" in _one_line_error(capsys, "--dtype")
    assert not (tmp_path / "f16").exists()
    assert main(args + ["--out", str(tmp_path / "f32")]) == 0


def test_a_hub_id_is_read_from_the_local_cache_with_its_commit_as_revision(files, tmp_path, monkeypatch):
    """The Hugging Face cache layout (models--OWNER--NAME/refs/main → snapshots/COMMIT/), offline."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-llama"
    shutil.copytree(files["model"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read at each call
    ref = backbone.resolve_model("tiny-org/tiny-llama")
    assert (ref.kind, ref.name, ref.revision) == ("hub", "tiny-org/tiny-llama", commit)
    assert main(["llm", "extract", "--persona-dir", str(files["personas"]), "--personas", "p000", "--limit", "2",
                 "--model", "tiny-org/tiny-llama", "--device", "cpu", "--quiet", "--out", str(tmp_path / "f")]) == 0
    key = json.loads((tmp_path / "f" / "manifest.json").read_text())["model_key"]
    assert key == {"model": "tiny-org/tiny-llama", "revision": commit, "dtype": "float32"}


def _bad_models(root):
    folder = root / "no-config"
    folder.mkdir()
    garbage = root / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    t5 = root / "t5"
    from transformers import T5Config

    T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, vocab_size=64).save_pretrained(str(t5))
    multi = tiny.build_tiny_model(root / "multi-token", single_token_answers=False)
    return [
        (str(root / "missing"), "--model", "is not a model folder with a config.json"),
        (str(folder), "--model", "is not a model folder with a config.json"),
        (str(garbage), "--model", "has no readable Hugging Face config"),
        ("nobody/not-a-cached-model", "--model", "is not in the local Hugging Face cache"),
        (str(t5), "--model", "(model_type 't5') has no causal-LM head"),
        (str(multi), "--model", "the answer ' Yes' is 4 tokens"),
    ]


def test_bad_models_exit_2_in_one_line_and_leave_nothing(files, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    for model, flag, message in _bad_models(tmp_path):
        out = tmp_path / "out"
        assert main(["llm", "extract", "--persona-dir", str(files["personas"]), "--personas", "p000",
                     "--limit", "4", "--model", model, "--device", "cpu", "--out", str(out)]) == 2, model
        assert message in _one_line_error(capsys, flag), model
        assert not out.exists(), model


@pytest.mark.parametrize("extra, flag, message", [
    (["--device", "cuda"], "--device", "sees no CUDA GPU"),
    (["--batch-size", "0"], "batch_size", "must be a positive integer"),
    (["--limit", "0"], "limit", "must be a positive integer"),
    (["--k-set", "3"], "--k-set", "the paper's set sizes [1, 2, 4, 8, 16]"),
])
def test_bad_extract_flags(files, tmp_path, capsys, extra, flag, message):
    if extra[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = ["llm", "extract", "--persona-dir", str(files["personas"]), "--model", str(files["model"]),
            "--out", str(tmp_path / "out")]
    if "--k-set" not in extra:
        args += ["--personas", "p000"]
    assert main(args + extra) == 2
    assert message in _one_line_error(capsys, flag)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, flag", [(["--limit", "0"], "limit"), (["--limit", "2"], "limit"),
                                         (["--seeds", "0"], "seeds"), (["--batch-size", "0"], "batch_size"),
                                         (["--device", "cuda"], "--device")])
def test_hh_validates_every_argument_before_loading_a_model(files, tmp_path, capsys, monkeypatch, extra, flag):
    if extra[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(backbone, "load_backbone", no_load)
    out = tmp_path / "hh"
    assert main(["llm", "hh", "--hh-path", str(files["hh"]), "--model", str(files["model"]), "--limit", "6",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)] + extra) == 2
    _one_line_error(capsys, flag)
    assert not out.exists()


def test_hh_on_the_tiny_model(files, tmp_path):
    from dpolab.sims.llm.commands import run_hh

    table = run_hh(files["hh"], 12, tmp_path, seeds=1, model=str(files["model"]), device="cpu")
    assert "rdpo" in table
    with np.load(tmp_path / "hh.npz") as f:
        assert f["phi_chosen"].shape == (12, 32) and np.isfinite(f["phi_rejected"]).all()
    request = json.loads((tmp_path / "hh_manifest.json").read_text())["request"]
    assert request["revision"] == backbone.resolve_model(str(files["model"])).revision
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match="hh_path: .* is not a gzipped JSON-lines"):
        run_hh(tmp_path / "bad.jsonl.gz", 12, tmp_path / "x", seeds=1, model=str(files["model"]), device="cpu")


def test_non_nested_paper_sets_name_the_missing_personas(files, tmp_path, capsys):
    """The README's old example: features of the K = 16 set cannot train K = 1, 2, 4, 8."""
    from dpolab.sims.llm.commands import paper_union
    from dpolab.sims.llm.persona import paper_persona_set

    out = tmp_path / "k16"
    assert main(["llm", "extract", "--persona-dir", str(files["personas"]), "--k-set", "16", "--limit", "4",
                 "--model", str(files["model"]), "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["llm", "train", "--features", str(out), "--persona-dir", str(files["personas"]),
                 "--k-sets", "1,2,4,8,16", "--out", str(tmp_path / "train")]) == 2
    err = _one_line_error(capsys, "--features")
    k1 = paper_persona_set(1, files["personas"])
    assert f"K=1 needs {k1}" in err and "K=16" not in err
    assert "dpolab llm extract --k-set 1,2,4,8,16" in err
    assert not (tmp_path / "train").exists()
    union = paper_union([1, 2, 4, 8, 16], files["personas"])
    assert len(union) == len(set(union)) and set(k1) <= set(union)
    assert set(paper_persona_set(16, files["personas"])) <= set(union)


def test_one_help_text_per_shared_flag():
    import argparse

    from dpolab.cli import _parser

    helps = {}

    def walk(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            for flag in ("--persona-dir", "--cache-dir", "--hh-path"):
                if flag in action.option_strings:
                    helps.setdefault(flag, set()).add(action.help)

    walk(_parser())
    assert set(helps) == {"--persona-dir", "--cache-dir", "--hh-path"}
    assert all(len(texts) == 1 for texts in helps.values()), helps


def test_resource_estimate_by_hand_and_in_the_readme():
    """Llama-3.1-8B in bfloat16, computed by hand from the formula in the docstring."""
    from pathlib import Path

    e = backbone.estimate_resources(backbone.ARCHITECTURES["Llama-3.1-8B"], dtype="bfloat16")
    weights = 8.03e9 * 2
    per_statement = 27 * (4 * 4096 + 2 * 14_336) * 2 + 128_256 * 12  # 3,972,096 bytes
    assert e["weights_gib"] == pytest.approx(weights / 2**30, rel=1e-12)
    assert e["activations_mib_per_statement"] == pytest.approx(3_972_096 / 2**20, rel=1e-12) == per_statement / 2**20
    assert e["peak_gib"] == pytest.approx((weights + 16 * per_statement + 128_256 * 4096 * 4) / 2**30, rel=1e-12)
    assert e["seconds_per_statement"] == pytest.approx(2 * 8.03e9 * 27 / (989e12 * 0.3), rel=1e-12)  # compute-bound
    small_batch = backbone.estimate_resources(backbone.ARCHITECTURES["Llama-3.1-8B"], batch_size=1)
    assert small_batch["seconds_per_statement"] == pytest.approx(weights / 3.35e12, rel=1e-12)  # weight reads
    with pytest.raises(InputError, match="dtype: 'int8'"):
        backbone.estimate_resources(backbone.ARCHITECTURES["Llama-3.1-8B"], dtype="int8")
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert backbone.resource_table() in readme
