"""pytest set-up for ckpt: two tiers, a child subreaper, compiled test programs, tracked
processes.

tests/unit/ holds fast tests of pure logic: no root, no target processes; they always
run, and run first. Every other test works on real processes with ptrace and needs
root; without root each is skipped, saying so.

pytest is made a child subreaper so that processes restored with ``-d`` (whose
parent, the ckpt command, exits) are re-parented to it and can be reaped here,
instead of lingering as zombies of PID 1, which reaps lazily on this machine.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from ckpt_helpers import BUILD, PROGS, UNIT, Builder, Procs
from terminal import Terminal

PR_SET_CHILD_SUBREAPER = 36
CFLAGS = ["-O2", "-Wall", "-Wextra"]


def _set_child_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def _notes_dir() -> str:
    return f"/run/ckpt/test-{os.getpid()}/dumps"


def _default_signal_actions() -> None:
    """A suite started with SIGHUP or SIGINT ignored (nohup, ``&`` in a script) passes
    that on to every test program, whose restored actions would then be checked
    against it: the tests start from the default actions an interactive shell gives."""
    for sig in (signal.SIGHUP, signal.SIGQUIT):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure(config: pytest.Config) -> None:
    """Become a child subreaper before any test starts a process. The ckpt commands of
    this run keep their notes of running dumps (ckpt/recovery.py) apart from other
    runs': a run's ckpt would otherwise take back what another run's test left on
    purpose, tracing its process meanwhile ("already traced by")."""
    _set_child_subreaper()
    _default_signal_actions()
    if os.geteuid() == 0 and "CKPT_NOTES_DIR" not in os.environ:
        os.environ["CKPT_NOTES_DIR"] = _notes_dir()


def pytest_unconfigure(config: pytest.Config) -> None:
    if os.environ.get("CKPT_NOTES_DIR") == _notes_dir():
        shutil.rmtree(os.path.dirname(_notes_dir()), ignore_errors=True)


def is_unit(item: pytest.Item) -> bool:
    return item.path.is_relative_to(UNIT)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Unit tests first (seconds); the others need root, or are skipped saying why."""
    items.sort(key=lambda item: not is_unit(item))  # stable: each tier keeps its order
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root (ptrace, clone3 with set_tid, "
                                       "PR_SET_MM_MAP); without root only tests/unit runs")
        for item in items:
            if not is_unit(item):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def build() -> Builder:
    """``build(name, static=False, where=PROGS, extra=())``: compile WHERE/NAME.c with
    gcc's ``extra`` flags (cached in tests/.build/, keyed by the source, the headers
    beside it and the flags)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    BUILD.mkdir(exist_ok=True)

    def compile_prog(name: str, static: bool = False, where: Path = PROGS,
                     extra: Sequence[str] = ()) -> Path:
        src = where / f"{name}.c"
        flags = CFLAGS + (["-static"] if static else [])
        headers = b"".join(h.read_bytes() for h in sorted(where.glob("*.h")))
        key = hashlib.sha256(src.read_bytes() + headers + " ".join([*flags, *extra]).encode()
                             ).hexdigest()[:12]
        out = BUILD / f"{name}{'-static' if static else ''}-{key}"
        if out.exists():
            return out
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        res = subprocess.run(["gcc", *flags, "-o", str(tmp), str(src), *extra],
                             capture_output=True, text=True)
        if res.returncode != 0:
            if static and compile_prog(name).exists():
                pytest.skip(f"cannot link statically (static libc missing?): {res.stderr}")
            pytest.fail(f"gcc failed on {src}:\n{res.stderr}")
        tmp.rename(out)
        return out

    return compile_prog


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Start targets; every process started or restored is killed and reaped at teardown."""
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """The image folder of a test (not created: ckpt dump creates it)."""
    return tmp_path / "images"


def _tmpfs_folder(splice: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ckpt-test-", dir="/dev/shm"))
    was = os.environ.get("CKPT_SPLICE_PAGES")
    os.environ["CKPT_SPLICE_PAGES"] = splice
    try:
        yield path
    finally:
        if was is None:
            del os.environ["CKPT_SPLICE_PAGES"]
        else:
            os.environ["CKPT_SPLICE_PAGES"] = was
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shm_path() -> Iterator[Path]:
    """A folder of the test's own on tmpfs (/dev/shm), removed at teardown: a big
    process's pages go into images there by the splice of pages/splice.py, which the
    test's ckpt commands are told to use (CKPT_SPLICE_PAGES=1; off by default)."""
    yield from _tmpfs_folder("1")


@pytest.fixture
def tmpfs_path() -> Iterator[Path]:
    """A folder of the test's own on tmpfs, removed at teardown, whose big processes'
    pages ckpt copies, as by default (CKPT_SPLICE_PAGES=0 for the test's commands)."""
    yield from _tmpfs_folder("0")


@pytest.fixture
def term(tmp_path: Path) -> Iterator[Terminal]:
    """An interactive bash on a new pty (terminal.py), ckpt on its PATH."""
    t = Terminal.with_ckpt(tmp_path)
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def own_notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notes a killed ckpt leaves (recovery.py) in a folder of the test's own: another
    helper's ckpt running meanwhile recovers every note it finds, and would undo them
    while the test looks."""
    monkeypatch.setenv("CKPT_NOTES_DIR", str(tmp_path / "ckpt-notes"))
