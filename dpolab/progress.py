"""Progress of a long command on stderr, the one way every command reports it.

On a terminal: a live tqdm bar (count, rate, ETA, what runs now). When stderr is not a terminal (a
batch job, a log file): a plain line as units start or end, at most one every `every` seconds, and
one at the end, e.g.

    dpolab verify: 12/60 checks (20%) in 1m05s, 0.18 checks/s, ETA 4m20s; now im-li/thm4.2-window

With `quiet`: nothing.
"""
from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class Progress:
    """Counts units of work (`unit`: "check", "item", "chunk", ...) done out of a total.

    `reset(total, initial)` sets the total once it is known (`initial` units were done by an
    earlier run and are not timed); `start(name)` says what runs now; `update(n)` counts n more done.
    """

    def __init__(self, *, desc: str, unit: str, quiet: bool = False, stream=None, every: float = 10.0,
                 clock=time.monotonic):
        self.desc, self.unit, self.quiet, self.every, self.clock = desc, unit, quiet, every, clock
        self.stream = stream if stream is not None else sys.stderr
        self.live = not quiet and self.stream.isatty()
        self.total, self.done, self.initial, self.now = None, 0, 0, None
        self._bar, self._t0, self._last = None, clock(), None

    def reset(self, total: int, initial: int = 0) -> Progress:
        self.total, self.done, self.initial = total, initial, initial
        self._t0 = self.clock()
        if self.live:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit=self.unit, desc=self.desc, file=self.stream)
        return self

    def start(self, name: str) -> None:
        self.now = name
        if self._bar is not None:
            self._bar.set_postfix_str(name)
        else:
            self._line()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        else:
            self._line()

    def close(self, *, failed: bool = False) -> None:
        """Ends the bar, or prints the closing line (not when nothing started or the work failed:
        then the error is the one line to read)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.total is not None and not failed:
            self.now = None
            self._line(force=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        self.close(failed=exc_type is not None)

    def line(self) -> str:
        """The plain progress line: done/total, share, elapsed, rate and ETA of this run's units."""
        elapsed = self.clock() - self._t0
        ran = self.done - self.initial
        rate = ran / elapsed if elapsed > 0 else 0.0
        total = self.total if self.total is not None else "?"
        text = f"dpolab {self.desc}: {self.done}/{total} {self.unit}s"
        if self.total:
            text += f" ({self.done / self.total:.0%})"
        text += f" in {_clock(elapsed)}"
        if ran and self.total is not None:
            text += f", {rate:.2g} {self.unit}s/s, ETA {_clock((self.total - self.done) / rate)}"
        return text + (f"; now {self.now}" if self.now else "")

    def _line(self, force: bool = False) -> None:
        if self.quiet or self.live:
            return
        now = self.clock()
        if force or self._last is None or now - self._last >= self.every:
            print(self.line(), file=self.stream, flush=True)
            self._last = now
