"""proc_peeker PID: holds /proc/PID/stat open (as top does while it reads it) until it
notices it was frozen (a gap of over 8 ms between its 1 ms naps), then closes it and
prints a count every 50 ms: "open" once the file is open, then "N"."""

import os
import sys
import time

fd = os.open(f"/proc/{sys.argv[1]}/stat", os.O_RDONLY)
print("open", flush=True)
last = time.monotonic()
while True:
    time.sleep(0.001)
    now = time.monotonic()
    if now - last > 0.008:
        break
    last = now
os.close(fd)
n = 0
while True:
    print(n, flush=True)
    n += 1
    time.sleep(0.05)
