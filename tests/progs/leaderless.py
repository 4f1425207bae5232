"""leaderless MODE: processes in a process group or session whose leader has exited.

Every process prints "TAG N" ten times a second, and "TAG usr1 PID" on SIGUSR1, each
line in one write (they share stdout). The first line "pids ..." names them.

group: the root (a session leader) forks L, the leader of a group of its own, then M3,
  M1 and M2 into L's group (a pipeline); M3 exits at once and stays a zombie; the root
  kills and reaps L: "pids L M1 M2 M3", tags R, M1, M2.
daemon: the root forks B, which calls setsid and forks C, which forks D; B exits, so C is
  reparented to the nearest subreaper (a double-fork daemon); the root exits: "pids B C
  D", tags C, D.
zombie: as group, but L lives on in the tree (tag L): M3 is a zombie in another
  process's group.
subreaper: as daemon, the root a child subreaper that lives on (tag A): C is reparented
  to the root.
outside: as group, but L is forked by a child P that exits at once: L lives on outside
  the root's tree, reparented to the nearest subreaper: "pids L M1 M2 M3".
"""

import ctypes
import os
import signal
import sys
import time


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def loop(tag: str) -> None:
    signal.signal(signal.SIGUSR1, lambda *_: say(f"{tag} usr1 {os.getpid()}"))
    n = 0
    while True:
        say(f"{tag} {n}")
        n += 1
        time.sleep(0.1)


def into_group(pid: int, pgid: int) -> None:
    try:
        os.setpgid(pid, pgid)
    except OSError:  # the child did it first, or already runs on its own
        pass


def group(mode: str) -> None:
    if mode == "outside":
        r, w = os.pipe()
        p = os.fork()
        if p == 0:
            leader = os.fork()
            if leader == 0:
                os.setpgid(0, 0)
                while True:
                    signal.pause()
            os.write(w, f"{leader}".encode())
            os._exit(0)
        os.waitpid(p, 0)
        leader = int(os.read(r, 32))
        while os.getpgid(leader) != leader:
            time.sleep(0.01)
    else:
        leader = os.fork()
        if leader == 0:
            if mode == "zombie":
                into_group(0, 0)
                loop("L")
            while True:
                signal.pause()
        into_group(leader, leader)
    members = []
    for tag in ("M3", "M1", "M2"):  # M3 exits at once: a zombie never reaped
        pid = os.fork()
        if pid == 0:
            into_group(0, leader)
            if tag == "M3":
                os._exit(3)
            loop(tag)
        into_group(pid, leader)
        members.append(pid)
    if mode == "group":
        os.kill(leader, signal.SIGKILL)
        os.waitpid(leader, 0)
    say(f"pids {leader} {members[1]} {members[2]} {members[0]}")
    loop("R")


def daemon(subreaper: bool) -> None:
    if subreaper:
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    b = os.fork()
    if b == 0:
        os.setsid()
        b = os.getpid()
        c = os.fork()
        if c == 0:
            while os.getppid() == b:
                time.sleep(0.01)
            d = os.fork()
            if d == 0:
                loop("D")
            say(f"pids {b} {os.getpid()} {d}")
            loop("C")
        os._exit(0)
    os.waitpid(b, 0)
    if subreaper:
        loop("A")


mode = sys.argv[1]
if mode in ("group", "outside", "zombie"):
    group(mode)
else:
    daemon(mode == "subreaper")
