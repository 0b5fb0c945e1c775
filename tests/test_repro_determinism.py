"""`dpolab repro` twice gives byte-identical CSVs: a second, independent run of several items is
compared file by file with the session's `repro --quick` run."""
from paper_repro import run_repro

ITEMS = ("tables-full-ft", "mixture-error", "chen-ranking", "thm42-sandwich")


def test_rerun_gives_identical_csvs(repro_quick, tmp_path):
    _, first = repro_quick
    manifest, second = run_repro(out=tmp_path / "again", quick=True, only=",".join(ITEMS))
    compared = 0
    for name in ITEMS:
        csvs = sorted((first / name).glob("*.csv"))
        assert csvs, f"{name} wrote no CSV"
        assert [p.name for p in csvs] == sorted(p.name for p in (second / name).glob("*.csv"))
        for path in csvs:
            assert path.read_bytes() == (second / name / path.name).read_bytes(), path.name
            compared += 1
    assert compared >= len(ITEMS)
