"""The check registry: each theory claim as a falsifiable computation with a verdict.

A check function takes `quick: bool` and returns a `CheckResult` (or a list of them). Verdicts:
`pass` (the measurement agrees with the claim within the stated tolerance), `fail` (it does not:
the run exits non-zero) and `finding` (the simulation contradicts or sharpens the paper in a way
that is a result, not a bug; never fails the run).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

VERDICTS = ("pass", "fail", "finding")


@dataclasses.dataclass
class CheckResult:
    """One verified (or contradicted) claim.

    Attributes:
      id: stable identifier, e.g. "im-li/thm4.2-sandwich".
      reference: where the claim is made (paper, theorem/figure).
      claim: the claim in one sentence.
      predicted: what the theory says (number or short text).
      measured: what the simulation gave (number or short text).
      tolerance: the allowed deviation (number or text) and `why` it is that.
      verdict: one of VERDICTS.
      ci: optional (low, high) confidence interval of a Monte-Carlo measurement.
      artifacts: named numpy arrays for figures and the stored results (never pickled).
    """

    id: str
    reference: str
    claim: str
    predicted: Any
    measured: Any
    tolerance: Any
    why: str
    verdict: str
    ci: tuple[float, float] | None = None
    artifacts: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict={self.verdict!r} is not allowed: must be one of {VERDICTS}")

    def as_json(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "artifacts"}
        out["artifacts"] = sorted(self.artifacts)
        return out


def verdict(ok: bool) -> str:
    return "pass" if ok else "fail"


@dataclasses.dataclass(frozen=True)
class Check:
    id: str
    suite: str
    fn: Callable[[bool], "CheckResult | list[CheckResult]"]


REGISTRY: dict[str, Check] = {}


def register(suite: str, check_id: str):
    """Decorator adding `fn(quick) -> CheckResult | list[CheckResult]` to the registry."""

    def wrap(fn):
        if check_id in REGISTRY:
            raise ValueError(f"duplicate check id {check_id!r}")
        REGISTRY[check_id] = Check(check_id, suite, fn)
        return fn

    return wrap


def suites() -> tuple[str, ...]:
    _load()
    return tuple(sorted({c.suite for c in REGISTRY.values()}))


def unavailable_suites() -> dict[str, str]:
    """{suite: why it cannot run here} for suites that need optional packages or data."""
    _load()
    import sims.checks_real

    reason = sims.checks_real.unavailable()
    return {"real": reason} if reason else {}


def validate_suite(suite: str | None) -> None:
    """Raises ValueError naming the field when `suite` is not a registered suite (None: all) or
    cannot run here."""
    _load()
    if suite is not None and suite not in suites():
        raise ValueError(f"suite={suite!r} is not allowed: suite must be one of {suites()}")
    if suite is not None and suite in unavailable_suites():
        raise ValueError(f"suite={suite!r} is not allowed here: {unavailable_suites()[suite]}")


def _load():
    """Imports the modules that register checks (kept here so the CLI needs one import)."""
    import sims.checks_dynamics  # noqa: F401
    import sims.checks_generalization  # noqa: F401
    import sims.checks_mixture  # noqa: F401
    import sims.checks_ranking  # noqa: F401
    import sims.checks_rdpo  # noqa: F401
    import sims.checks_real  # noqa: F401


def run_checks(suite: str | None = None, *, quick: bool = False, only: str | None = None,
               progress: Callable[[str], None] | None = None,
               stored: Callable[[str], "list[CheckResult] | None"] | None = None,
               on_done: Callable[[str, list], None] | None = None) -> list[CheckResult]:
    """Runs every registered check (of one suite, or whose id contains one of the comma-separated
    texts in `only`).

    Args:
      stored: returns the results of a check completed by an earlier, interrupted run (or None);
        such checks are not run again.
      on_done: called with (check id, results) as soon as each check finishes.
    """
    validate_suite(suite)
    skip = unavailable_suites()
    results = []
    for check in REGISTRY.values():
        if check.suite in skip or (suite and check.suite != suite) or (only and not any(o in check.id for o in only.split(","))):
            continue
        done = stored(check.id) if stored else None
        if done is None:
            if progress:
                progress(check.id)
            start = time.perf_counter()
            out = check.fn(quick)
            done = out if isinstance(out, list) else [out]
            for res in done:
                res.seconds = time.perf_counter() - start
            if on_done:
                on_done(check.id, done)
        results.extend(done)
    return results
