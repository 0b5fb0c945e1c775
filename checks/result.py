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

#: The only checks that may return `finding`, each with why its claim cannot be compared sharply:
#: the claim is non-computable, lies outside the theorem's conditions (real data, shared tokens),
#: or is an open question the papers make no prediction for. Every other check compares a sharp
#: prediction and can fail; `tests/test_mutants.py` proves it by a mutant it kills. A finding that
#: contradicts a theorem inside its conditions is a `fail`.
OPEN: dict[str, str] = {
    "im-li/probability-statement": "non-computable: the constant c of the probability clause is never given",
    "im-li/union-bound-k-dependence": "open: the paper claims an upper bound in K, not its tightness; "
        "the measured risk is ≈ 0 at every K inside the conditions, so no K-dependence can show",
    "im-li/shared-token-risk": "outside the conditions: shared Yes/No tokens give Z = K > 1/(4 l_b²); "
        "Φ(−1/(v√K)) is a heuristic of ours, not a claim",
    "real/k-ordering": "real data: the theorem's conditions fail on Gemma features (see real/data-model)",
    "real/test-tracks-train": "real data: d > 5Q, anisotropic noise and shared tokens, outside the conditions",
    "real/data-model": "a measurement of the data model on real features; no claim to compare",
    "real/learning-order": "real data: within-persona spread and Yes/No coupling put Gemma features outside "
        "the mean-field band's conditions; the rank agreement is reported with its interval",
    "audit/q1-log-k": "open: whether Θ(log K) samples per value are necessary is not claimed by the paper "
        "(only sufficient); the audit measures what the dynamics show",
    "audit/q3-nonorthogonal": "outside the conditions: non-orthogonal values (ρ > 0) are not covered by "
        "any theorem; refined-bound violations at points inside the conditions make it fail",
    "audit/q4-noise": "outside the conditions: anisotropic noise is not covered by any theorem; "
        "refined-bound violations at points inside the conditions make it fail",
    "audit/q5-adam": "open: no theorem covers Adam; the sign-descent margin is our own derivation, "
        "compared in its own test",
    "phenomena/samplers-mix-from-reference":
        "open: the quadratic rate of Mix-R/Mix-P is a local claim; how far from θ* it "
        "holds is not stated in a form we can compare, so the global behaviour from π_ref is measured only",
}


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
