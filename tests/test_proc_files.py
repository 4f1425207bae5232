"""Files of /proc and /sys held open (top holds /proc/loadavg), and Python's temporary
files (mkstemp + unlink, TemporaryFile, NamedTemporaryFile): they come back at their
offsets, or the dump refuses and the process runs on."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ckpt.kernel import libc
from ckpt_helpers import (
    PROGS,
    PYTHON,
    Procs,
    ckpt_fails,
    dump_and_check_dead,
    fd_pos_flags,
    is_alive,
    printed_fds,
    proc_status,
    restore_detached,
    ticks_go_on,
)


def test_proc_and_sys_files(procs: Procs, images: Path) -> None:
    """/proc/loadavg, /proc/PID/stat, maps, fdinfo/N, the /proc/PID folder and a /sys
    file, each read part way, are open again after the restore at the same offsets,
    on the restored process's own /proc files."""
    target = procs.start([PYTHON, PROGS / "procfiles.py", "self"])
    target.out.wait_line(r"^3 ")
    fds = printed_fds(target.out)
    links = {k: os.readlink(f"/proc/{target.pid}/fd/{fd}") for k, fd in fds.items()}
    assert links["stat"] == f"/proc/{target.pid}/stat"
    dump_and_check_dead(procs, target, images)
    restored = restore_detached(procs, target.pid, target.out, images)
    ticks_go_on(target.out)
    for name, fd in fds.items():
        assert os.readlink(f"/proc/{restored.pid}/fd/{fd}") == links[name], name
    assert fd_pos_flags(restored.pid, fds["loadavg"])[0] == 3
    assert fd_pos_flags(restored.pid, fds["maps"])[0] == 20


def test_proc_files_of_parent_and_child(procs: Procs, images: Path) -> None:
    """A parent holding /proc/CHILD/status, its child holding /proc/PARENT/stat, and a
    /proc/PARENT/cmdline description both share: each is the restored process's file,
    and the shared one is still one description."""
    target = procs.start([PYTHON, PROGS / "procfiles.py", "family"])
    parent, child = map(int, target.out.wait_line(r"^ready ").split()[1:])
    target.out.wait_line(r"^3 ")
    target.out.wait_line(r"^c 3 ")
    fds = printed_fds(target.out)
    dump_and_check_dead(procs, target, images)
    procs.wait_gone(child)
    restore_detached(procs, parent, target.out, images)
    ticks_go_on(target.out)
    ticks_go_on(target.out, "c ")
    assert os.readlink(f"/proc/{parent}/fd/{fds['status']}") == f"/proc/{child}/status"
    cmdline = fds["cmdline"]
    assert libc.kcmp_file(parent, child, cmdline, cmdline) == 0, "no longer shared"
    assert fd_pos_flags(child, cmdline)[0] == 5


def test_proc_file_of_a_process_outside_the_tree_is_refused(procs: Procs, images: Path
                                                           ) -> None:
    """/proc/PID/stat of a process outside the dumped tree: refused at dump, naming it;
    the process runs on untouched."""
    other = procs.start([PYTHON, "-c", "import time; time.sleep(600)"], name="other")
    target = procs.start([PYTHON, PROGS / "procfiles.py", "other", str(other.pid)])
    target.out.wait_line(r"^3 ")
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert f"/proc/{other.pid}/stat" in err and "outside the dumped tree" in err, err
    assert f"process {target.pid} fd" in err, err
    assert not (images / "inventory.json").exists()
    assert is_alive(target.pid) and proc_status(target.pid)["TracerPid"] == "0"
    ticks_go_on(target.out)


def test_python_temporary_files(procs: Procs, images: Path, tmp_path: Path) -> None:
    """mkstemp + unlink (O_NOFOLLOW), TemporaryFile (O_TMPFILE) and a NamedTemporaryFile
    whose name was unlinked: each comes back nameless with its content, its offset and
    its flags, and the process goes on appending to them; no name is left behind."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    target = procs.start([PYTHON, PROGS / "tempfiles.py", tmp])
    target.out.wait_line(r"^3 ")
    fds = printed_fds(target.out)
    before = {k: os.readlink(f"/proc/{target.pid}/fd/{fd}") for k, fd in fds.items()}
    assert all(v.endswith(" (deleted)") for v in before.values()), before
    dump_and_check_dead(procs, target, images)
    needs = json.loads((images / "inventory.json").read_text()).get("needs", [])
    assert set(needs) <= {"in-call"}, needs  # nothing for the files: as without them
    restored = restore_detached(procs, target.pid, target.out, images)
    ticks_go_on(target.out)
    after = {k: os.readlink(f"/proc/{restored.pid}/fd/{fd}") for k, fd in fds.items()}
    assert after["mkstemp"] == before["mkstemp"] and after["named"] == before["named"]
    assert re.fullmatch(rf"{tmp}/#\d+ \(deleted\)", after["tmpfile"]), after
    for name, fd in fds.items():
        assert fd_pos_flags(restored.pid, fd)[1] & os.O_ACCMODE == os.O_RDWR, name
        assert os.stat(f"/proc/{restored.pid}/fd/{fd}").st_nlink == 0, name
    assert os.listdir(tmp) == []


PASSED_PROC_FILE = """
import array, os, socket, time
a, b = socket.socketpair()
fd = os.open("/proc/self/status", os.O_RDONLY)
a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
os.close(fd)
n = 0
while True:
    print(n, flush=True)
    n += 1
    time.sleep(0.05)
"""


def test_proc_file_in_a_queued_message_refused(procs: Procs, images: Path,
                                               tmp_path: Path) -> None:
    """A /proc/PID file passed in a message not received yet (SCM_RIGHTS) is refused at
    dump, naming it: the restore opens such a file once its process exists, after the
    queues are filled again (it came as /dev/null). The process runs on."""
    (tmp_path / "passer.py").write_text(PASSED_PROC_FILE)
    target = procs.start([PYTHON, tmp_path / "passer.py"])
    target.out.wait_numbers(3)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert f"/proc/{target.pid}/status passed in a message not received yet" in err, err
    count = len(target.out.numbers())
    target.out.wait_numbers(count + 3)
    assert is_alive(target.pid)
