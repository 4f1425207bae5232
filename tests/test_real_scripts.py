"""Scripts and tools a user would checkpoint in the background, dumped (killed) and
restored with -d: a bash loop piped into ``cat -n``, a perl daemon, ``sleep``, ``top``
in batch mode, a multiprocessing Pool, ``inotifywait -m`` and ``tail -f`` in a pipeline.
Each runs again under its PIDs, and its output goes on with no line lost or repeated."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from ckpt_helpers import (
    PYTHON,
    Output,
    Procs,
    assert_consecutive,
    is_alive,
    proc_state,
    wait_until,
)
from real_helpers import TIMEOUT, cycle, need, tree


def _wait_more(out: Output, lines: int) -> None:
    n = len(out.lines())
    wait_until(lambda: len(out.lines()) >= n + lines, TIMEOUT,
               f"{lines} more lines in {out.path}")


def test_bash_loop_into_cat_n(procs: Procs, images: Path, tmp_path: Path) -> None:
    """``while :; do date; sleep 0.1; done | cat -n > FILE``: bash, its subshell and cat
    come back under their PIDs with the pipe between them; cat's numbers go on from
    where they were, each once, and the times printed keep going up."""
    out = Output(tmp_path / "numbered")
    proc = procs.start(["bash", "-c", "while :; do date +%s.%N; sleep 0.1; done "
                        f"| cat -n > {out.path}"], name="bash")
    _wait_more(out, 5)
    before = _settled(proc.pid)
    cycle(procs, proc, images, out=out)
    assert _settled(proc.pid) == before
    _wait_more(out, 10)
    numbered = [ln.split() for ln in out.lines()]
    assert_consecutive([int(n) for n, _ in numbered], start=1)
    times = [float(t) for _, t in numbered]
    assert times == sorted(times) and len(set(times)) == len(times), "a time came twice"


def _settled(pid: int) -> list[int]:
    """bash, the loop's subshell and cat (``_lasting``), once no fork of the loop is
    caught between its fork and its exec (a bash then, for a moment)."""
    def three() -> list[int] | None:
        found = _lasting(pid)
        return found if len(found) == 3 else None
    return wait_until(three, TIMEOUT, "bash, the loop's subshell and cat alone")


def _lasting(pid: int) -> list[int]:
    """The processes of the tree of ``pid`` but the loop's short-lived date and sleep."""
    def comm(p: int) -> str:
        try:
            with open(f"/proc/{p}/comm") as f:
                return f.read().strip()
        except (FileNotFoundError, ProcessLookupError):  # a date or sleep that just ended
            return ""

    return [p for p in tree(pid) if comm(p) in ("bash", "cat")]


PERL_DAEMON = r"""
open(my $log, '>>', $ARGV[0]) or die;
select($log); $| = 1;
for (my $i = 0; ; $i++) { print "$i\n"; select(undef, undef, undef, 0.1); }
"""


def test_perl_daemon(procs: Procs, images: Path, tmp_path: Path) -> None:
    """A perl one-liner logging a count to a file it opened for appending (its stdout is
    /dev/null): the count goes on in the log, none lost or repeated."""
    perl = need("perl", "perl-base")
    log = Output(tmp_path / "perl.log")
    proc = procs.start([perl, "-e", PERL_DAEMON, log.path], name="perl")
    log.wait_numbers(5, timeout=TIMEOUT)
    cycle(procs, proc, images, out=log)
    n = len(log.numbers())
    log.wait_numbers(n + 5, timeout=TIMEOUT)
    assert_consecutive(log.numbers())


def test_sleep_sleeps_its_time(procs: Procs, images: Path) -> None:
    """``sleep 3``, dumped during its sleep and restored: it sleeps on (a restored
    nanosleep does not end at once), and ends with status 0 once its 3 seconds passed."""
    t0 = time.monotonic()
    proc = procs.start(["sleep", "3"], name="sleep")
    wait_until(lambda: proc_state(proc.pid) == "S", TIMEOUT, "sleep to sleep")
    cycle(procs, proc, images)
    assert procs.wait_gone(proc.pid, timeout=TIMEOUT) == 0
    assert time.monotonic() - t0 >= 3, "sleep ended before its time"


def test_top_batch(procs: Procs, images: Path) -> None:
    """``top -b -d 0.2``: it prints screens on after the restore (it reads /proc
    through fds it keeps open), each complete."""
    top = need("top", "procps")
    proc = procs.start([top, "-b", "-d", "0.2", "-w", "200"], name="top")

    def screens() -> int:
        return sum(ln.startswith("top - ") for ln in proc.out.lines())

    wait_until(lambda: screens() >= 3, TIMEOUT, "top's screens")
    cycle(procs, proc, images)
    n = screens()
    wait_until(lambda: screens() >= n + 3, TIMEOUT, "top's screens after the restore")
    text = "\n".join(proc.out.lines())
    for screen in text.split("top - ")[1:-1]:
        assert re.search(r"^Tasks: +\d+ total", screen, re.M), screen
        assert re.search(r"^ +PID USER ", screen, re.M), screen


POOL = """
import multiprocessing as mp, os, sys, time
def square(x):
    return x * x, os.getpid()
if __name__ == "__main__":
    with mp.Pool(3) as pool:
        for i in range(10**9):
            res = pool.map(square, range(i, i + 6), chunksize=1)
            workers = sorted({p for _, p in res})
            print(i, sum(r for r, _ in res), *workers, flush=True)
            time.sleep(0.1)
"""


def test_multiprocessing_pool(procs: Procs, images: Path, tmp_path: Path) -> None:
    """A multiprocessing Pool of 3 workers blocked on its task queue between rounds (its
    locks are semaphores in /dev/shm, its queues pipes; threads in the parent feed and
    collect): the parent, its 3 threads and the workers come back, the rounds go on,
    each result right, done by the same workers."""
    (tmp_path / "pool.py").write_text(POOL)
    proc = procs.start([PYTHON, tmp_path / "pool.py"], name="pool")
    proc.out.wait_line(r"^3 ", timeout=TIMEOUT)
    workers = set(tree(proc.pid)[1:])
    assert len(workers) == 3
    cycle(procs, proc, images)
    n = len(proc.out.lines())
    proc.out.wait_line(rf"^{n + 5} ", timeout=TIMEOUT)
    rounds = [ln.split() for ln in proc.out.lines()]
    assert_consecutive([int(r[0]) for r in rounds])
    for r in rounds:
        i = int(r[0])
        assert int(r[1]) == sum(x * x for x in range(i, i + 6)), r
        assert {int(p) for p in r[2:]} <= workers, f"round {i} done by other workers: {r}"


def test_inotifywait_monitor(procs: Procs, images: Path, tmp_path: Path) -> None:
    """``inotifywait -m`` on a folder: files made after the restore are reported, after
    those made before, each once."""
    inotifywait = need("inotifywait", "inotify-tools")
    watched = tmp_path / "watched"
    watched.mkdir()
    proc = procs.start([inotifywait, "-m", "-e", "create", "--format", "%e %f", watched],
                       name="inotify")
    proc.out.wait_line("Watches established", timeout=TIMEOUT)
    (watched / "before").touch()
    proc.out.wait_line("^CREATE before$", timeout=TIMEOUT)
    cycle(procs, proc, images)
    (watched / "after").touch()
    proc.out.wait_line("^CREATE after$", timeout=TIMEOUT)
    events = [ln for ln in proc.out.lines() if ln.startswith("CREATE")]
    assert events == ["CREATE before", "CREATE after"]


def test_tail_f_pipeline(procs: Procs, images: Path, tmp_path: Path) -> None:
    """``tail -f LOG | cat -n | dd bs=64k of=OUT`` (bs=: each read written at once):
    lines appended to the log before the dump and after the restore all reach OUT,
    numbered, each once and in order (tail follows the log with inotify and poll,
    from the offset it had)."""
    log, out = tmp_path / "app.log", Output(tmp_path / "out")
    log.write_text("")
    proc = procs.start(["bash", "-c", f"tail -n +1 -f {log} | cat -n "
                        f"| dd bs=64k of={out.path} status=none"], name="tail")
    wait_until(lambda: len(tree(proc.pid)) == 4, TIMEOUT, "the pipeline")

    def append(first: int, count: int) -> None:
        with open(log, "a") as f:
            for i in range(first, first + count):
                f.write(f"line {i}\n")

    append(0, 10)
    wait_until(lambda: len(out.lines()) == 10, TIMEOUT, "the first lines in OUT")
    pids = tree(proc.pid)
    cycle(procs, proc, images, out=out)
    assert tree(proc.pid) == pids
    append(10, 10)  # ... tail reads on from where it was
    wait_until(lambda: len(out.lines()) >= 20, TIMEOUT, "the lines written after")
    lines = out.wait_quiet()
    assert [ln.split() for ln in lines] == [[str(i + 1), "line", str(i)] for i in range(20)]
    assert all(is_alive(p) for p in pids)
    assert os.path.getsize(out.path) == sum(len(ln) + 1 for ln in lines)
