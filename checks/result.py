"""Check results: each theory claim as a falsifiable computation with a verdict.

A check function takes `quick: bool` and returns a `CheckResult` (or a list of them). Verdicts:
`pass` (the measurement agrees with the claim within the stated tolerance), `fail` (it does not:
the run exits non-zero) and `finding` (the simulation contradicts or sharpens the paper in a way
that is a result, not a bug; never fails the run).
"""
from __future__ import annotations

import dataclasses
from typing import Any

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
