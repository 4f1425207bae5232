"""Real servers a user would checkpoint, dumped (killed) and restored with -d: each
serves again under the same PIDs, with what it held before (its data, its counters,
its threads), and what it prints carries on where it stopped.

The JVM, node, Python's http.server and an asyncio server, memcached, busybox httpd,
a socat relay with a connection open through it, a session dbus-daemon, redis
holding a 50 MB value. The seconds each dump and restore took are
printed (``pytest -s``)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

from ckpt_helpers import (
    BUILD,
    PROGS,
    PYTHON,
    Procs,
    assert_consecutive,
    ckpt_fails,
    free_port,
    is_alive,
    scaled,
    wait_until,
)
from real_helpers import TIMEOUT, cycle, http_get, need, threads
from tcp_helpers import RespReader, resp, start_redis


def _ask(port: int, line: str) -> str:
    """One line sent to a line server on loopback ``port``, its one-line answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as c:
        c.sendall(line.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def _port_line(out_lines: list[str]) -> int | None:
    m = next((re.match(r"^port (\d+)$", ln) for ln in out_lines if ln.startswith("port ")),
             None)
    return int(m[1]) if m else None


# ------------------------------------------------------------------ the JVM

def _java_class() -> Path:
    """tests/progs/BusyJvm.java compiled by javac (cached in tests/.build)."""
    javac = need("javac", "openjdk-17-jdk-headless")
    src = PROGS / "BusyJvm.java"
    out = BUILD / f"java-{hashlib.sha256(src.read_bytes()).hexdigest()[:12]}"
    if not (out / "BusyJvm.class").exists():
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        tmp.mkdir(parents=True)
        res = subprocess.run([javac, "-d", str(tmp), str(src)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        try:
            tmp.rename(out)
        except OSError:  # another run compiled it meanwhile
            shutil.rmtree(tmp)
    return out


def _jvm_counts(port: int, n: int) -> tuple[int, list[int]]:
    """(pid, each thread's count) from the JVM; no thread ever saw the map wrong."""
    m = re.fullmatch(r"pid (\d+) threads (\d+) counts ([\d,]+) bad (\d+) echo hi",
                     _ask(port, "hi"))
    assert m, "unexpected answer from the JVM"
    assert m[4] == "0", f"{m[4]} times a thread found the HashMap changed behind it"
    counts = [int(c) for c in m[3].split(",")]
    assert len(counts) == n
    return int(m[1]), counts


def _perf_data_lock(pid: int) -> str | None:
    """The "dev:inode" of the file ``pid`` holds a write flock on through a shared
    mapping (its hsperfdata), or None."""
    with open(f"/proc/{pid}/maps") as f:
        mapped = {f"{dev}:{ino}" for _s, perms, _o, dev, ino, *_ in map(str.split, f)
                  if perms.endswith("s") and ino != "0"}
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if fields[1:5] == ["FLOCK", "ADVISORY", "WRITE", str(pid)] and fields[5] in mapped:
                return fields[5]
    return None


def test_jvm_many_threads(procs: Procs, images: Path, tmp_path: Path) -> None:
    """A JVM (OpenJDK 17) with 24 counting threads sharing a HashMap, a ServerSocket and
    a ticking main thread: same PID and thread IDs after the restore, every thread
    counts on from where it was, the map is intact, the socket answers, the ticks go
    on without a gap. The JVM holds a flock on its perf data file (hsperfdata) through
    a mapping only: without --file-locks the dump is refused (the JVM unharmed); with
    it the restored JVM holds that flock again (another JVM of its PID would see the
    file in use)."""
    java = need("java", "openjdk-17-jre-headless")
    n = 24
    jvm = procs.start([java, "-Xmx128m", "-cp", _java_class(), "BusyJvm", str(n)],
                      name="jvm", cwd=tmp_path)
    port = wait_until(lambda: _port_line(jvm.out.lines()), 60, "the JVM's port")
    jvm.out.wait_numbers(5, timeout=TIMEOUT)
    pid, before = _jvm_counts(port, n)
    assert pid == jvm.pid
    tids = threads(jvm.pid)
    assert len(tids) > n

    said = ckpt_fails("dump", "-t", jvm.pid, "-D", tmp_path / "refused")
    assert "FLOCK" in said and "--file-locks" in said, said
    assert is_alive(jvm.pid)
    assert _jvm_counts(port, n)[1] > before

    perf = _perf_data_lock(jvm.pid)
    assert perf is not None, "the JVM holds no flock on a mapped file"
    cycle(procs, jvm, images, "--file-locks")
    assert _perf_data_lock(jvm.pid) == perf, "the flock on hsperfdata was not taken again"
    assert threads(jvm.pid) == tids, "threads came back under other IDs"
    wait_until(lambda: _jvm_counts(port, n)[1] > before, TIMEOUT,
               "every thread to count on")
    pid, after = _jvm_counts(port, n)
    assert pid == jvm.pid
    assert all(a > b for a, b in zip(after, before, strict=True))
    count = len(jvm.out.numbers())
    jvm.out.wait_numbers(count + 5, timeout=TIMEOUT)
    assert_consecutive(jvm.out.numbers())


# ------------------------------------------------------------------ node

NODE_SERVER = """
const http = require('http');
let hits = 0, tick = 0;
setInterval(() => console.log(String(tick++)), 100);
const srv = http.createServer((req, res) => res.end(`pid ${process.pid} hits ${++hits}\\n`));
srv.listen(0, '127.0.0.1', () => console.log('port ' + srv.address().port));
"""


def test_node_http_server(procs: Procs, images: Path, tmp_path: Path) -> None:
    """node 20: an http server on loopback and a 100 ms timer loop. After the restore
    the same server answers, its hit count goes on from where it was, and the timer's
    lines carry on with none lost or repeated."""
    node = need("node", "nodejs")
    (tmp_path / "server.js").write_text(NODE_SERVER)
    proc = procs.start([node, tmp_path / "server.js"], name="node")
    port = wait_until(lambda: _port_line(proc.out.lines()), TIMEOUT, "node's port")
    assert http_get(port) == f"pid {proc.pid} hits 1\n"
    assert http_get(port) == f"pid {proc.pid} hits 2\n"
    proc.out.wait_numbers(5, timeout=TIMEOUT)

    cycle(procs, proc, images)
    assert http_get(port) == f"pid {proc.pid} hits 3\n"
    count = len(proc.out.numbers())
    proc.out.wait_numbers(count + 5, timeout=TIMEOUT)
    assert_consecutive(proc.out.numbers())


# ------------------------------------------------------------------ Python servers

def test_python_http_server(procs: Procs, images: Path, tmp_path: Path) -> None:
    """``python3 -m http.server``: serves the same folder after the restore, and logs
    each request after those it logged before."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_text("hello from the site\n")
    port = free_port()
    proc = procs.start([PYTHON, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                        "--directory", site], name="http")
    wait_until(lambda: http_get(port, "/hello.txt"), TIMEOUT, "http.server to answer")
    cycle(procs, proc, images)
    (site / "later.txt").write_text("written after the restore\n")
    assert http_get(port, "/hello.txt") == "hello from the site\n"
    assert http_get(port, "/later.txt") == "written after the restore\n"
    proc.out.wait_line(r'"GET /later.txt HTTP/1.1" 200')
    gets = [ln for ln in proc.out.lines() if '"GET ' in ln]
    assert [g.split('"')[1] for g in gets][-2:] == ["GET /hello.txt HTTP/1.1",
                                                     "GET /later.txt HTTP/1.1"]


ASYNC_SERVER = """
import asyncio, sys
async def echo(reader, writer):
    while line := await reader.readline():
        writer.write(b"echo " + line)
        await writer.drain()
    writer.close()
async def ticker():
    tick = 0
    while True:
        print(tick, flush=True)
        tick += 1
        await asyncio.sleep(0.1)
async def main():
    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    print("port", srv.sockets[0].getsockname()[1], flush=True)
    asyncio.create_task(ticker())
    await srv.serve_forever()
asyncio.run(main())
"""


def test_python_asyncio_server(procs: Procs, images: Path, tmp_path: Path) -> None:
    """An asyncio echo server (epoll, its self-pipe socketpair) with a ticking task and a
    client connected through the dump (--tcp-established): the same connection echoes
    after the restore, new clients too, and the ticks go on without a gap."""
    (tmp_path / "server.py").write_text(ASYNC_SERVER)
    proc = procs.start([PYTHON, tmp_path / "server.py"], name="async")
    port = wait_until(lambda: _port_line(proc.out.lines()), TIMEOUT, "the server's port")
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as c:
        f = c.makefile("rwb")
        f.write(b"before\n")
        f.flush()
        assert f.readline() == b"echo before\n"
        proc.out.wait_numbers(5, timeout=TIMEOUT)
        cycle(procs, proc, images, "--tcp-established")
        f.write(b"after\n")
        f.flush()
        assert f.readline() == b"echo after\n"
    assert _ask(port, "new") == "echo new"
    count = len(proc.out.numbers())
    proc.out.wait_numbers(count + 5, timeout=TIMEOUT)
    assert_consecutive(proc.out.numbers())


# ------------------------------------------------------------------ memcached, busybox


def _memcached(port: int, *commands: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as c:
        c.sendall("".join(f"{cmd}\r\n" for cmd in commands).encode() + b"quit\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    return data.decode()


def test_memcached(procs: Procs, images: Path, tmp_path: Path) -> None:
    """memcached with 4 worker threads: the values set before the dump are there after
    the restore, under the same threads, and it takes new ones."""
    memcached = need("memcached", "memcached")
    for _ in range(5):
        port = free_port()
        proc = procs.start([memcached, "-u", "root", "-l", "127.0.0.1", "-p", str(port),
                            "-U", "0", "-t", "4"], name="memcached")
        if wait_until(lambda p=port, pid=proc.pid: _memcached_up(p) or not is_alive(pid),
                      TIMEOUT, "memcached to answer") and is_alive(proc.pid):
            break
        procs.wait_gone(proc)
    else:
        raise AssertionError("memcached found no free port in 5 tries")
    values = {f"key{i}": os.urandom(1000).hex() for i in range(100)}
    sets = [f"set {k} 0 0 {len(v)}\r\n{v}" for k, v in values.items()]
    assert _memcached(port, *sets).count("STORED") == len(values)
    tids = threads(proc.pid)

    cycle(procs, proc, images)
    assert threads(proc.pid) == tids
    got = _memcached(port, *(f"get {k}" for k in values))
    for k, v in values.items():
        assert f"VALUE {k} 0 {len(v)}\r\n{v}\r\n" in got, f"{k} lost"
    assert "STORED" in _memcached(port, "set after 0 0 2\r\nok")
    assert "VALUE after 0 2\r\nok" in _memcached(port, "get after")
    assert f"STAT pid {proc.pid}\r\n" in _memcached(port, "stats")


def _memcached_up(port: int) -> bool:
    try:
        return "VERSION" in _memcached(port, "version")
    except OSError:
        return False


def test_busybox_httpd(procs: Procs, images: Path, tmp_path: Path) -> None:
    """busybox httpd in the foreground: serves its folder again after the restore."""
    busybox = need("busybox", "busybox")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>busybox</p>\n")
    port = free_port()
    proc = procs.start([busybox, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", site],
                       name="httpd")
    wait_until(lambda: http_get(port, "/index.html"), TIMEOUT, "httpd to answer")
    cycle(procs, proc, images)
    (site / "new.html").write_text("<p>new</p>\n")
    assert http_get(port, "/index.html") == "<p>busybox</p>\n"
    assert http_get(port, "/new.html") == "<p>new</p>\n"


# ------------------------------------------------------------------ socat


def test_socat_relay_with_open_connection(procs: Procs, images: Path, tmp_path: Path) -> None:
    """socat listening on loopback, forking a relay to ``cat`` per connection: one
    connection open through the dump (--tcp-established; the tree is socat, its
    forked relay and cat, with pipes between them) echoes on after the restore, and a
    new connection is served too."""
    socat = need("socat", "socat")
    port = free_port()
    proc = procs.start([socat, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                        "EXEC:cat"], name="socat")
    c = wait_until(lambda: _connect(port), TIMEOUT, "socat to listen")
    with c:
        f = c.makefile("rwb")
        f.write(b"one\n")
        f.flush()
        assert f.readline() == b"one\n"
        pids = cycle(procs, proc, images, "--tcp-established")
        assert len(pids) == 3, f"not socat, its relay and cat: {pids}"
        f.write(b"two\n")
        f.flush()
        assert f.readline() == b"two\n"
    assert _ask(port, "three") == "three"


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT))
    except OSError:
        return None


# ------------------------------------------------------------------ dbus-daemon

def test_dbus_daemon(procs: Procs, images: Path, tmp_path: Path) -> None:
    """A session dbus-daemon (its audit netlink socket never bound): after the restore
    the bus has the same ID, answers method calls, and routes a signal from one new
    connection to a monitor on another. (A client connected through the dump is a
    unix connection to a process outside the tree: refused, as criu does.)"""
    daemon = need("dbus-daemon", "dbus-daemon")
    send = need("dbus-send", "dbus-bin")
    monitor = need("dbus-monitor", "dbus-bin")
    bus = f"unix:path={tmp_path / 'bus'}"
    proc = procs.start([daemon, "--session", "--nofork", "--nopidfile", f"--address={bus}"],
                       name="dbus")
    wait_until((tmp_path / "bus").exists, TIMEOUT, "the bus's socket")

    def call(method: str) -> str:
        reply = subprocess.run([send, f"--bus={bus}", "--print-reply",
                                "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
                                f"org.freedesktop.DBus.{method}"], capture_output=True,
                               text=True, check=True, timeout=scaled(TIMEOUT)).stdout
        return reply.split("\n", 1)[1]  # the answer, after its header (time, serial)

    bus_id = call("GetId")
    cycle(procs, proc, images)
    assert call("GetId") == bus_id
    assert "org.freedesktop.DBus" in call("ListNames")
    watcher = procs.start([monitor, "--address", bus, "type='signal',interface='ckpt.test'"],
                          name="monitor")

    def reaches_monitor() -> bool:
        subprocess.run([send, f"--bus={bus}", "--type=signal", "/ckpt/test",
                        "ckpt.test.Tick", "int32:42"], check=True, timeout=scaled(TIMEOUT))
        # sent again until the monitor has it: it subscribes once connected
        return any(ln.endswith("int32 42") for ln in watcher.out.lines())

    wait_until(reaches_monitor, TIMEOUT, "a signal at the monitor after the restore")


# ------------------------------------------------------------------ redis, 50 MB


def test_redis_50mb_value(procs: Procs, images: Path, tmp_path: Path) -> None:
    """redis-server holding one 50 MB value (issue 12): after the restore GET returns
    the same 50 MB on a new connection, and a counter goes on."""
    server, port = start_redis(procs, tmp_path)
    value = hashlib.shake_256(b"ckpt").hexdigest(25_000_000).encode()  # 50 MB
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as c:
        rd = RespReader(c)
        c.sendall(resp("SET", "big", value))
        assert rd.reply() == "OK"
        c.sendall(resp("INCR", "counter"))
        assert rd.reply() == 1
    cycle(procs, server, images)
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as c:
        rd = RespReader(c)
        c.sendall(resp("STRLEN", "big"))
        assert rd.reply() == len(value)
        c.sendall(resp("GET", "big"))
        assert rd.reply() == value.decode(), "the 50 MB value changed"
        c.sendall(resp("INCR", "counter"))
        assert rd.reply() == 2
