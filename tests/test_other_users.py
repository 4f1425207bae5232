"""Processes running as another user than ckpt's, on a machine where root lacks
CAP_SYS_RESOURCE (prlimit64 on them fails with EPERM): their limits are read from
/proc/PID/limits and set while the new process is still root's; nginx with its workers
as nobody answers HTTP after a restore."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import tempfile
import urllib.request
from pathlib import Path

import pytest

from ckpt_helpers import (
    Builder,
    Procs,
    assert_tags_carry_on,
    ckpt_ok,
    dump_and_check_dead,
    free_port,
    proc_status,
    restore_detached,
    scaled,
    wait_until,
)


def limits(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        return f.read()



def test_child_as_nobody_with_its_own_limits(build: Builder, procs: Procs,
                                             images: Path) -> None:
    target = procs.start([build("otheruser")])
    child = int(target.out.wait_line(r"^CHILD ").split()[1])
    target.out.wait_line(r"^2 child$")
    assert proc_status(child)["Uid"].split() == ["65534"] * 4
    child_limits = limits(child)
    assert "Max open files            512                  1024" in child_limits
    dump_and_check_dead(procs, target, images)
    procs.wait_gone(child)
    count = len(target.out.lines())
    restore_detached(procs, target.pid, target.out, images)
    assert proc_status(child)["Uid"].split() == ["65534"] * 4
    assert proc_status(child)["Groups"] == ""
    assert limits(child) == child_limits
    target.out.wait_line(r" child$", start=count)
    assert_tags_carry_on(target.out, ("parent", "child"), 2)


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def get(port: int, path: str = "/") -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                timeout=scaled(5)) as resp:
        return bytes(resp.read())


@pytest.mark.skipif(not os.path.exists(NGINX),
                    reason="nginx is not installed (scripts/bootstrap.sh installs "
                           "nginx-light with apt-get when it can)")
def test_stock_nginx_workers_as_nobody(procs: Procs, images: Path, tmp_path: Path) -> None:
    """Debian's nginx, master as root and two workers as nobody (daemon off, so its
    master is the tree's root), serves a page after dump and restore."""
    root = Path(tempfile.mkdtemp(prefix="ckpt-nginx-www-"))  # nobody must reach it
    os.chmod(root, 0o755)
    try:
        _nginx_cycle(procs, images, tmp_path, root)
    finally:
        shutil.rmtree(root)


def _nginx_cycle(procs: Procs, images: Path, tmp_path: Path, root: Path) -> None:
    (root / "index.html").write_text("hello from nginx\n")
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
daemon off;
user nobody nogroup;
worker_processes 2;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
""")
    master = procs.start([NGINX, "-c", conf, "-e", tmp_path / "error.log"], name="nginx")

    def workers() -> list[int]:
        with open(f"/proc/{master.pid}/task/{master.pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
        return kids if len(kids) == 2 else []

    kids = wait_until(workers, 10, "two nginx workers")
    wait_until(lambda: _answers(port), 10, "nginx answering")
    assert get(port) == b"hello from nginx\n"
    # One worker may answer while the other, just forked, has not dropped root yet.
    wait_until(lambda: all(proc_status(k)["Uid"].split()[1] == "65534" for k in kids), 10,
               "both workers running as nobody")
    ckpt_ok("dump", "-t", master.pid, "-D", images)
    assert procs.wait_gone(master) == -signal.SIGKILL
    for k in kids:
        procs.wait_gone(k)
    assert not _answers(port)
    restore_detached(procs, master.pid, master.out, images)
    assert sorted(workers()) == sorted(kids)
    assert all(proc_status(k)["Uid"].split()[1] == "65534" for k in kids)
    for _ in range(5):
        assert get(port) == b"hello from nginx\n"
    (root / "new.html").write_text("written after the restore\n")
    assert get(port, "/new.html") == b"written after the restore\n"
    # It still obeys its master: a graceful quit ends the whole tree.
    os.kill(master.pid, signal.SIGQUIT)
    procs.wait_gone(master, timeout=20)
    wait_until(lambda: not _answers(port), 10, "nginx gone")


def _answers(port: int) -> bool:
    try:
        get(port)
        return True
    except OSError:
        return False



def test_error_names_the_failing_process_and_its_user(build: Builder, procs: Procs) -> None:
    """A system error while saving one process of a tree names that process (not the
    root), its name and the user it runs as when the kernel refused ckpt access."""
    from ckpt.dumper import _task_failed

    target = procs.start([build("otheruser")])
    child = int(target.out.wait_line(r"^CHILD ").split()[1])
    target.out.wait_line(r"^1 child$")
    err = str(_task_failed(child, OSError(errno.EPERM, "prlimit64: Operation not permitted")))
    assert err.startswith(f"dump of process {child} (otheruser"), err
    assert "prlimit64: Operation not permitted" in err and "runs as user 65534" in err, err
