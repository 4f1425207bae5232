"""Real programs a user would checkpoint in the middle of their work, each dumped and
restored three times in a row: killed, left running (-R, then killed with every
process of its tree at once, as a crash would) and killed again, restored with -d each
time. After each restore the work goes on from where it was: a ``sort`` of a stream
bigger than its buffer (temporary files on disk, two threads) into ``gzip``, ``xz`` and
``zstd`` compressing with threads in a pipeline, ``xargs -P`` running jobs in parallel,
``timeout`` that still kills its command at its time, gcc in the middle of a compile,
an asyncio server and memcached with clients connected through every dump, a forking
perl server. What each prints is
checked whole at the end: no line lost, repeated or reordered."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from ckpt_helpers import (
    PYTHON,
    Output,
    Proc,
    Procs,
    assert_consecutive,
    free_port,
    is_alive,
    scaled,
    wait_until,
)
from real_helpers import TIMEOUT, need, threads, three_rounds, tree


def _grows(path: Path, by: int = 1) -> None:
    """Wait until the file at ``path`` grew by ``by`` bytes."""
    def size() -> int:
        return path.stat().st_size if path.exists() else 0

    before = size()
    wait_until(lambda: size() >= before + by, TIMEOUT, f"{path.name} to grow")


# ------------------------------------------------------------------ pipelines

CHUNK_LINES = 3000


def _chunk(tmp_path: Path) -> list[str]:
    """A file of CHUNK_LINES distinct lines in no order, written to tmp_path/chunk."""
    lines = [f"{(i * 7919) % 100003:06d} line {i}" for i in range(CHUNK_LINES)]
    (tmp_path / "chunk").write_text("".join(f"{ln}\n" for ln in lines))
    return lines


def _feeder(tmp_path: Path) -> str:
    """A shell loop that writes the chunk again and again, counting each in
    tmp_path/count, until tmp_path/stop exists."""
    return (f"n=0; while [ ! -e {tmp_path}/stop ]; do cat {tmp_path}/chunk; "
            f"n=$((n+1)); echo $n > {tmp_path}/count.new; "
            f"mv {tmp_path}/count.new {tmp_path}/count; sleep 0.1; done")


def _stop_feeder(procs: Procs, proc: Proc, tmp_path: Path) -> int:
    """Let the pipeline end; the number of chunks it was fed. Its root exits with 0."""
    (tmp_path / "stop").touch()
    assert procs.wait_gone(proc, timeout=TIMEOUT * 4) == 0, "the pipeline failed"
    return int((tmp_path / "count").read_text())


def test_sort_into_gzip(procs: Procs, tmp_path: Path) -> None:
    """``LOOP | sort -S 1M -T TMP --parallel=2 | gzip -1 > OUT``: sort reads far more
    than its buffer holds, writing sorted runs to temporary files it merges at the end;
    dumped three times while it reads. Once the loop stops, OUT holds every line fed,
    as many times as the loop wrote it, in order."""
    lines = _chunk(tmp_path)
    (tmp_path / "sorttmp").mkdir()
    out = tmp_path / "sorted.gz"
    proc = procs.start(["bash", "-c", f"{_feeder(tmp_path)} | sort -S 1M -T "
                        f"{tmp_path}/sorttmp --parallel=2 | gzip -1 > {out}"], name="sort")
    runs = tmp_path / "sorttmp"

    def more_runs(_i: int = 0) -> None:
        n = len(list(runs.iterdir()))
        wait_until(lambda: len(list(runs.iterdir())) > n, TIMEOUT,
                   "sort to write another temporary file")

    more_runs()
    three_rounds(procs, proc, tmp_path, after=more_runs, crash=True)
    times = _stop_feeder(procs, proc, tmp_path)
    with gzip.open(out, "rt") as f:
        got = f.read().splitlines()
    assert len(got) == times * CHUNK_LINES, (len(got), times)
    assert got == sorted(got), "not in order"
    assert Counter(got) == Counter({ln: times for ln in lines})


def test_threaded_compressors_in_a_pipeline(procs: Procs, tmp_path: Path) -> None:
    """``LOOP | xz -T2 -1 --block-size=256KiB | tee OUT.xz | xz -dc | zstd -T2 -1 -q >
    OUT.zst``: xz and zstd compressing with worker threads, xz decompressing between
    them; after three dumps both files decompress to the loop's chunks, whole and in
    order."""
    need("xz", "xz-utils")
    need("zstd", "zstd")
    lines = _chunk(tmp_path)
    xz, zst = tmp_path / "out.xz", tmp_path / "out.zst"
    proc = procs.start(["bash", "-c", f"{_feeder(tmp_path)} | xz -T2 -1 --block-size=256KiB "
                        f"| tee {xz} | xz -dc | zstd -T2 -1 -q > {zst}"], name="xz")
    wait_until(lambda: len(tree(proc.pid)) >= 6, TIMEOUT, "the pipeline")
    _grows(xz)
    three_rounds(procs, proc, tmp_path, after=lambda _i: _grows(xz), crash=True)
    times = _stop_feeder(procs, proc, tmp_path)
    whole = "".join(f"{ln}\n" for ln in lines) * times
    assert lzma.decompress(xz.read_bytes()).decode() == whole
    res = subprocess.run(["zstd", "-dc", str(zst)], capture_output=True, check=True,
                         timeout=scaled(TIMEOUT))
    assert res.stdout.decode() == whole


def test_xargs_parallel_jobs(procs: Procs, tmp_path: Path) -> None:
    """``seq 1 N | xargs -P 3 -n 1 sh -c 'echo $0 >> LOG; sleep 0.2'``: xargs with up
    to three jobs running at each dump; every number is done once, none twice."""
    log = Output(tmp_path / "done")
    n = 150
    proc = procs.start(["bash", "-c", f"seq 1 {n} | xargs -P 3 -n 1 sh -c "
                        f"'sleep 0.2; echo $0 >> {log.path}'"], name="xargs")
    log.wait_numbers(3, timeout=TIMEOUT)
    three_rounds(procs, proc, tmp_path, out=log,
                 after=lambda _i: log.wait_numbers(len(log.numbers()) + 3, timeout=TIMEOUT))
    assert procs.wait_gone(proc, timeout=TIMEOUT * 4) == 0
    assert sorted(log.numbers()) == list(range(1, n + 1))


def test_timeout_kills_at_its_time(procs: Procs, tmp_path: Path) -> None:
    """``timeout 25 bash LOOP``: coreutils timeout arms a POSIX timer and waits for its
    signal; after three restores its command keeps running, and the timer still
    ends it 25 seconds after the start (status 124), not before."""
    out = Output(tmp_path / "ticks")
    t0 = time.monotonic()
    limit = max(25.0, scaled(25.0))
    proc = procs.start(["timeout", str(limit), "bash", "-c",
                        f"i=0; while :; do echo $i >> {out.path}; i=$((i+1)); sleep 0.1; "
                        "done"], name="timeout")
    out.wait_numbers(3, timeout=TIMEOUT)
    three_rounds(procs, proc, tmp_path, out=out,
                 after=lambda _i: out.wait_numbers(len(out.numbers()) + 3, timeout=TIMEOUT))
    assert time.monotonic() - t0 < limit, "the rounds took longer than the timeout"
    assert procs.wait_gone(proc, timeout=limit + TIMEOUT) == 124
    assert time.monotonic() - t0 >= limit, "timeout ended its command early"
    assert_consecutive(out.numbers())


def _big_c(path: Path, functions: int) -> None:
    """A C file whose compilation at -O2 takes gcc's cc1 a few seconds."""
    lines = ["#include <stdio.h>"]
    lines += [f"static int f{i}(int x) {{ int s = 0; for (int k = 0; k < x; k++) "
              f"s += (k * {i}) ^ (s >> 3); return s + {i}; }}" for i in range(functions)]
    lines += ["int main(void) { long t = 0;"]
    lines += [f"  t += f{i}({i % 17});" for i in range(functions)]
    lines += ['  printf("%ld\\n", t); return 0; }']
    path.write_text("\n".join(lines) + "\n")


def test_gcc_in_the_middle_of_a_compile(procs: Procs, tmp_path: Path) -> None:
    """``gcc -O2 -pipe -c``: the driver, cc1 writing assembly into a pipe and ``as``
    reading it, dumped three times while cc1 works: the object it ends with is the
    very one a compile left alone makes."""
    gcc = need("gcc", "gcc")
    _big_c(tmp_path / "big.c", 1000)
    argv = [gcc, "-O2", "-pipe", "-c", "big.c", "-o"]
    proc = procs.start([*argv, "dumped.o"], name="gcc", cwd=tmp_path)

    def compiler() -> int | None:
        return next((p for p in tree(proc.pid)
                     if Path(f"/proc/{p}/comm").read_text().strip() == "cc1"), None)

    cc1 = wait_until(compiler, TIMEOUT, "cc1")

    def compiling(_i: int) -> None:
        assert compiler() == cc1, "the compile ended before the three dumps: a bigger file"

    three_rounds(procs, proc, tmp_path, after=compiling)
    assert procs.wait_gone(proc, timeout=TIMEOUT * 4) == 0, proc.out.lines()
    subprocess.run([*argv, "alone.o"], cwd=tmp_path, check=True, timeout=scaled(TIMEOUT * 4))
    assert (tmp_path / "dumped.o").read_bytes() == (tmp_path / "alone.o").read_bytes()


# ------------------------------------------------------------------ servers with clients

ASYNC_SERVER = """
import asyncio, os
clients = 0
async def serve(reader, writer):
    global clients
    clients += 1
    me = clients
    while line := await reader.readline():
        writer.write(b"%d %d %s" % (os.getpid(), me, line))
        await writer.drain()
async def main():
    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    print("port", srv.sockets[0].getsockname()[1], flush=True)
    await srv.serve_forever()
asyncio.run(main())
"""


class _Client:
    """A client of a line server, connected through the dumps."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT))
        self.file = self.sock.makefile("rwb")

    def ask(self, line: str) -> str:
        self.file.write(line.encode() + b"\n")
        self.file.flush()
        return self.file.readline().decode().rstrip("\r\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_asyncio_server_with_clients(procs: Procs, tmp_path: Path) -> None:
    """An asyncio server with three clients connected through three dumps
    (--tcp-established): each connection is still served by the coroutine that
    served it before (the server numbers its clients), and a new one gets number 4."""
    (tmp_path / "server.py").write_text(ASYNC_SERVER)
    proc = procs.start([PYTHON, tmp_path / "server.py"], name="async")
    port = int(proc.out.wait_line(r"^port \d+$", timeout=TIMEOUT).split()[1])
    clients = [_Client(port) for _ in range(3)]
    try:
        for k, c in enumerate(clients, 1):
            assert c.ask("hello") == f"{proc.pid} {k} hello"

        def answer(i: int) -> None:
            for k, c in enumerate(clients, 1):
                assert c.ask(f"round {i}") == f"{proc.pid} {k} round {i}"

        three_rounds(procs, proc, tmp_path, "--tcp-established", after=answer)
        late = _Client(port)
        assert late.ask("late") == f"{proc.pid} 4 late"
        late.close()
    finally:
        for c in clients:
            c.close()


def test_memcached_with_clients(procs: Procs, tmp_path: Path) -> None:
    """memcached (4 worker threads) with two clients connected through three dumps
    (--tcp-established): an incr on either connection goes on from the value the
    other left, and the items set before are all there."""
    memcached = need("memcached", "memcached")
    for _ in range(5):
        port = free_port()
        proc = procs.start([memcached, "-u", "root", "-l", "127.0.0.1", "-p", str(port),
                            "-U", "0", "-t", "4"], name="memcached")
        c = wait_until(lambda p=port, pid=proc.pid: _try_connect(p) or not is_alive(pid),
                       TIMEOUT, "memcached to listen")
        if isinstance(c, _Client):
            break
        procs.wait_gone(proc)
    else:
        raise AssertionError("memcached found no free port in 5 tries")
    clients = [c, _Client(port)]
    try:
        assert c.ask("set n 0 0 1\r\n0\r") == "STORED"
        for k in range(50):
            assert c.ask(f"set key{k} 0 0 {len(str(k))}\r\n{k}\r") == "STORED"
        count = [0]

        def incr(_i: int = 0) -> None:
            for cl in clients:
                count[0] += 1
                assert cl.ask("incr n 1\r") == str(count[0])

        incr()
        three_rounds(procs, proc, tmp_path, "--tcp-established", after=incr)
        got = _Client(port)
        for k in range(50):
            assert got.ask(f"get key{k}\r") == f"VALUE key{k} 0 {len(str(k))}"
            assert got.file.readline().decode().strip() == str(k)
            assert got.file.readline().decode().strip() == "END"
        got.close()
    finally:
        for cl in clients:
            cl.close()


def _try_connect(port: int) -> _Client | None:
    try:
        return _Client(port)
    except OSError:
        return None


PERL_SERVER = r"""
use IO::Socket::INET;
$SIG{CHLD} = 'IGNORE';
my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 5,
                                ReuseAddr => 1) or die "listen: $!";
$| = 1;
print "port ", $srv->sockport, "\n";
while (my $c = $srv->accept) {
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        close $srv;
        my $n = 0;
        while (my $line = <$c>) { $n++; print $c "$$ $n $line"; }
        exit 0;
    }
    close $c;
}
"""


def test_perl_forking_server(procs: Procs, tmp_path: Path) -> None:
    """A perl server forking a child per connection (SIGCHLD ignored), two clients
    connected through three dumps (--tcp-established): each is answered by the same
    child, which counts its lines on, and a new client gets a child of its own."""
    perl = need("perl", "perl-base")
    (tmp_path / "server.pl").write_text(PERL_SERVER)
    proc = procs.start([perl, tmp_path / "server.pl"], name="perl")
    port = int(proc.out.wait_line(r"^port \d+$", timeout=TIMEOUT).split()[1])
    clients = [_Client(port) for _ in range(2)]
    try:
        served = [c.ask("hello").split() for c in clients]
        kids = [int(s[0]) for s in served]
        assert [s[1:] for s in served] == [["1", "hello"]] * 2
        assert set(tree(proc.pid)[1:]) == set(kids)

        def answer(i: int) -> None:
            for kid, c in zip(kids, clients, strict=True):
                assert c.ask(f"round{i}") == f"{kid} {i + 2} round{i}"

        three_rounds(procs, proc, tmp_path, "--tcp-established", after=answer)
        late = _Client(port)
        kid, n, word = late.ask("late").split()
        assert (n, word) == ("1", "late") and int(kid) not in kids
        late.close()
    finally:
        for c in clients:
            c.close()
    assert re.search(r"^port \d+$", proc.out.lines()[0])


# ------------------------------------------------------------------ children, files, downloads

ASYNC_JOBS = """
import asyncio, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
async def job(n):
    p = await asyncio.create_subprocess_exec(
        "sh", "-c", f"sleep 0.2; echo {n}", stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    return f"{int(out)}:{p.returncode}"
async def main():
    i = 0
    while True:
        print(i, *await asyncio.gather(*(job(i + k) for k in range(3))), flush=True)
        i += 3
if sys.version_info < (3, 12):  # the default from 3.12 on
    asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
asyncio.run(main())
"""


def test_asyncio_running_subprocesses(procs: Procs, tmp_path: Path) -> None:
    """An asyncio program running three shells at a time, each watched through a pidfd
    in its epoll and read through a pipe: after each restore the batches go on, each
    child's output and exit status reach it, none lost or run twice."""
    (tmp_path / "jobs.py").write_text(ASYNC_JOBS)
    proc = procs.start([PYTHON, tmp_path / "jobs.py"], name="jobs")

    def batches() -> list[list[str]]:
        return [ln.split() for ln in proc.out.lines()]

    def more(_i: int = 0) -> None:
        n = len(batches())
        wait_until(lambda: len(batches()) >= n + 3, TIMEOUT, "more batches")

    more()
    three_rounds(procs, proc, tmp_path, after=more)
    got = batches()
    assert [int(b[0]) for b in got] == list(range(0, 3 * len(got), 3)), got
    for b in got:
        i = int(b[0])
        assert b[1:] == [f"{i + k}:0" for k in range(3)], b


def test_tail_follows_rotated_logs(procs: Procs, tmp_path: Path) -> None:
    """``tail -F LOG`` (by name, with inotify): the log is rotated (renamed, a new one
    made) after each restore; tail follows each new file from its start, and every
    line of every log is printed once, in order."""
    log = tmp_path / "app.log"
    log.write_text("log 0 line 0\n")
    proc = procs.start(["tail", "-n", "+1", "-F", log], name="tail")

    def printed() -> list[str]:
        return [ln for ln in proc.out.lines() if ln.startswith("log ")]

    wait_until(lambda: len(printed()) == 1, TIMEOUT, "the first line")

    def rotate(i: int) -> None:
        with open(log, "a") as f:
            f.write(f"log {i} line 1\n")
        wait_until(lambda: len(printed()) == 2 * i + 2, TIMEOUT, "the line appended")
        log.rename(tmp_path / f"app.log.{i}")
        log.write_text(f"log {i + 1} line 0\n")
        wait_until(lambda: len(printed()) == 2 * i + 3, TIMEOUT, "the new log's line")

    three_rounds(procs, proc, tmp_path, after=rotate)
    assert printed() == [f"log {n} line {k}" for n in range(4) for k in range(2)][:-1]


SLOW_CLIENT_FILE = 8 << 20


def test_http_server_sending_to_a_slow_client(procs: Procs, tmp_path: Path) -> None:
    """``python3 -m http.server`` sending an 8 MiB file to a client that reads a piece
    between dumps (--tcp-established): its thread is blocked in sendall with both
    socket queues full at each dump; the client gets the whole file, byte for byte."""
    site = tmp_path / "site"
    site.mkdir()
    body = bytes(range(256)) * (SLOW_CLIENT_FILE // 256)
    (site / "big").write_bytes(body)
    port = free_port()
    proc = procs.start([PYTHON, "-m", "http.server", "-b", "127.0.0.1", "-d", site,
                        str(port)], name="http")
    c = wait_until(lambda: _try_connect(port), TIMEOUT, "the server to listen")
    try:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.file.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        c.file.flush()
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += c.file.readline()
        assert head.startswith(b"HTTP/1.0 200") and b"%d" % len(body) in head, head
        got = bytearray()

        def read_some(_i: int = 0) -> None:
            got.extend(c.file.read(1 << 20))

        read_some()
        three_rounds(procs, proc, tmp_path, "--tcp-established", after=read_some)
        while len(got) < len(body) and (chunk := c.file.read(1 << 20)):
            got.extend(chunk)
    finally:
        c.close()
    assert len(got) == len(body) and got == body, "the file came different"


# ------------------------------------------------------------------ interpreters' servers

NODE_CLUSTER = r"""
const cluster = require("cluster"), net = require("net");
if (cluster.isPrimary) {
  for (let i = 0; i < 2; i++) cluster.fork();
  let up = 0;
  cluster.on("listening", (w, a) => { if (++up == 2) console.log("port " + a.port); });
  cluster.on("exit", (w, code, sig) => console.log("worker died " + code + " " + sig));
} else {
  let n = 0;
  net.createServer((c) => {
    let buf = "";
    c.on("data", (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1);
        n++;
        // the primary counts with it, over the IPC channel
        process.send({ line }, () => c.write(process.pid + " " + n + " " + line + "\n"));
      }
    });
  }).listen(Number(process.argv[2]), "127.0.0.1");
}
"""


def test_node_cluster_with_clients(procs: Procs, tmp_path: Path) -> None:
    """node's cluster: a primary and two workers sharing one listening socket (passed
    over their IPC channels, unix socket pairs), each message of a client sent to the
    primary before it is answered; two clients connected through three dumps
    (--tcp-established) are answered by the same workers, counting on."""
    node = need("node", "nodejs")
    port = free_port()
    (tmp_path / "cluster.js").write_text(NODE_CLUSTER)
    proc = procs.start([node, tmp_path / "cluster.js", str(port)], name="node")
    proc.out.wait_line(rf"^port {port}$", timeout=TIMEOUT * 2)
    clients = [_Client(port) for _ in range(4)]
    try:
        first = [c.ask("hello").split() for c in clients]
        assert {int(w) for w, *_ in first} <= set(tree(proc.pid)[1:])
        said = {k: int(f[1]) for k, f in enumerate(first)}

        def answer(i: int) -> None:
            for k, c in enumerate(clients):
                worker, n, word = c.ask(f"round{i}").split()
                assert int(worker) == int(first[k][0]) and word == f"round{i}"
                assert int(n) > said[k], (n, said[k])
                said[k] = int(n)

        three_rounds(procs, proc, tmp_path, "--tcp-established", after=answer)
        late = _Client(port)
        assert late.ask("late").split()[2] == "late"
        late.close()
    finally:
        for c in clients:
            c.close()
    assert not [ln for ln in proc.out.lines() if ln.startswith("worker died")]


TCL_SERVER = r"""
proc serve {chan addr port} {
    fconfigure $chan -buffering line
    fileevent $chan readable [list answer $chan]
}
proc answer {chan} {
    global count
    if {[gets $chan line] < 0} { if {[eof $chan]} { close $chan }; return }
    incr count
    puts $chan "[pid] $count $line"
}
set count 0
set srv [socket -server serve -myaddr 127.0.0.1 0]
puts "port [lindex [fconfigure $srv -sockname] 2]"
flush stdout
proc tick {n} { puts "tick $n"; flush stdout; after 100 [list tick [expr {$n + 1}]] }
tick 0
vwait forever
"""


def test_tcl_event_loop_server(procs: Procs, tmp_path: Path) -> None:
    """A Tcl server in its event loop (a threaded Tcl: its notifier thread, a pipe to
    it) with a timer ticking and a client connected through three dumps
    (--tcp-established): the client is answered, the count goes on, ticks too."""
    tclsh = need("tclsh", "tcl")
    (tmp_path / "server.tcl").write_text(TCL_SERVER)
    proc = procs.start([tclsh, tmp_path / "server.tcl"], name="tcl")
    port = int(proc.out.wait_line(r"^port \d+$", timeout=TIMEOUT).split()[1])
    c = _Client(port)
    n = [0]

    def answer(_i: int = 0) -> None:
        n[0] += 1
        assert c.ask(f"line{n[0]}") == f"{proc.pid} {n[0]} line{n[0]}"
        ticks = len([ln for ln in proc.out.lines() if ln.startswith("tick ")])
        proc.out.wait_line(rf"^tick {ticks + 2}$", timeout=TIMEOUT)

    try:
        answer()
        three_rounds(procs, proc, tmp_path, "--tcp-established", after=answer)
    finally:
        c.close()
    ticks = [int(ln.split()[1]) for ln in proc.out.lines() if ln.startswith("tick ")]
    assert_consecutive(ticks)


def test_openssl_tls_server_with_a_client(procs: Procs, tmp_path: Path) -> None:
    """``openssl s_server -rev`` (it sends each line back reversed) with a TLS client
    connected through three dumps (--tcp-established): the session's keys and
    sequence numbers live in the server's memory, so the same TLS connection goes on."""
    openssl = need("openssl", "openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=localhost", "-days", "1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=scaled(TIMEOUT))
    import ssl
    for _ in range(5):
        port = free_port()
        proc = procs.start([openssl, "s_server", "-rev", "-accept", f"127.0.0.1:{port}",
                            "-key", key, "-cert", cert], name="s_server")
        raw = wait_until(lambda p=port, pid=proc.pid: _try_connect(p) or not is_alive(pid),
                         TIMEOUT, "s_server to listen")
        if isinstance(raw, _Client):
            break
        procs.wait_gone(proc)
    else:
        raise AssertionError("s_server found no free port in 5 tries")
    raw.close()
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port),
                                                   timeout=scaled(TIMEOUT)))
    f = tls.makefile("rwb")

    def ask(line: str) -> str:
        f.write(line.encode() + b"\n")
        f.flush()
        while True:
            got = f.readline().decode().strip()
            if got and not got.startswith(("CONNECTION", "ACCEPT")):
                return got

    try:
        assert ask("hello") == "olleh"
        three_rounds(procs, proc, tmp_path, "--tcp-established",
                     after=lambda i: None if ask(f"round{i}") == f"{i}dnuor" else
                     pytest.fail(f"round {i}: the TLS connection did not answer"))
    finally:
        f.close()
        tls.close()


RUBY_SERVER = r"""
require "socket"
srv = TCPServer.new("127.0.0.1", 0)
$stdout.sync = true
puts "port #{srv.addr[1]}"
count = 0
lock = Mutex.new
Thread.new { n = 0; loop { puts "tick #{n}"; n += 1; sleep 0.1 } }
loop do
  Thread.new(srv.accept) do |c|
    while line = c.gets
      mine = lock.synchronize { count += 1 }
      c.puts "#{Process.pid} #{mine} #{line}"
    end
  end
end
"""


def test_ruby_threaded_server(procs: Procs, tmp_path: Path) -> None:
    """A Ruby server with a thread per client and a ticking thread (Ruby's timer
    thread and its wake-up pipe too): two clients connected through three dumps
    (--tcp-established) are answered, the shared count goes on, ticks too."""
    ruby = need("ruby", "ruby")
    (tmp_path / "server.rb").write_text(RUBY_SERVER)
    proc = procs.start([ruby, tmp_path / "server.rb"], name="ruby")
    port = int(proc.out.wait_line(r"^port \d+$", timeout=TIMEOUT).split()[1])
    clients = [_Client(port) for _ in range(2)]
    n = [0]

    def answer(_i: int = 0) -> None:
        for c in clients:
            n[0] += 1
            assert c.ask(f"line{n[0]}") == f"{proc.pid} {n[0]} line{n[0]}"
        ticks = len([ln for ln in proc.out.lines() if ln.startswith("tick ")])
        proc.out.wait_line(rf"^tick {ticks + 2}$", timeout=TIMEOUT)

    try:
        answer()
        three_rounds(procs, proc, tmp_path, "--tcp-established", after=answer)
    finally:
        for c in clients:
            c.close()
    assert_consecutive([int(ln.split()[1]) for ln in proc.out.lines()
                        if ln.startswith("tick ")])


def test_inotifywait_on_a_tree_of_folders(procs: Procs, tmp_path: Path) -> None:
    """``inotifywait -m -r`` on 300 folders (one watch each): after each restore a file
    made in the last folder, and in a folder made since (watched on its creation),
    is reported, each event once."""
    inotifywait = need("inotifywait", "inotify-tools")
    top = tmp_path / "top"
    for i in range(300):
        (top / f"d{i // 20}" / f"e{i}").mkdir(parents=True)
    proc = procs.start([inotifywait, "-m", "-r", "-e", "create", "--format", "%w%f", top],
                       name="inotify")
    proc.out.wait_line("Watches established", timeout=TIMEOUT)
    expected: list[str] = []

    def made(i: int) -> None:
        for path in (top / "d14" / "e299" / f"file{i}", top / f"new{i}",
                     top / f"new{i}" / "inside"):
            (path.mkdir if "new" in path.name else path.touch)()
            expected.append(str(path))
            proc.out.wait_line(f"^{re.escape(str(path))}$", timeout=TIMEOUT)

    made(-1)
    three_rounds(procs, proc, tmp_path, after=made)
    assert [ln for ln in proc.out.lines() if ln.startswith("/")] == expected


MANAGER = """
import multiprocessing as mp, os, time
if __name__ == "__main__":
    with mp.Manager() as m:
        shared = m.dict()
        lock = m.Lock()
        i = 0
        while True:
            with lock:
                shared[i % 7] = shared.get(i % 7, 0) + 1
            print(i, sum(shared.values()), m._process.pid, flush=True)
            i += 1
            time.sleep(0.05)
"""


def test_multiprocessing_manager(procs: Procs, tmp_path: Path) -> None:
    """A multiprocessing Manager: its server process holds a dict and a lock that the
    parent reaches over a unix socket (authenticated by HMAC): after each restore the
    parent's calls go on, on the same connection, and the dict's sum counts on."""
    (tmp_path / "manager.py").write_text(MANAGER)
    proc = procs.start([PYTHON, tmp_path / "manager.py"], name="manager")
    proc.out.wait_line(r"^5 ", timeout=TIMEOUT)
    server = tree(proc.pid)[1]

    def more(_i: int = 0) -> None:
        n = len(proc.out.lines())
        proc.out.wait_line(rf"^{n + 5} ", timeout=TIMEOUT)

    three_rounds(procs, proc, tmp_path, after=more)
    rows = [[int(x) for x in ln.split()] for ln in proc.out.lines()]
    assert [r[0] for r in rows] == list(range(len(rows)))
    assert all(r[1] == r[0] + 1 and r[2] == server for r in rows), rows


FORKSERVER = """
import multiprocessing as mp, os, time
def square(x):
    time.sleep(0.02)
    return x * x, os.getpid()
if __name__ == "__main__":
    mp.set_start_method("forkserver")
    with mp.Pool(3) as pool:
        i = 0
        while True:
            got = pool.map(square, range(i, i + 6))
            with mp.Pool(1) as new:  # its worker forked by the fork server now
                extra, pid = new.apply(square, (i,))
            print(i, *[x for x, _ in got], extra, pid, flush=True)
            i += 1
"""


def test_multiprocessing_forkserver_pool(procs: Procs, tmp_path: Path) -> None:
    """A multiprocessing Pool started from a fork server (which gets each new child's
    fds over a unix socket, SCM_RIGHTS) and its resource tracker: after each restore the
    pool's workers answer on, and a new pool each round gets a new worker from the
    restored fork server."""
    (tmp_path / "fs.py").write_text(FORKSERVER)
    proc = procs.start([PYTHON, tmp_path / "fs.py"], name="forkserver")

    def more(_i: int = 0) -> None:
        n = len(proc.out.lines())
        wait_until(lambda: len(proc.out.lines()) >= n + 3, TIMEOUT, "more rounds of the pools")

    more()
    # not crashed after -R: the pools it makes and ends since unlink their named
    # semaphores, which the -R dump holds mapped
    three_rounds(procs, proc, tmp_path, after=more)
    rows = [[int(x) for x in ln.split()] for ln in proc.out.lines()]
    assert [r[0] for r in rows] == list(range(len(rows)))
    assert all(r[1:8] == [(r[0] + k) ** 2 for k in range(6)] + [r[0] ** 2] for r in rows), rows
    assert len({r[8] for r in rows}) == len(rows), "a new pool's worker came back twice"


def test_bash_coprocess(procs: Procs, tmp_path: Path) -> None:
    """bash with a coprocess (``coproc awk``: pipes both ways): a loop hands it numbers
    and reads their squares; after each restore each answer is still right."""
    out = Output(tmp_path / "sums")
    proc = procs.start(["bash", "-c", "coproc awk '{ print $1 * $1; fflush() }'; i=0; "
                        'while :; do echo $i >&${COPROC[1]}; read -r r <&${COPROC[0]}; '
                        f"echo $i $r >> {out.path}; i=$((i+1)); sleep 0.05; done"],
                       name="coproc")

    def more(_i: int = 0) -> None:
        n = len(out.lines())
        wait_until(lambda: len(out.lines()) >= n + 5, TIMEOUT, "more answers")

    more()
    three_rounds(procs, proc, tmp_path, out=out, after=more)
    rows = [[int(x) for x in ln.split()] for ln in out.lines()]
    assert [r[0] for r in rows] == list(range(len(rows)))
    assert all(r[1] == r[0] * r[0] for r in rows), rows


# ------------------------------------------------------------------ a Go program

def _unix_get(sock: Path, path: str) -> str | None:
    """The body of GET ``path`` from an HTTP server on unix socket ``sock``, or None."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(scaled(TIMEOUT))
            s.connect(str(sock))
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: d\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    head, _, body = data.decode().partition("\r\n\r\n")
    return body if head.startswith("HTTP/1.") and " 200 " in head.split("\r\n")[0] else None


def test_go_api_server(procs: Procs, tmp_path: Path) -> None:
    """``podman system service`` (a Go program: the runtime's threads, its netpoller's
    epoll and signal-based preemption) serving its API on a unix socket: after each
    restore it answers a ping and its info, from the same threads."""
    podman = need("podman", "podman")
    run_root = tmp_path / "run"  # podman takes a runroot of 50 characters at most
    if len(str(run_root)) > 40:
        run_root = Path(tempfile.mkdtemp(prefix="ckpt-pm-", dir="/tmp"))
    sock = tmp_path / "api.sock"
    proc = procs.start([podman, "--root", tmp_path / "storage", "--runroot", run_root,
                        "--tmpdir", run_root / "tmp", "--storage-driver", "vfs",
                        "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                        "system", "service", "--time=0", f"unix://{sock}"], name="podman")
    try:
        wait_until(lambda: _unix_get(sock, "/v4.0.0/libpod/_ping") == "OK", TIMEOUT * 2,
                   "the API to answer")
        tids = threads(proc.pid)

        def answers(_i: int) -> None:
            assert _unix_get(sock, "/v4.0.0/libpod/_ping") == "OK"
            info = json.loads(_unix_get(sock, "/v4.0.0/libpod/info") or "{}")
            assert info["store"]["graphRoot"] == str(tmp_path / "storage"), info["store"]
            assert tids <= threads(proc.pid), "a thread of the Go runtime was lost"

        three_rounds(procs, proc, tmp_path, after=answers)
    finally:
        if run_root.parent == Path("/tmp"):
            shutil.rmtree(run_root, ignore_errors=True)


# ------------------------------------------------------------------ replication

def test_redis_primary_and_replica(procs: Procs, tmp_path: Path) -> None:
    """A redis primary and its replica, both children of one shell (the replication
    link a loopback connection inside the tree, --tcp-established), and a client
    outside writing to the primary: after each restore the replica is still linked
    (no full resync), and the values written since reach it."""
    redis = need("redis-server", "redis-server")
    for _ in range(5):
        primary, replica = free_port(), free_port()
        if primary == replica:
            continue
        common = "--bind 127.0.0.1 --save '' --appendonly no --protected-mode no"
        (tmp_path / "p").mkdir(exist_ok=True)
        (tmp_path / "r").mkdir(exist_ok=True)
        proc = procs.start(["bash", "-c", f"{redis} --port {primary} {common} "
                            f"--dir {tmp_path}/p > {tmp_path}/p.log & {redis} --port "
                            f"{replica} {common} --dir {tmp_path}/r --replicaof 127.0.0.1 "
                            f"{primary} > {tmp_path}/r.log & wait"], name="redis")
        if wait_until(lambda p=primary, r=replica, pid=proc.pid: _both_up(tmp_path, p, r, pid),
                      TIMEOUT, "both servers to answer") == "up":
            break
        procs.wait_gone(proc)
    else:
        raise AssertionError("no two free ports for redis in 5 tries")
    wait_until(lambda: "master_link_status:up" in (_redis_ask(replica, "INFO", "replication")
                                                   or ""), TIMEOUT, "the replica's link")

    def synced(i: int) -> None:
        assert _redis_ask(primary, "SET", f"k{i}", f"v{i}") == "+OK"
        value = f"v{i}"
        wait_until(lambda: _redis_ask(replica, "GET", f"k{i}") == f"${len(value)}\r\n{value}",
                   TIMEOUT, f"k{i} on the replica")

    synced(-1)
    three_rounds(procs, proc, tmp_path, "--tcp-established", after=synced)
    stats = _redis_ask(primary, "INFO", "stats") or ""
    assert re.search(r"^sync_full:1\r?$", stats, re.M), "the replica synced again in full"


def _both_up(tmp_path: Path, primary: int, replica: int, pid: int) -> str | None:
    """"up" once both redis servers answer; "failed" when one could not listen."""
    if _redis_ask(primary, "PING") == "+PONG" and _redis_ask(replica, "PING") == "+PONG":
        return "up"
    logs = [tmp_path / "p.log", tmp_path / "r.log"]
    if any(f.exists() and "Address already in use" in f.read_text() for f in logs):
        for server in tree(pid)[1:]:  # the other one: the shell then ends
            os.kill(server, signal.SIGKILL)
        return "failed"
    return None


def _redis_ask(port: int, *args: str) -> str | None:
    """One command to redis on ``port``; its reply's text (bulk: "$LEN\\r\\nDATA"), or
    None when nobody answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as c:
            c.sendall(b"*%d\r\n" % len(args) + b"".join(
                b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args))
            data = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
                if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                    break
                if data.startswith(b"$"):
                    head, _, rest = data.partition(b"\r\n")
                    if int(head[1:]) < 0 or len(rest) >= int(head[1:]) + 2:
                        break
    except OSError:
        return None
    return data.decode().rstrip("\r\n") or None


# ------------------------------------------------------------------ gpg-agent

def test_gpg_agent_keeps_a_cached_passphrase(procs: Procs, tmp_path: Path) -> None:
    """gpg-agent (its four listening sockets, its inotify watches on its home and
    sockets) with a passphrase in its cache: after each restore it gives the same
    passphrase back, from the same PID."""
    agent = need("gpg-agent", "gpg-agent")
    connect = need("gpg-connect-agent", "gpgconf")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    (home / "gpg-agent.conf").write_text("allow-preset-passphrase\n")
    starter = procs.start([agent, "--homedir", home, "--daemon"], name="agent")
    assert procs.wait_gone(starter, timeout=TIMEOUT) == 0, "gpg-agent did not start"
    grip = "0123456789ABCDEF0123456789ABCDEF01234567"

    def ask(command: str) -> str:
        res = subprocess.run([connect, "--homedir", str(home), "--no-autostart", command,
                              "/bye"], capture_output=True, text=True,
                             timeout=scaled(TIMEOUT))
        return res.stdout

    # the daemon is the starter's child, left to us (a child subreaper)
    said = wait_until(lambda: re.fullmatch(r"D (\d+)\nOK\n", ask("GETINFO pid")), TIMEOUT,
                      "the agent to answer")
    proc = procs.adopt(int(said[1]), starter.out)
    assert ask(f"PRESET_PASSPHRASE {grip} -1 {b'secret'.hex()}") == "OK\n"

    def kept(_i: int = 0) -> None:
        assert ask(f"GET_PASSPHRASE --no-ask --data {grip} X X X") == "D secret\nOK\n"
        assert ask("GETINFO pid") == f"D {proc.pid}\nOK\n"

    kept()
    three_rounds(procs, proc, tmp_path, after=kept)


def test_tail_follows_a_deleted_log(procs: Procs, tmp_path: Path) -> None:
    """``tail -f LOG`` while the shell writing LOG (its fd open for appending) goes on
    after LOG was removed: tail follows the deleted file through its fd and an inotify
    watch on it; after each restore (the file made again as a ghost, the watch on it)
    the lines written go on reaching tail's output, each once, in order."""
    log = tmp_path / "app.log"
    log.write_text("")
    out = Output(tmp_path / "followed")
    proc = procs.start(["bash", "-c", f"exec 8>>{log}; tail -f {log} > {out.path} & i=0; "
                        "while :; do echo $i >&8; i=$((i+1)); sleep 0.1; done"], name="log")
    out.wait_numbers(3, timeout=TIMEOUT)
    log.unlink()
    out.wait_numbers(len(out.numbers()) + 3, timeout=TIMEOUT)
    tail = tree(proc.pid)[1]

    def watched_inode() -> tuple[int, int]:
        """(the inode tail's inotify watches, the inode of tail's fd on the log)."""
        fds = {fd: os.readlink(f"/proc/{tail}/fd/{fd}") for fd in os.listdir(f"/proc/{tail}/fd")}
        ino = next(fd for fd, link in fds.items() if link == "anon_inode:inotify")
        with open(f"/proc/{tail}/fdinfo/{ino}") as f:
            watch = re.search(r"^inotify wd:\S+ ino:([0-9a-f]+)", f.read(), re.M)
        assert watch, "tail watches nothing"
        held = next(fd for fd, link in fds.items() if link.endswith("app.log (deleted)"))
        return int(watch[1], 16), os.stat(f"/proc/{tail}/fd/{held}").st_ino

    def goes_on(_i: int) -> None:
        out.wait_numbers(len(out.numbers()) + 3, timeout=TIMEOUT)
        watch, held = watched_inode()
        assert watch == held, "the watch is not on the file tail reads"

    three_rounds(procs, proc, tmp_path, out=out, after=goes_on)
    assert tree(proc.pid)[1] == tail
    assert_consecutive(out.numbers())


# ------------------------------------------------------------------ the kernel log

def test_dmesg_follows_the_kernel_log(procs: Procs, tmp_path: Path) -> None:
    """``dmesg -w`` (/dev/kmsg, whose read position the kernel does not show): after
    each restore it prints the records logged since, not the whole log again, and
    every record once."""
    dmesg = need("dmesg", "util-linux")
    proc = procs.start([dmesg, "-w"], name="dmesg")

    def logged(i: int) -> None:
        mark = f"ckpt-test {os.getpid()} {tmp_path.name} {i}"
        with open("/dev/kmsg", "w") as f:
            f.write(mark + "\n")
        proc.out.wait_line(re.escape(mark), timeout=TIMEOUT)

    logged(-1)
    first = proc.out.lines()[0]
    three_rounds(procs, proc, tmp_path, after=logged)
    lines = proc.out.lines()
    assert lines.count(first) == 1, "the kernel log was printed again"
    assert len(set(lines)) == len(lines), "a record was printed twice"


# ------------------------------------------------------------------ a background save

def test_redis_background_save(procs: Procs, tmp_path: Path) -> None:
    """redis-server in the middle of a BGSAVE (its forked child writing the snapshot,
    slowed by rdb-key-save-delay, its memory shared with the server copy-on-write):
    dumped three times with the child writing, the save then ends with success, and
    a new redis-server loads every key from the file."""
    redis = need("redis-server", "redis-server")
    keys = 2000
    for attempt in range(5):
        port = free_port()
        data = tmp_path / f"data{attempt}"
        data.mkdir()
        proc = procs.start([redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", data, "--protected-mode", "no",
                            "--rdb-key-save-delay", "10000"], name=f"redis{attempt}")
        if wait_until(lambda p=port, pid=proc.pid: _redis_ask(p, "PING") == "+PONG"
                      or not is_alive(pid), TIMEOUT, "redis to answer") and is_alive(proc.pid):
            break
        procs.wait_gone(proc)
    else:
        raise AssertionError("no free port for redis in 5 tries")
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as c:
        c.sendall(b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\nk%d\r\n$%d\r\nv%d\r\n"
                           % (len(str(i)) + 1, i, len(str(i)) + 1, i) for i in range(keys)))
        got = b""
        while got.count(b"+OK\r\n") < keys:
            got += c.recv(65536)
    assert _redis_ask(port, "BGSAVE") == "+Background saving started"
    child = wait_until(lambda: tree(proc.pid)[1:], TIMEOUT, "the saving child")[0]

    def saving(_i: int) -> None:
        assert tree(proc.pid)[1:] == [child], "the save ended before the rounds did"
        assert "rdb_bgsave_in_progress:1" in (_redis_ask(port, "INFO", "persistence") or "")

    three_rounds(procs, proc, tmp_path, "--tcp-established", after=saving)
    wait_until(lambda: "rdb_bgsave_in_progress:0" in (_redis_ask(port, "INFO", "persistence")
                                                      or ""), TIMEOUT * 4, "the save to end")
    assert "rdb_last_bgsave_status:ok" in (_redis_ask(port, "INFO", "persistence") or "")
    check_port = free_port()
    check = procs.start([redis, "--port", str(check_port), "--bind", "127.0.0.1", "--save",
                         "", "--appendonly", "no", "--dir", data, "--protected-mode", "no"],
                        name="check")
    wait_until(lambda: _redis_ask(check_port, "PING") == "+PONG" or not is_alive(check.pid),
               TIMEOUT, "the second redis to load the file")
    assert _redis_ask(check_port, "DBSIZE") == f":{keys}"
    assert _redis_ask(check_port, "GET", "k1234") == "$5\r\nv1234"
