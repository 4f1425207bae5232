"""A progress line on the terminal for a dump or restore that takes more than a second:
the bytes of page data moved so far and the rate, on stderr, redrawn in place.

Off unless a command turns it on (``enable``): a program using ckpt as a library
gets nothing on its stderr. The CLI turns it on when stderr is a terminal and -q
(--quiet) is not given. The page copy reports what it moved (``advance``); the
command ends the line (``finish``)."""

from __future__ import annotations

import os
import sys
import time

SHOW_AFTER = 1.0  # seconds: a quicker command prints nothing
REDRAW = 0.25  # seconds between two redraws


class Progress:
    """Bytes moved by one command, shown once it has run for ``SHOW_AFTER``."""

    def __init__(self) -> None:
        self.enabled = False
        self.what = ""
        self.start = time.monotonic()
        self.done = 0
        self.total = 0  # bytes expected, 0 when unknown
        self._drawn = 0.0  # when the line was last drawn; 0: never

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start >= SHOW_AFTER and now - self._drawn >= REDRAW:
            self._draw(now)

    def _draw(self, now: float) -> None:
        mib = self.done / (1 << 20)
        rate = mib / max(now - self.start, 1e-6)
        of = f" of {self.total / (1 << 20):.0f}" if self.total > self.done else ""
        line = f"ckpt {self.what}: {mib:.0f}{of} MiB, {rate:.0f} MiB/s"
        try:
            sys.stderr.write(f"\r{line}\x1b[K")
            sys.stderr.flush()
        except OSError:
            self.enabled = False
            return
        self._drawn = now

    def finish(self) -> None:
        """End the line, if one was drawn (with the final count)."""
        if self.enabled and self._drawn:
            self._draw(time.monotonic())
            try:
                sys.stderr.write("\n")
                sys.stderr.flush()
            except OSError:
                pass
        self._drawn = 0.0


current = Progress()


def enable(what: str, quiet: bool = False) -> None:
    """Show the progress of command ``what`` in this process: unless ``quiet``, when
    stderr is a terminal."""
    current.enabled = not quiet and os.isatty(2)
    current.what = what
    current.start = time.monotonic()


def advance(nbytes: int) -> None:
    current.advance(nbytes)


def finish() -> None:
    current.finish()
