"""The audit's answers as registry entries (suite `audit`): each question's quick-size experiment,
reported as a finding (or a check where the question has a pass/fail criterion).

Imported by `dpolab.verify` (the registry never imports upward into this package).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from sims.experiments import Context, Unavailable
from sims.registry import CheckResult, register


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

    register("audit", f"audit/{name}")(check)


def _register_all():
    from audit import items

    for name, module in items().items():
        _question_check(name, module)


_register_all()
