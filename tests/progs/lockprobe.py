"""A second process trying file locks without waiting: prints one JSON list, a result
per request given as arguments.

Each argument is KIND:PATH[:TYPE:START:LEN]; KIND is posix, ofd (F_SETLK and
F_OFD_SETLK on a new open), getlk (F_GETLK: the PID holding a conflicting lock, or
0), flock (LOCK_NB on a new open) or open-write (O_WRONLY|O_NONBLOCK, which breaks
a lease). The result is "got", or the errno's name ("EAGAIN": it would block).
"""

import errno
import fcntl
import json
import os
import struct
import sys

F_OFD_SETLK = 37
FLOCK = struct.Struct("hhqqi4x")


def attempt(spec: str) -> str | int:
    kind, path, *rest = spec.split(":")
    ltype, start, length = rest if rest else ("write", "0", "0")
    lt = fcntl.F_WRLCK if ltype == "write" else fcntl.F_RDLCK
    req = FLOCK.pack(lt, os.SEEK_SET, int(start), int(length), 0)
    flags = os.O_WRONLY | os.O_NONBLOCK if kind == "open-write" else os.O_RDWR
    try:
        fd = os.open(path, flags)
    except OSError as e:
        return errno.errorcode[e.errno]
    try:
        if kind == "posix":
            fcntl.fcntl(fd, fcntl.F_SETLK, req)
        elif kind == "ofd":
            fcntl.fcntl(fd, F_OFD_SETLK, req)
        elif kind == "getlk":
            res = FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, req))
            return 0 if res[0] == fcntl.F_UNLCK else res[4]
        elif kind == "flock":
            fcntl.flock(fd, (fcntl.LOCK_EX if lt == fcntl.F_WRLCK else fcntl.LOCK_SH)
                        | fcntl.LOCK_NB)
        return "got"
    except OSError as e:
        return errno.errorcode[e.errno]
    finally:
        os.close(fd)


print(json.dumps([attempt(a) for a in sys.argv[1:]]))
