"""The dump's batch of injected calls (kernel/inject.SignalBatch): the signal that ends it,
and the parking area's loop that runs it."""

from __future__ import annotations

import signal

from ckpt.kernel.inject import BATCH_CODE, PARK_AREA, PARK_CODE, PARKED_BATCH_ENTRY
from ckpt.resources.signals import ignored_signal


def _bits(*sigs: int) -> int:
    return sum(1 << (s - 1) for s in sigs)


def test_a_signal_ignored_by_default_comes_first() -> None:
    assert ignored_signal(0, 0, 0) == signal.SIGURG
    assert ignored_signal(0, _bits(signal.SIGURG), _bits(signal.SIGWINCH)) == signal.SIGCHLD


def test_then_a_signal_the_process_ignores() -> None:
    busy = _bits(signal.SIGURG, signal.SIGWINCH, signal.SIGCHLD)
    assert ignored_signal(_bits(signal.SIGPIPE), busy, 0) == signal.SIGPIPE
    assert ignored_signal(_bits(signal.SIGPIPE), 0, busy) == signal.SIGPIPE
    assert ignored_signal(_bits(signal.SIGPIPE), busy, _bits(signal.SIGPIPE)) is None


def test_never_one_whose_sending_does_more() -> None:
    """SIGCONT continues a stopped process, a stop signal drops a pending SIGCONT."""
    busy = _bits(signal.SIGURG, signal.SIGWINCH, signal.SIGCHLD)
    ignored = _bits(signal.SIGCONT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
    assert ignored_signal(ignored, busy, 0) is None
    assert ignored_signal(ignored | _bits(signal.SIGUSR2), busy, 0) == signal.SIGUSR2


def test_never_a_real_time_signal() -> None:
    """Its queue may be full (RLIMIT_SIGPENDING): the send would fail, the batch not end."""
    busy = _bits(signal.SIGURG, signal.SIGWINCH, signal.SIGCHLD)
    assert ignored_signal(_bits(signal.SIGRTMIN + 2, signal.SIGRTMAX), busy, 0) is None


def test_the_parked_batch_ends_in_the_pause_loop() -> None:
    """The batch loop of the parking area is the restore's, its trap replaced by a jump
    to the parking code's pause loop (after its first syscall instruction)."""
    assert PARK_AREA[:len(PARK_CODE)] == PARK_CODE
    loop = PARK_AREA[PARKED_BATCH_ENTRY:]
    assert loop[:len(BATCH_CODE) - 1] == BATCH_CODE[:-1] and BATCH_CODE[-1:] == b"\xcc"
    jump = loop[len(BATCH_CODE) - 1:]
    assert len(jump) == 5 and jump[0] == 0xE9
    after = PARKED_BATCH_ENTRY + len(BATCH_CODE) - 1 + 5
    assert after + int.from_bytes(jump[1:], "little", signed=True) == 2
    assert PARK_CODE[2] == 0xB8  # mov eax, __NR_pause
