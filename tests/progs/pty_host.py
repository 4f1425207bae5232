"""A terminal emulator without a screen: runs ARGV on a new 80x24 pty as the leader of
its session, and copies everything the program writes there to stdout (the raw
bytes, escapes and all). Bytes written to the FIFO KEYS are typed on the terminal.
A child subreaper: daemons the program forks (a tmux or screen server) stay in its
tree, and it reaps them. Usage: pty_host.py KEYS ARGV..."""

import ctypes
import fcntl
import os
import pty
import select
import struct
import sys
import termios

PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
keys_path, argv = sys.argv[1], sys.argv[2:]
pid, master = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    os.execvpe(argv[0], argv, {**os.environ, "TERM": "xterm"})
keys = os.open(keys_path, os.O_RDWR)  # a writer of its own: never an end of file
os.write(1, f"host {os.getpid()} program {pid}\n".encode())
while True:
    ready, _, _ = select.select([master, keys], [], [], 0.5)
    if master in ready:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the program and all its children closed the terminal
            data = b""
        if not data:
            os.write(1, b"\nhost: terminal closed\n")
            break
        os.write(1, data)
    if keys in ready:
        os.write(master, os.read(keys, 4096))
    while True:
        try:
            child, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if child == 0:
            break
