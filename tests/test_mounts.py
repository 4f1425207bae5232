"""A tree in a mount namespace of its own, made as a container is (unshare, mounts under a
busybox root, pivot_root): its mount tree (a bind root, proc with a read-only and a
masked subpath, a tmpfs /dev with a device, a link, devpts and a tmpfs /dev/shm with a
file, sysfs read-only, an external bind of a host folder) comes back under --root, the
process inside it, counting on."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ckpt_helpers import (
    Procs,
    ckpt_fails,
    ckpt_ok,
    is_alive,
    left_behind,
    my_children,
    proc_ppid,
    run_ckpt,
    wait_until,
)
from runc_helpers import busybox_or_skip, make_rootfs

# Run by the host's sh in new mount, uts and ipc namespaces: the container's mounts,
# then pivot_root into ROOT and the counter in busybox's sh, its numbers on fd 3 (a file
# of the bound /data), its stdout and stderr on the container's /dev/null.
SETUP = r"""
set -e
R=$1; DATA=$2  # $3: /bin/setsid for the init of a PID namespace (not a group leader)
mount --make-rprivate /
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"
mount -o remount,bind,ro "$R/proc/sys"
mount -t tmpfs -o size=1m,mode=755 tmpfs "$R/dev"
mkdir "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mknod -m 666 "$R/dev/null" c 1 3
ln -s /proc/self/fd "$R/dev/fd"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
mount -t tmpfs -o size=512k,nosuid,nodev tmpfs "$R/dev/shm"
printf 'kept\n' > "$R/dev/shm/note"
mkdir "$R/dev/shm/sub" && ln "$R/dev/shm/note" "$R/dev/shm/sub/hard"
mount -t mqueue mqueue "$R/dev/mqueue"
mount --bind "$R/dev/null" "$R/proc/keys"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount --bind "$DATA" "$R/data"
hostname ckpt-mounts
cd "$R"
pivot_root . .
umount -l .
cd /
exec $3 /bin/sh -c 'exec 3>>/data/count >/dev/null 2>&1; i=0
while true; do i=$((i+1)); echo $i >&3; sleep 0.05; done'
"""


def _count(data: Path) -> list[int]:
    text = (data / "count").read_text() if (data / "count").exists() else ""
    return [int(x) for x in text[: text.rfind("\n") + 1].split()]


def _grows(data: Path, more: int = 5) -> None:
    n = len(_count(data))
    wait_until(lambda: len(_count(data)) >= n + more, 20, f"{more} more numbers")


def _mounts(pid: int) -> list[tuple[str, str, str]]:
    """(point, fstype, per-mount flags) of each mount of the process's namespace."""
    out = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            out.append((fields[4], right.split()[0], fields[5]))
    return sorted(out)


def _dump(procs: Procs, pid: int, images: Path) -> None:
    """Dump the container's tree (its sh and sh's sleep of the moment), reaping both."""
    ckpt_ok("dump", "-t", pid, "-D", images, "--external", "mnt[/data]:data")
    for task in json.loads((images / "inventory.json").read_text())["tasks"]:
        procs.wait_gone(task["pid"])


def _start(procs: Procs, tmp_path: Path, pid_ns: bool = False) -> tuple[int, Path, Path]:
    """The container started; (its root's PID, its rootfs, its /data on the host). With
    ``pid_ns`` its root is PID 1 of a PID namespace of its own (unshare --fork)."""
    busybox_or_skip()
    rootfs = make_rootfs(tmp_path / "rootfs")
    data = tmp_path / "data"
    data.mkdir()
    extra = ["--pid", "--fork"] if pid_ns else []
    target = procs.start(["unshare", "--mount", "--uts", "--ipc", *extra, "sh", "-c", SETUP,
                          "sh", str(rootfs), str(data), "/bin/setsid" if pid_ns else ""])
    _grows(data)
    if not pid_ns:
        return target.pid, rootfs, data
    with open(f"/proc/{target.pid}/task/{target.pid}/children") as f:
        return int(f.read().split()[0]), rootfs, data


def _nspid(pid: int) -> list[int]:
    with open(f"/proc/{pid}/status") as f:
        return next([int(x) for x in ln.split()[1:]] for ln in f if ln.startswith("NSpid:"))


@pytest.mark.parametrize("pid_ns", [False, True], ids=["own-mounts", "own-pid-ns"])
def test_mount_namespace_of_a_container(procs: Procs, tmp_path: Path, pid_ns: bool) -> None:
    """The container dumped and restored: the counter goes on in /data, every mount is
    back with its flags, the tmpfs contents, names and devices too; with a PID namespace
    of its own, its root is PID 1 there again and its proc shows that namespace."""
    pid, rootfs, data = _start(procs, tmp_path, pid_ns)
    inside = _nspid(pid)
    before = _mounts(pid)
    assert ("/proc/sys", "proc", "ro,relatime") in before, before
    images = tmp_path / "images"
    _dump(procs, pid, images)
    last = _count(data)[-1]

    actions = tmp_path / "actions"
    script = (f'echo "$CRTOOLS_SCRIPT_ACTION ${{CRTOOLS_INIT_PID:-0}}" >> {actions}; '
              'if [ "$CRTOOLS_SCRIPT_ACTION" = setup-namespaces ]; then '
              f'readlink /proc/$CRTOOLS_INIT_PID/ns/mnt >> {actions}; fi')
    res = run_ckpt("restore", "-D", images, "-d", "--root", rootfs, "--external",
                   f"mnt[data]:{data}", "-v4", "-o", tmp_path / "restore.log",
                   "--action-script", script)
    assert res.returncode == 0, (tmp_path / "restore.log").read_text()[-3000:]
    assert is_alive(pid) and proc_ppid(pid) == os.getpid()
    # as criu for a tree with namespaces: the root made in its own, then the others
    assert actions.read_text().splitlines() == [
        "pre-restore 0", f"setup-namespaces {pid}", os.readlink(f"/proc/{pid}/ns/mnt"),
        "post-setup-namespaces 0", f"post-restore {pid}", "pre-resume 0", "post-resume 0"]
    procs.adopt(pid, procs.tracked[0].out)
    _grows(data)
    nums = _count(data)
    assert nums == list(range(1, len(nums) + 1)) and last + 1 in nums
    assert _mounts(pid) == before
    root = f"/proc/{pid}/root"
    assert Path(f"{root}/dev/shm/note").read_text() == "kept\n"
    assert os.stat(f"{root}/dev/shm/note").st_ino == os.stat(f"{root}/dev/shm/sub/hard").st_ino
    assert os.readlink(f"{root}/dev/fd") == "/proc/self/fd"
    null = os.stat(f"{root}/dev/null")
    assert (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert (null.st_mode & 0o777) == 0o666
    assert subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True,
                          text=True).stdout.strip() == "ckpt-mounts"
    assert os.readlink(f"/proc/{pid}/fd/3") == "/data/count"
    assert os.readlink(f"/proc/{pid}/fd/1") == "/dev/null"
    assert _nspid(pid) == inside
    if pid_ns:
        assert inside == [pid, 1]
        assert Path(f"{root}/proc/1/status").exists()
        assert not Path(f"{root}/proc/{pid}").exists() or pid < 100


def test_restore_needs_root_and_external_sources(procs: Procs, tmp_path: Path) -> None:
    """Without --root, or without the source of an external mount, the restore is refused
    before anything is created, saying what to give."""
    pid, rootfs, data = _start(procs, tmp_path)
    images = tmp_path / "images"
    _dump(procs, pid, images)
    err = ckpt_fails("restore", "-D", images, "-d")
    assert "--root" in err, err
    err = ckpt_fails("restore", "-D", images, "-d", "--root", rootfs)
    assert "mount /data was external with key 'data'" in err, err
    assert not left_behind(pid)


def test_mount_not_external_refused(procs: Procs, tmp_path: Path) -> None:
    """A bind mount of a host folder not named external: refused at dump, naming it and
    how to name it; the process counts on."""
    pid, _, data = _start(procs, tmp_path)
    err = ckpt_fails("dump", "-t", pid, "-D", tmp_path / "images")
    assert "mount /data" in err and "--external mnt[/data]:NAME" in err, err
    assert not (tmp_path / "images" / "inventory.json").exists()
    _grows(data)
    nums = _count(data)
    assert nums == list(range(1, len(nums) + 1))


def test_mount_namespace_holder_avoids_the_trees_pids(tmp_path: Path) -> None:
    """The process holding the restored tree's mount namespace, forked before the tree,
    never keeps a PID the tree needs: forked under one, it is forked again, the one it
    took let go. Here every PID but multiples of 7 is the tree's, so that most forks
    land on one: three holders in turn each end on a multiple of 7, pivoted into the
    new root, and no rejected fork is left."""
    from ckpt.resources import mounts

    busybox_or_skip()
    root = make_rootfs(tmp_path / "rootfs")
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    avoid = {p for p in range(1, pid_max + 1) if p % 7}
    before = my_children()  # what earlier tests left running is not this test's
    for _ in range(3):
        builder = mounts.Builder(None, [], str(root), {})  # type: ignore[arg-type]
        try:
            builder.hold(avoid)
            holder = builder.holder
            assert holder % 7 == 0, f"the holder took PID {holder}"
            assert os.path.exists(f"/proc/{holder}/root/bin/busybox")
            assert my_children() - before == {holder}
        finally:
            builder.close()
        assert not is_alive(holder)
