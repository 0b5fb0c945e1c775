"""Every finding in the README's "What we found" names the stored file its numbers come from, and
that file is in the repository (`docs/audit/`: the CSVs and audit.md of a full `dpolab audit` run)."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _findings() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### What we found", 1)[1].split("\n## ", 1)[0]
    return re.split(r"\n(?=\d+\. \*\*)", section)[1:]  # the numbered items


def test_each_finding_names_a_stored_file_that_exists():
    findings = _findings()
    assert len(findings) == 9, [f[:40] for f in findings]
    for finding in findings:
        named = re.findall(r"`(docs/audit/[\w./-]+)`", finding)
        assert named, f"this finding names no stored file: {finding[:80]}"
        for path in named:
            assert (REPO / path).is_file(), path
    assert (REPO / "docs" / "audit" / "audit.md").is_file()
