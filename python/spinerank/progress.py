"""Progress for people and for log files.

On a terminal, a progress bar is tqdm's. Written to a file or a pipe (a log, CI),
a bar becomes one short line every ``LOG_INTERVAL_S`` seconds (and a last one when
a loop that printed ends), instead of tqdm's carriage-return redraws, which a log
keeps as lines of thousands of characters.

Verbosity (the command line's ``-q``): 2 (default) bars and summaries; 1 (``-q``)
summaries only (one line per epoch, what a command is doing); 0 (``-qq``) nothing
but warnings, errors and the command's final line. Code used as a library, where
the command line set nothing, follows its own ``progress`` argument.
"""
from __future__ import annotations

import sys
import time

#: Seconds between two lines of a progress bar in a log file.
LOG_INTERVAL_S = 10.0

_verbosity: int | None = None


def set_verbosity(level: int | None) -> None:
    global _verbosity
    _verbosity = level


def summaries(progress: bool) -> bool:
    """Whether to print a summary line (``progress``: the caller's own setting)."""
    return progress if _verbosity is None else _verbosity >= 1


def progress_bar(iterable=None, *, desc: str = "", total: int | None = None, unit: str = "it", leave: bool = True,
                 disable: bool = False, initial: int = 0):
    """A tqdm bar on a terminal, a few log lines elsewhere, nothing when disabled
    (or at verbosity below 2)."""
    if disable or (_verbosity is not None and _verbosity < 2):
        return _Silent(iterable)
    if sys.stderr.isatty():
        # tqdm.std, not tqdm.auto: the latter's asyncio variant calls iter() on the
        # iterable when made, which starts (and drops) one more DataLoader iteration.
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, initial=initial)
    return _LogLines(iterable, desc, total, unit, leave, initial)


class _Silent:
    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass


class _LogLines(_Silent):
    """``desc: n/total unit (p%), elapsed s`` at most every LOG_INTERVAL_S."""

    def __init__(self, iterable, desc, total, unit, leave, initial):
        super().__init__(iterable)
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.desc, self.total, self.unit, self.leave = desc, total, unit, leave
        self.n = initial
        self.started = self.last = time.monotonic()
        self.printed = False
        self.postfix = ""

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= LOG_INTERVAL_S:
            self.last = now
            self._print()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.printed or (self.leave and time.monotonic() - self.started >= LOG_INTERVAL_S):
            self._print()
        self.printed = False
        self.leave = False  # a second close prints nothing

    def _print(self) -> None:
        of = f"/{self.total}" if self.total else ""
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of} {self.unit}{share}, {time.monotonic() - self.started:.0f} s{extra}",
              file=sys.stderr, flush=True)
        self.printed = True
