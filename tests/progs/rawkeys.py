"""A full-screen-like program: reads its keys one by one from /dev/tty in raw mode
(no echo, no signals, no line editing: as vim, top or the sqlite3 shell set it), and
writes "key N" for each byte to the file argv[1], after "ready"."""

import os
import sys
import termios

tty = os.open("/dev/tty", os.O_RDWR)
attrs = termios.tcgetattr(tty)
attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 1, 0
termios.tcsetattr(tty, termios.TCSANOW, attrs)
with open(sys.argv[1], "a", buffering=1) as out:
    out.write("ready\n")
    while True:
        key = os.read(tty, 1)
        if not key:
            break
        out.write(f"key {key[0]}\n")
