"""gunicorn, a real server whose workers keep their heartbeat in a temporary file made
with mkstemp + unlink: its master and 3 sync workers are dumped as one tree and
restored, and go on answering on loopback, each worker with its own count."""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Procs,
    ckpt_ok,
    free_port,
    restore_detached,
    scaled,
    wait_until,
)


def _gunicorn_version() -> tuple[int, ...] | None:
    res = subprocess.run([PYTHON, "-c", "import gunicorn; print(gunicorn.__version__)"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return None
    return tuple(int(x) for x in re.findall(r"\d+", res.stdout)[:2])


def _get(port: int) -> tuple[int, int] | None:
    """(worker pid, its hit count) from one request, or None when nobody answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=scaled(5)) as r:
            body = r.read().decode()
    except OSError:
        return None
    m = re.fullmatch(r"pid=(\d+) hits=(\d+)\n", body)
    assert m is not None, body
    return int(m[1]), int(m[2])


def _every_worker_answers(port: int, workers: set[int]) -> dict[int, int]:
    """Requests until each worker answered at least once; worker -> its last count."""
    seen: dict[int, int] = {}

    def all_seen() -> bool:
        got = _get(port)
        if got is not None:
            assert got[0] in workers, f"answered by {got[0]}, not one of {workers}"
            assert got[1] > seen.get(got[0], 0), "a worker's count went back"
            seen[got[0]] = got[1]
        return set(seen) == workers

    wait_until(all_seen, 30, "every worker to answer")
    return seen


def _heartbeat(pid: int, tmpdir: Path) -> tuple[int, float]:
    """(fd, mtime) of worker ``pid``'s heartbeat file (deleted, in ``tmpdir``)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
        if link.startswith(f"{tmpdir}/wgunicorn-") and link.endswith(" (deleted)"):
            return int(fd), os.stat(f"/proc/{pid}/fd/{fd}").st_mtime
    raise AssertionError(f"worker {pid} has no heartbeat file in {tmpdir}")


def test_gunicorn_master_and_workers(procs: Procs, images: Path, tmp_path: Path) -> None:
    version = _gunicorn_version()
    if version is None:
        pytest.skip("gunicorn is not installed in the venv (scripts/bootstrap.sh installs "
                    "it with pip; it could not here)")
    port = free_port()
    wtmp = tmp_path / "wtmp"
    wtmp.mkdir()
    # The master kills a worker whose heartbeat (touched after each request, and every
    # timeout/2 s when idle) is older than the timeout: the dump and the restore, between
    # the last requests and the first heartbeat after, take well under 10 s even on a
    # loaded machine; a timeout of 4 s killed restored workers there.
    argv = [PYTHON, "-m", "gunicorn", "-w", "3", "-b", f"127.0.0.1:{port}", "--chdir",
            PROGS, "--worker-tmp-dir", wtmp, "--timeout", "10"]
    if version >= (24, 0):
        argv += ["--control-socket", tmp_path / "gunicorn.ctl"]
    master = procs.start([*argv, "wsgi_app:application"])

    def three_workers() -> set[int] | None:
        with open(f"/proc/{master.pid}/task/{master.pid}/children") as f:
            kids = {int(x) for x in f.read().split()}
        return kids if len(kids) == 3 else None

    workers = wait_until(three_workers, 30, "gunicorn's 3 workers")
    before = _every_worker_answers(port, workers)
    beats = {w: _heartbeat(w, wtmp) for w in workers}

    ckpt_ok("dump", "-t", master.pid, "-D", images)
    assert procs.wait_gone(master) == -9
    for w in workers:
        procs.wait_gone(w)
    assert _get(port) is None, "something still answers on the port after the dump"

    restored = restore_detached(procs, master.pid, master.out, images)
    assert three_workers() == workers, "the workers are not the restored ones"
    after = _every_worker_answers(port, workers)
    assert all(after[w] > before[w] for w in workers), (before, after)
    for w in workers:
        fd, mtime = _heartbeat(w, wtmp)
        assert fd == beats[w][0]
        # The worker goes on touching its heartbeat (the master would kill it otherwise).
        wait_until(lambda w=w, m=mtime: _heartbeat(w, wtmp)[1] != m, 20,
                   f"worker {w} to update its heartbeat")
    assert three_workers() == workers, "the master replaced workers after the restore"
    assert os.listdir(wtmp) == []
    assert restored.pid == master.pid
