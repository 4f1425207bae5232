"""Kernels before 5.13 lack PTRACE_GET_RSEQ_CONFIGURATION. This test makes the request
fail with EIO, as those kernels do, and runs dump and restore through the Python API
(in this process): the restored process must run on, without its rseq area."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import ckpt
from ckpt.kernel import ptrace
from ckpt_helpers import Builder, Procs, assert_consecutive, is_alive, proc_status


def _no_rseq_config(pid: int) -> ptrace.RseqConfig:
    raise OSError(errno.EIO, "PTRACE_GET_RSEQ_CONFIGURATION: Input/output error")


def test_dump_and_restore_without_rseq_configuration(
        build: Builder, procs: Procs, images: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    monkeypatch.setattr(ptrace, "get_rseq", _no_rseq_config)
    ckpt.dump(target.pid, str(images))
    procs.wait_gone(target)
    assert "cannot report rseq areas" in caplog.text
    before = target.out.numbers()
    res = ckpt.restore(str(images), detach=True)
    assert res.pid == target.pid and is_alive(target.pid)
    procs.adopt(target.pid, target.out)
    target.out.wait_numbers(len(before) + 5)
    assert_consecutive(target.out.numbers())
    status = proc_status(target.pid)  # running on its own: not stopped, not traced
    assert status["State"][0] in "RS" and status["TracerPid"] == "0", status
