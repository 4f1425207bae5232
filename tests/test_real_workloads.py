"""Real workloads a CRIU user would checkpoint, each dumped and restored with -d
several times in a row (killed, dumped with -R and then killed with its whole tree as
a crash would, killed again; a database dumped with -R is left running instead),
checked for what they carry on doing: a redis client pipelining into a redis-server
writing its append-only file, make -j, tmux and screen with a client attached, a
sqlite writer and reader, git fast-import, a client through haproxy and nginx.

Clients live in the dumped tree (both ends of their loopback connections are dumped),
so a dump with -R leaves nothing outside that sees the tree die."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Proc,
    Procs,
    ckpt_ok,
    free_port,
    is_alive,
    scaled,
    wait_until,
)
from real_helpers import TIMEOUT, crash, cycle, need, tree
from tcp_helpers import RespReader, resp

ROUNDS = (False, True, False)  # leave_running of each dump


@pytest.fixture(autouse=True)
def _whole_trees(procs: Procs) -> Iterator[None]:
    """At the end, every process of the trees a test started is killed with its process
    group, as a crash would: nginx's workers outlive their master, and re-parented to
    pytest after the fixture ``procs`` looked for its children, they were left
    running."""
    yield
    pids = [p for proc in procs.tracked if is_alive(proc.pid) for p in tree(proc.pid)]
    if pids:
        crash(procs, pids)


def _stateful_round(procs: Procs, root: Proc, images: Path, *flags: str,
                    leave_running: bool) -> None:
    """One round for a tree writing files it reads back (a database): killed and
    restored; or dumped with -R and left running, unharmed. Killed and restored after
    -R, its memory would go back behind its files, which went on (with criu too):
    the rows written since would be written twice."""
    if not leave_running:
        cycle(procs, root, images, *flags)
        return
    before = tree(root.pid)
    ckpt_ok("dump", "-t", root.pid, "-D", images, *flags, "-R")
    assert tree(root.pid) == before, "dump -R changed the tree"


# ------------------------------------------------------------------ redis, AOF


def _batches(lines: list[str]) -> list[tuple[int, int]]:
    """(batch, n) of each "batch B n N" line; fails on an "ERROR" line."""
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    assert not errors, errors
    return [(int(m[1]), int(m[2])) for ln in lines
            if (m := re.match(r"^batch (\d+) n (\d+)$", ln))]


def test_redis_aof_with_a_pipelining_client(procs: Procs, tmp_path: Path) -> None:
    """redis-server writing an append-only file (fsync at each write: its background
    I/O threads busy) and a client of it in the same tree pipelining 400 commands at a
    time on one loopback connection: after each restore the batches go on, each reply
    in order; in the end a new redis-server loads the append-only file, whole, with
    every count the client saw."""
    need("redis-server", "redis-server")
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    client = procs.start([PYTHON, PROGS / "redis_pipeliner.py", str(port), str(data),
                          "--aof-load-truncated", "no"], name="client")
    wait_until(lambda: len(_batches(client.out.lines())) >= 5, TIMEOUT, "batches")
    server = tree(client.pid)[1]
    for i, leave_running in enumerate(ROUNDS):
        _stateful_round(procs, client, tmp_path / f"images{i}", "--tcp-established",
                        leave_running=leave_running)
        assert tree(client.pid)[1:] == [server]
        done = len(_batches(client.out.lines()))
        wait_until(lambda done=done: len(_batches(client.out.lines())) >= done + 5,
                   TIMEOUT, "batches after the restore")
        got = _batches(client.out.lines())
        assert [b for b, _ in got] == list(range(len(got))), "a batch lost or repeated"
        assert [n for _, n in got] == [200 * (b + 1) for b, _ in got]
    last = _batches(client.out.lines())[-1][1]
    subprocess.run(["kill", "-9", *map(str, tree(client.pid))], check=True)  # a crash
    procs.wait_gone(client.pid)
    wait_until(lambda: not is_alive(server), TIMEOUT, "redis-server to be gone")
    port = free_port()
    check = procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                         "--dir", data, "--save", "", "--appendonly", "yes",
                         "--aof-load-truncated", "no", "--protected-mode", "no"],
                        name="check")
    wait_until(lambda: any("Ready to accept" in ln for ln in check.out.lines())
               or check.popen.poll() is not None, TIMEOUT, "redis to load the file")
    assert check.popen.poll() is None, "\n".join(check.out.lines()[-5:])
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as c:
        rd = RespReader(c)
        c.sendall(resp("GET", "n"))
        n = int(rd.reply())
        c.sendall(resp("LLEN", "l"))
        assert rd.reply() == n
        c.sendall(resp("LINDEX", "l", "-1"))
        assert rd.reply() == str(n)
    assert last <= n <= last + 200, f"the file holds {n}, the client saw {last}"


# ------------------------------------------------------------------ make -j


MAKEFILE = """\
PARTS := $(foreach i,$(shell seq 1 {parts}),part$(i))
all: total
total: $(PARTS) sub
\tcat $(PARTS) sub/out > $@.tmp && mv $@.tmp $@
part%:
\t@g=$$(( ($* - 1) / 10 )); while [ $$g -gt 0 ] && [ ! -e go$$g ]; do sleep 0.05; done
\tsleep 0.1; echo $@ $$(( $* * 6 )) > $@
sub:
\t$(MAKE) -C sub
.PHONY: all sub
"""

SUB = """\
PIECES := $(foreach i,$(shell seq 1 {parts}),piece$(i))
out: $(PIECES)
\tcat $^ > $@
piece%:
\tsleep 0.2; echo $@ > $@
"""


def test_make_parallel_build(procs: Procs, tmp_path: Path) -> None:
    """``make -j4`` building 40 parts and a sub-make of 20 more (the jobserver's pipe
    shared by both makes and their shells): dumped in the middle while jobs run
    (parts past each ten wait for the test's go), the build goes on after each
    restore and ends with every part made once, and make exits 0."""
    need("make", "make")
    build = tmp_path / "build"
    (build / "sub").mkdir(parents=True)
    (build / "Makefile").write_text(MAKEFILE.format(parts=40))
    (build / "sub" / "Makefile").write_text(SUB.format(parts=20))
    make = procs.start(["make", "-j4", "-C", build], name="make")

    for i, leave_running in enumerate(ROUNDS):
        wait_until(lambda i=i: len(list(build.glob("part*"))) >= 10 * (i + 1), TIMEOUT,
                   "parts made")
        wait_until(lambda: len(tree(make.pid)) >= 3, TIMEOUT, "jobs running")
        cycle(procs, make, tmp_path / f"images{i}", leave_running=leave_running)
        (build / f"go{i + 1}").touch()
    code = procs.wait_gone(make.pid, timeout=120)
    assert code == 0, "\n".join(make.out.lines()[-10:])
    total = (build / "total").read_text().splitlines()
    assert total == [f"part{i} {6 * i}" for i in range(1, 41)] + \
        [f"piece{i}" for i in range(1, 21)]
    assert not any("Error" in ln or "jobserver" in ln for ln in make.out.lines()), \
        make.out.lines()


# ------------------------------------------------------------------ tmux, screen attached


LOOP = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done\n"
ESCAPES = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-B]|[=>78DEHMc])")


def _seen_ticks(path: Path) -> list[int]:
    """The ticks a terminal showed, from its raw output (escapes taken out)."""
    text = ESCAPES.sub(b"", path.read_bytes()).decode(errors="replace")
    return [int(n) for n in re.findall(r"tick (\d+)", text)]


def _typed(keys: Path, text: str) -> None:
    with open(keys, "w") as f:
        f.write(text)


def _attached_cycles(procs: Procs, tmp_path: Path, host: Proc,
                     pane: Callable[[], str]) -> None:
    """Dump and restore the terminal ``host`` and its tree (a terminal multiplexer's
    client and server, the shell in its window and its loop) three times: the loop's
    ticks go on in the window and on the client's terminal; keys typed on the
    client's terminal reach the shell."""
    keys = tmp_path / "keys"
    _typed(keys, f"bash {tmp_path / 'loop.sh'}\r")
    wait_until(lambda: len(_pane_ticks(pane())) >= 3, TIMEOUT, "ticks in the window")
    pids = tree(host.pid)
    for i, leave_running in enumerate(ROUNDS):
        cycle(procs, host, tmp_path / f"images{i}", leave_running=leave_running)
        assert tree(host.pid)[:len(pids) - 1] == pids[:-1], "not the same processes"
        last = wait_until(lambda: _pane_ticks(pane()), TIMEOUT, "ticks in the window")[-1]
        wait_until(lambda last=last: (_pane_ticks(pane()) or [-1])[-1] >= last + 3,
                   TIMEOUT, "the loop's ticks after the restore")
        wait_until(lambda last=last: max(_seen_ticks(host.out.path), default=-1) >= last + 3,
                   TIMEOUT, "the ticks on the client's terminal")
    _typed(keys, "\x03")
    _typed(keys, "echo done-$((6*7))\r")
    wait_until(lambda: re.search("^done-42$", pane(), re.M), TIMEOUT,
               "the shell to answer keys typed on the client's terminal")


def _pane_ticks(screen: str) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+)$", screen, re.M)]


def test_tmux_with_an_attached_client(procs: Procs, tmp_path: Path) -> None:
    """A tmux client attached on a terminal, its server (forked off as a daemon), the
    shell in its pane and the shell's loop, in one tree under the terminal's host."""
    tmux = need("tmux", "tmux")
    sock = tmp_path / "tmux.sock"
    (tmp_path / "loop.sh").write_text(LOOP)
    os.mkfifo(tmp_path / "keys")

    def cmd(*args: str) -> str:
        return subprocess.run([tmux, "-S", str(sock), *args], capture_output=True,
                              text=True, check=True, timeout=scaled(TIMEOUT)).stdout

    host = procs.start([PYTHON, PROGS / "pty_host.py", tmp_path / "keys", tmux, "-S", sock,
                        "-f", "/dev/null", "new-session", "-s", "t", "bash --norc -i"],
                       name="host")
    wait_until(lambda: sock.exists() and len(tree(host.pid)) >= 4, TIMEOUT,
               "the client, the server and its shell")
    client = cmd("list-clients", "-F", "#{client_pid}").split()
    assert len(client) == 1
    _attached_cycles(procs, tmp_path, host, lambda: cmd("capture-pane", "-p", "-t", "t"))
    assert cmd("list-clients", "-F", "#{client_pid}").split() == client
    cmd("kill-server")
    host.out.wait_line(r"terminal closed", timeout=TIMEOUT)


def test_screen_with_an_attached_client(procs: Procs, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """GNU screen attached on a terminal (the attacher and the SCREEN process it forked,
    connected by a named socket; the shell in its window and the shell's loop), in one
    tree under the terminal's host."""
    screen = need("screen", "screen")
    sockets = tmp_path / "screens"
    sockets.mkdir(mode=0o700)
    monkeypatch.setenv("SCREENDIR", str(sockets))
    (tmp_path / "loop.sh").write_text(LOOP)
    os.mkfifo(tmp_path / "keys")
    copy = tmp_path / "hardcopy"

    def window() -> str:
        copy.unlink(missing_ok=True)
        subprocess.run([screen, "-S", "s", "-X", "hardcopy", str(copy)], check=True,
                       timeout=scaled(TIMEOUT))
        wait_until(copy.exists, TIMEOUT, "screen's hardcopy")
        return copy.read_text(errors="replace")

    host = procs.start([PYTHON, PROGS / "pty_host.py", tmp_path / "keys", screen, "-S", "s",
                        "bash", "--norc", "-i"], name="host")
    wait_until(lambda: len(tree(host.pid)) >= 4, TIMEOUT,
               "the attacher, the server and its shell")
    wait_until(lambda: "(Attached)" in subprocess.run(
        [screen, "-ls"], capture_output=True, text=True, timeout=scaled(TIMEOUT)).stdout,
        TIMEOUT, "an attached session")
    _attached_cycles(procs, tmp_path, host, window)
    assert "(Attached)" in subprocess.run([screen, "-ls"], capture_output=True, text=True,
                                          timeout=scaled(TIMEOUT)).stdout
    _typed(tmp_path / "keys", "exit\r")
    host.out.wait_line(r"terminal closed", timeout=TIMEOUT)


# ------------------------------------------------------------------ sqlite, WAL


def _counts(lines: list[str], word: str) -> list[int]:
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    assert not errors, errors
    return [int(ln.split()[1]) for ln in lines if ln.startswith(word + " ")]


def test_sqlite_wal_writer_and_reader(procs: Procs, tmp_path: Path) -> None:
    """Python's sqlite3 writing a database in WAL mode, row by row, and a reader process
    checking the whole table in read transactions (both map the -shm index shared and
    hold POSIX locks on it; --file-locks): after each restore both go on, the reader
    never sees a torn table; in the end sqlite's integrity check passes and the rows
    are all there."""
    db = tmp_path / "db.sqlite"
    proc = procs.start([PYTHON, PROGS / "sqlite_wal.py", db], name="sqlite")
    wait_until(lambda: len(_counts(proc.out.lines(), "read")) >= 2, TIMEOUT, "rows read")
    for i, leave_running in enumerate(ROUNDS):
        _stateful_round(procs, proc, tmp_path / f"images{i}", "--file-locks",
                        leave_running=leave_running)
        assert len(tree(proc.pid)) == 2
        for word in ("wrote", "read"):
            done = _counts(proc.out.lines(), word)[-1]
            wait_until(lambda w=word, d=done: _counts(proc.out.lines(), w)[-1] >= d + 100,
                       TIMEOUT, f"rows {word} after the restore")
        wrote = _counts(proc.out.lines(), "wrote")
        assert wrote == list(range(50, 50 * len(wrote) + 1, 50)), "rows lost or repeated"
    subprocess.run(["kill", "-9", *map(str, tree(proc.pid))], check=True)
    procs.wait_gone(proc)
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    n = check.execute("SELECT count(*) FROM t").fetchone()[0]
    assert n >= _counts(proc.out.lines(), "wrote")[-1]
    assert check.execute("SELECT count(*) FROM t WHERE total != n * (n - 1) / 2"
                         ).fetchone() == (0,)
    check.close()


# ------------------------------------------------------------------ git fast-import


def test_git_fast_import_from_a_pipe(procs: Procs, tmp_path: Path) -> None:
    """``git fast-import`` reading 1200 commits from a producer through a pipe (its
    pack being written, its marks in memory), dumped after each 300, the producer
    waiting for the next go: it ends with every commit, and ``git fsck --strict``
    finds the repository sound (the -R round, rolled back, wrote its pack again over
    what it had written)."""
    git = need("git", "git")
    repo = tmp_path / "repo"
    subprocess.run([git, "init", "-q", "-b", "main", repo], check=True,
                   timeout=scaled(TIMEOUT))
    go = tmp_path / "go"
    proc = procs.start(["sh", "-c", f"{PYTHON} {PROGS / 'git_stream.py'} 4 {go} | "
                        f"{git} -C {repo} fast-import --quiet && echo imported"],
                       name="import")
    for i, leave_running in enumerate(ROUNDS):
        proc.out.wait_line(rf"^chunk {i + 1}$", timeout=TIMEOUT)
        cycle(procs, proc, tmp_path / f"images{i}", leave_running=leave_running)
        Path(f"{go}{i + 1}").touch()
    assert procs.wait_gone(proc.pid, timeout=120) == 0, proc.out.lines()
    assert proc.out.lines() == ["chunk 1", "chunk 2", "chunk 3", "chunk 4", "imported"]

    def git_out(*args: str) -> str:
        return subprocess.run([git, "-C", repo, *args], capture_output=True, text=True,
                              check=True, timeout=scaled(TIMEOUT)).stdout

    git_out("fsck", "--strict")
    assert git_out("rev-list", "--count", "main").strip() == "1200"
    for f in range(37):
        last = max(i for i in range(1, 1201) if i % 37 == f)
        assert git_out("show", f"main:f{f}") == f"file {last}\n" * 50


# ------------------------------------------------------------------ haproxy and nginx


NGINX_CONF = """\
daemon off;
user root;
master_process on;
worker_processes 2;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_timeout 600;
  server {{ listen 127.0.0.1:{port}; root {dir}/www; }}
}}
"""

HAPROXY_CONF = """\
global
  nbthread 2
defaults
  mode http
  timeout connect 10s
  timeout client 600s
  timeout server 600s
  timeout http-keep-alive 600s
frontend front
  bind 127.0.0.1:{port}
  default_backend nginx
backend nginx
  server web 127.0.0.1:{backend}
"""


def test_haproxy_in_front_of_nginx(procs: Procs, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A client GETting a page through haproxy (master-worker, 2 threads) from nginx
    (a master and 2 workers), over a kept-alive connection and a new one every 10th
    request, all in one tree (``--tcp-established``: its loopback connections both
    ways): after each restore the requests go on, each answered right."""
    need("haproxy", "haproxy")
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        pytest.skip("nginx is not installed (Debian package nginx-light)")
    conf = tmp_path / "conf"
    (conf / "www").mkdir(parents=True)
    (conf / "www" / "index.html").write_text("hello through haproxy\n" * 20)
    port, backend = free_port(), free_port()
    (conf / "nginx.conf").write_text(NGINX_CONF.format(dir=conf, port=backend))
    (conf / "haproxy.cfg").write_text(HAPROXY_CONF.format(port=port, backend=backend))
    monkeypatch.setenv("PATH", f"/usr/sbin:{os.environ.get('PATH', '/usr/bin:/bin')}")
    client = procs.start([PYTHON, PROGS / "proxy_chain.py", conf, str(port)],
                         name="client")

    def requests() -> list[int]:
        errors = [ln for ln in client.out.lines() if ln.startswith("ERROR")]
        assert not errors, client.out.lines()[-10:]
        return [int(ln.split()[1]) for ln in client.out.lines() if ln.startswith("req ")]

    wait_until(lambda: len(requests()) >= 3, TIMEOUT, "requests through the chain")
    pids = tree(client.pid)
    assert len(pids) >= 5, pids  # the client, nginx and its workers, haproxy's two
    for i, leave_running in enumerate(ROUNDS):
        cycle(procs, client, tmp_path / f"images{i}", "--tcp-established",
              leave_running=leave_running)
        assert tree(client.pid) == pids
        done = len(requests())
        wait_until(lambda done=done: len(requests()) >= done + 3, TIMEOUT,
                   "requests after the restore")
        got = requests()  # once: the client adds lines meanwhile
        assert got == list(range(10, 10 * len(got) + 1, 10))
