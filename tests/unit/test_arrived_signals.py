"""Which signals pending in a new process of a restore were sent to it from outside
(resources/signals.sent_from_outside): those are queued again, the rest dropped."""

from __future__ import annotations

import signal
import struct

from ckpt.resources.signals import SI_QUEUE, SI_TKILL, SI_USER, SIGINFO_SIZE, sent_from_outside

OWN = 4242
SI_KERNEL, CLD_EXITED, POLL_IN, SI_TIMER = 0x80, 1, 1, -2


def _info(sig: int, code: int, sender: int = 0) -> bytes:
    """A siginfo: signo, errno, code, then (kill's) the sender's PID and uid at 16 (the
    union is 8-aligned)."""
    return struct.pack("<iii4xiI", sig, 0, code, sender, 0).ljust(SIGINFO_SIZE, b"\0")


def test_a_process_s_signals_are_kept() -> None:
    assert sent_from_outside(_info(signal.SIGUSR1, SI_USER, 100), OWN)
    assert sent_from_outside(_info(signal.SIGRTMIN + 1, SI_QUEUE, 100), OWN)
    assert sent_from_outside(_info(signal.SIGUSR2, SI_TKILL, 100), OWN)


def test_one_from_outside_its_pid_namespace_is_kept() -> None:
    """The kernel gives the PID of a sender it cannot name there as 0."""
    assert sent_from_outside(_info(signal.SIGTERM, SI_USER, 0), OWN)


def test_the_kernel_s_are_dropped() -> None:
    """What the restore caused: a stand-in's or zombie's SIGCHLD, a terminal's SIGHUP,
    a file's SIGIO; a timer's (none is armed before the signals come back)."""
    assert not sent_from_outside(_info(signal.SIGCHLD, CLD_EXITED, 77), OWN)
    assert not sent_from_outside(_info(signal.SIGHUP, SI_KERNEL), OWN)
    assert not sent_from_outside(_info(signal.SIGIO, POLL_IN), OWN)
    assert not sent_from_outside(_info(signal.SIGALRM, SI_TIMER), OWN)


def test_its_own_sigpipe_is_dropped() -> None:
    """A write of the restore's to a pipe without reader: SI_USER from its own PID."""
    assert not sent_from_outside(_info(signal.SIGPIPE, SI_USER, OWN), OWN)
