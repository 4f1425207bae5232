"""A CPython target: a 200k-entry dict and a generator stopped mid-way.

Prints "ready N" once built, then every 50 ms one line "TICK VALUE dict=ok|BAD":
VALUE is the generator's next value (the running sum of squares), and the dict is
checked in full on every tick. On SIGUSR1 it prints "usr1 TICK".
"""

import signal
import sys
import time
from collections.abc import Iterator

ENTRIES = 200_000


def squares_sum() -> Iterator[int]:
    """Yield 0, 0+1, 0+1+4, ...: each value depends on the generator's saved state."""
    total = 0
    i = 0
    while True:
        total += i * i
        yield total
        i += 1


def dict_ok(d: dict[str, int]) -> bool:
    return len(d) == ENTRIES and all(d[f"k{i}"] == i * 3 + 1 for i in range(ENTRIES))


def main() -> None:
    data = {f"k{i}": i * 3 + 1 for i in range(ENTRIES)}
    gen = squares_sum()
    tick = 0
    usr1: list[int] = []
    signal.signal(signal.SIGUSR1, lambda *_: usr1.append(tick))
    print(f"ready {len(data)}", flush=True)
    while True:
        value = next(gen)
        print(f"{tick} {value} dict={'ok' if dict_ok(data) else 'BAD'}", flush=True)
        while usr1:
            print(f"usr1 {usr1.pop(0)}", flush=True)
        tick += 1
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
