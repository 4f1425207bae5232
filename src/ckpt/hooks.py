"""The notify callback through which a dump or restore tells its caller where it
is, at the points where criu runs its action scripts (the RPC server forwards
them to its client as NOTIFY messages and waits for each acknowledgement).

A callback that raises stops the dump or restore as any failure there would:
a dump leaves the processes running, a restore kills what it created.
"""

from __future__ import annotations

import os

from .errors import CkptError

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    # notify(action, pid): pid is the restored root's for "setup-namespaces" and
    # "post-restore", else 0. The return
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
# Sent only for a tree with namespaces of its own (a container), between "pre-restore"
# and "post-restore": "setup-namespaces" once its root is forked in them (runc runs its
# prestart hooks), "post-setup-namespaces" once they are complete (its mounts), before
# any other process is made.
NAMESPACE_ACTIONS = ("setup-namespaces", "post-setup-namespaces")


def ignore(action: str, pid: int) -> None:
    """The callback of drivers called without one."""
    return None


def action_scripts(scripts: Sequence[str], images_dir: str) -> Notify:
    """criu's ``--action-script``: a notify callback that runs each script with
    ``sh -c`` at every action, told which in CRTOOLS_SCRIPT_ACTION (the images in
    CRTOOLS_IMAGE_DIR, the restored root in CRTOOLS_INIT_PID); one that fails fails
    the step."""
    folder = os.path.abspath(images_dir)

    def notify(action: str, pid: int) -> None:
        if action == "query-ext-files":  # criu asks RPC clients only
            return
        env = {**os.environ, "CRTOOLS_SCRIPT_ACTION": action, "CRTOOLS_IMAGE_DIR": folder}
        if pid:
            env["CRTOOLS_INIT_PID"] = str(pid)
        import subprocess  # here: only action scripts need it

        for script in scripts:
            status = subprocess.run(["sh", "-c", script], env=env,
                                    stdin=subprocess.DEVNULL).returncode
            if status != 0:
                how = f"exit status {status}" if status > 0 else f"signal {-status}"
                raise CkptError(f"--action-script {script!r} failed at {action} ({how})")

    return notify
