"""The ckpt command refuses malformed options before it touches anything: one line
that quotes the problem (after argparse's usage), a non-zero exit, never a traceback,
nothing written. None of this needs root or a target process.

Options argparse refuses exit 2; combinations ckpt itself refuses (UsageError)
exit 1, like every other ckpt error.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ckpt import __version__
from ckpt_helpers import free_pid, run_ckpt


def _one_error_line(stderr: str, command: str) -> str:
    """The error line of ``stderr``: the last one, and the only one saying "error:"."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert lines, "nothing on stderr"
    errors = [ln for ln in lines if "error:" in ln]
    assert errors == [lines[-1]], stderr
    assert lines[-1].startswith(f"{command}: error: "), stderr
    return lines[-1]


def test_version() -> None:
    res = run_ckpt("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"ckpt {__version__}"


def test_no_command() -> None:
    res = run_ckpt()
    assert res.returncode == 2
    assert "COMMAND" in _one_error_line(res.stderr, "ckpt")


BAD_OPTIONS = [
    ("unknown-option", ["dump", "--no-such-option", "-t", "1", "-D", "{images}"],
     "ckpt", "--no-such-option"),
    ("pid-not-a-number", ["dump", "-t", "notanumber", "-D", "{images}"],
     "ckpt dump", "'notanumber'"),
    ("dump-without-t", ["dump", "-D", "{images}"], "ckpt dump", "-t"),
    ("pre-dump-without-t", ["pre-dump", "-D", "{images}"], "ckpt pre-dump", "-t"),
    ("restore-unknown-option", ["restore", "-D", "{images}", "--bogus"], "ckpt", "--bogus"),
    ("unknown-command", ["frobnicate"], "ckpt", "'frobnicate'"),
    ("bad-size", ["dump", "-t", "1", "-D", "{images}", "--ghost-limit", "12X"],
     "ckpt dump", "invalid size '12X'"),
    ("bad-port", ["dump", "-t", "1", "-D", "{images}", "--page-server", "--address",
                  "127.0.0.1", "--port", "http"], "ckpt dump", "'http'"),
    ("page-server-without-port", ["page-server", "-D", "{images}"], "ckpt page-server",
     "--port"),
    ("bad-verbosity", ["restore", "-D", "{images}", "--verbosity=loud"], "ckpt restore",
     "'loud'"),
    ("show-without-path", ["show"], "ckpt show", "DIR|FILE"),
    ("inherit-fd-without-value", ["restore", "-D", "{images}", "--inherit-fd"],
     "ckpt restore", "--inherit-fd"),
]


@pytest.mark.parametrize(("args", "command", "quoted"),
                         [case[1:] for case in BAD_OPTIONS], ids=[c[0] for c in BAD_OPTIONS])
def test_malformed_options(images: Path, args: list[str], command: str, quoted: str) -> None:
    """argparse refuses: exit 2, one error line quoting the problem; nothing written."""
    res = run_ckpt(*[a.format(images=images) for a in args])
    assert res.returncode == 2, f"exit {res.returncode}\n{res.stderr}"
    assert quoted in _one_error_line(res.stderr, command), res.stderr
    assert res.stdout == ""
    assert not images.exists()


CONFLICTS = [
    ("leave-running-and-stopped", ["dump", "-R", "-s"], "-R (--leave-running) and -s"),
    ("page-server-without-address", ["dump", "--page-server", "--port", "1234"],
     "--page-server needs --address and --port"),
    ("page-server-without-port", ["pre-dump", "--page-server", "--address", "127.0.0.1"],
     "--page-server needs --address and --port"),
    ("address-without-page-server", ["dump", "--address", "127.0.0.1", "--port", "1234"],
     "--address and --port go with --page-server"),
]


@pytest.mark.parametrize(("args", "message"), [case[1:] for case in CONFLICTS],
                         ids=[c[0] for c in CONFLICTS])
def test_conflicting_options(images: Path, args: list[str], message: str) -> None:
    """Options that do not go together: refused before the process is looked at (its
    PID is free) or the folder created; exit 1, one line."""
    command, *rest = args
    res = run_ckpt(command, "-t", free_pid(), "-D", images, *rest)
    assert res.returncode == 1, f"exit {res.returncode}\n{res.stderr}"
    line = _one_error_line(res.stderr, f"ckpt {command}")
    assert res.stderr == line + "\n", res.stderr
    assert message in line, line
    assert not images.exists()


def test_show_nothing_there(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-images"
    res = run_ckpt("show", missing)
    assert res.returncode == 1
    assert res.stderr == f"ckpt show: error: {missing}: no such image file or folder\n"
    assert not os.path.exists(missing)


@pytest.mark.parametrize("port", ["99999", "65536"])
def test_page_server_port_out_of_range(images: Path, port: str) -> None:
    res = run_ckpt("page-server", "-D", images, "--port", port)
    assert res.returncode == 1, f"exit {res.returncode}\n{res.stderr}"
    assert res.stderr == f"ckpt page-server: error: port {port} is out of range (0-65535)\n"
    assert not images.exists()
