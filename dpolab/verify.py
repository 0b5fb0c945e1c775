"""`dpolab verify`: run the checks, store results, write the report and figures.

The catalogue of suites is written out here (`SUITES`): each suite names the modules whose
`CHECKS` table ({check id: fn(quick) -> CheckResult | list[CheckResult]}) it runs, in order.
Adding a check is one entry in its module's `CHECKS`; adding a suite is one line here.
"""
from __future__ import annotations

import datetime
import difflib
import importlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dpolab import xla
from dpolab.checks.result import CheckResult
from dpolab.errors import InputError
from dpolab.store import environment, load_record, prepare_out, save_record, write_atomic

VERDICT_MARK = {"pass": "PASS", "fail": "FAIL", "finding": "FINDING"}

#: {suite: modules of `dpolab.checks` whose CHECKS it runs}, in run order.
SUITES: dict[str, tuple[str, ...]] = {
    "im-li": ("dynamics", "generalization"),
    "mixture": ("mixture",),
    "phenomena": ("hidden_context", "samplers", "displacement", "learning_order"),
    "ranking": ("ranking",),
    "rdpo": ("rdpo",),
    "real": ("real", "real_displacement", "real_learning_order"),
    "audit": ("audit",),
    "gpu": ("gpu",),
}


def checks_of(suite: str) -> dict[str, Callable]:
    """{check id: fn} of one suite, in run order."""
    table = {}
    for name in SUITES[suite]:
        table |= importlib.import_module(f"dpolab.checks.{name}").CHECKS
    return table


def unavailable_suites() -> dict[str, str]:
    """{suite: why it cannot run here} for suites that need optional packages or data."""
    from dpolab.sims.llm.model import real_track_unavailable

    reason = real_track_unavailable()
    return {"real": reason} if reason else {}


def validate_suite(suite: str | None) -> None:
    """Raises InputError naming the field when `suite` is not a suite (None: all) or cannot run
    here."""
    if suite is not None and suite not in SUITES:
        raise InputError(f"suite={suite!r} is not allowed: suite must be one of {tuple(SUITES)}")
    if suite is not None and suite in unavailable_suites():
        raise InputError(f"suite={suite!r} is not allowed here: {unavailable_suites()[suite]}")


def validate_only(suite: str | None, only: str | None) -> None:
    """Raises InputError naming the text when a comma-separated text of `only` is empty or part of
    no check id that runs here (a typo would otherwise run nothing and pass)."""
    if only is None:
        return
    skip = unavailable_suites()
    ids = [c for name in (SUITES if suite is None else (suite,)) if name not in skip for c in checks_of(name)]
    for text in only.split(","):
        if not text or not any(text in c for c in ids):
            near = difflib.get_close_matches(text, ids, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(near)}?" if near else f"check ids are {', '.join(ids)}"
            raise InputError(f"only={only!r} is not allowed: {text!r} is part of no check id that runs "
                             f"here ({hint})")


def default_jobs() -> int:
    """Checks run at once by default: one per CPU core up to 4 (each process holds its own JAX and
    programs), and 1 where a GPU or TPU plugin is installed (processes would share the device)."""
    return 1 if xla.accelerator_plugin() else max(1, min(4, os.cpu_count() or 1))


def validate_jobs(jobs) -> None:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"jobs={jobs!r} is not allowed: jobs must be an integer >= 1")


def run_checks(suite: str | None = None, *, quick: bool = False, only: str | None = None,
               progress=None,
               stored: Callable[[str], "list[CheckResult] | None"] | None = None,
               on_done: Callable[[str, list], None] | None = None, jobs: int = 1) -> list[CheckResult]:
    """Runs the checks of one suite (None: every suite that can run here), or those whose id
    contains one of the comma-separated texts in `only`.

    Args:
      progress: a `dpolab.progress.Progress`, told the number of checks, each check as it starts
        and each as it ends.
      stored: returns the results of a check completed by an earlier, interrupted run (or None);
        such checks are not run again.
      on_done: called with (check id, results) as soon as each check finishes.
      jobs: checks run at once, each in a fresh worker process (`_pool`) when > 1. Every check
        draws its own keys, so its results do not depend on where or in what order it runs.
    """
    validate_suite(suite)
    validate_jobs(jobs)
    skip = unavailable_suites()
    chosen = [check_id for name in (SUITES if suite is None else (suite,)) if name not in skip
              for check_id in checks_of(name)
              if not only or any(o in check_id for o in only.split(","))]
    done = {check_id: stored(check_id) if stored else None for check_id in chosen}
    if progress:
        progress.reset(len(chosen), initial=sum(d is not None for d in done.values()))
    todo = [check_id for check_id in chosen if done[check_id] is None]
    for check_id, results in (_serial(todo, quick, progress) if jobs == 1 else _pool(todo, quick, jobs, progress)):
        done[check_id] = results
        if on_done:
            on_done(check_id, results)
        xla.relieve()
        if progress:
            progress.update(1)
    return [res for check_id in chosen for res in done[check_id]]


def run_one(check_id: str, quick: bool) -> list[CheckResult]:
    """The results of one registered check, timed."""
    fn = next(table[check_id] for table in map(checks_of, SUITES) if check_id in table)
    start = time.perf_counter()
    out = fn(quick)
    results = out if isinstance(out, list) else [out]
    for res in results:
        res.seconds = time.perf_counter() - start
    return results


def _serial(todo, quick, progress):
    for check_id in todo:
        if progress:
            progress.start(check_id)
        yield check_id, run_one(check_id, quick)


def _pool(todo, quick, jobs, progress):
    """(check id, results) as worker processes finish them. The `real` checks go to one worker
    together and first (they share one feature extraction, the longest step); every other check
    is a task of its own, in run order. Each worker's compilations are added to this process's
    meter (`xla.add`)."""
    import concurrent.futures
    import multiprocessing

    from dpolab.checks import real

    tasks = [[c for c in todo if c in real.CHECKS]] + [[c] for c in todo if c not in real.CHECKS]
    tasks = [task for task in tasks if task]
    if not tasks:
        return
    workers = min(jobs, len(tasks))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked JAX runtime
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start) as pool:
        pending = {pool.submit(_worker_run, task, quick, real.current()): task for task in tasks}
        try:
            for future in _as_completed(pending, workers, progress):
                finished, compiled, pid = future.result()
                xla.add(compiled, pid)
                yield from finished
        except BaseException:  # Ctrl-C, or the caller stopped: the queued checks are not started
            pool.shutdown(cancel_futures=True)
            raise


def _as_completed(pending: dict, workers: int, progress):
    """The futures of `pending` ({future: task}, in submission order) as they finish; `progress`
    is told what runs now: the first `workers` unfinished tasks (the pool takes them in order)."""
    import concurrent.futures

    left = dict(pending)
    while left:
        if progress:
            progress.start(", ".join(c for task in list(left.values())[:workers] for c in task))
        done, _ = concurrent.futures.wait(left, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in (f for f in pending if f in done):
            del left[future]
            yield future


def _worker_start():
    xla.enable_cache()  # before jax is loaded, as in every command
    import jax

    jax.config.update("jax_enable_x64", True)


def _worker_run(task, quick, backbone):
    from dpolab.checks import real

    before = xla.stats()
    finished = []
    for check_id in task:
        with real.using(backbone):
            results = run_one(check_id, quick)
        for res in results:  # host arrays: what crosses processes and is stored
            res.artifacts = {k: np.asarray(v) for k, v in res.artifacts.items()}
        finished.append((check_id, results))
        xla.relieve()
    return finished, xla.since(before), os.getpid()


def result_stem(check_id: str) -> str:
    """The file stem of a check's stored results (`checks/STEM.*`, `results/STEM.npz`)."""
    return check_id.replace("/", "__")


class CheckStore:
    """Each finished check is one record of `dpolab.store` in `out/checks/` (its results as JSON
    metadata, their artifacts as arrays), written at once, so that an interrupted run resumes where
    it stopped; `prepare_out` keeps results of another mode (quick vs full) out, and a record made
    with other `settings(check_id)` (the real checks' model) is computed again."""

    def __init__(self, out: Path, settings: Callable[[str], dict] = lambda check_id: {}):
        self.dir = out / "checks"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings

    def load(self, check_id) -> list[CheckResult] | None:
        settings = self.settings(check_id)
        record = load_record(self.dir, result_stem(check_id), expect={"settings": settings} if settings else None)
        if record is None:
            return None
        arrays, meta = record
        results = []
        for i, item in enumerate(meta["results"]):
            names = item.pop("artifacts")
            results.append(CheckResult(**item, artifacts={k: arrays[f"{i}/{k}"] for k in names}))
        return results

    def save(self, check_id, results) -> None:
        arrays = {f"{i}/{k}": v for i, r in enumerate(results) for k, v in r.artifacts.items()}
        meta = json.loads(json.dumps({"results": [r.as_json() for r in results],
                                      "settings": self.settings(check_id)}, default=float))
        save_record(self.dir, result_stem(check_id), arrays, meta)


def default_out() -> Path:
    return Path("results") / "verify" / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _short(value, width=60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=float, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def table(results) -> str:
    """A plain-text table: verdict, check id, measured, predicted."""
    lines = [f"{'verdict':8} {'check':34} {'measured':62} predicted"]
    for r in results:
        lines.append(f"{VERDICT_MARK[r.verdict]:8} {r.id:34} {_short(r.measured):62} "
                     f"{_short(r.predicted, 50)}")
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICT_MARK}
    lines.append(f"{counts['pass']} passed, {counts['fail']} failed, {counts['finding']} findings")
    return "\n".join(lines)


def markdown(results, meta) -> str:
    """report.md: one section per check with claim, prediction, measurement, tolerance, verdict."""
    out = ["# dpolab verify report", "",
           f"Mode: {'quick' if meta['quick'] else 'full'}; suite: {meta['suite'] or 'all'}; "
           f"precision {meta['precision']}; JAX backend {meta['jax_backend']}; "
           f"git {meta['git_commit']}; {xla.summary(meta['xla'], meta['wall_s'])}."]
    if meta.get("model"):
        m = meta["model"]
        out.append(f"Real features (suite `real`): {m['model']} (revision {m['revision'][:12]}), {m['dtype']}, "
                   f"on {m['device']}.")
    out += [f"Not run: suite `{name}` — {why}." for name, why in meta["suites_not_run"].items()]
    out += ["",
           "| verdict | check | reference |", "|---|---|---|"]
    out += [f"| {VERDICT_MARK[r.verdict]} | `{r.id}` | {r.reference} |" for r in results]
    for r in results:
        out += ["", f"## {r.id} — {VERDICT_MARK[r.verdict]}", "",
                f"- **Claim** ({r.reference}): {r.claim}",
                f"- **Predicted:** `{json.dumps(r.predicted, default=float, ensure_ascii=False)}`",
                f"- **Measured:** `{json.dumps(r.measured, default=float, ensure_ascii=False)}`"]
        if r.ci is not None:
            out.append(f"- **95% CI:** {r.ci}")
        out += [f"- **Tolerance:** `{json.dumps(r.tolerance, default=float, ensure_ascii=False)}` — {r.why}",
                f"- Time: {r.seconds:.1f} s"]
    figs = sorted(Path(meta["out"], "figures").glob("*.png"))
    if figs:
        out += ["", "## Figures", ""] + [f"![{f.stem}](figures/{f.name})" for f in figs]
    return "\n".join(out) + "\n"


def real_model(suite: str | None, backbone) -> dict | None:
    """The provenance of the model the `real` checks extract features with (`Backbone.provenance`),
    validated before any check runs; None when suite `real` does not run here. Flags that ask for a
    model are validated whatever the suite."""
    runs_real = suite in (None, "real") and "real" not in unavailable_suites()
    if not runs_real and backbone.is_default():
        return None
    provenance = backbone.provenance()
    return provenance if runs_real else None


def run_verify(*, suite=None, quick=False, out=None, force=False, resume=False, progress=None,
               only=None, backbone=None, jobs=None):
    """Runs the checks and writes report.json, report.md, results/*.npz and figures/ to `out`.

    Args:
      backbone: the `dpolab.sims.llm.backbone.Backbone` of the `real` checks (default: the packaged
        Gemma in float32); recorded in report.json's `meta.model`.
      jobs: checks run at once (`run_checks`; None: `default_jobs()`); recorded in `meta.jobs`.

    Returns:
      (results, out_path).
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    from dpolab.checks import real
    from dpolab.figures.im_li import make_all
    from dpolab.figures.style import marked
    from dpolab.sims.llm.backbone import Backbone, feature_key

    backbone = backbone or Backbone()
    jobs = default_jobs() if jobs is None else jobs
    validate_suite(suite)
    validate_only(suite, only)
    validate_jobs(jobs)
    model = real_model(suite, backbone)
    out = Path(out) if out else default_out()
    prepare_out(out, "verify", force=force, resume=resume, key={"quick": quick})
    store = CheckStore(out, lambda check_id: {"model": feature_key(model)} if check_id in real.CHECKS else {})
    start, compiled = time.perf_counter(), xla.stats()
    with real.using(backbone):
        results = run_checks(suite, quick=quick, progress=progress, only=only, stored=store.load,
                             on_done=store.save, jobs=jobs)
    (out / "results").mkdir(exist_ok=True)
    for r in results:  # one npz per result: what the figures are drawn from
        if r.artifacts:
            np.savez(out / "results" / (result_stem(r.id) + ".npz"),
                     **{k: np.asarray(v) for k, v in r.artifacts.items()})
    with marked("quick run" if quick else None):
        make_all(out / "results", out / "figures")
    meta = dict(environment(), suite=suite, quick=quick, out=str(out), model=model, jobs=jobs,
                wall_s=time.perf_counter() - start, xla=xla.since(compiled), suites_not_run=unavailable_suites())
    report = {"meta": meta, "checks": [r.as_json() for r in results]}
    write_atomic(out / "report.json", json.dumps(report, indent=1, default=float, ensure_ascii=False))
    write_atomic(out / "report.md", markdown(results, meta))
    return results, out
