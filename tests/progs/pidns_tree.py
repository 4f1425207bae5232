"""A tree for PID-namespace restores: the root (two threads) and a child A tick, each
line naming the PID the process sees by getpid() and in /proc/self/stat; a child Z
exits at once with status 5 and stays a zombie until SIGUSR1 makes the root reap it
(its SIGCHLD, blocked, stays pending);
SIGUSR2 makes the root leave an orphan O (its parent, a child of the root, exits),
which says so once adopted and lives 2 s; SIGTERM ends the root with exit code 7."""

import os
import signal
import sys
import threading
import time


def say(text: str) -> None:
    os.write(1, (text + "\n").encode())


def own_pid() -> str:
    with open("/proc/self/stat") as f:
        return f"getpid={os.getpid()} stat={f.read().split()[0]}"


def tick(role: str) -> None:
    n = 0
    while True:
        say(f"{role} {n} {own_pid()}")
        n += 1
        time.sleep(0.1)


def reap_zombie(signum: int, frame: object) -> None:
    pid, status = os.waitpid(zombie, 0)
    say(f"reaped Z {os.waitstatus_to_exitcode(status)}")


def leave_orphan(signum: int, frame: object) -> None:
    middle = os.fork()
    if middle == 0:
        me = os.getpid()
        if os.fork() == 0:
            while os.getppid() == me:  # said once adopted by the init, not before
                time.sleep(0.01)
            say(f"orphan {os.getpid()}")
            time.sleep(2)
            os._exit(0)
        os._exit(0)
    os.waitpid(middle, 0)


a = os.fork()
if a == 0:
    tick("A")
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # the zombie's stays pending
zombie = os.fork()
if zombie == 0:
    os._exit(5)
signal.signal(signal.SIGUSR1, reap_zombie)
signal.signal(signal.SIGUSR2, leave_orphan)
signal.signal(signal.SIGTERM, lambda s, f: (os.kill(a, signal.SIGKILL), sys.exit(7)))
say(f"pids {os.getpid()} {a} {zombie}")
threading.Thread(target=tick, args=("T",), daemon=True).start()
tick("P")
