"""Python's temporary files, as servers (gunicorn's heartbeat files) make them.

  mkstemp:   tempfile.mkstemp() then os.unlink() (opened with O_NOFOLLOW)
  tmpfile:   tempfile.TemporaryFile() (O_TMPFILE: no name ever)
  named:     tempfile.NamedTemporaryFile(delete=True), its name unlinked by hand

Each gets one line per tick, appended at its offset; the whole content is read
back and compared with what was written. Prints "ready DIR" and "fds ...", then
"N ok" every 50 ms, or "N BAD what".
"""

import os
import sys
import tempfile
import time

directory = sys.argv[1]
fd, path = tempfile.mkstemp(dir=directory)
os.unlink(path)
tmp = tempfile.TemporaryFile(dir=directory, buffering=0)
named = tempfile.NamedTemporaryFile(dir=directory, delete=True, buffering=0)
os.unlink(named.name)
files = {"mkstemp": fd, "tmpfile": tmp.fileno(), "named": named.fileno()}
written = {name: b"" for name in files}
print(f"ready {directory}", flush=True)
print("fds " + " ".join(f"{k}={v}" for k, v in files.items()), flush=True)
n = 0
while True:
    bad = None
    for name, f in files.items():
        line = f"{name} {n}\n".encode()
        if os.lseek(f, 0, os.SEEK_CUR) != len(written[name]):
            bad = f"{name} offset"
        os.write(f, line)
        written[name] += line
        if os.pread(f, len(written[name]) + 10, 0) != written[name]:
            bad = f"{name} content"
    print(f"{n} {'BAD ' + bad if bad else 'ok'}", flush=True)
    n += 1
    time.sleep(0.05)
