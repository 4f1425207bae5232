"""The bytes waiting in a pseudo-terminal pair, both ways: read at dump and put back
at once (the tree stays as it was), and put in the new pair at restore.

A pair holds two queues: what the slave's programs wrote and the master's reader
has not read yet (*output*), and what was written to the master (typed) that the
slave's reader has not read yet (*input*, already through the line discipline:
echoed, CR turned into NL, ...). Neither can be read without consuming it, so
each is read, then handed back with ``TIOCSTI``, which puts a byte in a
terminal's input queue as if it had arrived (root may do it on any terminal).
The master's own line discipline does nothing to what it receives (its settings
are fixed raw); the slave's would process the input a second time, so while
it is put back its processing, echo and special characters are off, canonical
mode kept (lines stay lines, a partial line stays partial), then its settings
come back. Reading the slave's queue needs non-canonical mode for a moment: a
partial line cannot be read otherwise.

If ckpt dies between reading a queue and putting it back, those bytes are lost;
the tree itself is untouched.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import termios

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

TIOCSTI = 0x5412
TIOCPKT = 0x5420
TIOCGPKT = 0x80045438
LFLAG, CC = 3, 6  # indices in a tcgetattr list


def packet_mode(master: int) -> bool:
    """Whether the master is in packet mode (each read starts with a status byte)."""
    return bool(struct.unpack("i", fcntl.ioctl(master, TIOCGPKT, b"\0" * 4))[0])


def set_packet_mode(master: int, on: bool) -> None:
    fcntl.ioctl(master, TIOCPKT, struct.pack("i", int(on)))


def take_output(master: int) -> bytes:
    """What the slave's programs wrote and nobody read from ``master`` yet (put back)."""
    packet = packet_mode(master)
    data = _drain(master, packet)
    put_output(master, data)
    return data


def take_input(slave: int) -> bytes:
    """What was typed into the pair and the slave's reader has not read yet (put back)."""
    saved = termios.tcgetattr(slave)
    reading = list(saved)
    reading[LFLAG] &= ~termios.ICANON
    reading[CC] = list(saved[CC])
    reading[CC][termios.VMIN] = reading[CC][termios.VTIME] = 0
    termios.tcsetattr(slave, termios.TCSANOW, reading)
    data = b""
    try:
        data = _drain(slave, False)
    finally:
        put_input(slave, data, saved)
    return data


def put_output(master: int, data: bytes) -> None:
    """``data`` waiting for the master's reader, as if the slave had written it."""
    _push(master, data)


def put_input(slave: int, data: bytes, settings: list[Any]) -> None:
    """``data`` waiting for the slave's reader, as typed and processed already; the
    slave's settings are ``settings`` after."""
    if data:
        quiet = list(settings)
        quiet[0] = 0  # iflag: no CR/NL mapping, no stripping, no flow control
        quiet[LFLAG] = settings[LFLAG] & termios.ICANON  # no echo, no signals
        quiet[CC] = [0] * len(settings[CC])  # no special characters
        if not quiet[LFLAG] & termios.ICANON:
            quiet[CC][termios.VMIN] = settings[CC][termios.VMIN]
        termios.tcsetattr(slave, termios.TCSANOW, quiet)
        try:
            _push(slave, data)
        finally:
            termios.tcsetattr(slave, termios.TCSANOW, settings)
    else:
        termios.tcsetattr(slave, termios.TCSANOW, settings)


def _drain(fd: int, packet: bool) -> bytes:
    """Everything ``fd``'s terminal has for its reader now (``fd`` may be blocking:
    it is polled first; a poll makes the kernel process what is still in flight)."""
    out = bytearray()
    while select.select([fd], [], [], 0)[0]:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        except OSError as e:
            if e.errno == errno.EIO:  # the other side is closed: nothing to read
                break
            raise
        if not chunk:
            break
        if packet:  # a status byte first; 0 (TIOCPKT_DATA) when data follows
            chunk = chunk[1:] if chunk[0] == 0 else b""
        out += chunk
    return bytes(out)


def _push(fd: int, data: bytes) -> None:
    for i in range(len(data)):
        fcntl.ioctl(fd, TIOCSTI, data[i:i + 1])
