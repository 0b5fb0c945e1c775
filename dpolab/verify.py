"""`dpolab verify`: run the check registry, store results, write the report and figures."""
from __future__ import annotations

import datetime
import io
import json
import shutil
import time
from pathlib import Path

from sims.provenance import environment, write_atomic

import numpy as np

VERDICT_MARK = {"pass": "PASS", "fail": "FAIL", "finding": "FINDING"}


def prepare_out(out: Path, *, force: bool, resume: bool) -> Path:
    """Creates `out`; refuses a non-empty existing directory unless `force` or `resume`."""
    if out.exists() and any(out.iterdir()):
        if force and not _mode_file(out).exists():
            raise ValueError(f"out={str(out)!r} is not allowed with --force: it is not a dpolab "
                             "verify directory, and --force only replaces those")
        if force:
            shutil.rmtree(out)
        elif not resume:
            raise ValueError(f"out={str(out)!r} is not allowed: the directory exists and is not "
                             "empty (pass --resume to finish an interrupted run, --force to "
                             "overwrite it, or choose another --out)")
    elif resume:
        raise ValueError(f"out={str(out)!r} is not allowed with --resume: nothing to resume there")
    (out / "checks").mkdir(parents=True, exist_ok=True)
    return out


def _stem(check_id: str) -> str:
    return check_id.replace("/", "__")


def _mode_file(out: Path) -> Path:
    return out / "checks" / "mode.json"


class CheckStore:
    """Each finished check is written at once (JSON + npz, atomically) so that an interrupted run
    resumes where it stopped; results of another mode (quick vs full) are never mixed in."""

    def __init__(self, out: Path, *, quick: bool):
        self.dir = out / "checks"
        mode = {"quick": quick}
        if _mode_file(out).exists() and json.loads(_mode_file(out).read_text()) != mode:
            raise ValueError(f"quick={quick} is not allowed with --resume here: {out} holds a run "
                             f"with {json.loads(_mode_file(out).read_text())}")
        write_atomic(_mode_file(out), json.dumps(mode))

    def load(self, check_id):
        from sims.registry import CheckResult

        path = self.dir / (_stem(check_id) + ".json")
        if not path.exists():
            return None
        results = []
        for item in json.loads(path.read_text(encoding="utf-8")):
            item.pop("artifacts")
            res = CheckResult(**item)
            arrays = self.dir / (_stem(res.id) + ".npz")
            if arrays.exists():
                with np.load(arrays) as data:
                    res.artifacts = {k: data[k] for k in data.files}
            results.append(res)
        return results

    def save(self, check_id, results):
        for r in results:
            if r.artifacts:
                buf = io.BytesIO()
                np.savez(buf, **{k: np.asarray(v) for k, v in r.artifacts.items()})
                write_atomic(self.dir / (_stem(r.id) + ".npz"), buf.getvalue())
        write_atomic(self.dir / (_stem(check_id) + ".json"),
                     json.dumps([r.as_json() for r in results], default=float, ensure_ascii=False))


def default_out() -> Path:
    return Path("results") / "verify" / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _short(value, width=60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=float)
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
           f"git {meta['git_commit']}; {meta['wall_s']:.1f} s."]
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


def run_verify(*, suite=None, quick=False, out=None, force=False, resume=False, progress=None,
               only=None):
    """Runs the checks and writes report.json, report.md, results/*.npz and figures/ to `out`.

    Returns:
      (results, out_path).
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import audit.checks  # noqa: F401  (registers suite `audit`: the audit's quick-size answers)
    from figures.im_li import make_all
    from sims.registry import run_checks, unavailable_suites, validate_suite

    validate_suite(suite)
    out = prepare_out(Path(out) if out else default_out(), force=force, resume=resume)
    store = CheckStore(out, quick=quick)
    start = time.perf_counter()
    results = run_checks(suite, quick=quick, progress=progress, only=only, stored=store.load,
                         on_done=store.save)
    (out / "results").mkdir(exist_ok=True)
    for r in results:
        if r.artifacts:
            shutil.copyfile(store.dir / (_stem(r.id) + ".npz"), out / "results" / (_stem(r.id) + ".npz"))
    make_all(out / "results", out / "figures")
    meta = dict(environment(), suite=suite, quick=quick, out=str(out),
                wall_s=time.perf_counter() - start, suites_not_run=unavailable_suites())
    report = {"meta": meta, "checks": [r.as_json() for r in results]}
    write_atomic(out / "report.json", json.dumps(report, indent=1, default=float, ensure_ascii=False))
    write_atomic(out / "report.md", markdown(results, meta))
    return results, out
