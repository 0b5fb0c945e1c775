"""Test configuration: float64 is switched on once, here, for the whole suite.

The persistent XLA compilation cache is on, as for every command (`dpolab.xla`).
`repro_quick` and `audit_quick` run `dpolab repro --quick` / `dpolab audit --quick` once per test
session (the per-item tests read what they wrote). Under pytest-xdist (`make test` runs `-n auto`)
the workers share each run: the first worker to need it makes it under a file lock in the session's
common temporary folder, the others wait and read it."""
from dpolab import xla

xla.enable_cache()  # before jax is loaded, as every command does: the suite and the harness share programs

import json  # noqa: E402
import os  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="session")
def repro_quick(tmp_path_factory):
    """(manifest, out) of one `dpolab repro --quick` run through the command line."""
    return _shared_run("repro", tmp_path_factory)


@pytest.fixture(scope="session")
def audit_quick(tmp_path_factory):
    """(manifest, out) of one `dpolab audit --quick` run through the command line."""
    return _shared_run("audit", tmp_path_factory)


@pytest.fixture(autouse=True)
def _bounded_mappings():
    """A worker runs thousands of programs: keep it under the kernel's memory-mapping cap
    (`dpolab.xla.relieve`), which crashed a worker when it was reached."""
    yield
    xla.relieve()


def pytest_collection_modifyitems(config, items):
    """Every test that uses an end-to-end fixture is `slow` (deselect with -m "not slow").

    The mutation harness's tests go first: the harness runs for minutes in one worker, so it must
    start at once (`make test` runs `--dist worksteal`: the other workers take the rest and steal
    what is queued behind it) rather than leave one worker running it alone at the end."""
    for item in items:
        if {"repro_quick", "audit_quick"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: "outcomes" not in getattr(item, "fixturenames", ()))  # stable


def _shared_run(command, tmp_path_factory):
    """The session's one `dpolab COMMAND --quick` run, made once however many xdist workers ask."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # one process: an ordinary session fixture
        return _run_cli(command, tmp_path_factory.mktemp(command) / "out")
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # the same folder for every worker of this run
    out, done = shared / f"{command}-quick" / "out", shared / f"{command}-quick.done"
    with FileLock(str(shared / f"{command}-quick.lock")):
        if not done.exists():
            _run_cli(command, out, resume=out.exists())  # a worker that died mid-run left a resumable run
            done.write_text("complete\n")
    return json.loads((out / "manifest.json").read_text()), out


def _run_cli(command, out, resume=False):
    from dpolab.cli import main

    assert main([command, "--quick", "--out", str(out)] + (["--resume"] if resume else [])) == 0
    return json.loads((out / "manifest.json").read_text()), out
