"""`dpolab diagnose` (issue #15 part 5): bad files name their line; the mapping onto the last-layer
model is the model's own forward pass; the report's numbers against independent references; runs
end to end on a tiny model and on a features file, resumable, never overwriting."""
import gzip
import json

import numpy as np
import pytest

from dpolab.cli import main
from dpolab.errors import InputError
from dpolab.sims.llm import preferences
from dpolab.sims.llm.diagnose import clusters, data_model_estimates, disagreement, orthogonality_defect


def _jsonl(path, rows, raw=b""):
    path.write_bytes(b"\n".join(json.dumps(r).encode() for r in rows) + b"\n" + raw)
    return path


GOOD = [{"prompt": "Q1", "chosen": " Yes", "rejected": " No", "group": "a"},
        {"prompt": "Q2", "chosen": " No", "rejected": " Yes", "group": "b"}]


@pytest.mark.parametrize("case, rows, raw, expect", [
    ("empty", [], b"", "is empty"),
    ("not-utf8", GOOD, b"\xff\xfe{}", "line 3 is not UTF-8"),
    ("not-json", GOOD, b"{prompt: 1}", "line 3 is not JSON"),
    ("not-object", GOOD, b"[1, 2]", "line 3 is a JSON list"),
    ("missing-field", GOOD + [{"prompt": "Q", "chosen": "a"}], b"", "line 3: field 'rejected' is missing"),
    ("number-field", GOOD + [{"prompt": "Q", "chosen": "a", "rejected": 3}], b"", "field 'rejected' is a int"),
    ("same-answers", GOOD + [{"prompt": "Q", "chosen": "a", "rejected": "a"}], b"", "line 3: chosen and rejected"),
    ("duplicate", GOOD + [GOOD[0]], b"", "line 3 repeats line 1"),
    ("bad-group", GOOD + [{"prompt": "Q", "chosen": "a", "rejected": "b", "group": [1]}], b"",
     "line 3: group field 'group'"),
])
def test_bad_files_name_the_line(tmp_path, case, rows, raw, expect):
    path = tmp_path / "prefs.jsonl"
    if case == "empty":
        path.write_bytes(b"\n\n")
    else:
        _jsonl(path, rows, raw)
    with pytest.raises(InputError, match="data: ") as err:
        preferences.read_preferences(path, fmt="jsonl")
    assert expect in str(err.value)


def test_formats_and_limits(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", GOOD + [dict(GOOD[0], group="b")])
    recs = preferences.read_preferences(path)
    assert [(r.line, r.group, r.chosen) for r in recs] == [(1, "a", " Yes"), (2, "b", " No"), (3, "b", " Yes")]
    assert len(preferences.read_preferences(path, limit=2)) == 2
    hh = tmp_path / "hh.jsonl.gz"
    with gzip.open(hh, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: hello",
                            "rejected": "\n\nHuman: hi\n\nAssistant: go"}))
    assert preferences.detect_format(hh) == "hh"
    (rec,) = preferences.read_preferences(hh)
    assert rec.prompt == "" and rec.chosen.endswith("hello") and rec.group == ""
    for bad, field in ((dict(fmt="csv"), "format"), (dict(limit=0), "limit")):
        with pytest.raises(InputError, match=field):
            preferences.read_preferences(path, **bad)
    with pytest.raises(InputError, match="personas"):
        preferences.read_preferences(tmp_path, fmt="persona")


def test_divergence_keeps_the_shared_prefix_in_the_context():
    assert preferences.divergence([1], [5, 6, 7], [5, 6, 8], eos=2) == ([1, 5, 6], 7, 8, True)
    assert preferences.divergence([1], [9], [8], eos=2) == ([1], 9, 8, False)
    assert preferences.divergence([1], [5, 6], [5], eos=2) == ([1, 5], 6, 2, True)  # rejected stops first
    assert preferences.divergence([1], [5, 6], [5, 6], eos=2) is None


def test_clusters_and_orthogonality_defect():
    w, l, g = np.array([0, 1, 0, 2, 3, 2]), np.array([1, 0, 1, 3, 2, 0]), np.array([0, 0, 0, 1, 1, 1])
    label, pairs = clusters(w, l, g)
    assert label.tolist() == [1, -1, 1, 1, -1, 0] and pairs.tolist() == [[0, 1], [2, 3]]
    e = np.eye(4)
    assert orthogonality_defect(0.5 * e[0], e[1:3]) == pytest.approx(0.0, abs=1e-7)
    # two unit directions at angle θ: the closest orthonormal pair turns each by (90° − θ)/2
    theta = np.deg2rad(80.0)
    c = np.stack([e[1], np.cos(theta) * e[1] + np.sin(theta) * e[2]])
    expect = np.sqrt(8 * (1 - np.cos((np.pi / 2 - theta) / 2)))
    assert orthogonality_defect(e[0], c) == pytest.approx(expect, rel=1e-9)
    assert orthogonality_defect(e[0], np.stack([e[1], e[1]])) == np.inf


def test_data_model_estimates_recover_a_noise_free_model():
    """Clusters l_b·e_1 ± c_k ± a·e_5 (two rows each): every estimate is known in closed form; the
    second value leans 30° towards the shared mean, which the model forbids."""
    d, lb, a, th = 6, 3.0, 0.2, np.deg2rad(30.0)
    e = np.eye(d)
    gs, labels = [], []
    for c in (e[1], np.cos(th) * e[2] + np.sin(th) * e[0]):
        gs.append(np.stack([lb * e[0] + s * c + t * a * e[4] for s in (1, -1) for t in (1, -1)]))
        labels.append(np.array([1, 1, -1, -1]))
    est = data_model_estimates(gs, labels)
    assert est["lb"] == pytest.approx(lb, rel=1e-12)
    assert est["c_norms"] == pytest.approx([1.0, 1.0], rel=1e-12)
    assert est["concept_cosine_mean"] == pytest.approx(0.0, abs=1e-12)
    assert est["concept_shared_cosine"] == pytest.approx([0.0, np.sin(th)], abs=1e-12)
    assert est["v"] == pytest.approx(a / np.sqrt(d), rel=1e-12)
    assert est["effective_rank"] == pytest.approx(1.0, rel=1e-12) and est["Q_min"] == 2


def test_disagreement_against_a_hand_count():
    P = preferences.Preference
    recs = [P("f", 1, "q", "A", "B", "g1"), P("f", 2, "q", "A", "B", "g1"), P("f", 3, "q", "B", "A", "g2"),
            P("f", 4, "r", "A", "B", "g1")]  # "r" is compared by one group only
    out = disagreement(recs)
    w, a = np.array([2 / 3, 1 / 3]), np.array([1.0, 0.0])
    p = w @ a
    kl = w @ (a * np.log(np.where(a > 0, a, 1) / p) + (1 - a) * np.log(np.where(a < 1, 1 - a, 1) / (1 - p)))
    assert out["comparisons"] == 2 and out["shared"] == 1 and out["disagreeing"] == 1
    assert out["subgroup_loss"] == pytest.approx(kl, rel=1e-12)
    assert out["pinsker_bound"] == pytest.approx(2 * w @ (a - p) ** 2, rel=1e-12)
    assert out["subgroup_loss"] >= out["pinsker_bound"]


def test_cli_refuses_bad_input_before_touching_out(tmp_path, capsys):
    path = _jsonl(tmp_path / "p.jsonl", GOOD + [GOOD[1]])
    out = tmp_path / "out"
    assert main(["diagnose", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "line 3 repeats line 2" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert main(["diagnose", str(path), "--beta", "-1", "--out", str(out)]) == 2
    assert "beta=-1.0 is not allowed" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from dpolab.sims.llm import tiny

    root = tmp_path_factory.mktemp("tiny_diag")
    return {"model": tiny.build_tiny_model(root / "model"),
            "personas": tiny.write_personas(root / "personas", statements=6), "root": root}


def test_persona_records_map_onto_the_extracted_features(tiny_files):
    """A persona folder read as preferences gives, per statement, the g and reference log-probs of
    `dpolab llm extract` (which reads the same model at the question's last token)."""
    from dpolab.sims.llm.backbone import load_backbone, resolve_backbone
    from dpolab.sims.llm.extract import extract, load_features

    names = ["p000", "p001"]
    store = tiny_files["root"] / "extract"
    extract(tiny_files["personas"], names, None, store, model=str(tiny_files["model"]), device="cpu", progress=False)
    stored = load_features(store)
    recs = preferences.read_preferences(tiny_files["personas"], personas=",".join(names))
    ref, _ = resolve_backbone(str(tiny_files["model"]), "cpu", "float32")
    model, tok = load_backbone(ref, device="cpu", dtype="float32", progress=False)
    feats = preferences.featurise(recs, model, tok, batch_size=5, model_name=ref.name)
    g = np.concatenate([stored[n]["g"] for n in names])
    yes, no = (int(np.flatnonzero(feats["token_text"] == t)[0]) for t in (" Yes", " No"))
    label = np.concatenate([stored[n]["label"] for n in names])
    assert feats["multi_token"].sum() == 0 and feats["group_names"].tolist() == names
    np.testing.assert_allclose(feats["G"], g, rtol=0, atol=1e-5)
    np.testing.assert_allclose(feats["logp"][:, yes], np.concatenate([stored[n]["ref_logp_yes"] for n in names]),
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(feats["logp"][:, no], np.concatenate([stored[n]["ref_logp_no"] for n in names]),
                               rtol=0, atol=1e-5)
    assert np.array_equal(feats["w"] == yes, label > 0) and np.array_equal(feats["l"] == no, label > 0)


def _tiny_prefs(path):
    """Two groups, each with both orders of " Yes"/" No" (Im & Li's two clusters per value), a
    shared prompt on which the groups disagree, and one multi-token record."""
    from dpolab.sims.llm import tiny

    rows = []
    for k, group in enumerate(("kind", "bold")):
        for i in range(6):
            yes = i % 2 == 0
            rows.append({"prompt": tiny.QUESTION.format(statement=tiny._statement(3 * k + 1, i)), "group": group,
                         "chosen": " Yes" if yes else " No", "rejected": " No" if yes else " Yes"})
    rows.append(dict(rows[0], group="bold", chosen=" No", rejected=" Yes"))
    rows.append({"prompt": "tell me", "chosen": " kindness and art", "rejected": " kindness or risk", "group": "kind"})
    return _jsonl(path, rows)


def _velocity_reference(G, w, l, logp, beta, eta=1e-7):
    """d log π/dt at r = 0 by a finite gradient-descent step in plain numpy: the used rows move by
    η(β/N)Σ_i σ(0)(e_w − e_l)g_iᵀ; log π(u|x_j) changes by δ_u − log(1 + Σ_v π_v(e^{δ_v} − 1)), the
    unused tokens' mass 1 − Σ_v π_v staying put (full-vocabulary normalisation)."""
    N, U = len(w), logp.shape[1]
    E = np.zeros((N, U))
    E[np.arange(N), w] += 1.0
    E[np.arange(N), l] -= 1.0
    dW = eta * beta / N * 0.5 * E.T @ G  # (U, d)
    delta = G @ dW.T  # (N, U)
    p = np.exp(logp)
    new = logp + delta - np.log1p(np.sum(p * np.expm1(delta), axis=1, keepdims=True))
    change = (new - logp) / eta
    rows = np.arange(N)
    margin = beta * (delta[rows, w] - delta[rows, l]) / eta
    return change[rows, w], margin


def test_diagnose_end_to_end_on_a_tiny_model(tiny_files, tmp_path, capsys):
    data = _tiny_prefs(tmp_path / "prefs.jsonl")
    out = tmp_path / "diag"
    args = ["diagnose", str(data), "--model", str(tiny_files["model"]), "--device", "cpu", "--quick",
            "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["records"] == 14 and report["data"]["groups"] == ["bold", "kind"]
    assert report["data"]["multi_token_records"] == 1
    cond = report["conditions"]
    assert cond["measurable"] and cond["K"] == 2 and cond["Z"] == 2 and cond["outside_model"] == 1
    assert cond["cluster_sizes"] == [[4, 3], [3, 3]] or cond["cluster_sizes"] == [[3, 4], [3, 3]]
    assert report["twin"]["ran"] and [r["Q"] for r in report["twin"]["rows"]] == [2, 8]
    assert report["disagreement"]["shared"] == 1 and report["disagreement"]["disagreeing"] == 1
    assert report["disagreement"]["subgroup_loss"] == pytest.approx(np.log(2), rel=1e-12)  # a = (1, 0), w = ½
    with np.load(out / "features.npz") as z:
        f = {k: z[k] for k in z.files}
    chosen, margin = _velocity_reference(f["G"].astype(np.float64), f["w"], f["l"], f["logp"], beta=0.01)
    displaced = (chosen < 0) & (margin > 0)
    assert report["displacement"]["fraction"] == pytest.approx(displaced.mean(), abs=1e-12)
    assert report["displacement"]["margin_falls"] == pytest.approx(np.mean(margin <= 0), abs=1e-12)
    md = (out / "report.md").read_text()
    assert "## Learning order" in md and "**Verdict:**" in md and (out / "diagnosis.png").exists()
    # never overwritten silently; --resume reuses the stored features; --force replaces the run
    stamp = (out / "features.npz").stat().st_mtime_ns
    assert main(args) == 2 and "--resume finishes it" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0 and (out / "features.npz").stat().st_mtime_ns == stamp
    assert json.loads((out / "report.json").read_text())["displacement"] == report["displacement"]
    (out / "notes.txt").write_text("mine")  # a user's file: --force refuses to delete the folder
    assert main(args + ["--force"]) == 2 and "notes.txt" in capsys.readouterr().err
    (out / "notes.txt").unlink()
    assert main(args + ["--force"]) == 0 and (out / "features.npz").stat().st_mtime_ns != stamp
    # the same features as an .npz give the same predictions without a model
    npz = tmp_path / "feats.npz"
    np.savez(npz, G=f["G"], w=f["w"], l=f["l"], logp=f["logp"], group=f["group"])
    assert main(["diagnose", str(npz), "--quick", "--out", str(tmp_path / "diag_npz")]) == 0
    again = json.loads((tmp_path / "diag_npz" / "report.json").read_text())
    assert again["displacement"] == report["displacement"] and again["disagreement"] is None
    names = report["data"]["groups"]  # an .npz names groups by their integer ids
    assert [names[int(g)] for g in again["learning_order"]["order"]] == report["learning_order"]["order"]


@pytest.mark.parametrize("field, arrays, expect", [
    ("G", dict(G=np.zeros((0, 3)), w=np.zeros(0, int), l=np.zeros(0, int)), "field 'G'"),
    ("w", dict(G=np.ones((2, 3)), w=np.array([0.5, 1.0]), l=np.array([1, 0])), "field 'w'"),
    ("same", dict(G=np.ones((2, 3)), w=np.array([0, 1]), l=np.array([0, 0])), "record 0: w == l"),
    ("logp", dict(G=np.ones((2, 3)), w=np.array([0, 1]), l=np.array([1, 0]), logp=np.zeros((2, 2))), "field 'logp'"),
    ("missing", dict(G=np.ones((2, 3)), w=np.array([0, 1])), "lacks field 'l'"),
])
def test_bad_features_files_name_the_field(tmp_path, field, arrays, expect):
    path = tmp_path / "f.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match="data: ") as err:
        preferences.load_features_npz(path)
    assert expect in str(err.value)


def test_twin_follows_the_flow_when_the_shared_mean_dominates(tmp_path):
    """Real features have l_b ≫ 1/2; with too few steps GD blows up along e_1 and splits the
    samples by label (train accuracy exactly 1/2), so the twin raises its step count. Here v is
    small and the values are orthogonal, so the flow separates every training sample."""
    import jax
    import pandas as pd

    from dpolab.diagnose import twin

    jax.config.update("jax_enable_x64", True)
    cond = {"measurable": True, "K": 2, "Z": 2, "d": 20, "v": 0.05, "lb": 12.0, "concept_cosine_mean": 0.0}
    r = twin(cond, tmp_path, True, 0.05)
    fixed = r["spec"]["fixed"]
    m = fixed["lb"] ** 2 + 1.0 + fixed["v"] ** 2 * fixed["d"]
    assert fixed["steps"] >= 0.439 * m  # τ_1(K=2, β=1) = 2·log 3/5
    rows = pd.read_parquet(tmp_path / "twin" / "summary.parquet")
    assert (rows["train_accuracy"] == 1.0).all(), rows[["Q", "seed", "train_accuracy"]]
    assert all(row["risk"] < 0.5 for row in r["rows"])
