"""A runc restore that fails once the container's processes exist (issue 11): ckpt
kills them and reports the failure to runc, which says so; it must not hang. The
container's init is PID 1 of its own PID namespace: it does not finish dying until
its child, which ckpt traces, is collected (tree.kill reaps them all together:
waiting for the init alone never returned)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ckpt_helpers import Output, wait_until
from runc_helpers import COUNTER, Container, counted, make_bundle, runc_or_skip


def _reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return not os.path.exists(f"/proc/{pid}")


def test_failed_restore_of_a_container_ends(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    runc = runc_or_skip()
    data = tmp_path / "data"
    data.mkdir()
    ctr = Container(runc, tmp_path / "state", make_bundle(tmp_path / "bundle",
                    # a sleep of its own besides the counter's: the loop forks its
                    # short sleeps one after the other, and a dump between two caught
                    # the shell alone (once in a rehearsal)
                    ["sh", "-c", "sleep 1000 & " + COUNTER], data),
                    f"ckpt-fault-{os.getpid()}",
                    Output(tmp_path / "stdout"))
    try:
        ctr.run()
        wait_until(lambda: len(counted(data)) >= 5, 30, "the counter to count")
        images = tmp_path / "images"
        res = ctr.checkpoint(images)
        assert res.returncode == 0, res.stderr
        pids = [t["pid"] for t in json.loads((images / "inventory.json").read_text())["tasks"]]
        assert len(pids) >= 2  # the shell and its sleep
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        monkeypatch.setenv("CKPT_FAULT", "restore.created")  # runc passes it to ckpt-criu
        res = ctr.restore(images)  # a hang fails here, on the timeout
        assert res.returncode != 0
        log = (images.with_name("images-work") / "restore.log").read_text()
        assert "injected fault at restore.created" in log, log[-2000:]
        for pid in pids:  # killed, and handed to us (a child subreaper) to reap
            wait_until(lambda p=pid: _reaped(p), 30, f"restored process {pid} to be gone")
    finally:
        ctr.delete()
