"""State found by an audit, field by field, of what the kernel keeps for a process
(criu's images, prctl's getters, /proc/PID/status and stat): cases of
tests/zdtm/audit.c in the frame of test_zdtm_style.py (set up, dump, restore, SIGTERM,
the program checks itself)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from ckpt_helpers import Builder, ckpt_fails, ckpt_ok, is_alive, proc_status, run_ckpt
from test_zdtm_style import PT, VERDICT, Case, CaseProcs, run_case
from test_zdtm_style import C as _C
from test_zdtm_style import R as _R


def C(id: str, mode: str = "", **kw: object) -> Case:  # noqa: N802
    return _C(id, "audit", mode, **kw)  # type: ignore[arg-type]


CASES = [
    C("syscall-dispatch", zdtm="(PR_SET_SYSCALL_USER_DISPATCH: Wine)", libs=PT),
    C("syscall-dispatch-blocked", zdtm="(a thread running with its selector on BLOCK)",
      libs=PT),
    _R(C("syscall-dispatch-blocked", zdtm="(the same, -R: ckpt's calls are not dispatched)",
         libs=PT)),
    C("thread-own-fs", zdtm="(a thread's unshare(CLONE_FS): its own cwd, umask)", libs=PT,
      refuse=r"thread \d+ of process \d+ has its own working directory, root and "
      r"umask \(unshare\(CLONE_FS\)\)"),
    C("thread-own-files", zdtm="(a thread's unshare(CLONE_FILES): its own fd table)",
      libs=PT, refuse=r"thread \d+ of process \d+ has its own fd table "
      r"\(unshare\(CLONE_FILES\)\)"),
    C("thread-own-ns", zdtm="(a thread's unshare(CLONE_NEWUTS))", libs=PT,
      refuse=r"thread \d+ of process \d+ is in uts namespace"),
    C("thread-personality", zdtm="(personality() in one thread)", libs=PT,
      refuse=r"thread \d+ of process \d+ has personality 0x40000, not its process's \(0x0\)"),
    C("gdt-tls", zdtm="(set_thread_area: a GDT TLS entry, %gs on it; criu's thread_info.tls)"),
    C("altstack-autodisarm", zdtm="sigaltstack (SS_AUTODISARM)", libs=PT),
    C("pty-ldisc", zdtm="(a pty with the N_NULL line discipline, TIOCSETD)",
      refuse=r"fd \d+: the slave of /dev/pts/\d+ has line discipline 27 \(TIOCSETD\)"),
    C("seccomp-notify", zdtm="(a seccomp filter with SECCOMP_RET_USER_NOTIF)",
      refuse=r"thread \d+ of process \d+: a seccomp filter hands syscalls to a supervisor"),
    C("perf-fd", zdtm="(perf_event_open)", refuse=r"fd 3: \[perf_event\] .* cannot dump"),
    C("bpf-map-fd", zdtm="(a BPF map)", refuse=r"fd 3: bpf-map .* cannot dump"),
    C("fsopen-fd", zdtm="(fsopen: a mount being made)", refuse=r"fd 3: \[fscontext\] .* "
      "cannot dump"),
    C("thp-except-advised", zdtm="thp_disable (PR_THP_DISABLE_EXCEPT_ADVISED)"),
    C("autogroup", "autogroup-child", zdtm="(the nice value of a session's autogroup, "
      "/proc/PID/autogroup)"),
    C("sock-opts-new", zdtm="sock_opts00 (SO_RCVPRIORITY, SO_PASSRIGHTS)"),
    C("epoll-params", zdtm="(EPIOCSPARAMS: epoll busy polling)", libs=PT),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_audit(case: Case, build: Builder, tmp_path: Path) -> None:
    exe = build(case.prog, where=Path(__file__).parent / "zdtm", extra=case.libs)
    run_case(case, exe, tmp_path)


def test_dispatch_back_after_a_killed_dump(build: Builder, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A dump killed while a thread's syscall user dispatch is off (so that ckpt's
    calls run in it): the next ckpt puts it back, and the thread's next syscall is
    dispatched as before."""
    exe = build("audit", where=Path(__file__).parent / "zdtm", extra=PT)
    monkeypatch.setenv("CKPT_NOTES_DIR", str(tmp_path / "notes"))
    procs = CaseProcs(tmp_path)
    try:
        target = procs.start([exe, "syscall-dispatch-blocked"], cwd=tmp_path)
        assert target.out.wait_line(r"^(ready|SETUP: .*)$", timeout=30) == "ready"
        monkeypatch.setenv("CKPT_FAULT", "dump.task.core:kill")
        res = run_ckpt("dump", "-t", target.pid, "-D", tmp_path / "killed")
        monkeypatch.delenv("CKPT_FAULT")
        assert res.returncode == -signal.SIGKILL, res.stderr
        assert is_alive(target.pid)
        ckpt_ok("dump", "-R", "-t", target.pid, "-D", tmp_path / "again")  # recovers first
        assert proc_status(target.pid)["TracerPid"] == "0"
        start = len(target.out.lines())
        os.kill(target.pid, signal.SIGTERM)
        assert target.out.wait_line(VERDICT, timeout=30, start=start) == "PASS"
    finally:
        procs.cleanup()


def test_compat_process_refused(tmp_path: Path) -> None:
    """A 32-bit (i386) process: refused at dump naming it, left running untouched (it
    was "no syscall instruction found", and a 64-bit program switched to 32-bit code
    would have had ckpt's calls run as 32-bit code)."""
    exe = tmp_path / "compat32"
    src = Path(__file__).parent / "progs" / "compat32.c"
    built = subprocess.run(["gcc", "-O2", "-m32", "-nostdlib", "-static", "-o", str(exe),
                            str(src)], capture_output=True, text=True)
    if built.returncode:
        pytest.skip(f"gcc cannot build 32-bit code here: {built.stderr.strip()[:200]}")
    procs = CaseProcs(tmp_path)
    try:
        target = procs.start([exe], cwd=tmp_path)
        assert target.out.wait_line(r"^ready$", timeout=30) == "ready"
        err = ckpt_fails("dump", "-t", target.pid, "-D", tmp_path / "images")
        assert f"process {target.pid} runs 32-bit code (compat mode" in err, err
        assert is_alive(target.pid) and proc_status(target.pid)["TracerPid"] == "0"
    finally:
        procs.cleanup()
