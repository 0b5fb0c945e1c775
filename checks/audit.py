"""The audit's answers as checks (suite `audit`): each question's quick-size experiment, reported
as a finding (or a check where the question has a pass/fail criterion)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from dpolab.audit import items
from dpolab.checks.result import CheckResult
from dpolab.items import Context, Unavailable


def _question_check(name, module):
    def check(quick: bool):
        # The quick size always: the full audit is `dpolab audit` (minutes, through the sweep engine).
        with tempfile.TemporaryDirectory() as tmp:
            ctx = Context(kind="audit", quick=True, out=Path(tmp), dir=Path(tmp) / name)
            ctx.dir.mkdir()
            try:
                data = module.compute(ctx)
            except Unavailable as why:
                return CheckResult(id=f"audit/{name}", reference=module.TITLE, claim=module.TITLE,
                                   predicted="n/a", measured=f"not run: {why}", tolerance="n/a",
                                   why="needs the real-embedding track", verdict="finding")
        result = module.finding(data)
        result.artifacts = {k: v for k, v in data.items() if v.dtype.kind in "biuf"}
        return result

    return check


#: {check id: fn(quick)}: one check per audit question, in question order.
CHECKS = {f"audit/{name}": _question_check(name, module) for name, module in items().items()}
