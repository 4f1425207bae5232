"""Signal actions, a mask and a pending signal as given on the command line, then a count:
``catch=URG,USR1 ignore=INT dfl=PIPE block=WINCH pend=WINCH`` (``dfl``: back to the
default, as Python ignores SIGPIPE and SIGXFSZ). On SIGUSR1 (caught or not, it is
sent only when caught) it prints ``GOT`` with the signals caught since the last report."""

import os
import signal
import sys
import time

got: list[int] = []
spec = dict(arg.split("=", 1) for arg in sys.argv[1:])


def sigs(key: str) -> list[signal.Signals]:
    return [signal.Signals[f"SIG{n}"] for n in spec.get(key, "").split(",") if n]


for sig in sigs("catch"):
    signal.signal(sig, lambda s, _f: got.append(s))
for sig in sigs("ignore"):
    signal.signal(sig, signal.SIG_IGN)
for sig in sigs("dfl"):
    signal.signal(sig, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_BLOCK, sigs("block"))
for sig in sigs("pend"):
    os.kill(os.getpid(), sig)
n = 0
while True:
    if got:
        os.write(1, f"GOT {sorted(set(got))}\n".encode())
        got.clear()
    os.write(1, f"{n}\n".encode())
    n += 1
    time.sleep(0.05)
