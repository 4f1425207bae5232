"""The log's lines are criu's: ``(SS.uuuuuu)`` from the start, ``Error (FILE:LINE): ``
and ``Warn  (FILE:LINE): `` for errors and warnings."""

from __future__ import annotations

import logging
from pathlib import Path

from ckpt.log import timestamp
from ckpt.logfile import CriuFormatter


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


def _fresh(code: str) -> str:
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_command_at_the_default_level_never_imports_logging() -> None:
    """A record below the level set up is dropped without importing logging; the first
    at or above it installs the handler, and names the caller's file and line."""
    out = _fresh("import sys; from ckpt import log; log.setup(2); "
                 "lg = log.logger('ckpt.dump'); lg.info('dropped %d', 1); lg.debug('no')\n"
                 "before = 'logging' in sys.modules; sys.stderr = sys.stdout\n"
                 "lg.warning('kept %d', 2)\n"
                 "print(before, 'logging' in sys.modules, log.fds())")
    lines = out.splitlines()
    assert lines[0].endswith("Warn  (<string>:3): kept 2")
    assert lines[1] == "False True [1]"  # the handler writes to the stderr it found


def test_a_log_file_set_up_lazily(tmp_path: Path) -> None:
    """-o LOG: the file is made at once, written once a record reaches the level, its
    lines criu's, with the logger's name at -v4; to_file and fds say where it goes."""
    out = _fresh("import sys; from ckpt import log; "
                 f"log.setup(4, 'x.log', {str(tmp_path)!r}, create_dir=True); "
                 "print(log.to_file(), len(log.fds()), 'logging' in sys.modules)\n"
                 "log.logger('ckpt.files').info('fd %d', 3)\n"
                 "log.logger('ckpt.files').error('bad')\n"
                 "import logging; logging.shutdown(); print(log.to_file())")
    assert out.splitlines() == ["True 1 False", "True"]
    lines = (tmp_path / "x.log").read_text().splitlines()
    assert lines[0].endswith(") ckpt.files: fd 3")
    assert lines[1].endswith(") Error (<string>:3): bad")


def test_loggers_go_through_logging_when_it_is_imported() -> None:
    """A program that uses logging (a library's caller) gets ckpt's records there."""
    out = _fresh("import io, logging; s = io.StringIO(); "
                 "logging.basicConfig(stream=s, level=logging.INFO, "
                 "format='%(name)s %(levelname)s %(lineno)d %(message)s')\n"
                 "from ckpt import log; log.logger('ckpt.dump').info('froze %d', 3)\n"
                 "print(s.getvalue().strip())")
    assert out == "ckpt.dump INFO 2 froze 3"
