"""Servers from Debian with workers, threads or clients in the middle of a transfer,
each dumped and restored three times in a row (killed, -R, killed): php-fpm's master
and its workers of another user sharing their scoreboard, uwsgi's master and workers
sharing a cache, BIND's named with its worker threads, squid serving from its
cache, MariaDB with a client in a transaction, an rsync daemon and vsftpd each
sending a file to a client outside the tree, an Erlang VM serving clients and running
commands through its erl_child_setup, and fio doing asynchronous I/O (libaio) that
verifies what it wrote. After each restore the work goes on from where it was; what
ckpt cannot restore (vsftpd's sessions in namespaces of their own, an io_uring) is
refused at dump, naming it, and the server runs on."""

from __future__ import annotations

import glob
import hashlib
import http.server
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ckpt_helpers import (
    Proc,
    Procs,
    assert_consecutive,
    ckpt_fails,
    free_port,
    is_alive,
    proc_status,
    scaled,
    wait_until,
)
from real_helpers import TIMEOUT, http_get, need, three_rounds, tree


def _listening(procs: Procs, start: Callable[[int], Proc], up: Callable[[int], object],
               kind: socket.SocketKind = socket.SOCK_STREAM) -> tuple[Proc, int]:
    """A server ``start(port)`` started on a free port, once ``up(port)``; tried again on
    another port when it ended first (another test took the port meanwhile)."""
    for _ in range(5):
        port = free_port(kind)
        proc = start(port)
        if wait_until(lambda p=port, pid=proc.pid: up(p) or not is_alive(pid), TIMEOUT,
                      f"{proc.argv[0]} to answer") and is_alive(proc.pid):
            return proc, port
        procs.wait_gone(proc)
    raise AssertionError(f"{proc.argv[0]} did not start on a free port in 5 tries; "
                         f"it printed: {proc.out.lines()[-5:]}")


def _workers(pid: int) -> set[int]:
    return set(tree(pid)) - {pid}


def _rounds_then_a_worker_killed(procs: Procs, master: Proc, tmp_path: Path,
                                 serves: Callable[[int], None]) -> set[int]:
    """Three rounds of ``master``'s tree, ``serves(i)`` after each; its workers are
    those dumped. Then one is killed: the master starts another. Its workers then."""
    workers = _workers(master.pid)
    three_rounds(procs, master, tmp_path, after=serves)
    assert _workers(master.pid) == workers
    gone = min(workers)
    os.kill(gone, signal.SIGKILL)
    wait_until(lambda: len(_workers(master.pid) - {gone}) == len(workers), TIMEOUT,
               "the master to start another worker")
    return _workers(master.pid) - {gone}


# ------------------------------------------------------------------ php-fpm

def _fastcgi(port: int, params: dict[str, str]) -> str:
    """The output of one FastCGI request (no body) to loopback ``port``."""
    def record(kind: int, body: bytes) -> bytes:
        return struct.pack(">BBHHBx", 1, kind, 1, len(body), 0) + body

    pairs = b"".join(bytes([len(k), len(v)]) + k + v for k, v in
                     ((k.encode(), v.encode()) for k, v in params.items()))
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as s:
        s.sendall(record(1, struct.pack(">HB5x", 1, 0)) + record(4, pairs) + record(4, b"")
                  + record(5, b""))
        while True:
            head = s.recv(8, socket.MSG_WAITALL)
            if len(head) < 8:
                break
            _, kind, _, size, pad = struct.unpack(">BBHHBx", head)
            body = s.recv(size + pad, socket.MSG_WAITALL)[:size] if size + pad else b""
            if kind == 6:  # FCGI_STDOUT
                out += body
            elif kind == 3:  # FCGI_END_REQUEST
                break
    return out.decode().split("\r\n\r\n", 1)[-1]


@contextmanager
def _site() -> Iterator[Path]:
    """A folder its workers (another user) may read, which a test's folder is not."""
    site = Path(tempfile.mkdtemp(prefix="ckpt-php-"))
    try:
        site.chmod(0o755)
        yield site
    finally:
        shutil.rmtree(site, ignore_errors=True)


def test_php_fpm_master_and_workers(procs: Procs, tmp_path: Path) -> None:
    """php-fpm: a root master and two workers running as www-data, their scoreboard in
    memory they share. After each restore the same workers answer, the count of
    accepted connections goes on, and a worker killed afterwards is replaced by the
    master, which the new one then answers for."""
    fpm = next(iter(sorted(glob.glob("/usr/sbin/php-fpm*"))), None)
    if fpm is None:
        pytest.skip("php-fpm is not installed (Debian package php-fpm; "
                    "scripts/bootstrap.sh installs it as root)")
    with _site() as site:
        (site / "hit.php").write_text('<?php echo getmypid(), " ", $_GET["n"], "\\n";\n')

        def start(port: int) -> Proc:
            (tmp_path / "fpm.conf").write_text(
                f"[global]\nerror_log = {tmp_path}/fpm.log\ndaemonize = no\n"
                f"[www]\nuser = www-data\nlisten = 127.0.0.1:{port}\npm = static\n"
                "pm.max_children = 2\npm.status_path = /status\n")
            return procs.start([fpm, "-F", "-y", tmp_path / "fpm.conf"], name="fpm",
                               cwd=tmp_path)

        def hit(port: int, n: int) -> tuple[int, int]:
            pid, got = _fastcgi(port, {"SCRIPT_FILENAME": f"{site}/hit.php",
                                       "REQUEST_METHOD": "GET",
                                       "QUERY_STRING": f"n={n}"}).split()
            return int(pid), int(got)

        def accepted(port: int) -> int:
            status = _fastcgi(port, {"SCRIPT_FILENAME": "/status", "SCRIPT_NAME": "/status",
                                     "REQUEST_METHOD": "GET"})
            return int(re.search(r"^accepted conn: +(\d+)", status, re.M)[1])

        def up(port: int) -> bool:
            try:
                return hit(port, 0)[1] == 0
            except (OSError, ValueError):
                return False

        proc, port = _listening(procs, start, up)

        def www_data() -> bool:
            try:
                return [proc_status(w)["Uid"].split()[1] for w in _workers(proc.pid)
                        ] == ["33"] * 2
            except (OSError, KeyError):
                return False

        wait_until(www_data, TIMEOUT, "two workers running as www-data")
        workers = _workers(proc.pid)
        seen = [accepted(port)]

        def serves(i: int) -> None:
            answered = {hit(port, 10 * i + k) for k in range(4)}
            assert {n for _, n in answered} == {10 * i + k for k in range(4)}
            assert {p for p, _ in answered} <= workers
            seen.append(accepted(port))
            assert seen[-1] == seen[-2] + 5, seen  # four hits and this status request

        now = _rounds_then_a_worker_killed(procs, proc, tmp_path, serves)
        assert len(now - workers) == 1, now
        answered = {hit(port, 100 + k)[0] for k in range(6)}
        assert answered <= now
        assert accepted(port) == seen[-1] + 7


# ------------------------------------------------------------------ uwsgi

UWSGI_APP = """
import os, uwsgi
def application(env, start_response):
    n = int(uwsgi.cache_get("n") or b"0") + 1
    uwsgi.cache_update("n", str(n).encode())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%d %d" % (os.getpid(), n)).encode()]
"""


def test_uwsgi_master_and_workers(procs: Procs, tmp_path: Path) -> None:
    """uwsgi: a master and two workers of two threads each, serving a WSGI app whose
    counter lives in uwsgi's cache (memory the workers share, under its lock). After
    each restore the same workers answer and the counter goes on; a worker killed
    afterwards is replaced by the master, and the counter still goes on."""
    uwsgi = need("uwsgi", "uwsgi-core")
    if not glob.glob("/usr/lib/uwsgi/plugins/python3*_plugin.so"):
        pytest.skip("uwsgi's python3 plugin is not installed (Debian package "
                    "uwsgi-plugin-python3; scripts/bootstrap.sh installs it as root)")
    (tmp_path / "app.py").write_text(UWSGI_APP)
    count = [0]

    def ask(port: int) -> tuple[int, int] | None:
        body = http_get(port)
        if body is None:
            return None
        pid, n = map(int, body.split())
        count[0] += 1
        assert n == count[0], (n, count[0])
        return pid, n

    proc, port = _listening(procs, lambda port: procs.start(
        [uwsgi, "--plugin", "python3", "--http-socket", f"127.0.0.1:{port}", "--master",
         "--processes", "2", "--threads", "2", "--cache2", "name=default,items=100",
         "--wsgi-file", tmp_path / "app.py", "--die-on-term"], name="uwsgi", cwd=tmp_path), ask)
    wait_until(lambda: len(_workers(proc.pid)) == 2, TIMEOUT, "two workers")
    workers = _workers(proc.pid)

    def serves(_i: int) -> None:
        for _ in range(4):
            got = ask(port)
            assert got is not None and got[0] in workers, got

    now = _rounds_then_a_worker_killed(procs, proc, tmp_path, serves)
    for _ in range(4):
        got = ask(port)
        assert got is not None and got[0] in now, got


# ------------------------------------------------------------------ named

def _dns(port: int, name: str, tcp: bool = False) -> str | None:
    """The first A record named on loopback ``port`` gives for ``name`` (over UDP, or
    TCP), or None without an answer."""
    query = struct.pack(">HHHHHH", 0x4321, 0x0100, 1, 0, 0, 0) + b"".join(
        bytes([len(p)]) + p for p in name.encode().split(b".")) + b"\0" + struct.pack(
        ">HH", 1, 1)
    try:
        if tcp:
            with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)) as s:
                s.sendall(struct.pack(">H", len(query)) + query)
                size = struct.unpack(">H", s.recv(2, socket.MSG_WAITALL))[0]
                answer = s.recv(size, socket.MSG_WAITALL)
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(scaled(5))
                s.sendto(query, ("127.0.0.1", port))
                answer = s.recv(512)
    except (OSError, struct.error):
        return None
    if answer[:2] != b"\x43\x21" or answer[3] & 15 or answer[7] < 1:
        return None
    return ".".join(map(str, answer[-4:]))


ZONE = """$TTL 60
@ IN SOA ns.ckpt. root.ckpt. {serial} 60 60 60 60
@ IN NS ns.ckpt.
ns IN A 127.0.0.1
www IN A 10.1.2.3
{more}"""


def test_named_answers_and_reloads(procs: Procs, tmp_path: Path) -> None:
    """BIND's named (two worker threads and its others: libuv loops, timers) serving a
    zone: after each restore it answers over UDP and TCP, and after the last it reads
    its zone again on SIGHUP and answers a name added to it."""
    named = shutil.which("named") or "/usr/sbin/named"
    if not os.path.exists(named):
        pytest.skip("named is not installed (Debian package bind9; "
                    "scripts/bootstrap.sh installs it as root)")
    zone = tmp_path / "ckpt.zone"
    zone.write_text(ZONE.format(serial=1, more=""))

    def start(port: int) -> Proc:
        (tmp_path / "named.conf").write_text(
            f'options {{ directory "{tmp_path}"; listen-on port {port} {{ 127.0.0.1; }}; '
            f'listen-on-v6 {{ none; }}; pid-file none; recursion no; '
            f'session-keyfile "{tmp_path}/session.key"; }};\ncontrols {{ }};\n'
            f'zone "ckpt." {{ type primary; file "{zone}"; }};\n')
        return procs.start([named, "-g", "-c", tmp_path / "named.conf", "-n", "2",
                            "-u", "root"], name="named", cwd=tmp_path)

    proc, port = _listening(procs, start, lambda p: _dns(p, "www.ckpt") and
                            _dns(p, "www.ckpt", tcp=True))

    def answers(_i: int) -> None:
        assert _dns(port, "www.ckpt") == "10.1.2.3"
        assert _dns(port, "www.ckpt", tcp=True) == "10.1.2.3"

    three_rounds(procs, proc, tmp_path, after=answers)
    zone.write_text(ZONE.format(serial=2, more="later IN A 10.4.5.6\n"))
    os.kill(proc.pid, signal.SIGHUP)
    assert wait_until(lambda: _dns(port, "later.ckpt"), TIMEOUT,
                      "the name added to the zone") == "10.4.5.6"


# ------------------------------------------------------------------ squid

class _Origin(http.server.BaseHTTPRequestHandler):
    """An origin server whose page may be cached an hour, counting its requests."""

    hits = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).hits += 1
        body = f"page {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Cache-Control", "public, max-age=3600")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _through(proxy: int, url: str) -> tuple[str, str] | None:
    """(body, X-Cache header) of ``url`` fetched through the proxy on ``proxy``, or None
    when it does not answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(
        {"http": f"http://127.0.0.1:{proxy}"}))
    try:
        with opener.open(url, timeout=scaled(10)) as r:
            return r.read().decode(), r.headers.get("X-Cache", "")
    except OSError:
        return None


def test_squid_serves_from_its_cache(procs: Procs, tmp_path: Path) -> None:
    """squid (as user proxy, its unlinkd) caching a page of an origin server: after
    each restore the page comes from its memory cache (a HIT; the origin asked once in
    all), and a new page goes to the origin. Its pinger is off: its raw ICMPv6 socket
    gets every ICMPv6 message of the host, and with a steady stream of them (other
    tests' UDP to closed ports) one is always queued when the dump looks, which it
    refuses (after trying again for 2 s)."""
    squid = shutil.which("squid") or "/usr/sbin/squid"
    if not os.path.exists(squid):
        pytest.skip("squid is not installed (Debian package squid; "
                    "scripts/bootstrap.sh installs it as root)")
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{origin.server_address[1]}"
    _Origin.hits = 0
    try:
        with _site() as site:  # squid's user must reach its cache and logs
            shutil.chown(site, "proxy")

            def start(port: int) -> Proc:
                conf = site / "squid.conf"
                conf.write_text(
                    f"http_port 127.0.0.1:{port}\nhttp_access allow all\n"
                    f"cache_dir ufs {site}/cache 16 4 16\ncache_log {site}/cache.log\n"
                    f"access_log {site}/access.log\npid_filename none\n"
                    f"cache_effective_user proxy\ncoredump_dir {site}\n"
                    "pinger_enable off\n")
                subprocess.run([squid, "-z", "-N", "-f", conf], cwd=tmp_path, check=True,
                               capture_output=True, timeout=scaled(TIMEOUT))
                return procs.start([squid, "-N", "-f", conf], name="squid", cwd=tmp_path)

            proc, port = _listening(procs, start, lambda p: _through(p, f"{url}/first"))
            asked = _Origin.hits  # once, or more if a try while squid started timed out

            def cached(_i: int = 0) -> None:
                body, how = _through(port, f"{url}/first") or ("", "")
                assert body == "page /first\n" and how.startswith("HIT"), (body, how)
                assert _Origin.hits == asked, "squid asked the origin again"

            cached()
            three_rounds(procs, proc, tmp_path, after=cached)
            body, how = _through(port, f"{url}/second") or ("", "")
            assert body == "page /second\n" and how.startswith("MISS"), (body, how)
            assert _Origin.hits == asked + 1
    finally:
        origin.shutdown()
        origin.server_close()


# ------------------------------------------------------------------ file servers

BIG = 24 << 20  # a transfer that lasts through the three rounds at the client's pace


def _grows(path: Callable[[], Path | None], what: str) -> None:
    """Wait until the file ``path()`` names grew by 256 KiB."""
    def size() -> int:
        p = path()
        try:
            return p.stat().st_size if p is not None else 0
        except FileNotFoundError:
            return 0

    before = size()
    wait_until(lambda: size() >= before + (256 << 10), TIMEOUT, f"{what} to go on")


def test_rsync_daemon_sending_to_a_slow_client(procs: Procs, tmp_path: Path) -> None:
    """An rsync daemon (its pid file locked, a child forked for the connection) sending
    a file to a client outside the tree that reads at 1 MB/s, dumped three times in the
    middle of it (--tcp-established --file-locks): the client gets the file whole, and
    the daemon then serves a new connection."""
    rsync = need("rsync", "rsync")
    module = tmp_path / "module"
    module.mkdir()
    body = os.urandom(BIG)
    (module / "big").write_bytes(body)
    (tmp_path / "rsyncd.conf").write_text(
        f"pid file = {tmp_path}/rsyncd.pid\nuse chroot = no\n"
        f"[mod]\npath = {module}\nread only = yes\n")

    def listing(port: int) -> str | None:
        res = subprocess.run([rsync, f"rsync://127.0.0.1:{port}/mod/"], capture_output=True,
                             text=True, timeout=scaled(TIMEOUT))
        return res.stdout if res.returncode == 0 else None

    proc, port = _listening(procs, lambda port: procs.start(
        [rsync, "--daemon", "--no-detach", f"--port={port}", "--address=127.0.0.1",
         f"--config={tmp_path}/rsyncd.conf", f"--log-file={tmp_path}/rsyncd.log"],
        name="rsyncd", cwd=tmp_path), listing)
    got = tmp_path / "got"
    got.mkdir()
    client = subprocess.Popen([rsync, "--bwlimit=1000", f"rsync://127.0.0.1:{port}/mod/big",
                               got], stdin=subprocess.DEVNULL)
    try:
        def partial() -> Path | None:
            return next(iter(got.glob(".big.*")), None)

        _grows(partial, "the transfer")
        sender = _workers(proc.pid)
        assert len(sender) == 1, sender
        three_rounds(procs, proc, tmp_path, "--tcp-established", "--file-locks",
                     after=lambda _i: _grows(partial, "the transfer"))
        assert _workers(proc.pid) >= sender
        assert client.wait(timeout=scaled(120)) == 0
    finally:
        client.kill()
        client.wait()
    assert hashlib.sha256((got / "big").read_bytes()).digest() == hashlib.sha256(
        body).digest(), "the file came whole"
    assert re.search(r"^-.* big$", listing(port) or "", re.M)


VSFTPD_CONF = """listen=YES
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=YES
anon_root={root}
no_anon_password=YES
local_enable=NO
write_enable=NO
secure_chroot_dir={empty}
xferlog_enable=YES
vsftpd_log_file={log}
"""


def _vsftpd(procs: Procs, tmp_path: Path, isolated: bool) -> tuple[Proc, int, bytes]:
    """vsftpd serving a big file to anonymous users; with ``isolated`` (its default)
    each session runs in network and IPC namespaces of its own."""
    vsftpd = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
    if not os.path.exists(vsftpd):
        pytest.skip("vsftpd is not installed (Debian package vsftpd; "
                    "scripts/bootstrap.sh installs it as root)")
    root, empty = tmp_path / "pub", tmp_path / "empty"
    root.mkdir()
    empty.mkdir()
    body = os.urandom(BIG)
    (root / "big").write_bytes(body)
    root.chmod(0o555)  # vsftpd refuses an anonymous root its user may write

    def start(port: int) -> Proc:
        conf = tmp_path / "vsftpd.conf"
        conf.write_text(VSFTPD_CONF.format(port=port, root=root, empty=empty,
                                           log=tmp_path / "vsftpd.log")
                        + ("" if isolated else "isolate=NO\nisolate_network=NO\n"))
        return procs.start([vsftpd, conf], name="vsftpd", cwd=tmp_path)

    def greets(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)) as s:
                return s.recv(4).startswith(b"220")
        except OSError:
            return False

    proc, port = _listening(procs, start, greets)
    return proc, port, body


@contextmanager
def _download(port: int) -> Iterator[tuple[socket.socket, Callable[[], bytes]]]:
    """An anonymous FTP session fetching ``big`` (binary, passive); yields the data
    connection and a function reading what is left of it."""
    import ftplib
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=scaled(TIMEOUT))
    ftp.login()
    ftp.voidcmd("TYPE I")
    data = ftp.transfercmd("RETR big")

    def rest() -> bytes:
        chunks = []
        while chunk := data.recv(1 << 16):
            chunks.append(chunk)
        data.close()
        assert ftp.voidresp().startswith("226"), "the transfer did not complete"
        return b"".join(chunks)

    try:
        yield data, rest
        ftp.quit()
    finally:
        data.close()
        ftp.close()


def _read(data: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = data.recv(min(1 << 16, n - got))
        assert chunk, "the data connection closed early"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def test_vsftpd_download_through_dumps(procs: Procs, tmp_path: Path) -> None:
    """vsftpd (sessions not isolated: a privileged parent and an unprivileged child,
    ``ftp``, chrooted, per session) sending a file to a client outside the tree that
    reads a piece between dumps (--tcp-established, --file-locks for the read lock on
    the file sent): the file comes whole, the session's processes are those dumped."""
    proc, port, body = _vsftpd(procs, tmp_path, isolated=False)
    with _download(port) as (data, rest):
        got = [_read(data, 1 << 20)]
        session = _workers(proc.pid)
        assert len(session) == 2, session

        def more(_i: int) -> None:
            got.append(_read(data, 1 << 20))

        three_rounds(procs, proc, tmp_path, "--tcp-established", "--file-locks", after=more)
        assert _workers(proc.pid) == session
        got.append(rest())
    assert b"".join(got) == body


def test_vsftpd_isolated_sessions_refused(procs: Procs, tmp_path: Path) -> None:
    """vsftpd as Debian configures it runs each session in network and IPC namespaces
    of its own, which ckpt does not restore inside a tree: the dump is refused naming
    the namespace and the process, and the download goes on whole."""
    proc, port, body = _vsftpd(procs, tmp_path, isolated=True)
    with _download(port) as (data, rest):
        got = [_read(data, 1 << 20)]
        err = ckpt_fails("dump", "-t", proc.pid, "-D", tmp_path / "images",
                         "--tcp-established", "--file-locks")
        assert re.search(r"process \d+ is in (ipc|net) namespace .*not ckpt's", err), err
        assert is_alive(proc.pid)
        got.append(rest())
    assert b"".join(got) == body


# ------------------------------------------------------------------ Erlang

ERLANG_SERVER = r"""
{ok, L} = gen_tcp:listen(0, [binary, {packet, line}, {active, false}, {reuseaddr, true},
                             {ip, {127,0,0,1}}]),
{ok, Port} = inet:port(L),
io:format("port ~p~n", [Port]),
ets:new(count, [public, named_table]),
ets:insert(count, {n, 0}),
spawn(fun() -> Tick = fun T(I) -> io:format("tick ~p~n", [I]), timer:sleep(100), T(I + 1) end,
               Tick(0) end),
Serve = fun S(Sock) ->
    case gen_tcp:recv(Sock, 0) of
        {ok, Line} ->
            N = ets:update_counter(count, n, 1),
            Out = string:trim(os:cmd("echo $((" ++ integer_to_list(N) ++ " * 7))")),
            gen_tcp:send(Sock, [integer_to_list(N), " ", Out, " ", Line]),
            S(Sock);
        _ -> ok
    end end,
Accept = fun A() ->
    {ok, Sock} = gen_tcp:accept(L),
    P = spawn(fun() -> receive go -> Serve(Sock) end end),
    ok = gen_tcp:controlling_process(Sock, P),
    P ! go,
    A() end,
Accept().
"""


def _child_setup(pid: int) -> int | None:
    """The VM's erl_child_setup (not a command it runs meanwhile)."""
    for p in _workers(pid):
        try:
            if Path(f"/proc/{p}/comm").read_text().strip() == "erl_child_setup":
                return p
        except OSError:
            pass
    return None


def test_erlang_server_with_clients(procs: Procs, tmp_path: Path) -> None:
    """An Erlang VM (its schedulers, dirty schedulers and async threads; epoll and
    timerfds) serving two clients connected through three dumps (--tcp-established),
    a process per client, counting in an ETS table and running a shell command per
    line through its erl_child_setup child (a unix socket pair): each client's lines
    are answered with the count going on and the command's output, and a ticking
    process prints on without a gap."""
    erl = need("erl", "erlang-base")
    proc = procs.start([erl, "-noshell", "-noinput", "-eval", ERLANG_SERVER], name="erl",
                       cwd=tmp_path)
    port = int(proc.out.wait_line(r"^port \d+$", timeout=TIMEOUT * 2).split()[1])
    assert len(os.listdir(f"/proc/{proc.pid}/task")) > 4, "no threads of the VM"
    clients = [socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT))
               for _ in range(2)]
    files = [c.makefile("rwb") for c in clients]
    count = [0]

    def ask(_i: int = 0) -> None:
        for k, f in enumerate(files):
            f.write(f"client{k}\n".encode())
            f.flush()
            count[0] += 1
            n = count[0]
            assert f.readline().decode() == f"{n} {n * 7} client{k}\n"

    def ticks() -> list[int]:
        return [int(ln.split()[1]) for ln in proc.out.lines() if ln.startswith("tick ")]

    try:
        ask()
        child_setup = _child_setup(proc.pid)
        assert child_setup is not None, "no erl_child_setup"
        three_rounds(procs, proc, tmp_path, "--tcp-established", after=ask)
        assert _child_setup(proc.pid) == child_setup
        n = len(ticks())
        wait_until(lambda: len(ticks()) > n + 5, TIMEOUT, "more ticks")
        assert_consecutive(ticks())
    finally:
        for f, c in zip(files, clients, strict=True):
            f.close()
            c.close()


# ------------------------------------------------------------------ fio

def _fio(procs: Procs, tmp_path: Path, engine: str) -> Proc:
    fio = need("fio", "fio")
    return procs.start([fio, "--name=verify", f"--ioengine={engine}", "--iodepth=8",
                        "--rw=randwrite", "--bs=4k", "--size=4m",
                        f"--filename={tmp_path}/fio.data", "--verify=crc32c",
                        "--verify_backlog=64", "--rate=1m", "--time_based", "--runtime=3600",
                        "--status-interval=1", "--verify_state_save=0"], name="fio",
                       cwd=tmp_path)


def _fio_ends_well(procs: Procs, proc: Proc) -> None:
    """fio stopped by SIGINT: it reports its job without an error (a verify error
    would be EILSEQ, 84), and exits 128 (its status for a run a signal ended)."""
    os.kill(proc.pid, signal.SIGINT)
    assert procs.wait_gone(proc, timeout=TIMEOUT) == 128
    text = "\n".join(proc.out.lines())
    last = re.findall(r"^verify: \(groupid=0, jobs=1\): err= *(\d+)", text, re.M)
    assert last and last[-1] == "0", text[-2000:]


def test_fio_libaio_verifying(procs: Procs, tmp_path: Path) -> None:
    """fio (a parent and its job process, which it watches through shared memory)
    writing with libaio, 8 requests in flight, and reading back what it wrote to check
    it (crc32c): dumped three times while it writes, it goes on, and ends without one
    verify error."""
    proc = _fio(procs, tmp_path, "libaio")

    def reports() -> int:
        return sum(1 for ln in proc.out.lines() if ln.startswith("verify: (groupid=0"))

    def more(_i: int = 0) -> None:
        n = reports()
        wait_until(lambda: reports() >= n + 2, TIMEOUT, "fio's next reports")

    more()
    three_rounds(procs, proc, tmp_path, after=more)
    _fio_ends_well(procs, proc)


def test_fio_io_uring_refused(procs: Procs, tmp_path: Path) -> None:
    """fio with io_uring: the dump is refused, naming the ring and the process that
    maps it; fio runs on and ends without an error."""
    proc = _fio(procs, tmp_path, "io_uring")
    proc.out.wait_line(r"^verify: \(groupid=0", timeout=TIMEOUT)
    err = ckpt_fails("dump", "-t", proc.pid, "-D", tmp_path / "images")
    assert re.search(r"process \d+ .*io_uring.*not supported", err), err
    assert is_alive(proc.pid)
    _fio_ends_well(procs, proc)


# ------------------------------------------------------------------ tcpdump

def test_tcpdump_refused_and_capturing_on(procs: Procs, tmp_path: Path) -> None:
    """tcpdump on loopback reads packets through a ring it maps from its packet socket
    (TPACKET_V3): the dump is refused naming that mapping and the process, and tcpdump
    captures on."""
    tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
    if not os.path.exists(tcpdump):
        pytest.skip("tcpdump is not installed (Debian package tcpdump; "
                    "scripts/bootstrap.sh installs it as root)")
    port = free_port(socket.SOCK_DGRAM)
    proc = procs.start([tcpdump, "-i", "lo", "-n", "-l", "-Q", "in", "udp", "port", str(port)],
                       name="tcpdump", cwd=tmp_path)

    def captured(payload: bytes) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(payload, ("127.0.0.1", port))
        return any(f"length {len(payload)}" in ln for ln in proc.out.lines())

    wait_until(lambda: captured(b"x" * 11), TIMEOUT, "tcpdump to capture")
    err = ckpt_fails("dump", "-t", proc.pid, "-D", tmp_path / "images")
    assert re.search(rf"process {proc.pid} mapping 0x[0-9a-f]+-0x[0-9a-f]+ socket:\[\d+\]: "
                     r"memory of a socket \(a packet socket's ring", err), err
    assert is_alive(proc.pid)
    wait_until(lambda: captured(b"y" * 23), TIMEOUT, "tcpdump to capture after the refusal")


# ------------------------------------------------------------------ MariaDB

def _mariadb(procs: Procs, tmp_path: Path, *options: str) -> tuple[Proc, int]:
    """mariadbd on a new data folder, listening on loopback; its port."""
    server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    install = shutil.which("mariadb-install-db")
    if not os.path.exists(server) or install is None or shutil.which("mariadb") is None:
        pytest.skip("MariaDB is not installed (Debian packages mariadb-server-core and "
                    "mariadb-client-core; scripts/bootstrap.sh installs them as root)")
    data = tmp_path / "data"
    subprocess.run([install, "--no-defaults", f"--datadir={data}", "--user=root",
                    "--skip-test-db", "--auth-root-authentication-method=normal"],
                   check=True, capture_output=True, cwd=tmp_path, timeout=scaled(120))

    def start(port: int) -> Proc:
        return procs.start([server, "--no-defaults", f"--datadir={data}", "--user=root",
                            f"--socket={tmp_path}/mysqld.sock", f"--port={port}",
                            "--bind-address=127.0.0.1", "--skip-grant-tables",
                            f"--pid-file={tmp_path}/mysqld.pid", *options],
                           name="mariadbd", cwd=tmp_path)

    def answers(port: int) -> bool:
        res = subprocess.run(["mariadb", "-h127.0.0.1", f"-P{port}", "-uroot", "-BN", "-e",
                              "select 1"], capture_output=True, text=True,
                             timeout=scaled(TIMEOUT))
        return res.stdout.strip() == "1"

    return _listening(procs, start, answers)


def test_mariadb_transaction_through_dumps(procs: Procs, tmp_path: Path) -> None:
    """MariaDB (InnoDB, its dozen threads; I/O without io_uring) with a client outside
    the tree in the middle of a transaction (--tcp-established): after each restore
    the client's session goes on in it, its rows seen by it alone, and once committed
    every row is there for a new connection."""
    proc, port = _mariadb(procs, tmp_path, "--innodb-use-native-aio=0")
    client = subprocess.Popen(["mariadb", "-h127.0.0.1", f"-P{port}", "-uroot", "-BNn"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert client.stdin is not None and client.stdout is not None

    def ask(sql: str) -> str:
        client.stdin.write(sql + "\n")
        client.stdin.flush()
        return client.stdout.readline().strip()

    def others_see() -> str:
        return subprocess.run(["mariadb", "-h127.0.0.1", f"-P{port}", "-uroot", "-BN", "-e",
                               "select count(*) from d.t"], capture_output=True, text=True,
                              check=True, timeout=scaled(TIMEOUT)).stdout.strip()

    try:
        ask("create database d; create table d.t (n int primary key) engine=innodb; "
            "begin; insert into d.t values (0); select count(*) from d.t;")

        def in_transaction(i: int) -> None:
            assert ask(f"insert into d.t values ({i + 1}); select count(*) from d.t;") == \
                str(i + 2)
            assert others_see() == "0", "the transaction's rows seen outside it"

        three_rounds(procs, proc, tmp_path, "--tcp-established", "--file-locks",
                     after=in_transaction)
        assert ask("commit; select 'done';") == "done"
        assert others_see() == "4"
        client.stdin.close()
        assert client.wait(timeout=scaled(TIMEOUT)) == 0
    finally:
        client.kill()
        client.wait()


def test_mariadb_with_io_uring_refused(procs: Procs, tmp_path: Path) -> None:
    """MariaDB as Debian builds it does InnoDB's I/O through io_uring: the dump is
    refused naming the ring and the process, and the server answers on."""
    proc, port = _mariadb(procs, tmp_path)
    err = ckpt_fails("dump", "-t", proc.pid, "-D", tmp_path / "images", "--tcp-established")
    assert re.search(rf"process {proc.pid} .*io_uring.*not supported", err), err
    assert is_alive(proc.pid)
    res = subprocess.run(["mariadb", "-h127.0.0.1", f"-P{port}", "-uroot", "-BN", "-e",
                          "select 6 * 7"], capture_output=True, text=True,
                         timeout=scaled(TIMEOUT))
    assert res.stdout.strip() == "42", res
