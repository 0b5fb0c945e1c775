"""Test configuration: float64 is switched on once, here, for the whole suite.

The persistent XLA compilation cache is on, as for every command (`dpolab.xla`).
`repro_quick` and `audit_quick` run `dpolab repro --quick` / `dpolab audit --quick` once per test
session (the per-item tests read what they wrote)."""
from dpolab import xla

xla.enable_cache()  # before jax is loaded, as every command does: the suite and the harness share programs

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="session")
def repro_quick(tmp_path_factory):
    """(manifest, out) of one `dpolab repro --quick` run through the command line."""
    return _run_cli("repro", tmp_path_factory.mktemp("repro") / "out")


@pytest.fixture(scope="session")
def audit_quick(tmp_path_factory):
    """(manifest, out) of one `dpolab audit --quick` run through the command line."""
    return _run_cli("audit", tmp_path_factory.mktemp("audit") / "out")


#: test files that start Ray clusters: one worker runs them all (under pytest-xdist, `make test`)
RAY_FILES = ("test_sweep_ray.py", "test_bench.py")


def pytest_collection_modifyitems(config, items):
    """Every test that uses an end-to-end fixture is `slow` (deselect with -m "not slow").

    Under pytest-xdist (`-n auto --dist loadgroup`, as `make test` runs) the tests that share the
    session's `repro --quick` / `audit --quick` runs form one group, so those runs are made once, on
    one worker; the files that start Ray clusters form another."""
    for item in items:
        if {"repro_quick", "audit_quick"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group("end-to-end"))
        elif item.path.name in RAY_FILES:
            item.add_marker(pytest.mark.xdist_group("ray"))


def _run_cli(command, out):
    import json

    from dpolab.cli import main

    assert main([command, "--quick", "--out", str(out)]) == 0
    return json.loads((out / "manifest.json").read_text()), out
