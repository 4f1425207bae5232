"""Daemons and network programs a user would checkpoint, each dumped and restored with
-d several times in a row: killed, dumped with -R and then killed with its whole tree
(as a crash would), killed again. Programs holding a TCP connection to a peer outside
the tree are dumped with --tcp-established and killed each time (a process dumped
with -R goes on using the connection, and its death then closes it for the peer).

After each restore the program serves what it held before (an ssh session with its
loop ticking on, an agent's key, an apache serving under the same children and
threads, a DNS name, a subscription, a half-done download) and takes new clients."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from ckpt_helpers import (
    PYTHON,
    Output,
    Procs,
    assert_consecutive,
    free_port,
    is_alive,
    scaled,
    wait_until,
)
from real_helpers import TIMEOUT, cycle, http_get, need, threads, tree

ROUNDS = (False, True, False)  # leave_running of each dump


def _run(*argv: str | Path, env: dict[str, str] | None = None) -> str:
    res = subprocess.run([os.fspath(a) for a in argv], capture_output=True, text=True,
                         env=env, timeout=scaled(TIMEOUT))
    assert res.returncode == 0, f"{argv[0]}: {res.stderr}"
    return res.stdout


# ------------------------------------------------------------------ sshd


def _ticks(out: Output) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+)\r?$", out.path.read_text(), re.M)]


def test_sshd_with_a_session(procs: Procs, tmp_path: Path) -> None:
    """OpenSSH's sshd with a client logged in, its loop printing on the session's pty
    (the listener, the session's sshd holding the pty master and the TCP connection,
    the shell and its loop): after each restore the client sees the ticks go on with
    none lost or repeated, over the same connection, and a new login works."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd):
        pytest.skip("sshd is not installed (Debian package openssh-server)")
    ssh = need("ssh", "openssh-client")
    keygen = need("ssh-keygen", "openssh-client")
    for key in ("host", "user"):
        _run(keygen, "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / key)
    shutil.copy(tmp_path / "user.pub", tmp_path / "authorized_keys")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation
    port = free_port()
    server = procs.start([sshd, "-D", "-e", "-p", str(port), "-h", tmp_path / "host",
                          "-o", "ListenAddress=127.0.0.1", "-o", "PidFile=none",
                          "-o", f"AuthorizedKeysFile={tmp_path / 'authorized_keys'}",
                          "-o", "StrictModes=no", "-o", "UsePAM=no",
                          "-o", "PermitRootLogin=yes"], name="sshd")
    client = [ssh, "-i", str(tmp_path / "user"), "-p", str(port), "-o", "BatchMode=yes",
              "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
              "-o", "LogLevel=ERROR", "root@127.0.0.1"]
    wait_until(lambda: subprocess.run([*client, "true"], capture_output=True,
                                      timeout=scaled(TIMEOUT)).returncode == 0,
               TIMEOUT, "sshd to take logins")
    session = procs.start([*client, "-tt", "i=0; while :; do echo tick $i; "
                           "i=$((i+1)); sleep 0.1; done"], name="session")
    wait_until(lambda: len(_ticks(session.out)) >= 5, TIMEOUT, "ticks over ssh")
    for i in range(2):
        pids = cycle(procs, server, tmp_path / f"images{i}", "--tcp-established")
        assert len(pids) >= 3, f"not the listener, the session and its shell: {pids}"
        n = len(_ticks(session.out))
        wait_until(lambda n=n: len(_ticks(session.out)) >= n + 10, TIMEOUT,
                   "ticks over the same connection after the restore")
        assert_consecutive(_ticks(session.out))
        assert _run(*client, "echo", f"login-{i}") == f"login-{i}\n"
    assert is_alive(session.pid), "the client's connection broke"


# ------------------------------------------------------------------ apache2


THREADS = 25  # apache's worker threads in each child


def test_apache_event_mpm(procs: Procs, tmp_path: Path) -> None:
    """Debian's apache2 with the event MPM: a root parent and three children of 27
    threads each, running as www-data: after each restore the same children and
    threads serve, and a graceful restart (SIGUSR1) makes new children that serve."""
    apache = shutil.which("apache2") or "/usr/sbin/apache2"
    modules = Path("/usr/lib/apache2/modules")
    if not os.path.exists(apache) or not modules.is_dir():
        pytest.skip("apache2 is not installed (Debian package apache2)")
    www = Path(tempfile.mkdtemp(prefix="ckpt-apache-www-"))  # www-data must reach it
    os.chmod(www, 0o755)
    try:
        (www / "index.html").write_text("hello from apache\n")
        port = free_port()
        conf = tmp_path / "httpd.conf"
        conf.write_text(f"""
ServerRoot {tmp_path}
Listen 127.0.0.1:{port}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule dir_module {modules}/mod_dir.so
LoadModule mime_module {modules}/mod_mime.so
TypesConfig /etc/mime.types
User www-data
Group www-data
PidFile {tmp_path}/httpd.pid
ErrorLog {tmp_path}/error.log
DocumentRoot {www}
ServerName localhost
StartServers 3
ThreadsPerChild {THREADS}
<Directory {www}>
Require all granted
</Directory>
""")
        proc = procs.start([apache, "-f", conf, "-DFOREGROUND"], name="apache")
        wait_until(lambda: http_get(port, "/index.html"), TIMEOUT, "apache to answer")
        wait_until(lambda: len(tree(proc.pid)) == 4 and all(
            len(threads(c)) == THREADS + 2 for c in tree(proc.pid)[1:]), TIMEOUT,
            "apache's three children with their threads")  # workers, listener, main
        children = tree(proc.pid)[1:]
        tids = {c: threads(c) for c in children}
        for i, leave_running in enumerate(ROUNDS):
            cycle(procs, proc, tmp_path / f"images{i}", leave_running=leave_running)
            assert {c: threads(c) for c in tree(proc.pid)[1:]} == tids
            for _ in range(6):
                assert http_get(port, "/index.html") == "hello from apache\n"
        os.kill(proc.pid, 10)  # SIGUSR1: graceful restart
        wait_until(lambda: set(tree(proc.pid)[1:]).isdisjoint(children)
                   and len(tree(proc.pid)) == 4, TIMEOUT, "new children")
        assert http_get(port, "/index.html") == "hello from apache\n"
    finally:
        shutil.rmtree(www)


# ------------------------------------------------------------------ ssh-agent


def test_ssh_agent_keeps_its_keys(procs: Procs, tmp_path: Path) -> None:
    """ssh-agent (in the foreground, -D) holding a key: after each restore it lists the
    key, signs with it, and takes another."""
    agent = need("ssh-agent", "openssh-client")
    add = need("ssh-add", "openssh-client")
    keygen = need("ssh-keygen", "openssh-client")
    sock = tmp_path / "agent.sock"
    env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
    for key in ("one", "two"):
        _run(keygen, "-q", "-t", "ed25519", "-N", "", "-C", key, "-f", tmp_path / key)
    proc = procs.start([agent, "-D", "-a", sock], name="agent")
    wait_until(sock.exists, TIMEOUT, "the agent's socket")
    _run(add, tmp_path / "one", env=env)
    (tmp_path / "message").write_text("signed through the agent\n")
    for i, leave_running in enumerate(ROUNDS):
        cycle(procs, proc, tmp_path / f"images{i}", leave_running=leave_running)
        assert re.search(r" one \(ED25519\)$", _run(add, "-l", env=env), re.M)
        sig = tmp_path / f"message.sig{i}"
        subprocess.run([keygen, "-Y", "sign", "-n", "file", "-f", tmp_path / "one.pub",
                        tmp_path / "message"], env=env, check=True, capture_output=True,
                       timeout=scaled(TIMEOUT))
        (tmp_path / "message.sig").rename(sig)
    _run(add, tmp_path / "two", env=env)
    assert len(_run(add, "-l", env=env).splitlines()) == 2


# ------------------------------------------------------------------ connected clients


def test_python_http_server_with_a_kept_alive_client(procs: Procs, tmp_path: Path) -> None:
    """``python3 -m http.server --protocol HTTP/1.1`` (a thread per connection) with
    a client's kept-alive connection open through each dump (--tcp-established): the
    same connection gets the next answer after each restore, new clients too, and the
    server's log goes on."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_text("hello from the site\n")
    port = free_port()
    proc = procs.start([PYTHON, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                        "--protocol", "HTTP/1.1", "--directory", site], name="http")
    wait_until(lambda: http_get(port, "/hello.txt"), TIMEOUT, "http.server to answer")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(TIMEOUT))

    def get(path: str) -> str:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read().decode()

    assert get("/hello.txt") == "hello from the site\n"
    sock = conn.sock
    for i in range(2):
        cycle(procs, proc, tmp_path / f"images{i}", "--tcp-established")
        (site / f"later{i}.txt").write_text(f"written after restore {i}\n")
        assert get(f"/later{i}.txt") == f"written after restore {i}\n"
        assert conn.sock is sock, "the kept-alive connection was made again"
        assert http_get(port, "/hello.txt") == "hello from the site\n"
    proc.out.wait_line(r'"GET /later1.txt HTTP/1.1" 200')
    conn.close()


def test_nc_listener_with_a_client(procs: Procs, tmp_path: Path) -> None:
    """netcat listening, with a client connected: what the client sends after each
    restore reaches nc's output after what it sent before, and nc's answers (from its
    stdin, a FIFO the test writes) reach the client."""
    nc = need("nc", "netcat-openbsd")
    port = free_port()
    fifo = tmp_path / "input"
    os.mkfifo(fifo)
    proc = procs.start(["sh", "-c", f"exec {nc} -l 127.0.0.1 {port} < {fifo}"], name="nc")
    feed = os.open(fifo, os.O_WRONLY)  # sh opens it for nc: the FIFO's reader
    try:
        client = wait_until(lambda: _connect(port), TIMEOUT, "nc to listen")
        with client:
            client.sendall(b"line 0\n")
            proc.out.wait_line(r"^line 0$")
            for i in range(2):
                cycle(procs, proc, tmp_path / f"images{i}", "--tcp-established")
                client.sendall(f"line {i + 1}\n".encode())
                proc.out.wait_line(rf"^line {i + 1}$")
                os.write(feed, f"answer {i}\n".encode())
                got = b""
                while not got.endswith(b"\n"):
                    got += client.recv(100)
                assert got == f"answer {i}\n".encode()
        assert proc.out.lines() == ["line 0", "line 1", "line 2"]
    finally:
        os.close(feed)


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT))
    except OSError:
        return None


def test_mosquitto_with_a_subscriber(procs: Procs, tmp_path: Path) -> None:
    """The mosquitto MQTT broker with a subscriber connected through each dump
    (--tcp-established): messages published after each restore reach it."""
    broker = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(broker):
        pytest.skip("mosquitto is not installed (Debian package mosquitto)")
    pub = need("mosquitto_pub", "mosquitto-clients")
    sub = need("mosquitto_sub", "mosquitto-clients")
    port = free_port()
    (tmp_path / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\n"
                                             "allow_anonymous true\n")
    proc = procs.start([broker, "-c", tmp_path / "mosquitto.conf"], name="mosquitto")
    wait_until(lambda: _connect(port), TIMEOUT, "mosquitto to listen").close()
    subscriber = procs.start([need("stdbuf", "coreutils"), "-oL", sub, "-p", str(port),
                              "-t", "ckpt/#", "-v"], name="sub")  # a line at a time

    def reaches(message: str) -> bool:  # published again until the subscriber has it
        subprocess.run([pub, "-p", str(port), "-t", "ckpt/test", "-m", message],
                       capture_output=True, timeout=scaled(TIMEOUT))
        return f"ckpt/test {message}" in subscriber.out.lines()

    wait_until(lambda: reaches("before"), TIMEOUT, "the subscriber to get a message")
    for i in range(2):
        cycle(procs, proc, tmp_path / f"images{i}", "--tcp-established")
        _run(pub, "-p", str(port), "-t", "ckpt/test", "-m", f"after {i}")
        subscriber.out.wait_line(rf"^ckpt/test after {i}$", timeout=TIMEOUT)
    assert is_alive(subscriber.pid)


# ------------------------------------------------------------------ UDP: dnsmasq


def _dns_a(port: int, name: str) -> str:
    """The first A record dnsmasq on loopback ``port`` gives for ``name``."""
    query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"".join(
        bytes([len(p)]) + p for p in name.encode().split(b".")) + b"\0" + struct.pack(
        ">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(scaled(5))
        s.sendto(query, ("127.0.0.1", port))
        answer = s.recv(512)
    assert answer[:2] == b"\x12\x34" and answer[7] >= 1, "no answer record"
    return ".".join(map(str, answer[-4:]))


def _dns_answer(port: int, name: str) -> str | None:
    """``_dns_a``, or None while the server does not answer yet."""
    try:
        return _dns_a(port, name)
    except (OSError, AssertionError):
        return None


def test_dnsmasq_answers(procs: Procs, tmp_path: Path) -> None:
    """dnsmasq serving a hosts file over UDP: it answers the same after each restore,
    and reads a name added to its hosts file after it (SIGHUP)."""
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not os.path.exists(dnsmasq):
        pytest.skip("dnsmasq is not installed (Debian package dnsmasq-base)")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.9 ckpt.test\n")
    port = free_port(socket.SOCK_DGRAM)
    proc = procs.start([dnsmasq, "-k", "-C", "/dev/null", "-p", str(port),
                        "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                        "--no-hosts", f"--addn-hosts={hosts}", "--user=root", "--pid-file="],
                       name="dnsmasq")

    wait_until(lambda: _dns_answer(port, "ckpt.test"), TIMEOUT, "dnsmasq to answer")
    for i, leave_running in enumerate(ROUNDS):
        cycle(procs, proc, tmp_path / f"images{i}", leave_running=leave_running)
        assert _dns_a(port, "ckpt.test") == "127.0.0.9"
    hosts.write_text("127.0.0.9 ckpt.test\n127.0.0.10 later.test\n")
    os.kill(proc.pid, 1)  # SIGHUP: read the hosts files again
    later = wait_until(lambda: _dns_answer(port, "later.test"), TIMEOUT, "the new name")
    assert later == "127.0.0.10"


# ------------------------------------------------------------------ a download


SLOW_SERVER = """
import http.server, os, sys, time
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(3 * 65536))
        self.end_headers()
        for part in range(3):  # a part, then wait until the test says go on
            self.wfile.write(bytes([65 + part]) * 65536)
            self.wfile.flush()
            print("sent", part, flush=True)
            while part < 2 and not os.path.exists(f"{sys.argv[2]}/go{part}"):
                time.sleep(0.05)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_curl_download(procs: Procs, tmp_path: Path) -> None:
    """curl downloading from a server outside the tree that sends a third of the file,
    then waits: curl is dumped (--tcp-established) and restored after each third, and
    the file it writes is whole and right."""
    curl = need("curl", "curl")
    (tmp_path / "server.py").write_text(SLOW_SERVER)
    port = free_port()
    server = procs.start([PYTHON, tmp_path / "server.py", str(port), tmp_path],
                         name="server")
    wait_until(lambda: _connect(port), TIMEOUT, "the server to listen").close()
    got = tmp_path / "download"
    proc = procs.start([curl, "-sS", "-o", got, f"http://127.0.0.1:{port}/"], name="curl")
    for part in range(2):
        server.out.wait_line(rf"^sent {part}$", timeout=TIMEOUT)
        wait_until(lambda p=part: got.exists() and got.stat().st_size == (p + 1) * 65536,
                   TIMEOUT, f"part {part} written by curl")
        cycle(procs, proc, tmp_path / f"images{part}", "--tcp-established")
        (tmp_path / f"go{part}").touch()
    assert procs.wait_gone(proc.pid, timeout=TIMEOUT) in (0, None)
    assert got.read_bytes() == b"A" * 65536 + b"B" * 65536 + b"C" * 65536
