"""The log's lines are criu's: ``(SS.uuuuuu)`` from the start, ``Error (FILE:LINE): ``
and ``Warn  (FILE:LINE): `` for errors and warnings."""

from __future__ import annotations

import logging

from ckpt.log import CriuFormatter, timestamp


def test_timestamp() -> None:
    assert timestamp(0) == "(00.000000)"
    assert timestamp(0.001234) == "(00.001234)"
    assert timestamp(5.5) == "(05.500000)"
    assert timestamp(123.0000004) == "(123.000000)"
    assert timestamp(-1) == "(00.000000)"


def _line(level: int, path: str, start: float, created: float) -> str:
    record = logging.LogRecord("ckpt.dump", level, path, 42, "froze %d", (3,), None)
    record.created = created
    return CriuFormatter(start).format(record)


def test_levels() -> None:
    path = "/x/src/ckpt/resources/files.py"
    assert _line(logging.INFO, path, 100.0, 101.25) == "(01.250000) ckpt.dump: froze 3"
    assert _line(logging.DEBUG, path, 100.0, 100.0) == "(00.000000) ckpt.dump: froze 3"
    assert (_line(logging.ERROR, path, 100.0, 100.5)
            == "(00.500000) Error (ckpt/resources/files.py:42): froze 3")
    assert (_line(logging.WARNING, "/usr/lib/other.py", 0.0, 0.0)
            == "(00.000000) Warn  (other.py:42): froze 3")
