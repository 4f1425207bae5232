"""Files of /proc and /sys held open, as top and monitoring agents hold them.

Usage: procfiles.py MODE
  self:   the process holds /proc/loadavg, /proc/self/stat (/proc/PID/stat),
          /proc/PID/maps, /proc/PID/fdinfo/N (N: its loadavg fd), its /proc/PID
          folder and a /sys file, each read part way (its offset matters)
  family: it forks a child first; the parent holds /proc/CHILD/status and
          the child /proc/PARENT/stat, and both share one description of
          /proc/PARENT/cmdline opened before the fork
  other PID: it holds /proc/PID/stat of a process given on the command line

Prints "ready PID [CHILD]" and "fds NAME=FD ...", then "N ok" every 50 ms (the
child "c N ok"), or "N BAD what" when a file no longer reads as it should from
its offset.
"""

import os
import sys
import time

mode = sys.argv[1]
me = os.getpid()
files: dict[str, int] = {}
expect: dict[str, int] = {}  # name -> the offset it must keep


def hold(name: str, path: str, skip: int, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    if skip:
        os.read(fd, skip)
    files[name] = fd
    expect[name] = skip


def _whole(fd: int) -> bytes:
    """The file from its start, read to its end: a read of /proc/PID/maps gives about a
    page of lines at a time, and the [stack] line may come after 4 KiB."""
    data = b""
    while chunk := os.pread(fd, 1 << 16, len(data)):
        data += chunk
    return data


def check() -> str | None:
    for name, fd in files.items():
        if name == "dir":
            if os.stat("stat", dir_fd=fd).st_size != 0 or os.listdir(fd) == []:
                return name
            continue
        if os.lseek(fd, 0, os.SEEK_CUR) != expect[name]:
            return f"{name} offset {os.lseek(fd, 0, os.SEEK_CUR)}"
        head = os.pread(fd, 4096, 0)
        if not head:
            return f"{name} empty"
        if name in ("stat", "pstat") and not head.startswith(f"{pid_of[name]} (".encode()):
            return f"{name} is {head[:20]!r}"
        if name == "maps" and b"[stack]" not in _whole(fd):
            return "maps without [stack]"
        if name == "fdinfo" and not head.startswith(b"pos:"):
            return f"fdinfo is {head[:20]!r}"
        if name == "status" and f"Pid:\t{pid_of[name]}\n".encode() not in head:
            return f"status of {head[:30]!r}"
    return None


pid_of: dict[str, int] = {}
child = 0
if mode == "self":
    hold("loadavg", "/proc/loadavg", 3)
    hold("stat", "/proc/self/stat", 10)
    pid_of["stat"] = me
    hold("maps", f"/proc/{me}/maps", 20)
    hold("fdinfo", f"/proc/{me}/fdinfo/{files['loadavg']}", 4)
    hold("sys", "/sys/kernel/mm/transparent_hugepage/enabled", 2)
    files["dir"] = os.open(f"/proc/{me}", os.O_RDONLY | os.O_DIRECTORY)
elif mode == "family":
    hold("cmdline", f"/proc/{me}/cmdline", 5)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(w)
        os.read(r, 1)
        hold("pstat", f"/proc/{me}/stat", 7)
        pid_of["pstat"] = me
        del files["cmdline"]  # the parent checks the shared one
        for n in range(10 ** 9):
            bad = check()
            os.write(1, f"c {n} {'BAD ' + bad if bad else 'ok'}\n".encode())
            time.sleep(0.05)
    os.close(r)
    hold("status", f"/proc/{child}/status", 9)
    pid_of["status"] = child
    os.write(w, b"x")
else:
    other = int(sys.argv[2])
    hold("stat", f"/proc/{other}/stat", 4)
    pid_of["stat"] = other

print(f"ready {me} {child}", flush=True)
print("fds " + " ".join(f"{k}={v}" for k, v in files.items()), flush=True)
for n in range(10 ** 9):
    bad = check()
    os.write(1, f"{n} {'BAD ' + bad if bad else 'ok'}\n".encode())  # one write a line
    time.sleep(0.05)
