"""NUMA policies as /proc/PID/numa_maps shows them (the kernel's mpol_to_str)."""

from __future__ import annotations

from ckpt.resources.numa import parse


def test_the_forms_of_a_policy() -> None:
    assert parse("default anon=1 dirty=1 N0=1 kernelpagesize_kB=4") == {"mode": 0, "nodes": []}
    assert parse("interleave:0-2,5 anon=3") == {"mode": 3, "nodes": [0, 1, 2, 5]}
    assert parse("bind:0 file=/usr/lib/libc.so.6") == {"mode": 2, "nodes": [0]}
    assert parse("prefer=static:1 heap") == {"mode": 1 | 1 << 15, "nodes": [1]}
    assert parse("bind=relative|balancing:0-1") == {"mode": 2 | 1 << 14 | 1 << 13,
                                                    "nodes": [0, 1]}
    assert parse("local stack") == {"mode": 4, "nodes": []}
    assert parse("prefer (many):0-1 anon=1") == {"mode": 5, "nodes": [0, 1]}
    assert parse("weighted interleave:0") == {"mode": 6, "nodes": [0]}


def test_unknown_forms() -> None:
    assert parse("sometimes:0") is None
    assert parse("bind=whatever:0") is None
