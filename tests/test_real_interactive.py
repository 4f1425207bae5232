"""Interactive programs a user would checkpoint, as a user would: ``top``, ``less``
and the ``sqlite3`` shell on the terminal of an interactive bash, dumped with -j and
restored with -j in the foreground from that shell: their screen comes back and they
answer keys again at once; ``vim`` the same, restored from a shell on a new terminal
once its own is closed; and terminal multiplexers, tmux and screen, whose server holds
the session's terminal and shell, dumped and restored with -d: the shell in the
session goes on, and keys sent through the server reach it."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from ckpt_helpers import (
    Output,
    Procs,
    ckpt_ok,
    is_alive,
    only_child,
    proc_ids,
    wait_until,
)
from real_helpers import TIMEOUT, cycle, dumped_pids, need, tree
from terminal import Terminal


def _start_job(term: Terminal, command: str) -> int:
    """Type ``command`` at the shell's prompt; the PID of the program it runs."""
    term.send(f"{command}\n")
    return only_child(term.shell.pid, timeout=TIMEOUT)


def _dump_and_restore_job(term: Terminal, procs: Procs, pid: int, images: Path,
                          *flags: str) -> int:
    """Dump the foreground job ``pid`` with -j (killed), restore it with -j from the
    shell, in the foreground; return where the terminal's text then stood."""
    ckpt_ok("dump", "-j", "-t", pid, "-D", images, *flags)
    for p in dumped_pids(images):  # each of its PIDs free (and its group's, a zombie's)
        procs.wait_gone(p)
    start = len(term.text())
    term.send(f"ckpt restore -j -D {images} {' '.join(flags)}\n")
    wait_until(lambda: is_alive(pid), TIMEOUT, f"the restored {pid}")
    procs.adopt(pid, Output(images / "none"))
    # The PID lives from the restore's first fork on; its group comes later.
    wait_until(lambda: not is_alive(pid) or proc_ids(pid)[1:] == (pid, term.shell.pid),
               TIMEOUT, "the restored job in a group of its own in the shell's session")
    assert proc_ids(pid)[1:] == (pid, term.shell.pid), "not a job of the shell"
    wait_until(lambda: os.tcgetpgrp(term.master) == pid, TIMEOUT,
               "the restored job in the foreground")
    return start


def _back_at_prompt(term: Terminal, pid: int) -> None:
    """The program ended on a key; ckpt restore exited with its status 0."""
    wait_until(lambda: not is_alive(pid), TIMEOUT, f"{pid} to end")
    said = term.run("echo status=$?", timeout=TIMEOUT)[1]
    assert re.search(r"^status=0$", said, re.M), said


def test_top_on_a_terminal(term: Terminal, procs: Procs, images: Path) -> None:
    """top, full screen on the shell's terminal: after the restore it refreshes its
    screen again, and q quits it."""
    need("top", "procps")
    pid = _start_job(term, "TERM=xterm top -d 0.3")
    wait_until(lambda: term.text().count("Tasks:") >= 2, TIMEOUT, "top's screens")
    start = _dump_and_restore_job(term, procs, pid, images)
    wait_until(lambda: term.text().count("Tasks:", start) >= 2, TIMEOUT,
               "top's screens after the restore")
    term.send("q")
    _back_at_prompt(term, pid)


def test_less_on_a_terminal(term: Terminal, procs: Procs, images: Path,
                            tmp_path: Path) -> None:
    """less paging a file: after the restore it is on the page it showed, the space
    bar pages on, G jumps to the end, and q quits it."""
    need("less", "less")
    text = tmp_path / "text"
    text.write_text("".join(f"line {i:04d}\n" for i in range(1000)))
    pid = _start_job(term, f"TERM=xterm LINES=24 COLUMNS=80 less {text}")
    term.wait_for(r"line 0022")
    term.send(" ")
    term.wait_for(r"line 0045")
    start = _dump_and_restore_job(term, procs, pid, images)
    term.send(" ")
    term.wait_for(r"line 0068", start=start)
    term.send("G")
    term.wait_for(r"line 0999", start=start)
    term.send("q")
    _back_at_prompt(term, pid)


def test_sqlite3_shell_in_a_transaction(term: Terminal, procs: Procs, images: Path,
                                        tmp_path: Path) -> None:
    """The sqlite3 shell (readline) in the middle of a write transaction, which holds
    the database's locks (--file-locks) and its rollback journal open: after the
    restore the same transaction goes on, commits, and every row is in the file."""
    need("sqlite3", "sqlite3")
    db = tmp_path / "db.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("create table t (n integer)")
    pid = _start_job(term, f"sqlite3 {db}")
    term.send("begin; insert into t values (1), (2);\n")
    term.send("select 'count', count(*) from t;\n")
    term.wait_for(r"^count\|2$")
    assert not _readable_now(db), "the transaction holds no lock"
    start = _dump_and_restore_job(term, procs, pid, images, "--file-locks")
    term.send("insert into t values (3); select 'count', count(*) from t;\n")
    term.wait_for(r"^count\|3$", start=start)
    term.send("commit;\n.quit\n")
    _back_at_prompt(term, pid)
    with sqlite3.connect(db) as con:
        assert [n for (n,) in con.execute("select n from t order by n")] == [1, 2, 3]


def test_vim_restored_on_another_terminal(term: Terminal, procs: Procs, images: Path,
                                          tmp_path: Path) -> None:
    """vim editing a file, in insert mode with unsaved text (its swap file open), dumped
    with -j from its terminal, which is then closed, and restored with -j from a shell
    on a new terminal: Ctrl-L draws its screen there, it takes the rest of the text,
    :wq writes all of it, and ckpt restore exits with its status 0."""
    need("vim", "vim")
    text = tmp_path / "notes.txt"
    swap = tmp_path / ".notes.txt.swp"
    pid = _start_job(term, f"TERM=xterm LINES=24 COLUMNS=80 vim {text}")
    term.wait_for(r"notes\.txt")
    term.send("ifirst line before the dump\n")
    term.wait_for(r"first line before the dump")
    wait_until(swap.exists, TIMEOUT, "vim's swap file")
    ckpt_ok("dump", "-j", "-t", pid, "-D", images)
    procs.wait_gone(pid)
    term.close()
    other = Terminal.with_ckpt(tmp_path)
    try:
        other.send(f"ckpt restore -j -D {images}\n")
        wait_until(lambda: is_alive(pid), TIMEOUT, f"the restored {pid}")
        procs.adopt(pid, Output(images / "none"))
        wait_until(lambda: os.tcgetpgrp(other.master) == pid, TIMEOUT,
                   "the restored vim in the foreground of the new terminal")
        start = len(other.text())
        other.send("second line after the restore\x1b\x0c")
        other.wait_for(r"first line before the dump", start=start)
        other.wait_for(r"second line after the restore", start=start)
        other.send(":wq\r")
        _back_at_prompt(other, pid)
    finally:
        other.close()
    assert text.read_text() == ("first line before the dump\n"
                                "second line after the restore\n")
    assert not swap.exists()


def _readable_now(db: Path) -> bool:
    """Whether another connection may write the database right now (no lock held)."""
    try:
        with sqlite3.connect(db, timeout=0) as con:
            con.execute("begin immediate")
            con.rollback()
        return True
    except sqlite3.OperationalError:
        return False


# ------------------------------------------------------------------ multiplexers

LOOP = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done\n"


def _ticks(screen: str) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+)$", screen, re.M)]


def _last_tick(screen: str) -> int:
    """The last tick shown, -1 when none is (a copy of the window caught half written)."""
    return (_ticks(screen) or [-1])[-1]


def test_tmux_server(procs: Procs, images: Path, tmp_path: Path) -> None:
    """A tmux server (a daemon, its session's pty master, the shell on the slave)
    with a loop printing in its pane: after the restore the pane shows the loop going
    on, and keys sent through the server reach the shell."""
    tmux = need("tmux", "tmux")
    sock = tmp_path / "tmux.sock"
    (tmp_path / "loop.sh").write_text(LOOP)
    env = {**os.environ, "TERM": "xterm"}

    def cmd(*args: str) -> str:
        return subprocess.run([tmux, "-S", str(sock), *args], capture_output=True,
                              text=True, check=True, env=env, timeout=TIMEOUT).stdout

    cmd("new-session", "-d", "-s", "t", "-x", "80", "-y", "24", "bash --norc -i")
    server = int(cmd("display", "-p", "#{pid}"))
    cmd("send-keys", "-t", "t", f"bash {tmp_path / 'loop.sh'}", "Enter")
    wait_until(lambda: len(_ticks(cmd("capture-pane", "-p", "-t", "t"))) >= 3, TIMEOUT,
               "ticks in the pane")
    shell = tree(server)[1]
    cycle(procs, server, images, out=Output(tmp_path / "none"))
    assert tree(server)[1] == shell
    last = wait_until(lambda: _ticks(cmd("capture-pane", "-p", "-t", "t")), TIMEOUT,
                      "ticks in the pane")[-1]
    wait_until(lambda: _last_tick(cmd("capture-pane", "-p", "-t", "t")) >= last + 3,
               TIMEOUT, "the loop's ticks after the restore")
    cmd("send-keys", "-t", "t", "C-c", "")
    cmd("send-keys", "-t", "t", "echo done-$((6*7))", "Enter")
    wait_until(lambda: re.search("^done-42$", cmd("capture-pane", "-p", "-t", "t"), re.M),
               TIMEOUT, "the shell to answer keys")
    cmd("kill-server")


def test_screen_server(procs: Procs, images: Path, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """GNU screen's server (``-D -m``: a child of the test) with a loop in its window:
    after the restore the window shows the loop going on, and ``stuff`` reaches the
    shell."""
    screen = need("screen", "screen")
    sockets = tmp_path / "screens"
    sockets.mkdir(mode=0o700)
    monkeypatch.setenv("SCREENDIR", str(sockets))
    (tmp_path / "loop.sh").write_text(LOOP)
    server = procs.start([screen, "-D", "-m", "-S", "s", "bash", "--norc", "-i"],
                         name="screen")
    copy = tmp_path / "hardcopy"

    def window() -> str:
        copy.unlink(missing_ok=True)
        subprocess.run([screen, "-S", "s", "-X", "hardcopy", str(copy)], check=True,
                       timeout=TIMEOUT)
        wait_until(copy.exists, TIMEOUT, "screen's hardcopy")
        return copy.read_text(errors="replace")

    def stuff(keys: str) -> None:
        subprocess.run([screen, "-S", "s", "-X", "stuff", keys], check=True,
                       timeout=TIMEOUT)

    wait_until(lambda: len(tree(server.pid)) == 2, TIMEOUT, "screen's shell")
    stuff(f"bash {tmp_path / 'loop.sh'}\n")
    wait_until(lambda: len(_ticks(window())) >= 3, TIMEOUT, "ticks in the window")
    shell = tree(server.pid)[1]
    cycle(procs, server, images)
    assert tree(server.pid)[1] == shell
    last = wait_until(lambda: _ticks(window()), TIMEOUT, "ticks in the window")[-1]
    wait_until(lambda: _last_tick(window()) >= last + 3, TIMEOUT,
               "the loop's ticks after the restore")
    stuff("\x03echo done-`expr 6 \\* 7`\n")  # stuff would expand a $
    wait_until(lambda: re.search("^done-42$", window(), re.M), TIMEOUT,
               "the shell to answer keys")
    stuff("exit\n")
