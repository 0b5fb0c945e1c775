"""`dpolab.load(DIR)`: a real sweep, verify and repro folder as an xarray Dataset whose numbers are
the stored ones, with provenance in `.attrs`; folders it cannot read are refused by name."""
import json

import numpy as np
import pyarrow.parquet
import pytest

import dpolab
import dpolab.results
from dpolab.cli import main
from dpolab.errors import InputError
from dpolab.sims.sweep.engine import read_summary
from dpolab.store import load_record

SPEC = """
[sweep]
simulation = "im-li"
seeds = 3
chunk_size = 6
precision = "float64"
[fixed]
Q = 10
beta = 1.0
steps = 10
[grid]
K = [1, 2]
v = [0.0, 0.02]
"""


def test_a_sweep_loads_as_points_by_seeds_and_as_a_data_frame(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    ds = dpolab.load(tmp_path / "s")
    assert dict(ds.sizes) == {"point": 4, "seed": 3}
    csv = read_summary(tmp_path / "s" / "summary.csv")
    frame = ds.to_dataframe().reset_index()  # the README's three lines: load, to_dataframe, use
    assert len(frame) == 12
    for metric in [v for v in ds.data_vars if ds[v].dims == ("point", "seed")]:
        for point, seed, value in zip(csv["point"], csv["seed"], csv[metric]):
            got = ds[metric].sel(point=int(point), seed=int(seed)).item()
            assert got == value or (np.isnan(got) and np.isnan(value)), (metric, point, seed)
    assert sorted(set(ds.K.values)) == [1.0, 2.0] and sorted(set(ds.v.values)) == [0.0, 0.02]
    assert ds.attrs["kind"] == "sweep" and ds.attrs["spec_hash"] and json.loads(ds.attrs["versions"])["jax"]
    assert ds.sel(point=ds.K == 2).sizes["point"] == 2
    back = dpolab.results.rows(ds)  # what the audit reads: the CSV's rows, in its order, every column
    assert set(back) == set(csv)
    for name, column in csv.items():
        np.testing.assert_array_equal(back[name], column, err_msg=name)
    parquet = pyarrow.parquet.read_table(tmp_path / "s" / "summary.parquet").to_pydict()
    assert set(parquet) == set(csv)
    for name, column in csv.items():
        np.testing.assert_array_equal(np.asarray(parquet[name]), column)


def test_an_unfinished_sweep_and_a_foreign_folder_are_refused(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "manifest.json").write_text(json.dumps({"kind": "sweep", "status": "running"}))
    with pytest.raises(InputError, match="not complete.*--resume"):
        dpolab.load(tmp_path / "s")
    with pytest.raises(InputError, match="not a dpolab output folder"):
        dpolab.load(tmp_path)
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "manifest.json").write_text(json.dumps({"kind": "llm-extract"}))
    with pytest.raises(InputError, match="'llm-extract' output"):
        dpolab.load(tmp_path / "f")


def test_a_verify_run_loads_as_checks_with_their_arrays(tmp_path):
    out = tmp_path / "v"
    assert main(["verify", "--quick", "--suite", "mixture", "--out", str(out)]) == 0
    ds = dpolab.load(out)
    report = json.loads((out / "report.json").read_text())
    assert list(ds.check.values) == [c["id"] for c in report["checks"]]
    assert list(ds.verdict.values) == [c["verdict"] for c in report["checks"]]
    stored = sorted((out / "results").glob("*.npz"))
    assert stored, "the mixture suite stores arrays"
    with np.load(stored[0]) as npz:
        cid = next(c["id"] for c in report["checks"] if c["id"].replace("/", "__") == stored[0].stem)
        for name in npz.files:
            np.testing.assert_array_equal(ds[f"{cid}/{name}"].values, npz[name])
    assert ds.attrs["kind"] == "verify" and ds.attrs["precision"] == "float64"


def test_a_repro_run_loads_as_items_with_their_stored_arrays(tmp_path):
    out = tmp_path / "r"
    assert main(["repro", "--quick", "--only", "chen-ranking", "--out", str(out)]) == 0
    ds = dpolab.load(out)
    assert list(ds.item.values) == ["chen-ranking"] and ds.status.item() == "done"
    arrays, _ = load_record(out / "chen-ranking", "data")
    for name, value in arrays.items():
        np.testing.assert_array_equal(ds[f"chen-ranking/{name}"].values, value)
    assert ds.attrs["kind"] == "repro" and ds.attrs["quick"] is True
