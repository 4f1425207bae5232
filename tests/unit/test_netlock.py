"""The network lock's names and notes, without root: a lock is named after the dumped
tree, and a note read back from /run/ckpt/netlock is checked before its name reaches
nft or iptables."""

from __future__ import annotations

import re

import pytest

from ckpt import netlock


def test_lock_names_carry_the_tree() -> None:
    assert re.fullmatch(r"ckpt_4242_[0-9a-f]{8}", netlock.lock_name("nftables", 4242))
    assert re.fullmatch(r"CKPT-4242-[0-9a-f]{8}", netlock.lock_name("iptables", 4242))
    assert netlock.lock_name("nftables", 1) != netlock.lock_name("nftables", 1)


def _note(**changes: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "backend": "nftables", "name": "ckpt_12_0a1b2c3d", "netns": 4026531840,
        "images": "/tmp/d", "connections": [[["127.0.0.1", 5], ["127.0.0.1", 6]]],
        "sockets": [{"pid": 12, "start": 99, "fd": 3, "inode": 777, "reuse": 1}],
    }
    raw.update(changes)
    return raw


def test_a_note_read_back() -> None:
    note = netlock.Note.parse(_note())
    assert note.lock.name == "ckpt_12_0a1b2c3d" and note.lock.held
    assert note.lock.conns == [netlock.Conn(("127.0.0.1", 5), ("127.0.0.1", 6))]
    assert note.holders == [netlock.Holder(12, 99, 3, 777, 1)]
    assert note.images == "/tmp/d"


@pytest.mark.parametrize("bad", [
    {"name": "ckpt; reboot"}, {"name": "x y"}, {"backend": "pf"},
    {"sockets": [{"pid": "twelve", "start": 1, "fd": 3, "inode": 1, "reuse": 0}]},
    {"netns": None},
])
def test_a_bad_note_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises((netlock.LockError, ValueError, KeyError, TypeError)):
        netlock.Note.parse(_note(**bad))
