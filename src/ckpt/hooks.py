"""The notify callback through which a dump or restore tells its caller where it
is, at the points where criu runs its action scripts (the RPC server forwards
them to its client as NOTIFY messages and waits for each acknowledgement).

A callback that raises stops the dump or restore as any failure there would:
a dump leaves the processes running, a restore kills what it created.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# notify(action, pid): pid is the restored root's for "post-restore", else 0. The return
# value is used for "query-ext-files" only: more --external keys for the dump.
Notify = Callable[[str, int], Sequence[str] | None]

# In the order a dump sends them.
DUMP_ACTIONS = ("pre-dump", "query-ext-files", "post-dump")
# In the order a restore sends them.
RESTORE_ACTIONS = ("pre-restore", "post-restore", "pre-resume", "post-resume")
# Sent only when TCP connections are locked (--tcp-established, netlock.py): a dump
# sends "network-lock" after "query-ext-files" and, when the processes run on (-R, -s,
# a failure), "network-unlock" last; a restore sends "network-unlock" between
# "post-restore" and "pre-resume".
NETWORK_ACTIONS = ("network-lock", "network-unlock")


def ignore(action: str, pid: int) -> None:
    """The callback of drivers called without one."""
    return None
