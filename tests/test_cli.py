"""The ckpt command's options: -R, -s, -o/-v4, --pidfile, check, bad options with a target.

Malformed options that need no target are tested in tests/unit/test_cli_usage.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from ckpt_helpers import (
    PYTHON,
    Builder,
    Procs,
    assert_consecutive,
    assert_silent,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    left_behind,
    my_children,
    proc_state,
    proc_status,
    restore_detached,
    run_ckpt,
    wait_until,
)


def _maps(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


# ------------------------------------------------------------------ check


def test_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "run" / "check.json"
    monkeypatch.setenv("CKPT_CHECK_CACHE", str(cache))  # none yet: every probe runs
    monkeypatch.setenv("CKPT_NETLOCK_DIR", str(tmp_path / "notes"))  # no other run's locks
    res = run_ckpt("check", timeout=30)
    assert res.returncode == 0, f"stdout: {res.stdout}\nstderr: {res.stderr}"
    assert "Looks good." in res.stdout.splitlines()
    # the network lock that works here (the setup installs both)
    assert re.search(r"^network lock: (nftables|iptables)\b", res.stdout, re.M), res.stdout
    # kept for the next check of this boot: root's alone
    assert cache.stat().st_mode & 0o777 == 0o600
    saved = json.loads(cache.read_text())
    assert saved["lines"] + ["Looks good."] == res.stdout.splitlines()
    assert saved["key"]["boot"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_check_prints_what_the_last_one_found_this_boot(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A second check prints the first one's lines without probing (a line only the
    file holds shows it); a file of another boot, or that others may write, is
    ignored: every probe runs again."""
    cache = tmp_path / "check.json"
    monkeypatch.setenv("CKPT_CHECK_CACHE", str(cache))
    monkeypatch.setenv("CKPT_NETLOCK_DIR", str(tmp_path / "notes"))  # no other run's locks
    first = ckpt_ok("check", timeout=30).stdout
    saved = json.loads(cache.read_text())
    saved["lines"].insert(0, "note: only in the file")
    cache.write_text(json.dumps(saved))
    assert ckpt_ok("check").stdout == "note: only in the file\n" + first
    cache.chmod(0o620)
    assert ckpt_ok("check", timeout=30).stdout == first
    cache.write_text(json.dumps(saved))
    cache.chmod(0o600)
    assert ckpt_ok("check").stdout.startswith("note: only in the file")
    saved["key"]["boot"] = "another boot"
    cache.write_text(json.dumps(saved))
    assert ckpt_ok("check", timeout=30).stdout == first
    assert json.loads(cache.read_text())["key"]["boot"] != "another boot"


# ------------------------------------------------------------ malformed options, with a target


def _assert_usage_error(args: list[str | os.PathLike[str]], quoted: str) -> str:
    res = run_ckpt(*args)
    assert res.returncode != 0, f"ckpt {args} succeeded:\n{res.stdout}"
    assert "Traceback" not in res.stderr, res.stderr
    assert quoted in res.stderr, f"{quoted!r} not in: {res.stderr}"
    return res.stderr


def test_leave_running_and_stopped_exclusive(build: Builder, procs: Procs,
                                             images: Path) -> None:
    """-R with -s is refused before the target is touched."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    err = _assert_usage_error(["dump", "-t", str(target.pid), "-D", images, "-R", "-s"], "-R")
    assert "-s" in err, err
    assert not (images / "inventory.json").exists()
    assert proc_state(target.pid) in ("R", "S")
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 3))


def test_dump_of_init_is_one_line(images: Path) -> None:
    """PID 1, whose namespace files ckpt may not read (here EACCES), is refused in one
    line: ckpt's ancestor, never a traceback."""
    res = run_ckpt("dump", "-t", 1, "-D", images)
    assert res.returncode == 1, res
    assert res.stderr.strip().splitlines() == [
        "ckpt dump: error: process 1 is an ancestor of ckpt; ckpt cannot dump itself"], res.stderr


@pytest.mark.parametrize(("arg", "quoted"), [
    ("garbage", "garbage"),
    ("fd[987]:tmp/x", "987"),
    ("fd[x]:tmp/x", "fd[x]:tmp/x"),
], ids=["garbage", "fd-not-open", "fd-not-a-number"])
def test_restore_bad_inherit_fd(build: Builder, procs: Procs, images: Path, arg: str,
                                quoted: str) -> None:
    """A malformed --inherit-fd is refused, and nothing is restored."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    dump_and_check_dead(procs, target, images)
    _assert_usage_error(["restore", "-D", images, "-d", "--inherit-fd", arg], quoted)
    assert not left_behind(target.pid), "restored despite a malformed --inherit-fd"
    assert not my_children() - procs.children_before


# ------------------------------------------------------------------ dump -R and -s


def test_leave_running_then_restore(build: Builder, procs: Procs, images: Path) -> None:
    """-R: the process runs on untraced; later the images restore it at the dump point."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(5)
    blk = proc_status(target.pid)["SigBlk"]
    maps = _maps(target.pid)
    n_before = len(target.out.numbers())
    ckpt_ok("dump", "-t", target.pid, "-D", images, "-R")
    n_after = len(target.out.numbers())
    assert (images / "inventory.json").is_file()
    assert is_alive(target.pid) and target.popen is not None and target.popen.poll() is None
    assert_consecutive(target.out.wait_numbers(n_after + 5))
    st = proc_status(target.pid)
    assert proc_state(target.pid) in ("R", "S")
    assert st["TracerPid"] == "0" and st["SigBlk"] == blk
    assert _maps(target.pid) == maps, "the dump left a mapping behind"

    signal.pidfd_send_signal(target.pidfd, signal.SIGKILL)
    procs.wait_gone(target)
    final = len(target.out.numbers())
    # Blank out every digit (same size: the file must not shrink under the saved offset);
    # what the restored process writes from its saved offset is then told apart.
    path = target.out.path
    path.write_bytes(re.sub(rb"\d", b"x", path.read_bytes()))
    restore_detached(procs, target.pid, target.out, images)

    def restored_past_final() -> list[int] | None:
        nums = target.out.numbers()
        return nums if nums and nums[-1] >= final + 2 else None

    nums = wait_until(restored_past_final, 10, "the restored process to count on")
    first = nums[0]
    assert n_before <= first <= n_after, (
        f"restored process resumed at {first}, the dump was taken between {n_before} "
        f"and {n_after}")
    lines = target.out.lines()
    assert all(set(ln) == {"x"} for ln in lines[:first]), lines[:first + 2]
    assert_consecutive([int(ln) for ln in lines[first:]], start=first)


def test_leave_stopped_then_continue(build: Builder, procs: Procs, images: Path) -> None:
    """-s: the process is left stopped (T), untraced; SIGCONT lets it count on."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    blk = proc_status(target.pid)["SigBlk"]
    ckpt_ok("dump", "-t", target.pid, "-D", images, "-s")
    assert (images / "inventory.json").is_file()
    assert proc_state(target.pid) == "T", f"state {proc_state(target.pid)}, expected T"
    st = proc_status(target.pid)
    assert st["TracerPid"] == "0", f"still traced by {st['TracerPid']}"
    assert st["SigBlk"] == blk
    frozen = assert_silent(target.pid, target.out)
    assert proc_state(target.pid) == "T"
    os.kill(target.pid, signal.SIGCONT)
    nums = target.out.wait_numbers(len([ln for ln in frozen if ln.isdigit()]) + 3)
    assert_consecutive(nums)
    assert proc_state(target.pid) in ("R", "S")


# ------------------------------------------------------------------ -o LOG -v4


def test_log_file_in_images_dir(build: Builder, procs: Procs, images: Path,
                                tmp_path: Path) -> None:
    """-o LOG -v4 logs each step into DIR/LOG (not stderr), for dump and for restore."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    res = ckpt_ok("dump", "-t", target.pid, "-D", images, "-o", "dump.log", "-v4")
    assert procs.wait_gone(target) == -signal.SIGKILL
    assert not res.stderr.strip(), f"log lines went to stderr: {res.stderr}"
    log = dump_log = (images / "dump.log").read_text()
    assert len(log.splitlines()) >= 4, log
    for step in (rf"dumping process {target.pid}\b", r"froze", r"images written",
                 rf"dump of {target.pid} done"):
        assert re.search(step, log), f"no /{step}/ line in dump.log:\n{log}"
    assert not (tmp_path / "dump.log").exists() and not Path("dump.log").exists()

    res = ckpt_ok("restore", "-D", images, "-d", "-o", "restore.log", "-v4")
    procs.adopt(target.pid, target.out)
    assert not res.stderr.strip(), f"log lines went to stderr: {res.stderr}"
    log = (images / "restore.log").read_text()
    for step in (r"restoring 1 process", rf"process {target.pid}: memory restored",
                 r"restored in"):
        assert re.search(step, log), f"no /{step}/ line in restore.log:\n{log}"
    assert (images / "dump.log").read_text() == dump_log, "the restore touched dump.log"
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 3))


LOG_LINE = re.compile(r"^\((\d{2,})\.(\d{6})\) (Error \(|Warn  \(|ckpt\.)")
SIGNAL_OWNER = r"""
import fcntl, os, time
r, w = os.pipe()
fcntl.fcntl(r, fcntl.F_SETOWN, os.getppid())  # its SIGIO would go outside the tree
print("ready", flush=True)
n = 0
while True:
    print(n, flush=True)
    n += 1
    time.sleep(0.05)
"""


def _log_lines(log: str) -> list[re.Match[str]]:
    """Every line of a log whose line starts with criu's timestamp, the others (a
    traceback's) left out; the timestamps never go back."""
    found = [m for m in map(LOG_LINE.match, log.splitlines()) if m]
    assert found, log
    times = [int(m[1]) * 1_000_000 + int(m[2]) for m in found]
    assert times == sorted(times), log
    return found


def test_log_holds_a_refused_dump_and_its_exception(procs: Procs, images: Path) -> None:
    """A refused dump's log ends with the error the user saw, at the place it was
    raised (criu's "Error (FILE:LINE): "), and at -v4 with the exception behind it; every
    line starts with criu's (SS.uuuuuu) timestamp. Without -v4 no traceback."""
    target = procs.start([PYTHON, "-c", SIGNAL_OWNER])
    target.out.wait_numbers(3)
    for verbosity, traceback in (("-v4", True), ("-v2", False)):
        res = run_ckpt("dump", "-t", target.pid, "-D", images, "-o", "dump.log", verbosity)
        assert res.returncode == 1, res.stderr
        said = res.stderr.strip()
        assert said.startswith("ckpt dump: error: ") and "outside the dumped tree" in said
        log = (images / "dump.log").read_text()
        _log_lines(log)
        errors = [ln for ln in log.splitlines() if " Error (" in ln]
        assert errors and errors[0].endswith(f"dump failed: {said[len('ckpt dump: error: '):]}"
                                             ), log
        assert re.search(r" Error \(ckpt/resources/files\.py:\d+\): dump failed", errors[0])
        assert ("Traceback (most recent call last)" in log) == traceback, log
        if traceback:
            assert "froze 1 processes" in log and "UnsupportedError" in log, log
            assert re.search(r"ckpt: the exception behind it:\nTraceback", log), log
        else:
            assert log.splitlines()[-1] == errors[0], log
        assert is_alive(target.pid)
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 3))


def test_log_holds_a_failed_restore(build: Builder, procs: Procs, images: Path) -> None:
    """A restore that fails (the PID is taken: the process runs on after dump -R) says
    why in its log, as on stderr, with the exception at -v4."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    ckpt_ok("dump", "-t", target.pid, "-D", images, "-R", "-o", "dump.log", "-v4")
    _log_lines((images / "dump.log").read_text())
    res = run_ckpt("restore", "-D", images, "-d", "-o", "restore.log", "-v4")
    assert res.returncode == 1, res.stderr
    said = res.stderr.strip()
    assert said.startswith("ckpt restore: error: ") and str(target.pid) in said, said
    log = (images / "restore.log").read_text()
    _log_lines(log)
    assert f"restore failed: {said[len('ckpt restore: error: '):]}" in log, log
    assert "Traceback (most recent call last)" in log and "RestoreError" in log, log
    assert is_alive(target.pid)


# ------------------------------------------------------------------ --pidfile


@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "absolute"])
def test_pidfile(build: Builder, procs: Procs, images: Path, tmp_path: Path,
                 absolute: bool) -> None:
    """--pidfile F: the restored PID in F, relative to DIR unless absolute."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    dump_and_check_dead(procs, target, images)
    name = f"ckpt-test-{os.getpid()}-{tmp_path.name}.pid"
    arg = str(tmp_path / name) if absolute else name
    restore_detached(procs, target.pid, target.out, images, "--pidfile", arg)
    where = tmp_path / name if absolute else images / name
    assert where.read_text().strip() == str(target.pid)
    assert not Path(name).exists(), "the pidfile was written relative to the cwd"
    if absolute:
        assert not (images / name).exists()
