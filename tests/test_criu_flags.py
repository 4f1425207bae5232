"""criu's command lines run as they are with ckpt: flags before the command word,
--action-script at each step, --exec-cmd, -W, flags accepted without effect, and
a refused flag that leaves the process untouched. (Parsing alone is tested in
tests/unit/test_flags.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from ckpt_helpers import (
    Builder,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    ckpt_fails,
    ckpt_ok,
    is_alive,
    proc_ppid,
    proc_state,
    wait_until,
)

SCRIPT = 'echo "$CRTOOLS_SCRIPT_ACTION ${CRTOOLS_INIT_PID:-0} $CRTOOLS_IMAGE_DIR" >> '


def test_criu_command_line(build: Builder, procs: Procs, images: Path, tmp_path: Path) -> None:
    """A dump and a restore as a criu script writes them: flags before the command,
    action scripts at every step (in criu's order, the restored root's PID at
    post-restore), flags ckpt needs none of noted in the log, -W for log and pidfile."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    actions = tmp_path / "actions"
    script = SCRIPT + str(actions)
    ckpt_ok("-v4", "-o", "dump.log", "-D", images, "dump", "--tree", target.pid,
            "--action-script", script, "--force-irmap", "--no-tcp-established",
            "--cpu-cap=none", "--manage-cgroups=ignore", "--file-validation", "filesize")
    assert procs.wait_gone(target) == -signal.SIGKILL
    log = (images / "dump.log").read_text()
    assert "--force-irmap accepted without effect" in log
    assert "--cpu-cap accepted without effect" in log
    assert actions.read_text().splitlines() == [f"pre-dump 0 {images}", f"post-dump 0 {images}"]

    work = tmp_path / "work"
    work.mkdir()
    actions.unlink()
    ckpt_ok("restore", "-d", "-D", images, "-W", work, "-o", "restore.log", "-v4",
            "--pidfile", "root.pid", "--action-script", script, "--ext-unix-sk",
            "--no-tcp-established")
    procs.adopt(target.pid, target.out)
    assert (work / "root.pid").read_text().strip() == str(target.pid)
    assert (work / "restore.log").exists() and not (images / "restore.log").exists()
    assert actions.read_text().splitlines() == [
        f"pre-restore 0 {images}", f"post-restore {target.pid} {images}",
        f"pre-resume 0 {images}", f"post-resume 0 {images}"]
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 3))


def test_failing_action_script(build: Builder, procs: Procs, images: Path) -> None:
    """A pre-dump script that fails stops the dump: the process runs on, no images."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images, "--action-script",
                     '[ "$CRTOOLS_SCRIPT_ACTION" != pre-dump ]')
    assert "--action-script" in err and "failed at pre-dump (exit status 1)" in err, err
    assert not (images / "inventory.json").exists()
    assert proc_state(target.pid) in ("R", "S")
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 3))


def test_refused_flag_leaves_process_alone(build: Builder, procs: Procs,
                                           images: Path) -> None:
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images, "--lazy-pages")
    assert err == "ckpt dump: error: --lazy-pages: criu's remote post-copy from a frozen " \
        "source is not supported: dump, then `ckpt lazy-pages` and `ckpt restore " \
        "--lazy-pages` on the images\n"
    assert not images.exists()
    assert proc_state(target.pid) in ("R", "S")
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 3))


def test_exec_cmd(build: Builder, procs: Procs, images: Path) -> None:
    """--exec-cmd -- CMD: once restored, ckpt becomes CMD, the restored root's parent."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    ckpt_ok("dump", "-t", target.pid, "-D", images)
    assert procs.wait_gone(target) == -signal.SIGKILL
    with open(os.devnull, "rb") as null:
        runner = subprocess.Popen([*ckpt_cmd(), "restore", "-D", images, "--exec-cmd", "--",
                                   "sleep", "1000"], stdin=null, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
    try:
        wait_until(lambda: is_alive(target.pid) and _comm(runner.pid) == "sleep", 30,
                   "the restore to exec sleep")
        procs.adopt(target.pid, target.out)
        assert proc_ppid(target.pid) == runner.pid
        assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 3))
    finally:
        runner.kill()
        runner.communicate()


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None
