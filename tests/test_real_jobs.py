"""Interactive programs a user would checkpoint on a terminal, each dumped and restored
three times in a row: killed (``-j``), left running (``-j -R``, then killed with the
rest of its tree, as a crash would) and killed again; each time restored with ``-j``
in the foreground from the shell on its terminal. After each restore the program
answers keys at once and remembers what it was told before (a variable, a line of
text), and at the end it quits on its own key; the group in the foreground of the
terminal is that of the dump (a job control shell's own job, bash-jobs).

Then programs started on a pty of their own, leading its session (as ``pty.fork``
starts them: no shell), dumped with ``-j``: restored with ``-j -d`` by a ckpt whose
stdin and stdout are that pty opened again, with ``-R`` too, and with ``-j`` by a
ckpt started on a new pty the same way (it lets that terminal go to the restored
session): each time the pty is the program's controlling terminal again and the
program answers on it."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ckpt_helpers import (
    PYTHON,
    Output,
    Procs,
    ckpt_cmd,
    ckpt_ok,
    is_alive,
    only_child,
    proc_ids,
    proc_stat_fields,
    proc_state,
    proc_status,
    wait_until,
)
from real_helpers import TIMEOUT, crash, dumped_pids, need
from terminal import Terminal

ROUNDS = ("killed", "left running", "killed")


@dataclass
class Job:
    """An interactive program and how a user talks to it: ``command`` typed at the
    shell's prompt ({tmp} is the test's folder), ``ready`` shown once it is up,
    ``setup`` keys and what they show, ``round`` what the user does after the i-th
    restore (returning what the terminal then shows), ``quit`` steps, ``flags`` for
    each dump and restore; ``settled`` waits, after the setup, until the program is
    in the state the rounds dump (the job in the foreground)."""

    program: str
    package: str
    command: str
    ready: str
    setup: tuple[str, str] | None
    round: Callable[[int, Path, Terminal], str]
    quit: list[tuple[str, str | None]]
    flags: tuple[str, ...] = ()
    check: Callable[[Path], None] | None = None
    ready_timeout: float = TIMEOUT
    settled: Callable[[Terminal], None] | None = None


def _count(keys: str, show: str) -> Callable[[int, Path, Terminal], str]:
    """Type ``keys``, which add 1 to a variable that started at 6 and show it times 7."""
    def round_(i: int, _tmp: Path, term: Terminal) -> str:
        term.send(keys)
        return show.format((7 + i) * 7)
    return round_


def _keys(keys: str, show: str) -> Callable[[int, Path, Terminal], str]:
    def round_(_i: int, _tmp: Path, term: Terminal) -> str:
        term.send(keys)
        return show
    return round_


def _resized(show: str) -> Callable[[int, Path, Terminal], str]:
    """The window resized: the program draws its whole screen again."""
    def round_(i: int, _tmp: Path, term: Terminal) -> str:
        term.resize(*SIZES[(i + 1) % 2])
        return show
    return round_


def _state(i: int, tmp: Path, _term: Terminal) -> str:
    """A file the program shows changed: each of its characters (curses draws only what
    changed on the screen, and a repeated character as one)."""
    text = _rotated(i + 1)
    (tmp / "state").write_text(text + "\n")
    return text


def _rotated(n: int) -> str:
    return STATE[n:] + STATE[:n]


def _nano_saved(tmp: Path) -> None:
    assert (tmp / "notes.txt").read_text() == "before\nafter0\nafter1\nafter2\n\n"


def _emacs_saved(tmp: Path) -> None:
    assert (tmp / "notes.txt").read_text() == "before\nafter0\nafter1\nafter2\n"


def _vim_saved(tmp: Path) -> None:
    assert (tmp / "notes.txt").read_text() == "before\n0-after\n1-after\n2-after\n"


def _sqlite_committed(tmp: Path) -> None:
    with sqlite3.connect(tmp / "db.sqlite") as con:
        assert [n for (n,) in con.execute("select n from t order by n")] == [0, 1, 2, 3]


def _script_logged(tmp: Path) -> None:
    assert re.search(r"^got63\r?$", (tmp / "typescript").read_text(), re.M)


def _stopped_job(i: int, _tmp: Path, term: Terminal) -> str:
    """A job control shell with a job in the background and one it stopped (Ctrl-Z,
    then ``fg`` and Ctrl-Z again after each restore): it still knows both, and its
    variable."""
    if i:
        start = len(term.text())
        term.send("fg %2\n")
        term.wait_for(r"fg %2\r?\nsleep 1001\r?\n", start=start)
    _running_in_foreground(term, [b"sleep", b"1001"])
    term.send("\x1a")
    term.send("x=$((x+1)); jobs; echo got$((x*7))\n")
    return rf"\[1\][-+ ]+Running +sleep 1000 &\r?\n\[2\][-+ ]+Stopped +sleep 1001\r?\n" \
        rf"(in\$ )?got{(7 + i) * 7}"


def _running_in_foreground(term: Terminal, argv: list[bytes]) -> None:
    """Wait until the group in the foreground of ``term`` is led by ``argv``, running:
    a shell prints a job's command at ``fg`` before it gives the job the terminal and
    continues it, and a Ctrl-Z typed in between goes to the shell's group (which
    ignores it) or to a job not continued yet (SIGCONT then discards it)."""
    def running() -> bool:
        leader = os.tcgetpgrp(term.master)
        try:
            return (Path(f"/proc/{leader}/cmdline").read_bytes().split(b"\0")[:-1] == argv
                    and proc_state(leader) in ("S", "R")
                    and proc_status(leader)["TracerPid"] == "0")
        except (OSError, KeyError):
            return False
    wait_until(running, TIMEOUT, f"{b' '.join(argv).decode()} in the foreground, running")


STATE = "abcdefghijklmnop"
SIZES = ((24, 100), (30, 90))  # the window's rows and columns, and after a resize
AFTER_PROMPT = r"(^|[^\d ])"  # readline's escape sequences may come right before
JOBS = {
    "htop": Job("htop", "htop", "TERM=xterm htop -d 5", r"Tasks:", None,
                _resized(r"Tasks:"), [("q", None)]),
    "watch": Job("watch", "procps", "TERM=xterm watch -t -n 0.2 cat {tmp}/state",
                 STATE, None, _state, [("\x03", None)]),
    "bc": Job("bc", "bc", "bc -q", r"\$ bc -q", ("x = 6\n", r"x = 6"),
              _count("x = x + 1; x * 7\n", AFTER_PROMPT + r"{}$"), [("quit\n", None)]),
    "python": Job(PYTHON, "python3", f"{PYTHON} -q", r">>> ", ("x = [6]\n", r">>> .*\n>>> "),
                  _count("x.append(x[-1] + 1); print('got', x[-1] * 7)\n", r"^got {}$"),
                  [("exit()\n", None)]),
    "node": Job("node", "nodejs", "node", r"> ", ("let x = 6\n", r"undefined"),
                _count("x += 1; console.log('got' + x * 7)\n", r"^got{}$"),
                [(".exit\n", None)]),
    "jshell": Job("jshell", "openjdk-17-jdk-headless", "jshell -q", r"jshell> ",
                  ("int x = 6;\n", r"int x = 6;"),
                  _count('x += 1; System.out.println("got" + x * 7);\n', r"^got{}$"),
                  [("/exit\n", None)],
                  # jshell runs the code in a second JVM it talks to over loopback TCP;
                  # both JVMs hold a flock on their perf data file
                  flags=("--tcp-established", "--file-locks"), ready_timeout=90),
    "nano": Job("nano", "nano", "TERM=xterm nano {tmp}/notes.txt", r"GNU nano",
                ("before\r", r"before"),
                lambda i, _tmp, term: term.send(f"after{i}\r") or f"after{i}",
                [("\x0f\r", r"Wrote"), ("\x18", None)], check=_nano_saved),
    "script": Job("script", "bsdutils", "script -q -f {tmp}/typescript", r"\$ ",
                  ("PS1='in$ '; x=6\n", r"in\$ "),
                  _count("x=$((x+1)); echo got$((x*7))\n", r"^got{}$"),
                  [("exit\n", None)], check=_script_logged),
    "dtach": Job("dtach", "dtach", "dtach -c {tmp}/dtach.sock -z bash --norc -i", r"\$ ",
                 ("PS1='in$ '; x=6\n", r"in\$ "),
                 _count("x=$((x+1)); echo got$((x*7))\n", r"^got{}$"), [("exit\n", None)]),
    # vim's own message line ("…/notes.txt" [New]), not the command line's echo: keys
    # typed before vim puts the terminal in raw mode are echoed and left to the shell
    "vim": Job("vim", "vim", "TERM=xterm vim {tmp}/notes.txt", r'notes\.txt" ',
               ("ibefore\x1b", r"before"),
               lambda i, _tmp, term: term.send(f"o{i}-after\x1b") or f"{i}-after",
               [(":wq\r", None)], check=_vim_saved),
    "less": Job("less", "less", "TERM=xterm less {tmp}/text", r"line 0000", None,
                lambda i, _tmp, term: term.send(f"{100 * (i + 1)}g") or
                f"line {100 * (i + 1) - 1:04d}", [("q", None)]),
    "vim-terminal": Job("vim", "vim",
                        "TERM=xterm vim -N -u NONE -c 'terminal ++curwin ++close bash --norc -i'",
                        r"\$ ", ("PS1='in$ '; x=6\n", r"in\$ "),
                        _count("x=$((x+1)); echo got$((x*7))\n", r"got{}"),
                        [("exit\n", None)]),
    "less-pipe": Job("less", "less",
                     "TERM=xterm bash -c 'seq -f \"line %04g\" 0 99999 | less'",
                     r"line 0000", None,
                     lambda i, _tmp, term: term.send(f"{100 * (i + 1)}g") or
                     f"line {100 * (i + 1) - 1:04d}", [("q", None)]),
    "sqlite3": Job("sqlite3", "sqlite3", "sqlite3 {tmp}/db.sqlite", r"sqlite3 ",
                   ("create table t (n); begin; insert into t values (0); "
                    "select 'count', count(*) from t;\n", r"^count\|1$"),
                   lambda i, _tmp, term: term.send(
                       f"insert into t values ({i + 1}); select 'count', count(*) from t;\n")
                   or rf"^count\|{i + 2}$",
                   [("commit;\n.quit\n", None)], flags=("--file-locks",),
                   check=_sqlite_committed),
    "emacs": Job("emacs", "emacs-nox", "TERM=xterm emacs -nw -Q {tmp}/notes.txt",
                 r"L1 +\(Text\)", ("before\r", r"before"),
                 lambda i, _tmp, term: term.send(f"after{i}\r") or f"after{i}",
                 [("\x18\x13", r"Wrote"), ("\x18\x03", None)], check=_emacs_saved),
    "emacs-shell": Job("emacs", "emacs-nox", "TERM=xterm emacs -nw -Q -f shell",
                       r"\*shell\*", ("PS1='in$ '; x=6\r", r"in\$ "),
                       _count("x=$((x+1)); echo got$((x*7))\r", r"got{}"),
                       [("exit\r", r"finished"), ("\x18\x03", None)]),
    "asyncio": Job(PYTHON, "python3", f"{PYTHON} -q -m asyncio", r">>> ",
                   ("x = [6]\n", r">>> .*\n>>> "),
                   _count("x.append(x[-1] + 1); print('got', x[-1] * 7)\n", r"^got {}$"),
                   [("exit()\n", None)]),
    "erl": Job("erl", "erlang-base", "erl", r"1> ", ("put(x, 6).\n", r"2> "),
               _count("put(x, get(x) + 1), io:format(\"got~p~n\", [get(x) * 7]).\n",
                      r"^got{}\r?$"), [("q().\n", None)]),
    "mc": Job("mc", "mc", "TERM=xterm mc -u", r"Left", None, _resized(r"Left"),
              [("\x1b0", None)]),
    "bash-jobs": Job("bash", "bash", "bash --norc -i", r"\$ ",
                     ("PS1='in$ '; x=6; sleep 1000 & sleep 1001\n", r"^\[1\] \d+\r?$"),
                     # bash updates its table of jobs when it reaps them: ``kill %2; exit``
                     # would find job 2 still stopped and refuse to exit; ``fg`` reaps it
                     _stopped_job, [("kill %1 %2; fg %2; exit\n", None)],
                     settled=lambda term: _running_in_foreground(term, [b"sleep", b"1001"])),
}


def _restore_job(term: Terminal, procs: Procs, pid: int, images: Path, flags: tuple[str, ...],
                 how: str) -> int:
    """Dump the job ``pid`` (killed, or left running and then killed with every process
    of its tree) and restore it with -j from the shell; where the terminal's text then
    stood. The group in the foreground of the terminal at the dump (the job's, or
    one of its own shell's jobs) is again after the restore."""
    foreground = os.tcgetpgrp(term.master)
    if how == "left running":
        ckpt_ok("dump", "-j", "-R", "-t", pid, "-D", images, *flags)
        assert is_alive(pid), "dump -R did not leave the job running"
        # with what it forked since the dump (watch's sh), which would keep its group
        crash(procs, dumped_pids(images))
    else:
        ckpt_ok("dump", "-j", "-t", pid, "-D", images, *flags)
    for p in dumped_pids(images):
        procs.wait_gone(p)
    start = len(term.text())
    term.send(f"ckpt restore -j -D {images} {' '.join(flags)}\n")
    try:
        wait_until(lambda: is_alive(pid), TIMEOUT, f"the restored {pid}")
    except AssertionError as e:
        raise AssertionError(f"{e}; the terminal shows:\n{term.text()[-1000:]}") from None
    procs.adopt(pid, Output(images / "none"))
    wait_until(lambda: os.tcgetpgrp(term.master) == foreground, TIMEOUT,
               "the restored job in the foreground of its terminal")
    assert proc_ids(pid)[1:] == (pid, term.shell.pid), "not a job of the shell"
    wait_until(lambda: proc_status(pid)["TracerPid"] == "0", TIMEOUT,
               "the restore to let the job go")
    return start


@pytest.mark.parametrize("name", list(JOBS))
def test_job_three_times(name: str, term: Terminal, procs: Procs, tmp_path: Path) -> None:
    """One program of JOBS: it answers after each of three restores and quits."""
    job = JOBS[name]
    need(job.program, job.package)
    (tmp_path / "state").write_text(STATE + "\n")
    (tmp_path / "text").write_text("".join(f"line {i:04d}\n" for i in range(1000)))
    term.resize(*SIZES[0])
    term.send(job.command.format(tmp=tmp_path) + "\n")
    pid = only_child(term.shell.pid, timeout=TIMEOUT)
    term.wait_for(job.ready, timeout=job.ready_timeout)
    if job.setup is not None:
        term.send(job.setup[0])
        term.wait_for(job.setup[1])
    if job.settled is not None:
        job.settled(term)
    for i, how in enumerate(ROUNDS):
        start = _restore_job(term, procs, pid, tmp_path / f"images{i}", job.flags, how)
        term.wait_for(job.round(i, tmp_path, term), start=start)
    for keys, shows in job.quit:
        term.send(keys)
        if shows is not None:
            term.wait_for(shows)
    wait_until(lambda: not is_alive(pid), TIMEOUT, f"{name} to quit")
    if job.check is not None:
        job.check(tmp_path)


# ------------------------------------------------------------------ a pty of its own

def _tty_nr(pid: int) -> int:
    return int(proc_stat_fields(pid)[4])


def _restore_on(pty: str, images: Path) -> None:
    """ckpt restore -j -d with the pty ``pty`` opened again as its stdin (read-only)
    and stdout (write-only), as a shell's ``< PTY > PTY`` gives them: the program
    gets read-write fds on it again, as it had."""
    stdin = os.open(pty, os.O_RDONLY | os.O_NOCTTY)
    stdout = os.open(pty, os.O_WRONLY | os.O_NOCTTY)
    try:
        res = subprocess.run([*ckpt_cmd(), "restore", "-j", "-d", "-D", str(images)],
                             stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, text=True,
                             timeout=TIMEOUT * 2)
    finally:
        os.close(stdin)
        os.close(stdout)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("program", ["top", "htop", "bc"])
def test_session_leader_on_its_own_pty(program: str, procs: Procs, tmp_path: Path) -> None:
    """``top``, ``htop`` or ``bc`` started as the leader of a session on a pty the test
    holds the master of: restored with -j -d on that pty, again after -j -R, then with
    -j by a ckpt that leads a session on a new pty (it lets the terminal go): each time
    the program leads its session with the pty as its controlling terminal, and answers."""
    argv, ready, ask = {
        "top": (["top", "-d", "0.5"], r"Tasks:", _resized(r"Tasks:")),
        "htop": (["htop", "-d", "5"], r"Tasks:", _resized(r"Tasks:")),
        "bc": (["bc", "-q"], AFTER_PROMPT + r"42$",
               _count("x = x + 1; x * 7\n", AFTER_PROMPT + r"{}$")),
    }[program]
    path = need(program, {"top": "procps"}.get(program, program))
    env = {"TERM": "xterm"}
    term = Terminal(tmp_path, [], argv=[path, *argv[1:]], env=env)
    terms = [term]
    try:
        term.resize(*SIZES[0])
        pid = term.shell.pid
        if program == "bc":
            term.send("x = 6; x * 7\n")
        term.wait_for(ready)
        for i, how in enumerate(["killed", "left running", "new pty"]):
            images = tmp_path / f"images{i}"
            ckpt_ok("dump", "-j", "-t", pid, "-D", images,
                    *(["-R"] if how == "left running" else []))
            if how == "left running":
                os.kill(pid, signal.SIGKILL)
            procs.wait_gone(pid)
            if how == "new pty":  # ckpt started as the program was
                term = Terminal(tmp_path, [], argv=[*ckpt_cmd(), "restore", "-j", "-D",
                                                    str(images)], env=env)
                terms.append(term)
                start = 0
            else:
                start = len(term.text())
                _restore_on(term.slave_path, images)
            wait_until(lambda: is_alive(pid), TIMEOUT, f"the restored {pid}")
            procs.adopt(pid, Output(images / "none"))
            # the PID lives from the restore's first fork on, its session comes later
            rdev = os.stat(term.slave_path).st_rdev
            wait_until(lambda r=rdev: is_alive(pid) and proc_ids(pid)[1:] == (pid, pid)
                       and _tty_nr(pid) == r, TIMEOUT,
                       "the program leading its session, the pty its controlling terminal")
            # ckpt gone from it: the terminal has the job's settings back, and the
            # program its handlers (a resize before would not reach it)
            wait_until(lambda: proc_status(pid)["TracerPid"] == "0", TIMEOUT,
                       "the restore to let the program go")
            term.wait_for(ask(i, tmp_path, term), start=start)
        term.send("q" if program != "bc" else "quit\n")
        wait_until(lambda: not is_alive(pid), TIMEOUT, f"{program} to quit")
    finally:
        for t in terms:
            t.close()
