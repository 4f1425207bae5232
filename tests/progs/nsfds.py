"""Holds an fd on each of its own namespaces (/proc/self/ns/NAME), one more O_PATH, and
with an argument PATH an fd on that namespace file too (another process's).

Prints "fds NAME=FD ...", then on each SIGUSR1 one line "ns NAME FD LINK" per fd
(what /proc/self/fd/FD names) and "same NAME yes|no" (whether it is the namespace
/proc/self/ns/NAME is now), then "setns ok" after joining its own uts namespace
through its fd (which works on a namespace fd only), then 0, 1, 2, ... every 50 ms.
"""

import ctypes
import os
import signal
import sys
import time

NAMES = ["net", "ipc", "mnt", "pid", "pid_for_children", "time", "time_for_children",
         "user", "uts", "cgroup"]
CLONE_NEWUTS = 0x04000000
libc = ctypes.CDLL(None, use_errno=True)
fds = {n: os.open(f"/proc/self/ns/{n}", os.O_RDONLY) for n in NAMES
       if os.path.exists(f"/proc/self/ns/{n}")}
fds["net_path"] = os.open("/proc/self/ns/net", os.O_PATH)
if len(sys.argv) > 1:
    fds["other"] = os.open(sys.argv[1], os.O_RDONLY)


def report(sig: int, frame: object) -> None:
    for name, fd in fds.items():
        link = os.readlink(f"/proc/self/fd/{fd}")
        own = os.stat(f"/proc/self/ns/{name.removesuffix('_path')}")
        same = os.fstat(fd).st_ino == own.st_ino
        print(f"ns {name} {fd} {link}\nsame {name} {'yes' if same else 'no'}", flush=True)
    if libc.setns(fds["uts"], CLONE_NEWUTS) != 0:
        print(f"setns failed {ctypes.get_errno()}", flush=True)
    else:
        print("setns ok", flush=True)


signal.signal(signal.SIGUSR1, report)
print("fds " + " ".join(f"{n}={fd}" for n, fd in fds.items()), flush=True)
n = 0
while True:
    print(n, flush=True)
    n += 1
    time.sleep(0.05)
