"""The images folder is no trap, and ckpt says so cleanly when it cannot do its work.

Root dumping into a folder another user can write must not write through the
symlinks that user planted there (towards a file of root's) under the names ckpt
writes: ``core-PID.json``, ``inventory.json.tmp``, ``dump.log``... A dump refuses a
folder of another user, or one holding images, unless ``--overwrite``; with it,
the planted links are replaced by ckpt's own files. A dump by a ckpt without the
capabilities any restore needs is refused before the process is touched, naming
them; ``show`` and ``restore`` of images ckpt cannot read say so in one line.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

from ckpt_helpers import (
    Builder,
    Proc,
    Procs,
    ckpt_cmd,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    proc_status,
    restore_detached,
    run_ckpt,
    scaled,
)

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def counter(build: Builder, procs: Procs, *prefix: str) -> Proc:
    target = procs.start([*prefix, build("counter")])
    target.out.wait_numbers(3)
    return target


def assert_counts_on(target: Proc) -> None:
    before = len(target.out.numbers())
    target.out.wait_numbers(before + 2)
    assert proc_status(target.pid)["TracerPid"] == "0"


def run_as_nobody(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``ckpt ARGS`` run by user nobody, without capabilities."""
    return subprocess.run([*AS_NOBODY, *ckpt_cmd(), *map(str, args)], capture_output=True,
                          text=True, timeout=scaled(60), stdin=subprocess.DEVNULL,
                          env={**os.environ, "HOME": "/tmp"})


def test_planted_symlinks_are_not_written_through(build: Builder, procs: Procs,
                                                  tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_text("root's own file\n")
    canary.chmod(0o644)
    folder = tmp_path / "users"
    folder.mkdir()
    os.chown(folder, NOBODY, NOBODY)
    target = counter(build, procs)
    planted = [f"core-{target.pid}.json", f"mm-{target.pid}.json", f"pages-{target.pid}.img",
               "files.json", "inventory.json.tmp", "dump.log"]
    for name in planted:
        os.symlink(canary, folder / name)
        os.lchown(folder / name, NOBODY, NOBODY)

    res = run_ckpt("dump", "-t", target.pid, "-D", folder, "-o", "dump.log")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"{folder} belongs to user {NOBODY}" in res.stderr, res.stderr
    assert "--overwrite" in res.stderr
    assert all((folder / name).is_symlink() for name in planted), "a refused dump wrote"
    assert canary.read_text() == "root's own file\n"
    assert_counts_on(target)

    dump_and_check_dead(procs, target, folder, "-o", "dump.log", "--overwrite")
    assert canary.read_text() == "root's own file\n"
    for name in [*planted[:3], "files.json", "inventory.json", "dump.log"]:
        st = os.lstat(folder / name)
        assert stat.S_ISREG(st.st_mode) and st.st_uid == 0, name
    assert not (folder / "inventory.json.tmp").exists()
    # a folder of nobody's: a root restore takes it only when told to
    restored = restore_detached(procs, target.pid, target.out, folder, "--trust-images")
    assert_counts_on(restored)


def test_folder_with_images_is_refused(build: Builder, procs: Procs, tmp_path: Path) -> None:
    target = counter(build, procs)
    images = tmp_path / "images"
    ckpt_ok("dump", "-R", "-t", target.pid, "-D", images)
    inventory = (images / "inventory.json").read_bytes()
    res = run_ckpt("dump", "-t", target.pid, "-D", images)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"{images} already holds images (" in res.stderr and "--overwrite" in res.stderr
    assert (images / "inventory.json").read_bytes() == inventory, "the first dump was touched"
    assert_counts_on(target)
    dump_and_check_dead(procs, target, images, "--overwrite")
    assert (images / "inventory.json").read_bytes() != inventory
    restored = restore_detached(procs, target.pid, target.out, images)
    assert_counts_on(restored)


def test_dump_without_restore_capabilities_is_refused(build: Builder, procs: Procs,
                                                      tmp_path: Path) -> None:
    """nobody dumping nobody's process: ckpt could trace and kill it, and only root could
    bring it back. Refused before anything is touched."""
    target = counter(build, procs, *AS_NOBODY)
    assert int(proc_status(target.pid)["Uid"].split()[0]) == NOBODY
    images = tmp_path / "images"
    res = run_as_nobody("dump", "-t", target.pid, "-D", images)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "CAP_CHECKPOINT_RESTORE" in res.stderr and "CAP_SYS_ADMIN" in res.stderr, res.stderr
    assert not images.exists()
    assert is_alive(target.pid)
    assert_counts_on(target)


def test_unreadable_images(build: Builder, procs: Procs, tmp_path: Path) -> None:
    """Images root wrote (a folder of mode 0700) are unreadable to nobody: show and
    restore say which file, and why, in one line."""
    target = counter(build, procs)
    images = tmp_path / "images"
    ckpt_ok("dump", "-R", "-t", target.pid, "-D", images)
    tmp_path.chmod(0o755)
    os.kill(target.pid, signal.SIGKILL)
    for args in (["show", images], ["show", images / f"core-{target.pid}.json"],
                 ["restore", "-D", images]):
        res = run_as_nobody(*args)
        assert res.returncode == 1, res
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
        assert "cannot be read (Permission denied)" in res.stderr, res.stderr
