"""What a restore by this ckpt could not give back is refused at dump, before anything
is killed, naming the process and the state; the process runs on unharmed. Each case
runs ckpt with less than the process has: fewer capabilities, a lower hard limit, a
higher oom_score_adj."""

from __future__ import annotations

import os
import resource
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ckpt_helpers import (
    PYTHON,
    Builder,
    Proc,
    Procs,
    assert_consecutive,
    assert_tags_carry_on,
    ckpt_cmd,
    is_alive,
    proc_status,
    scaled,
    wait_until,
)
from test_task_states import sched_of_threads, start_knobs


def refused_dump(target: Proc, images: Path, prefix: list[str] = (),  # type: ignore[assignment]
                 preexec: Callable[[], None] | None = None) -> str:
    """Run ``PREFIX ckpt dump`` on ``target`` (``preexec`` in the ckpt process first);
    insist it fails cleanly, leaves no inventory and the target untraced, its mask as it
    was. Returns stderr."""
    blocked = proc_status(target.pid)["SigBlk"]
    res = subprocess.run([*prefix, *ckpt_cmd(), "dump", "-t", str(target.pid), "-D",
                          str(images)], capture_output=True, text=True,
                         timeout=scaled(60), stdin=subprocess.DEVNULL, preexec_fn=preexec)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert not (images / "inventory.json").exists()
    assert is_alive(target.pid)
    status = proc_status(target.pid)
    assert status["TracerPid"] == "0" and status["SigBlk"] == blocked
    return res.stderr


def test_hard_limit_above_ckpts_own(build: Builder, procs: Procs, images: Path) -> None:
    target = procs.start([build("counter")])
    target.out.wait_numbers(2)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    err = refused_dump(target, images, preexec=lower)
    assert f"process {target.pid}" in err and "nofile" in err and str(hard) in err, err
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 2))


def test_oom_score_adj_below_ckpts_own(build: Builder, procs: Procs, images: Path) -> None:
    target = procs.start([build("counter")])
    target.out.wait_numbers(2)
    with open(f"/proc/{target.pid}/oom_score_adj", "w") as f:
        f.write("500")

    def raise_own() -> None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("800")

    err = refused_dump(target, images, preexec=raise_own)
    assert f"process {target.pid}" in err and "oom_score_adj 500" in err, err
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 2))


NO_SYS_NICE = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-all"]


def test_realtime_thread_without_cap_sys_nice(build: Builder, procs: Procs,
                                              images: Path) -> None:
    """Threads that set real-time policies, then dropped CAP_SYS_NICE: ckpt without it
    could not set those again (their RLIMIT_RTPRIO is 0): refused, naming the thread."""
    target = start_knobs(build, procs, "drop-nice")[0]
    target.out.wait_line(r"^2 thp=")
    assert not int(proc_status(target.pid)["CapBnd"], 16) >> 23 & 1
    sched = sched_of_threads(target.pid)
    err = refused_dump(target, images, ["setpriv", "--bounding-set=-sys_nice",
                                        "--inh-caps=-all"])
    assert f"of process {target.pid}" in err and "SCHED_FIFO priority 10" in err, err
    assert "RLIMIT_RTPRIO (0)" in err and "CAP_SYS_NICE" in err, err
    assert sched_of_threads(target.pid) == sched
    n = len(target.out.first_field_numbers())
    wait_until(lambda: len(target.out.first_field_numbers()) >= n + 2, 10, "ticks")
    assert_consecutive(target.out.first_field_numbers())


def test_strict_seccomp_without_cap_sys_admin(build: Builder, procs: Procs,
                                              images: Path) -> None:
    """ckpt cannot suspend seccomp without CAP_SYS_ADMIN: a strict-mode process, which
    any injected syscall would kill, is refused before ckpt injects anything."""
    target = procs.start([build("seccomp_modes"), "strict"])
    target.out.wait_numbers(2)
    err = refused_dump(target, images, ["setpriv", "--bounding-set=-sys_admin",
                                        "--inh-caps=-all"])
    assert f"process {target.pid}" in err and "strict seccomp" in err, err
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 2))


def test_filter_seccomp_threads_without_cap_sys_admin(build: Builder, procs: Procs,
                                                      images: Path) -> None:
    target = procs.start([build("seccomp_modes"), "tsync"])
    target.out.wait_line(r"^2 main$")
    err = refused_dump(target, images, ["setpriv", "--bounding-set=-sys_admin",
                                        "--inh-caps=-all"])
    assert "seccomp filters" in err, err
    assert_tags_carry_on(target.out, ("main", "thread"))
    assert os.path.exists(f"/proc/{target.pid}")


IOPERM_TARGET = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
if libc.ioperm(0x80, 1, 1) != 0:
    print("ioperm:", os.strerror(ctypes.get_errno()), flush=True)
else:
    print("ready", flush=True)
for i in range(10 ** 6):
    print(i, flush=True)
    time.sleep(0.05)
"""


def test_ioperm_refused(procs: Procs, images: Path) -> None:
    """A thread given I/O ports (ioperm: an X server, a hardware tool) holds a bitmap the
    restore does not give back: refused at dump, naming the thread; it runs on."""
    target = procs.start([PYTHON, "-c", IOPERM_TARGET])
    first = target.out.wait_line(r"^(ready|ioperm: .*)$")
    if first != "ready":
        pytest.skip(f"this kernel gives no I/O ports ({first}; CONFIG_X86_IOPL_IOPERM unset?)")
    target.out.wait_numbers(2)
    err = refused_dump(target, images)
    assert f"thread {target.pid} has I/O port permissions" in err, err
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 2))
