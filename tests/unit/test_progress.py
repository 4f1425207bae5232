"""The progress line: shown only on a terminal, only after a second, ended once."""

from __future__ import annotations

import io

import pytest

from ckpt import progress


def test_quiet_and_quick_commands_print_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    p = progress.Progress()
    p.enabled, p.what = True, "dump"
    p.advance(1 << 20)  # before SHOW_AFTER
    p.finish()
    assert err.getvalue() == ""
    p.enabled = False
    p.start -= 10
    p.advance(1 << 20)
    p.finish()
    assert err.getvalue() == ""


def test_a_long_command_shows_bytes_and_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    p = progress.Progress()
    p.enabled, p.what = True, "restore"
    p.start -= 2
    p.advance(300 << 20)
    p.advance(100 << 20)  # within REDRAW of the first: not drawn again
    p.finish()
    lines = err.getvalue().split("\r")
    assert lines[1].startswith("ckpt restore: 300 MiB, ")
    assert lines[2].startswith("ckpt restore: 400 MiB, ") and lines[2].endswith("MiB/s\x1b[K\n")


def test_not_on_a_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    with open(tmp_path / "err", "w") as f:
        monkeypatch.setattr("os.isatty", lambda fd: False)
        progress.enable("dump")
        assert not progress.current.enabled
        monkeypatch.setattr("os.isatty", lambda fd: True)
        progress.enable("dump", quiet=True)
        assert not progress.current.enabled
        progress.enable("dump")
        assert progress.current.enabled
        progress.current.enabled = False
    assert f.closed
