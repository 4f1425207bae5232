"""with_pid.py PID PROGRAM [ARG...]: run PROGRAM under PID, as a child of our own parent.

clone3 with set_tid either gives the new process that very PID or fails with EEXIST
(the PID is in use): unlike writing ns_last_pid and forking, no other process can take
the PID in between. CLONE_PARENT makes the new process our caller's child (a test
waits for it and kills it as its own); it starts in a new session. Exits 0 once it is
started (its stderr goes with its stdout), 17 (EEXIST) when the PID is in use, 1 on other errors.
"""

import ctypes
import os
import sys

CLONE_PARENT = 0x00008000
NR_CLONE3 = 435


class CloneArgs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


def main() -> int:
    pid, argv = int(sys.argv[1]), sys.argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    tid = ctypes.c_int(pid)
    args = CloneArgs(flags=CLONE_PARENT, set_tid=ctypes.addressof(tid), set_tid_size=1)
    got = libc.syscall(NR_CLONE3, ctypes.byref(args), ctypes.sizeof(args))
    if got == 0:  # the new process: nothing of ours runs but this
        try:
            os.setsid()
            os.dup2(1, 2)  # stdout and stderr to the same file, as a test's targets
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    if got < 0:
        err = ctypes.get_errno()
        print(f"with_pid: clone3 with PID {pid}: {os.strerror(err)}", file=sys.stderr)
        return err if err == 17 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
