"""`dpolab selftest`: the mutation harness. Does each check go red when the thing it guards breaks?

Each entry of `dpolab.mutants.MUTANTS` is one documented single-point change to a formula or a
simulator. For each, this module copies the package's source into a temporary tree, applies the
change there (never to the checkout), and runs in a fresh process that imports dpolab from that tree
(a child forked from a runner that holds JAX, SciPy and pytest but never dpolab, see `_RUNNER`):

- the registered checks the mutant names, in quick mode: the registry *kills* the mutant when one
  of them returns `fail` (an exception is reported as an error, not as a kill: a verdict must say
  what is wrong);
- the tests the mutant names: the test suite kills it when pytest reports failed tests (exit 1;
  a collection or usage error is a harness error, not a kill).

The unmutated baseline is the test suite's own `verify --quick` run and the tests themselves: both
must pass for the suite to be green, so a kill here is a change in verdict caused by the mutant.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomllib

from dpolab.errors import InputError

#: a mutant's checks, run in a child of the runner (below) that imports `dpolab` from the mutated
#: tree: the named registry entries in quick mode, one JSON line out.
_CHECK_SCRIPT = r"""
import json, sys, traceback
from dpolab import xla
xla.enable_cache()  # programs the mutant leaves alone are loaded, not compiled again
import jax
jax.config.update("jax_enable_x64", True)  # as `run_verify`: every check runs in float64
import dpolab
root = sys.argv[1]
if not dpolab.__file__.startswith(root):
    raise SystemExit(f"the mutated tree is not the one imported: {dpolab.__file__}")
from dpolab.verify import SUITES, checks_of
table = {}
for suite in SUITES:
    if suite != "real":
        table |= checks_of(suite)
out = {}
for key in sys.argv[2:]:
    try:
        res = table[key](True)
        out[key] = {r.id: r.verdict for r in (res if isinstance(res, list) else [res])}
    except Exception:
        out[key] = {key: "error: " + traceback.format_exc(limit=3).strip().splitlines()[-1]}
print("SELFTEST " + json.dumps(out))
"""

#: The runner: one interpreter per job slot that imports the heavy third-party modules once (never
#: `dpolab`, and it starts no JAX backend, so forking it is safe) and forks a child per request. A
#: child is a fresh process as far as dpolab is concerned: it imports dpolab from the request's tree,
#: runs the check script or pytest, and exits; the runner answers with its exit code. Starting
#: Python, JAX, SciPy and pytest afresh for each of ~220 runs cost ~2 s a run, half the harness's time.
_RUNNER = r"""
import importlib, json, os, signal, sys, time, traceback
import numpy, scipy.linalg, scipy.optimize, scipy.special, scipy.stats, jax, jax.numpy, pytest
for name in ("hypothesis", "_hypothesis_pytestplugin"):  # else pytest rewrites hypothesis's ~100 modules
    try:                                                   # in every child (1 s); the test extra has it
        importlib.import_module(name)
    except ImportError:
        pass
assert "dpolab" not in sys.modules, "the runner must not import dpolab: its children import it"

def child(req):
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(null, 0); os.dup2(log, 1); os.dup2(log, 2)
    os.environ.clear(); os.environ.update(req["env"])
    os.chdir(req["cwd"])
    sys.path.insert(0, req["tree"])
    if req["kind"] == "pytest":
        sys.argv = ["pytest", *req["args"]]
        return int(pytest.main(req["args"]))
    sys.argv = ["-c", *req["args"]]
    try:
        exec(compile(req["script"], "<selftest>", "exec"), {"__name__": "__main__"})
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    return 0

for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = child(req)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + req["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0); code = "timeout"
            break
        time.sleep(0.02)
    print(json.dumps({"exit": code}), flush=True)
"""


class _Runner:
    """One runner process (`_RUNNER`); `run` sends it a request and waits for the child's exit."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-P", "-c", _RUNNER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=_env(None), text=True)

    def run(self, kind, args, *, tree, cwd, log, timeout, script=None) -> tuple[int | str, str]:
        """(exit code or "timeout", what the child printed)."""
        req = {"kind": kind, "args": [str(a) for a in args], "tree": str(tree), "cwd": str(cwd),
               "log": str(log), "timeout": timeout, "env": _env(tree), "script": script}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the selftest runner died (exit {self.proc.wait()})")
        return json.loads(line)["exit"], Path(log).read_text(errors="replace")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


@dataclasses.dataclass
class Outcome:
    """What one mutant did: verdicts of its checks, and whether its tests failed."""

    name: str
    verdicts: dict  # {registry key: {result id: verdict or "error: ..."}}
    registry_killed: bool
    tests_killed: bool | None  # None: not run
    failed_tests: list = dataclasses.field(default_factory=list)
    seconds: dict = dataclasses.field(default_factory=dict)  # {"checks": s, "tests": s}: wall time of each child

    def as_json(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def registry(self) -> str:
        """"killed", "SURVIVED", or "—" for a mutant that names no check."""
        return "—" if not self.verdicts else "killed" if self.registry_killed else "SURVIVED"


def source_root() -> Path:
    """The checkout this package runs from (the mutant table names files relative to it)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").exists() or not (root / "tests").is_dir():
        raise InputError(f"selftest needs a source checkout (pyproject.toml and tests/ beside "
                         f"dpolab/); found an installed package at {root}")
    return root


def package_dirs(root: Path) -> dict[str, str]:
    """{import name: folder} from pyproject's setuptools package-dir map (the one source of it)."""
    data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    return data["tool"]["setuptools"]["package-dir"]


def build_tree(root: Path, dest: Path, mutant=None) -> Path:
    """Copies the package's sources into `dest` laid out as installed (dest/dpolab/theory/...),
    with `mutant` applied; returns `dest`. Raises ValueError when the mutant's text is not found
    exactly once (the table is stale)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name, folder in sorted(package_dirs(root).items(), key=lambda kv: kv[0].count(".")):
        target = dest.joinpath(*name.split("."))
        shutil.copytree(root / folder, target, ignore=ignore, dirs_exist_ok=True)
    if mutant is not None:
        path = _installed_path(root, dest, mutant.path)
        text = path.read_text(encoding="utf-8")
        count = text.count(mutant.old)
        if count != 1:
            raise ValueError(f"mutant {mutant.name!r}: its text occurs {count} times in {mutant.path} "
                             "(must be exactly once; update the table)")
        path.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")
    return dest


def _installed_path(root: Path, dest: Path, rel: str) -> Path:
    """Where a checkout file (e.g. theory/im_li.py) lands in the built tree."""
    for name, folder in package_dirs(root).items():
        if rel.startswith(folder + "/"):
            return dest.joinpath(*name.split("."), rel[len(folder) + 1:])
    raise ValueError(f"{rel} is not inside a package folder of {root}")


def _env(tree: Path | None) -> dict:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    env.pop("DPOLAB_PERSONA_DIR", None)  # mutants target the synthetic core; the real track is
    env.pop("DPOLAB_HH_PATH", None)      # slow and has its own tests
    return env


def run_mutant(mutant, runner: _Runner, *, tests: bool = True, root: Path | None = None,
               timeout: float = 900) -> Outcome:
    """Applies one mutant in a temporary tree and runs its checks (and tests), each in a fresh child
    of `runner`.

    Args:
      root: the checkout to mutate (default: the one this package runs from).
    """
    root = source_root() if root is None else Path(root)
    with tempfile.TemporaryDirectory(prefix="dpolab-mutant-") as tmp:
        tree = build_tree(root, Path(tmp) / "tree", mutant)
        verdicts, seconds = {}, {}
        if mutant.checks:
            start = time.perf_counter()
            code, out = runner.run("script", [tree, *mutant.checks], script=_CHECK_SCRIPT, tree=tree,
                                   cwd=tmp, log=Path(tmp) / "checks.log", timeout=timeout)
            line = [x for x in out.splitlines() if x.startswith("SELFTEST ")]
            if code != 0 or not line:
                raise RuntimeError(f"mutant {mutant.name!r}: the check run did not report "
                                   f"(exit {code}):\n{out[-2000:]}")
            verdicts = json.loads(line[-1][len("SELFTEST "):])
            seconds["checks"] = round(time.perf_counter() - start, 1)
        tests_killed, failed = None, []
        if tests and mutant.tests:
            start = time.perf_counter()
            code, out = runner.run("pytest", ["-q", "-x", "-p", "no:cacheprovider", "-m", "", "-W",
                                             "ignore::pytest.PytestAssertRewriteWarning", *mutant.tests],
                                   tree=tree, cwd=root, log=Path(tmp) / "tests.log", timeout=timeout)
            if code not in (0, 1):
                raise RuntimeError(f"mutant {mutant.name!r}: pytest could not run its tests "
                                   f"(exit {code}):\n{out[-2000:]}")
            tests_killed = code == 1
            seconds["tests"] = round(time.perf_counter() - start, 1)
            failed = [x.split()[1] for x in out.splitlines() if x.startswith("FAILED ")]
    killed = any("fail" in by_id.values() for by_id in verdicts.values())
    return Outcome(mutant.name, verdicts, killed, tests_killed, failed, seconds)


def run_all(mutants, *, jobs: int = 2, tests: bool = True, root: Path | None = None,
            progress=None) -> list[Outcome]:
    """Runs mutants `jobs` at a time (one runner each); outcomes in table order."""
    runners = queue.Queue()

    def one(mutant):
        runner = runners.get()
        try:
            return run_mutant(mutant, runner, tests=tests, root=root)
        finally:
            runners.put(runner)

    started = [_Runner() for _ in range(min(jobs, len(mutants)) or 1)]
    for runner in started:
        runners.put(runner)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(started)) as pool:
            futures = [pool.submit(one, m) for m in mutants]
            outcomes = []
            for future in futures:
                outcomes.append(future.result())
                if progress:
                    progress(outcomes[-1])
    finally:
        for runner in started:
            runner.close()
    return outcomes


def score(outcomes) -> dict:
    """Kill rates of the check registry (over the mutants that name checks; one that names none
    breaks a tool outside the registry, e.g. `diagnose`, which only tests guard) and of the test
    suite over the table, and which check results were never made to fail."""
    with_tests = [o for o in outcomes if o.tests_killed is not None]
    named = [o for o in outcomes if o.verdicts]
    seen, failed = set(), set()
    for o in outcomes:
        for by_id in o.verdicts.values():
            seen |= set(by_id)
            failed |= {rid for rid, v in by_id.items() if v == "fail"}
    return {
        "mutants": len(outcomes),
        "registry_killed": sum(o.registry_killed for o in named), "registry_total": len(named),
        "tests_killed": sum(bool(o.tests_killed) for o in with_tests), "tests_total": len(with_tests),
        "survivors_registry": [o.name for o in named if not o.registry_killed],
        "survivors_tests": [o.name for o in with_tests if not o.tests_killed],
        "results_never_failed": sorted(seen - failed),
    }


def format_outcomes(outcomes, summary) -> str:
    """A table (one line per mutant) and the two scores."""
    lines = [f"{'mutant':36s} registry  tests   checks s  tests s  failing checks"]
    for o in outcomes:
        fails = [rid for by_id in o.verdicts.values() for rid, v in by_id.items() if v == "fail"]
        errors = [rid for by_id in o.verdicts.values() for rid, v in by_id.items() if v.startswith("error")]
        tests = "—" if o.tests_killed is None else "killed" if o.tests_killed else "SURVIVED"
        took = "".join(f"{o.seconds[k]:8.1f} " if k in o.seconds else f"{'—':>8s} " for k in ("checks", "tests"))
        lines.append(f"{o.name:36s} {o.registry:9s} {tests:6s} {took} "
                     + ", ".join(fails + [f"{e} (error)" for e in errors]))
    lines.append(f"registry: {summary['registry_killed']}/{summary['registry_total']} killed; "
                 f"tests: {summary['tests_killed']}/{summary['tests_total']} killed")
    return "\n".join(lines)


def select(only: str | None):
    """The mutants whose name contains one of the comma-separated texts in `only` (None: all)."""
    from dpolab.mutants import MUTANTS

    if not only:
        return list(MUTANTS)
    chosen = [m for m in MUTANTS if any(o in m.name for o in only.split(","))]
    if not chosen:
        raise InputError(f"only={only!r} matches no mutant: names are {[m.name for m in MUTANTS]}")
    return chosen
