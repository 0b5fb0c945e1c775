"""Progress (`dpolab.progress`): plain lines with count, rate and ETA when stderr is not a terminal
(checked on real terminal-less runs of verify and sweep), throttled, and nothing with --quiet."""
import io
import re
import subprocess
import sys

from dpolab.progress import Progress


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_plain_lines_count_rate_and_eta_at_most_one_per_interval():
    clock, stream = _Clock(), io.StringIO()
    with Progress(desc="verify", unit="check", stream=stream, every=10.0, clock=clock) as p:
        p.reset(4, initial=1)  # one check done by an earlier run: counted, not timed
        p.start("a")           # t = 0: first line
        clock.t = 4.0
        p.update(1)            # 4 s after the last line: no line
        p.start("b")
        clock.t = 12.0
        p.update(1)            # 12 s: a line; 2 checks ran in 12 s -> 0.17/s, 1 left -> ETA 6 s
    lines = stream.getvalue().splitlines()
    assert lines[0] == "dpolab verify: 1/4 checks (25%) in 0s; now a"
    assert lines[1] == "dpolab verify: 3/4 checks (75%) in 12s, 0.17 checks/s, ETA 6s; now b"
    assert lines[2] == "dpolab verify: 3/4 checks (75%) in 12s, 0.17 checks/s, ETA 6s"  # the closing line
    assert len(lines) == 3


def test_an_error_or_no_work_ends_without_a_closing_line():
    stream = io.StringIO()
    with Progress(desc="verify", unit="check", stream=stream):
        pass  # refused before the total was known
    try:
        with Progress(desc="verify", unit="check", stream=stream, every=1e9) as p:
            p.reset(3)
            p.start("a")
            raise ValueError("bad input")
    except ValueError:
        pass
    assert stream.getvalue().splitlines() == ["dpolab verify: 0/3 checks (0%) in 0s; now a"]


def test_quiet_prints_nothing():
    stream = io.StringIO()
    with Progress(desc="x", unit="item", quiet=True, stream=stream) as p:
        p.reset(2)
        p.start("a")
        p.update(2)
    assert stream.getvalue() == ""


def _run(*args):
    return subprocess.run([sys.executable, "-m", "dpolab.cli", *args], capture_output=True, text=True,
                          timeout=600)


def test_a_terminal_less_verify_reports_its_progress_and_quiet_silences_it(tmp_path):
    proc = _run("verify", "--quick", "--suite", "mixture", "--out", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    counts = re.findall(r"^dpolab verify: (\d+)/(\d+) checks", proc.stderr, re.M)
    assert counts and counts[-1][0] == counts[-1][1] and int(counts[-1][1]) >= 3
    assert "; now mixture/" in proc.stderr
    quiet = _run("verify", "--quick", "--suite", "mixture", "--quiet", "--out", str(tmp_path / "b"))
    assert quiet.returncode == 0 and not re.search(r"^dpolab verify: \d+/", quiet.stderr, re.M)


def test_a_terminal_less_sweep_reports_chunks(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[sweep]\nsimulation = "im-li"\nseeds = 2\nchunk_size = 2\n[fixed]\nQ = 10\nsteps = 5\n'
                    '[grid]\nK = [1, 2]\nv = [0.0, 0.01]\n')
    proc = _run("sweep", str(spec), "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^dpolab sweep: 4/4 chunks \(100%\) in \d+s, [\d.e+-]+ chunks/s, ETA 0s$", proc.stderr, re.M), \
        proc.stderr
