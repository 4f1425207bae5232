"""A SysV semaphore set removed between the dump's read of /proc/sysvipc/sem and its
semctl (by a process outside the frozen tree) is no set of the tree: skipped, not an
error that fails the dump (seen while a PostgreSQL test ran beside a dump)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import pytest

from ckpt.resources import sysv

IPC_PRIVATE, IPC_CREAT, IPC_RMID = 0, 0o1000, 0


def test_a_removed_set_has_no_pids() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    semid = libc.semget(IPC_PRIVATE, 2, IPC_CREAT | 0o600)
    if semid < 0:
        pytest.skip(f"semget: {os.strerror(ctypes.get_errno())}")
    try:
        assert sysv._sem_pids(semid, 2) == [0, 0]  # never operated on
    finally:
        assert libc.semctl(semid, 0, IPC_RMID, None) == 0
    assert sysv._sem_pids(semid, 2) == []
