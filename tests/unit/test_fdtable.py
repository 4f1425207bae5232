"""The plan that gives a new process its fds (resources/fdtable.py), run on a model of
an fd table: SCM_RIGHTS installs each fd at the lowest free number, dup3 and
close_range do what the kernel does. Every plan must end with exactly the wanted fds,
the kept ones and the socket, each at its number with its close-on-exec flag."""

from __future__ import annotations

import random

import pytest

from ckpt.resources.fdtable import GAP_FACTOR, MAX_FD, Plan, Want, complement, plan, runs

SOCK = "sock"


def apply(p: Plan, table: dict[int, tuple[object, bool]]) -> dict[int, tuple[object, bool]]:
    """Run ``p`` on ``table`` (number -> (what, cloexec)), as the kernel would."""
    table = dict(table)
    if p.sock_from is not None:
        table[p.sock] = (table[p.sock_from][0], True)
    for first, last in p.close_first:
        for n in [n for n in table if first <= n <= last]:
            del table[n]
    assert table.get(p.sock, (None,))[0] == SOCK, "the socket was closed"
    lowest = 0  # nothing is closed while fds come in: the lowest free number only grows
    for batch in p.batches:
        assert 0 < len(batch.slots) <= 253
        for slot, w in zip(batch.slots, batch.wants, strict=True):
            while lowest in table:
                lowest += 1
            assert slot == lowest, f"an fd lands at {lowest}, planned at {slot}"
            table[slot] = ("placeholder" if w is None else w.source, batch.cloexec)
    for slot, w in p.moves:
        assert w.fd not in table, f"dup3 onto the open fd {w.fd}"
        table[w.fd] = (table[slot][0], w.cloexec)
    for first, last in p.close_after:
        for n in range(first, last + 1):
            assert n in table, f"close_range of a number that holds nothing: {n}"
            del table[n]
    return table


def check(wants: list[Want], kept: set[int], sock: int, before: set[int]) -> Plan:
    table = {n: (f"old{n}", False) for n in before}
    for n in kept:
        table[n] = (f"kept{n}", False)
    table[sock] = (SOCK, True)
    p = plan(wants, kept, sock)
    after = apply(p, table)
    expected = {w.fd: (w.source, w.cloexec) for w in wants}
    expected.update({n: (f"kept{n}", False) for n in kept})
    expected[p.sock] = (SOCK, True)
    assert after == expected
    return p


def wanted(numbers: list[int], cloexec: bool | None = None) -> list[Want]:
    return [Want(n, 1000 + n, bool(n % 3 == 0) if cloexec is None else cloexec)
            for n in numbers]


def test_dense_table_in_one_message() -> None:
    p = check(wanted(list(range(10)), cloexec=False), set(), 500, set(range(50)))
    assert len(p.batches) == 1 and not p.moves and not p.close_after
    assert p.syscalls == 3  # close below the socket, close above, one recvmsg


def test_the_socket_moves_off_a_wanted_number() -> None:
    p = check(wanted([0, 1, 2, 3]), set(), 2, {0, 1, 3, 7})
    assert p.sock_from == 2 and p.sock == 4


def test_kept_fds_stay_and_the_rest_fills_around_them() -> None:
    p = check(wanted([0, 3, 4, 7]), {1, 2, 5}, 6, {0, 8, 9})
    assert not p.moves


def test_holes_get_placeholders_closed_afterwards() -> None:
    p = check(wanted([0, 5, 6, 20]), set(), 100, set())
    assert p.close_after == [(1, 4), (7, 19)] and not p.moves


def test_a_far_fd_is_moved_not_reached_by_placeholders() -> None:
    p = check(wanted([0, 1, 2, 1_000_000]), set(), 3, set())
    assert [w.fd for _, w in p.moves] == [1_000_000]
    assert sum(len(b.slots) for b in p.batches) == 4


def test_a_gap_worth_filling_is_filled() -> None:
    far = GAP_FACTOR * 100  # a gap of far - 1 numbers below 100 fds
    p = check(wanted([0] + list(range(far, far + 100))), set(), 5000 + far, set())
    assert not p.moves


def test_messages_hold_at_most_253_and_split_on_the_cloexec_flag() -> None:
    p = check(wanted(list(range(600)), cloexec=True), set(), 700, set())
    assert [len(b.slots) for b in p.batches] == [253, 253, 94]
    p = check([Want(0, 1, True), Want(1, 2, False), Want(2, 3, False), Want(3, 4, True)],
              set(), 9, set())
    assert [b.cloexec for b in p.batches] == [True, False, True]


def test_same_number_twice_is_refused() -> None:
    with pytest.raises(ValueError):
        plan([Want(1, 5, False), Want(1, 6, False)], set(), 9)
    with pytest.raises(ValueError):
        plan([Want(1, 5, False)], {1}, 9)


def test_random_tables() -> None:
    rng = random.Random(14)
    for _ in range(300):
        universe = rng.choice([40, 400, 5000])
        numbers = rng.sample(range(universe), rng.randint(0, min(300, universe // 2)))
        kept = set(rng.sample(numbers, rng.randint(0, len(numbers) // 3))) if numbers else set()
        wants = wanted(sorted(set(numbers) - kept))
        sock = rng.randrange(universe + 5)
        if sock in kept:
            continue
        before = set(rng.sample(range(universe), rng.randint(0, 30))) - kept - {sock}
        check(wants, kept, sock, before)


def test_runs_and_complement() -> None:
    assert runs([1, 2, 3, 7, 9, 10]) == [(1, 3), (7, 7), (9, 10)]
    assert complement([0, 1, 5]) == [(2, 4), (6, MAX_FD)]
    assert complement([]) == [(0, MAX_FD)]
