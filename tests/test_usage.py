"""The README's command-line block is `dpolab.cli.usage()`, which is read from the parser: a flag
added, removed or renamed in the CLI shows up in the README or this test fails."""
import re
from pathlib import Path

from dpolab.cli import usage

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_usage_block_is_the_parser_s():
    block = re.search(r"## The command line\n\n```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block, "the README has no command-line block"
    assert block.group(1).rstrip("\n") == usage(), (
        "README's usage block is stale: paste the output of "
        "`python -c 'from dpolab.cli import usage; print(usage())'`")


def test_usage_names_every_command_and_flag():
    text = usage()
    for command in ("verify", "bounds im-li", "sweep", "llm extract", "llm hh", "repro", "audit", "bench",
                    "selftest"):
        assert f"dpolab {command} " in text
    for flag in ("--style", "--width", "--set", "--model", "--quiet", "--no-calibrate"):
        assert flag in text
