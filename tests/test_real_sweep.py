"""More real programs dumped and restored three times in a row (killed, left running
with -R, killed; real_helpers.three_rounds), each checked to carry on after every
restore: a Python thread pool working through a queue of jobs, a process with 300
file mappings (shared and private), bash with background jobs and traps, lighttpd
and nginx (two workers, SO_REUSEPORT listeners on IPv4 and IPv6) with clients kept
alive through the dumps, node worker threads waiting on a SharedArrayBuffer, tmux
with three panes, git daemon, ``tar | pv | gzip`` and ``find`` in the middle of a
tree, ninja building with two jobs, expect driving bc on a pty, a JVM, redis with a
subscriber, Xvfb with two X clients, unbound answering over UDP with two threads,
and a daemon living by its clocks as chrony does (timerfds, itimer, POSIX timer,
absolute sleeps)."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ckpt_helpers import (
    PYTHON,
    Builder,
    Output,
    Proc,
    Procs,
    assert_consecutive,
    free_port,
    is_alive,
    scaled,
    wait_until,
)
from real_helpers import TIMEOUT, crash, need, threads, three_rounds, tree
from test_real_daemons import _dns_a, _dns_answer
from test_real_servers import _java_class, _jvm_counts, _port_line

POOL = """
import concurrent.futures as cf, os, sys, threading, time
out = open(sys.argv[1], "a", buffering=1)
lock = threading.Lock()
def job(n):
    s = 0
    for k in range(20000):
        s += k * n
    time.sleep(0.05)
    with lock:
        os.write(out.fileno(), b"%d %d\\n" % (n, s))
    return n
with cf.ThreadPoolExecutor(max_workers=8) as ex:
    for f in cf.as_completed([ex.submit(job, n) for n in range(600)]):
        pass
os.write(out.fileno(), b"END\\n")
"""


def test_thread_pool_executor(procs: Procs, tmp_path: Path) -> None:
    """A ThreadPoolExecutor of 8 threads through 600 jobs: each job is done once (none
    lost, none twice; the -R round leaves the pool running) with the right sum."""
    (tmp_path / "pool.py").write_text(POOL)
    log = Output(tmp_path / "done")
    proc = procs.start([PYTHON, tmp_path / "pool.py", log.path], name="pool")
    wait_until(lambda: len(log.lines()) >= 8, TIMEOUT, "jobs")
    assert len(threads(proc.pid)) == 9

    def more(_i: int) -> None:
        n = len(log.lines())
        wait_until(lambda: len(log.lines()) >= n + 8, TIMEOUT, "more jobs")

    three_rounds(procs, proc, tmp_path, out=log, after=more)
    assert procs.wait_gone(proc, timeout=TIMEOUT * 4) == 0
    lines = log.lines()
    assert lines[-1] == "END"
    got = sorted(int(ln.split()[0]) for ln in lines[:-1])
    assert got == list(range(600))
    for ln in lines[:-1]:
        n, s = map(int, ln.split())
        assert s == n * sum(range(20000))


MMAPS = """
import mmap, os, sys, time
d = sys.argv[1]
maps = []
for i in range(300):
    p = os.path.join(d, "f%03d" % i)
    with open(p, "wb") as f:
        f.write(bytes([i % 256]) * 8192)
    fd = os.open(p, os.O_RDWR)
    kind = mmap.MAP_SHARED if i % 2 == 0 else mmap.MAP_PRIVATE
    m = mmap.mmap(fd, 8192, flags=kind)
    os.close(fd)
    maps.append(m)
t = 0
while True:
    for i, m in enumerate(maps):
        m[0:8] = t.to_bytes(8, "little")
    print(t, flush=True)
    for i, m in enumerate(maps):
        assert int.from_bytes(m[0:8], "little") == t, (i, t)
        assert m[100] == i % 256, i
    t += 1
    time.sleep(0.05)
"""


def test_many_file_mappings(procs: Procs, tmp_path: Path) -> None:
    """300 files mapped (every other one shared, the others private), a counter
    written into each on every tick: the ticks go on with no gap, each mapping holds
    the value and the file's bytes, the shared ones write through to their files."""
    (tmp_path / "maps.py").write_text(MMAPS)
    d = tmp_path / "files"
    d.mkdir()
    proc = procs.start([PYTHON, tmp_path / "maps.py", d], name="maps")
    proc.out.wait_numbers(3, timeout=TIMEOUT)

    def more(_i: int) -> None:
        proc.out.wait_numbers(len(proc.out.numbers()) + 3, timeout=TIMEOUT)

    three_rounds(procs, proc, tmp_path, after=more, crash=True)
    assert is_alive(proc.pid)
    assert_consecutive(proc.out.numbers())
    t = proc.out.numbers()[-1]
    shared = int.from_bytes((d / "f000").read_bytes()[0:8], "little")
    assert shared >= t
    assert (d / "f001").read_bytes()[0:8] == bytes([1]) * 8


BASH_JOBS = r"""
set -m
trap 'echo usr1 $n >> OUT' USR1
trap 'echo usr2 $(jobs -p | wc -l) >> OUT' USR2
sleep 1000 &
sleep 1001 &
n=0
while :; do echo $n >> OUT; n=$((n+1)); sleep 0.1; done
"""


def test_bash_with_jobs_and_traps(procs: Procs, tmp_path: Path) -> None:
    """bash with job control (set -m), two background jobs and traps on SIGUSR1 and
    SIGUSR2: after each restore both traps run, and bash still knows its two jobs."""
    out = Output(tmp_path / "out")
    script = BASH_JOBS.replace("OUT", str(out.path))
    proc = procs.start(["bash", "-c", script], name="bash")
    out.wait_numbers(3, timeout=TIMEOUT)

    def more(_i: int) -> None:
        os.kill(proc.pid, signal.SIGUSR1)
        os.kill(proc.pid, signal.SIGUSR2)
        wait_until(lambda: any(ln.startswith("usr2") for ln in out.lines()[-30:]), TIMEOUT,
                   "traps")
        out.wait_line(r"^usr2 2$", timeout=TIMEOUT)

    three_rounds(procs, proc, tmp_path, out=out, after=more, crash=True)
    assert len(tree(proc.pid)) >= 3


def test_lighttpd_with_kept_alive_client(procs: Procs, tmp_path: Path) -> None:
    """lighttpd with one client's connection kept alive through the dumps
    (--tcp-established): it is answered on that connection after every restore."""
    lighttpd = need("lighttpd", "lighttpd")
    port = free_port()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hello\n")
    conf = tmp_path / "l.conf"
    conf.write_text(f'server.document-root = "{tmp_path}/www"\nserver.port = {port}\n'
                    f'server.bind = "127.0.0.1"\nserver.errorlog = "{tmp_path}/err.log"\n'
                    'server.max-keep-alive-idle = 600\nserver.max-keep-alive-requests = 1000\n')
    proc = procs.start([lighttpd, "-D", "-f", conf], name="lighttpd")

    wait_until(lambda: _connects("127.0.0.1", port), TIMEOUT, "lighttpd")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(TIMEOUT))

    def get(_i: int = 0) -> None:
        c.request("GET", "/index.html")
        r = c.getresponse()
        assert r.read() == b"hello\n"

    get()
    three_rounds(procs, proc, tmp_path, "--tcp-established", after=get)
    c.close()


NODE_WORKERS = """
const { Worker, isMainThread, workerData } = require('worker_threads');
if (isMainThread) {
  const sab = new SharedArrayBuffer(4 * 5);
  const a = new Int32Array(sab);
  for (let i = 1; i <= 4; i++) new Worker(__filename, { workerData: { sab, i } });
  let t = 0;
  setInterval(() => {
    a[0] = ++t;
    Atomics.notify(a, 0);
    console.log(String(t - 1) + ' ' + [a[1], a[2], a[3], a[4]].join(' '));
  }, 100);
} else {
  const a = new Int32Array(workerData.sab);
  let seen = 0;
  for (;;) {
    Atomics.wait(a, 0, seen);
    seen = Atomics.load(a, 0);
    a[workerData.i] = seen;
  }
}
"""


def test_node_worker_threads(procs: Procs, tmp_path: Path) -> None:
    """node with four worker threads blocked in Atomics.wait on a SharedArrayBuffer,
    woken by the main thread's timer: after each restore every worker follows the
    main thread's count again, and the ticks have no gap."""
    node = need("node", "nodejs")
    (tmp_path / "w.js").write_text(NODE_WORKERS)
    proc = procs.start([node, tmp_path / "w.js"], name="node")
    wait_until(lambda: len(proc.out.lines()) >= 5, TIMEOUT, "ticks")

    def more(_i: int) -> None:
        n = len(proc.out.lines())
        wait_until(lambda: len(proc.out.lines()) >= n + 5, TIMEOUT, "ticks")
        last = proc.out.lines()[-1].split()
        t = int(last[0])
        assert all(int(x) >= t - 1 for x in last[1:]), last

    three_rounds(procs, proc, tmp_path, after=more, crash=True)
    assert_consecutive(proc.out.first_field_numbers())


def test_tmux_several_panes(procs: Procs, tmp_path: Path) -> None:
    """A tmux server with three panes: two loops printing, an interactive shell
    holding a variable; after each restore both loops go on and the shell answers
    with its variable."""
    tmux = need("tmux", "tmux")
    sock = tmp_path / "tmux.sock"

    def cmd(*a: str) -> str:
        return subprocess.run([tmux, "-S", str(sock), *a], capture_output=True, text=True,
                              check=True, timeout=scaled(TIMEOUT)).stdout

    cmd("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "120", "-y", "40",
        "bash --norc -c 'i=0; while :; do echo A$i; i=$((i+1)); sleep 0.2; done'")
    proc = procs.adopt(int(cmd("display", "-p", "#{pid}")), Output(tmp_path / "none"))
    cmd("split-window", "-t", "t", "bash --norc -c 'i=0; while :; do echo B$i; i=$((i+1)); "
        "sleep 0.2; done'")
    cmd("split-window", "-h", "-t", "t", "bash --norc -i")
    panes = cmd("list-panes", "-t", "t", "-F", "#{pane_id}").split()
    assert len(panes) == 3

    def shows(pane: str, pat: str) -> bool:
        return pat in cmd("capture-pane", "-p", "-t", pane)

    cmd("send-keys", "-t", panes[2], "x=41; echo $((x+1))", "Enter")
    wait_until(lambda: shows(panes[2], "42"), TIMEOUT, "pane 3")

    def check(i: int) -> None:
        for p, tag in ((panes[0], "A"), (panes[1], "B")):
            def last(p=p, tag=tag) -> int:
                nums = re.findall(tag + r"(\d+)", cmd("capture-pane", "-p", "-t", p))
                return int(nums[-1]) if nums else -1
            n = last()
            wait_until(lambda n=n, last=last: last() > n + 2, TIMEOUT, f"pane {tag}")
        cmd("send-keys", "-t", panes[2], f"echo r$((x+{i}))", "Enter")
        wait_until(lambda: shows(panes[2], f"r{41 + i}"), TIMEOUT, "pane 3 answer")

    three_rounds(procs, proc, tmp_path, after=check)
    cmd("kill-server")


def test_git_daemon(procs: Procs, tmp_path: Path) -> None:
    """git daemon: a clone over git:// works after each restore."""
    git = need("git", "git")
    repo = tmp_path / "repo.git"
    subprocess.run([git, "init", "-q", "--bare", "-b", "main", str(repo)], check=True)
    work = tmp_path / "work"
    subprocess.run([git, "init", "-q", str(work)], check=True)
    (work / "a").write_text("a\n")
    env = dict(os.environ, GIT_AUTHOR_NAME="a", GIT_AUTHOR_EMAIL="a@b",
               GIT_COMMITTER_NAME="a", GIT_COMMITTER_EMAIL="a@b")
    subprocess.run([git, "-C", str(work), "add", "a"], check=True)
    subprocess.run([git, "-C", str(work), "commit", "-qm", "a"], check=True, env=env)
    subprocess.run([git, "-C", str(work), "push", "-q", str(repo), "HEAD:refs/heads/main"],
                   check=True)
    port = free_port()
    proc = procs.start([git, "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
                        f"--base-path={tmp_path}", f"--port={port}", "--listen=127.0.0.1",
                        str(tmp_path)], name="gitd")

    def clone(i: int) -> None:
        dst = tmp_path / f"clone{i}"
        subprocess.run([git, "clone", "-q", f"git://127.0.0.1:{port}/repo.git", str(dst)],
                       check=True, timeout=scaled(TIMEOUT), capture_output=True)
        assert (dst / "a").read_text() == "a\n"

    wait_until(lambda: _try_clone(clone), TIMEOUT, "git daemon")
    three_rounds(procs, proc, tmp_path, after=clone)


def _try_clone(clone: Callable[[int], None]) -> bool:
    try:
        clone(99)
        return True
    except subprocess.CalledProcessError:
        return False


def test_tar_into_gzip(procs: Procs, tmp_path: Path) -> None:
    """``tar -cf - | pv -L | gzip`` over 2000 files, dumped three times in the
    middle: the archive holds every file whole."""
    src = tmp_path / "src"
    for d in range(40):
        (src / f"d{d:02d}").mkdir(parents=True)
        for f in range(50):
            (src / f"d{d:02d}" / f"f{f:02d}").write_bytes(os.urandom(2048) + b"%d %d\n" % (d, f))
    out = tmp_path / "out.tgz"
    # pv -L slows the stream so the dumps land in the middle
    proc = procs.start(["bash", "-c", f"tar -C {tmp_path} -cf - src | pv -q -L 400k | "
                        f"gzip -1 > {out}"], name="tar")
    _grows(out, 10000)
    three_rounds(procs, proc, tmp_path, after=lambda _i: _grows(out, 10000), crash=True)
    assert procs.wait_gone(proc, timeout=TIMEOUT * 4) == 0
    x = tmp_path / "x"
    x.mkdir()
    subprocess.run(["tar", "-C", str(x), "-xzf", str(out)], check=True)
    res = subprocess.run(["diff", "-r", str(src), str(x / "src")], capture_output=True)
    assert res.returncode == 0, res.stdout[:500]


def _grows(path: Path, by: int) -> None:
    """Wait until the file at ``path`` grew by ``by`` bytes (from nothing if missing)."""
    before = path.stat().st_size if path.exists() else 0
    wait_until(lambda: path.exists() and path.stat().st_size >= before + by, TIMEOUT,
               f"{path.name} to grow")


def test_find_over_a_big_tree(procs: Procs, tmp_path: Path) -> None:
    """``find`` over 6000 folders into a slow pipe, its open directories read half
    way at each dump: every folder is listed once."""
    src = tmp_path / "src"
    names = []
    for d in range(60):
        for f in range(100):
            p = src / f"d{d:02d}" / f"e{f:03d}"
            p.mkdir(parents=True)
            names.append(str(p))
    out = tmp_path / "found"
    proc = procs.start(["bash", "-c", f"find {src} -mindepth 2 -type d | "
                        f"pv -q -L 20k > {out}"], name="find")
    _grows(out, 5000)
    three_rounds(procs, proc, tmp_path, after=lambda _i: _grows(out, 5000), crash=True)
    assert procs.wait_gone(proc, timeout=TIMEOUT * 8) == 0
    got = out.read_text().splitlines()
    assert sorted(got) == sorted(names)


def test_ninja_parallel_build(procs: Procs, tmp_path: Path) -> None:
    """ninja building 61 objects with two jobs at a time: the build ends well and the
    program it links prints the right sum."""
    ninja = need("ninja", "ninja-build")
    n = 60
    rules = ["rule cc\n  command = gcc -O1 -c $in -o $out && sleep 0.3\n",
             "rule link\n  command = gcc $in -o $out\n"]
    objs = []
    for i in range(n):
        (tmp_path / f"f{i}.c").write_text(f"int f{i}(void) {{ return {i}; }}\n")
        rules.append(f"build f{i}.o: cc f{i}.c\n")
        objs.append(f"f{i}.o")
    main = "".join(f"int f{i}(void);\n" for i in range(n))
    main += "#include <stdio.h>\nint main(void) { int s = 0;\n"
    main += "".join(f"s += f{i}();\n" for i in range(n))
    main += 'printf("%d\\n", s); return 0; }\n'
    (tmp_path / "main.c").write_text(main)
    rules.append("build main.o: cc main.c\n")
    rules.append(f"build prog: link main.o {' '.join(objs)}\n")
    (tmp_path / "build.ninja").write_text("".join(rules))
    proc = procs.start([ninja, "-j2"], name="ninja", cwd=tmp_path)
    wait_until(lambda: len(list(tmp_path.glob("*.o"))) >= 4, TIMEOUT, "objects")

    def more(_i: int) -> None:
        k = len(list(tmp_path.glob("*.o")))
        wait_until(lambda: len(list(tmp_path.glob("*.o"))) >= k + 2, TIMEOUT, "more objects")

    three_rounds(procs, proc, tmp_path, after=more, crash=True)
    assert procs.wait_gone(proc, timeout=TIMEOUT * 8) == 0, proc.out.lines()[-5:]
    res = subprocess.run([tmp_path / "prog"], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == str(sum(range(n)))


def test_expect_driving_bc(procs: Procs, tmp_path: Path) -> None:
    """expect driving bc on a pty of its own: each answer after a restore follows from
    bc's variable as it was."""
    need("expect", "expect")
    script = tmp_path / "e.exp"
    script.write_text(r"""
log_user 0
spawn bc -q
send "x = 6\r"
set i 0
while {1} {
    send "x = x + 1; print \"v \", x * 7, \"\\n\"\r"
    expect -re {v (\d+)\r\n}
    puts "$i $expect_out(1,string)"
    flush stdout
    incr i
    after 100
}
""")
    proc = procs.start(["expect", script], name="expect")
    wait_until(lambda: len(proc.out.lines()) >= 3, TIMEOUT, "answers")

    def more(_i: int) -> None:
        n = len(proc.out.lines())
        wait_until(lambda: len(proc.out.lines()) >= n + 3, TIMEOUT, "more answers")

    three_rounds(procs, proc, tmp_path, after=more, crash=True)
    lines = [ln.split() for ln in proc.out.lines()]
    assert [int(a) for a, _ in lines] == list(range(len(lines)))
    assert [int(b) for _, b in lines] == [(7 + i) * 7 for i in range(len(lines))]


NGINX_LISTEN = {
    "ipv4": ("127.0.0.1", "listen 127.0.0.1:{port};"),
    "reuseport-ipv6": ("::1", "listen [::1]:{port} reuseport; listen 127.0.0.1:{port} reuseport;"),
}


@pytest.mark.parametrize("listen", list(NGINX_LISTEN))
def test_nginx_with_kept_alive_clients(listen: str, procs: Procs, tmp_path: Path) -> None:
    """nginx (a master, two workers) with four clients whose connections are kept
    alive through the dumps (--tcp-established): each gets the file again on its
    connection after every restore; on IPv4, or SO_REUSEPORT listeners (one per
    worker) on IPv6 and IPv4."""
    nginx = need("nginx", "nginx-light")
    port = free_port()
    host, listens = NGINX_LISTEN[listen]
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "a").write_text("hello\n")
    (tmp_path / "logs").mkdir()
    temps = " ".join(f"{k}_temp_path {tmp_path}/{k};"
                     for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
user root; daemon off; master_process on; worker_processes 2; pid {tmp_path}/nginx.pid;
error_log {tmp_path}/logs/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; keepalive_timeout 600; keepalive_requests 10000; {temps}
  server {{ {listens.format(port=port)} root {tmp_path}/www; }} }}
""")
    proc = procs.start([nginx, "-c", conf, "-p", tmp_path], name="nginx")
    wait_until(lambda: _connects(host, port), TIMEOUT, "nginx")
    cs = [http.client.HTTPConnection(host, port, timeout=scaled(TIMEOUT)) for _ in range(4)]

    def get(_i: int = 0) -> None:
        for c in cs:
            c.request("GET", "/a")
            assert c.getresponse().read() == b"hello\n"

    get()
    three_rounds(procs, proc, tmp_path, "--tcp-established", after=get)
    for c in cs:
        c.close()


def _connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=scaled(TIMEOUT)).close()
        return True
    except OSError:
        return False


def test_jvm_three_rounds(procs: Procs, tmp_path: Path) -> None:
    """A JVM with 8 counting threads (--file-locks: its hsperfdata flock): every
    thread counts on after each restore, the ticks have no gap."""
    java = need("java", "openjdk-17-jre-headless")
    n = 8
    jvm = procs.start([java, "-Xmx128m", "-cp", _java_class(), "BusyJvm", str(n)],
                      name="jvm", cwd=tmp_path)
    port = wait_until(lambda: _port_line(jvm.out.lines()), 60, "the JVM's port")
    jvm.out.wait_numbers(5, timeout=TIMEOUT)
    before = [_jvm_counts(port, n)[1]]

    def more(_i: int) -> None:
        wait_until(lambda: all(a > b for a, b in zip(_jvm_counts(port, n)[1], before[0],
                                                              strict=True)),
                   TIMEOUT, "counts")
        before[0] = _jvm_counts(port, n)[1]
        count = len(jvm.out.numbers())
        jvm.out.wait_numbers(count + 3, timeout=TIMEOUT)

    three_rounds(procs, jvm, tmp_path, "--file-locks", after=more, crash=True)
    assert_consecutive(jvm.out.numbers())


def test_redis_pubsub(procs: Procs, tmp_path: Path) -> None:
    """redis-server and a redis-cli subscribed to a channel, in one tree
    (--tcp-established): a message published after each restore reaches it."""
    redis = need("redis-server", "redis-server")
    cli = need("redis-cli", "redis-tools")
    port = free_port()
    proc = procs.start(["bash", "-c", f"{redis} --port {port} --save '' --appendonly no & "
                        f"sleep 0.5; {cli} -p {port} subscribe news & wait"], name="pubsub")
    wait_until(lambda: "subscribe" in proc.out.lines() and len(tree(proc.pid)) >= 3, TIMEOUT, "sub")

    def pub(i: int) -> None:
        subprocess.run([cli, "-p", str(port), "publish", "news", f"msg{i}"], check=True,
                       capture_output=True, timeout=scaled(TIMEOUT))
        proc.out.wait_line(rf"^msg{i}$", timeout=TIMEOUT)

    pub(100)
    three_rounds(procs, proc, tmp_path, "--tcp-established", after=pub, crash=True)
    subprocess.run([cli, "-p", str(port), "shutdown", "nosave"], capture_output=True)


def test_xvfb_with_clients(procs: Procs, tmp_path: Path) -> None:
    """Xvfb with xclock and xeyes connected: after each restore the server answers a
    new client (a screenshot), both clients live on, and the clock moves."""
    xvfb = need("Xvfb", "xvfb")
    need("xclock", "x11-apps")
    disp = next((n for n in range(90, 140) if not os.path.exists(f"/tmp/.X11-unix/X{n}")
                 and not os.path.exists(f"/tmp/.X{n}-lock")), None)
    assert disp is not None, "no free X display number from :90 to :139"
    env = f"DISPLAY=:{disp}"
    proc = procs.start(["bash", "-c", f"{xvfb} :{disp} -nolock -nolisten tcp "
                        "-screen 0 320x240x24 & "
                        f"until xwd -root -display :{disp} -out /dev/null 2>/dev/null; do "
                        f"sleep 0.1; done; {env} xclock -update 1 & {env} xeyes & wait"],
                       name="x")
    try:
        _xvfb_rounds(procs, tmp_path, proc, disp)
    finally:  # the server and its clients killed (a server left alone resets, making
        # its socket again), then its socket removed (-nolock: no lock file)
        crash(procs, tree(proc.pid))
        Path(f"/tmp/.X11-unix/X{disp}").unlink(missing_ok=True)


def _x_running(root: int) -> bool:
    """Whether the server and both clients are in the tree of ``root``."""
    names = set()
    for pid in tree(root):
        try:
            names.add(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            pass
    return {"Xvfb", "xclock", "xeyes"} <= names


def _xvfb_rounds(procs: Procs, tmp_path: Path, proc: Proc, disp: int) -> None:
    wait_until(lambda: _x_running(proc.pid), TIMEOUT, "X and its clients")

    def shot(i: int) -> None:
        res = subprocess.run(["xwd", "-root", "-display", f":{disp}", "-out",
                              str(tmp_path / f"shot{i}")], capture_output=True,
                             timeout=scaled(TIMEOUT))
        assert res.returncode == 0, res.stderr
        assert _x_running(proc.pid), "the server or a client is gone"

    wait_until(lambda: subprocess.run(["xwd", "-root", "-display", f":{disp}", "-out",
                                       "/dev/null"], capture_output=True).returncode == 0,
               TIMEOUT, "X")
    shot(99)
    three_rounds(procs, proc, tmp_path, after=shot, crash=True)
    before = (tmp_path / "shot2").read_bytes()
    wait_until(lambda: (shot(3), (tmp_path / "shot3").read_bytes() != before)[1], TIMEOUT,
               "the clock to move")


def test_unbound_answers(procs: Procs, tmp_path: Path) -> None:
    """unbound (two threads) answering a local zone over UDP after each restore."""
    unbound = need("unbound", "unbound")
    port = free_port(socket.SOCK_DGRAM)
    conf = tmp_path / "unbound.conf"
    conf.write_text(f"""server:
  interface: 127.0.0.1
  port: {port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{tmp_path}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  num-threads: 2
  do-ip6: no
  local-zone: "ckpt.test." static
  local-data: "a.ckpt.test. IN A 127.0.0.7"
  access-control: 127.0.0.0/8 allow
""")
    proc = procs.start([unbound, "-d", "-c", conf], name="unbound")

    wait_until(lambda: _dns_answer(port, "a.ckpt.test"), TIMEOUT, "unbound to answer")

    def ask(_i: int) -> None:
        for _ in range(5):
            assert _dns_a(port, "a.ckpt.test") == "127.0.0.7"

    three_rounds(procs, proc, tmp_path, after=ask, crash=True)


_TICK = re.compile(r"^(\d+) mono=(\d+) second=(\d+) alarm=(\d+) rt=(\d+) sleeper=(\d+)$")


def test_timekeeper_daemon(build: Builder, procs: Procs, tmp_path: Path) -> None:
    """A daemon living by its clocks as chrony does (tests/progs/timekeeper.c): a
    periodic monotonic timerfd, an absolute realtime timerfd re-armed each second
    (cancel-on-set), an itimer's SIGALRM and a boottime POSIX timer's SIGRTMIN read
    from a signalfd in one epoll, and a thread sleeping to absolute deadlines. After
    each restore every one of them fires again, and the ticks have no gap."""
    proc = procs.start([build("timekeeper", extra=("-pthread",))], name="timekeeper")

    def counts() -> list[int]:
        m = _TICK.match(proc.out.lines()[-1]) if proc.out.lines() else None
        return [int(x) for x in m.groups()[1:]] if m else []

    wait_until(lambda: len(proc.out.lines()) >= 15, TIMEOUT, "ticks")

    def all_fire(_i: int) -> None:
        before = counts()
        wait_until(lambda: all(a > b for a, b in zip(counts(), before, strict=True)),
                   TIMEOUT, "every timer to fire again")

    three_rounds(procs, proc, tmp_path, after=all_fire, crash=True)
    ticks = [_TICK.match(ln) for ln in proc.out.lines()]
    assert all(ticks), "a line of another form"
    assert_consecutive([int(m[1]) for m in ticks if m])
