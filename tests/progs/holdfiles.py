"""Hold files open as told, and check each keeps its offset.

Usage: holdfiles.py SPEC...
  SPEC is NAME=MODE:PATH[@OFFSET]; MODE is one of
    r w rw a (O_RDONLY, O_WRONLY, O_RDWR, O_WRONLY|O_APPEND), dir (O_RDONLY|O_DIRECTORY),
    path (O_PATH), link (O_PATH|O_NOFOLLOW: a symbolic link itself),
    fifo-r fifo-w (a FIFO's read or write end, opened O_RDWR first so that neither blocks)
  OFFSET is seeked to once opened.
  A FIFO gets "data:NAME\n" written into it (buffered, for the test to read back).
  A SPEC "unlink:PATH" or "rmdir:PATH" removes PATH once everything is open;
  "cwd:PATH" makes PATH the working directory first; "fork" forks a child once
  everything is set up, which checks the same files and prints "c N ok".

Prints "fds NAME=FD ...", then "N ok" every 50 ms, or "N BAD what" when an
offset moved, a file no longer has the type it had, or the working directory
was removed or came back (its link count changed).
"""

import os
import stat
import sys
import time

MODES = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR,
         "a": os.O_WRONLY | os.O_APPEND, "dir": os.O_RDONLY | os.O_DIRECTORY,
         "path": os.O_PATH, "link": os.O_PATH | os.O_NOFOLLOW,
         "fifo-r": os.O_RDONLY | os.O_NONBLOCK, "fifo-w": os.O_WRONLY | os.O_NONBLOCK}
fds: dict[str, int] = {}
offsets: dict[str, int] = {}
types: dict[str, int] = {}
removals = []
fork = False
for spec in sys.argv[1:]:
    if spec == "fork":
        fork = True
        continue
    if spec.startswith(("unlink:", "rmdir:")):
        removals.append(spec.split(":", 1))
        continue
    if spec.startswith("cwd:"):
        os.chdir(spec[4:])
        continue
    name, rest = spec.split("=", 1)
    mode, target = rest.split(":", 1)
    target, _, off = target.partition("@")
    if mode.startswith("fifo"):
        keep = os.open(target, os.O_RDWR)  # so that the end below opens at once
    fd = os.open(target, MODES[mode])
    if mode.startswith("fifo"):
        os.write(keep, f"data:{name}\n".encode())
        os.close(keep)
    if off:
        os.lseek(fd, int(off), os.SEEK_SET)
    fds[name] = fd
    if mode not in ("path", "link") and not mode.startswith("fifo"):
        offsets[name] = os.lseek(fd, 0, os.SEEK_CUR)
    types[name] = stat.S_IFMT(os.fstat(fd).st_mode)
for what, target in removals:
    (os.unlink if what == "unlink" else os.rmdir)(target)
cwd = os.stat(".")
prefix = ""
print("fds " + " ".join(f"{k}={v}" for k, v in fds.items()), flush=True)
if fork and os.fork() == 0:
    prefix = "c "
n = 0
while True:
    bad = None
    now = os.stat(".")
    if not stat.S_ISDIR(now.st_mode) or now.st_nlink != cwd.st_nlink:  # removed or not
        bad = "cwd"
    for name, fd in fds.items():
        if name in offsets and os.lseek(fd, 0, os.SEEK_CUR) != offsets[name]:
            bad = f"{name} offset {os.lseek(fd, 0, os.SEEK_CUR)}"
        if stat.S_IFMT(os.fstat(fd).st_mode) != types[name]:
            bad = f"{name} type"
    os.write(1, f"{prefix}{n} {'BAD ' + bad if bad else 'ok'}\n".encode())  # one write
    n += 1
    time.sleep(0.05)
