"""The uts and ipc namespaces of a tree that are not ckpt's (a container's, ``unshare
--uts --ipc``): saved at dump, made anew at restore for the whole tree.

A tree may live in a uts and an ipc namespace of its own when every process of it is
in the root's: the dump saves the uts namespace's names and the ipc namespace's
sysctls (its SysV objects go through sysv.py, read inside it), into
``namespaces.json``. A process in another one than the root's is refused at dump,
naming it. The restore makes a new namespace of each kind the image names, in ckpt
itself (``Enter``) before anything of the tree is created, so that the SysV objects,
the files ckpt opens and the root it forks are made in them, and leaves them at the
end: the namespaces live on in the restored processes.

A network namespace of the tree's own is not saved: it is made empty (lo up) at
restore (criu's --empty-ns net), or, when the dump was told it is external (criu's
``--external net[INODE]:KEY``, runc's for a container joining a named namespace), the
restore joins the namespace given for KEY (``--inherit-fd fd[N]:KEY``, runc's).

A cgroup namespace of the tree's own is saved when the root is at its root in every
hierarchy (a container's init): the restored root makes a new one as soon as it has
joined its cgroups, before any other process is cloned from it (tree.py).

Other namespaces of the tree (mount, pid, user, time) still have to be ckpt's
(namespaces.check_tree refuses the rest, before the kill).
"""

from __future__ import annotations

from ..errors import ImageError, RestoreError, UnsupportedError
from ..images import NAMESPACES
from ..kernel import nsenter
from ..kernel.lazyre import LazyPattern
from ..log import logger
from ..schema import PID, Map, Obj, Opt, Str
from .namespaces import own, shown

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.namespaces")

IMAGE = NAMESPACES
FEATURE = "tree-namespaces"
CGROUP_FEATURE = "cgroup-namespace"
NET_FEATURE = "external-netns"
KINDS = ("uts", "ipc")  # the namespaces saved here
OWN = (*KINDS, "mnt", "net", "pid", "cgroup")  # the namespaces a tree may have of its own
# (mnt: mounts.py; net: made empty, --empty-ns net; pid: nspids.py; cgroup: rooted at the
# root's cgroups, ``cgroup_root_check``)

# The ipc namespace's sysctls, by their path under /proc/sys (each namespace has its own).
IPC_SYSCTLS = (
    "kernel/shmmax", "kernel/shmall", "kernel/shmmni", "kernel/shm_rmid_forced",
    "kernel/msgmax", "kernel/msgmni", "kernel/msgmnb", "kernel/sem",
    "fs/mqueue/queues_max", "fs/mqueue/msg_max", "fs/mqueue/msgsize_max",
    "fs/mqueue/msg_default", "fs/mqueue/msgsize_default",
)
_NUMBER_LIST = r"[0-9]{1,20}(?:[ \t][0-9]{1,20}){0,3}"  # a sysctl's value
_NUMBERS = LazyPattern(_NUMBER_LIST)
_MAX_NAME = 64  # __NEW_UTS_LEN

# What namespaces.json holds (check_image then checks what the types cannot say: names
# of at most 64 bytes, PIDs inside that differ).
SCHEMA = Obj(
    uts=Opt(Obj(hostname=Str(_MAX_NAME), domainname=Str(_MAX_NAME))),
    ipc=Opt(Obj(sysctls=Map(Str(80, pattern=_NUMBER_LIST),
                            key=Str(choices=IPC_SYSCTLS)))),
    net=Opt(Obj(external=Opt(Str(256, pattern=r"[^\n]+")))),
    pid=Opt(Obj(ids=Map(PID, key=Str(7, pattern=r"[1-9][0-9]*"), max=1 << 22))),
    cgroup=Opt(Obj()),
)


def others(pids: list[int], root: int) -> list[str]:
    """The names of OWN in which the tree's root is not in ckpt's namespace, checking
    that every process of ``pids`` is in the root's; refused otherwise."""
    mine, theirs = own("self"), own(root)
    out = [k for k in OWN if k in theirs and theirs[k] != mine.get(k)]
    for pid in pids:
        try:
            ns = own(pid)
        except OSError:
            continue  # a zombie: the freeze reports what matters
        for kind in out:
            if ns.get(kind) != theirs[kind]:
                raise UnsupportedError(
                    f"process {pid} is in {kind} namespace {shown(kind, ns[kind][1])}, not "
                    f"the root's ({shown(kind, theirs[kind][1])}): a tree's namespaces are "
                    "saved only when all its processes share them")
    return out


def _read_sysctl(name: str) -> str:
    with open(f"/proc/sys/{name}") as f:
        return " ".join(f.read().split())


def external_net(external: tuple[str, ...], root: int) -> tuple[str | None, tuple[str, ...]]:
    """The key of criu's ``net[INODE]:KEY`` among ``external`` when INODE is the tree's
    network namespace (None otherwise: logged), and the other external entries."""
    import os
    key, rest = None, []
    for e in external:
        if not e.startswith("net["):
            rest.append(e)
            continue
        inode, _, name = e[4:].partition("]:")
        if not inode.isdigit() or not name or "\n" in name or len(name) > 256:
            raise UnsupportedError(f"--external {e}: expected net[INODE]:KEY")
        if os.stat(f"/proc/{root}/ns/net").st_ino == int(inode):
            key = name
        else:
            log.info("external network namespace %s is not the tree's", e)
    return key, tuple(rest)


def external_net_key(saved: dict[str, Any]) -> str | None:
    """The key of the tree's external network namespace in namespaces.json, if any."""
    net = saved.get("net")
    return net.get("external") if net else None


def dump(root: int, kinds: list[str], pids: dict[int, int] | None = None,
         net_key: str | None = None) -> dict[str, Any]:
    """What namespaces.json holds of the root's namespaces ``kinds`` (``pids``: the
    PIDs inside of a PID namespace of the tree's own, nspids.py; ``net_key``: criu's
    key of its network namespace, external)."""
    saved: dict[str, Any] = {}
    if pids:
        saved["pid"] = {"ids": {str(host): inside for host, inside in pids.items()}}
    if "uts" in kinds:
        with nsenter.entered(root, ["uts"]):
            node, domain = nsenter.hostname()
        saved["uts"] = {"hostname": node, "domainname": domain}
        log.info("uts namespace of its own: %s (%s)", node, domain)
    if "ipc" in kinds:
        with nsenter.entered(root, ["ipc"]):
            sysctls = {}
            for name in IPC_SYSCTLS:
                try:
                    sysctls[name] = _read_sysctl(name)
                except FileNotFoundError:
                    continue  # a kernel without it (mqueue left out)
        saved["ipc"] = {"sysctls": sysctls}
        log.info("ipc namespace of its own, sysctls %s", sysctls)
    if "cgroup" in kinds:
        _check_cgroup_root(root)
        saved["cgroup"] = {}  # made anew by the root, at its cgroups (tree.py)
        log.info("cgroup namespace of its own, rooted at the root's cgroups")
    if "net" in kinds and net_key is not None:
        saved["net"] = {"external": net_key}  # joined at restore
        log.info("network namespace of its own, external as %s", net_key)
    elif "net" in kinds:
        saved["net"] = {}  # made empty at restore, its loopback up
        log.info("network namespace of its own, not saved (--empty-ns net)")
    return saved


def _check_cgroup_root(root: int) -> None:
    """A cgroup namespace of the tree's own is made again at restore by the root, in
    its cgroups: refused unless those are the namespace's root in every hierarchy (a
    container's init, as runc makes it)."""
    with nsenter.entered(root, ["cgroup"]), open(f"/proc/{root}/cgroup") as f:
        inside = [line.split(":", 2) for line in f.read().splitlines()]
    below = [f"{h or 'cgroup2'}:{p}" for _, h, p in inside if p != "/"]
    if below:
        raise UnsupportedError(
            f"process {root} is in cgroup {below[0]} of its cgroup namespace, not at its "
            "root: ckpt makes a tree's cgroup namespace again at the root's cgroups only")


def check_image(data: Any, where: str) -> dict[str, Any]:
    """namespaces.json as a restore may use it, or ImageError naming what is wrong."""
    def bad(what: str) -> ImageError:
        return ImageError(f"{where}: {what}")

    if not isinstance(data, dict) or set(data) - {*KINDS, "net", "pid", "cgroup"}:
        raise bad(f"an object with keys among {', '.join(KINDS)}, net, pid, cgroup is "
                  "expected")
    if data.get("cgroup", {}) != {}:
        raise bad("cgroup must be an empty object")
    net = data.get("net", {})
    if not isinstance(net, dict) or set(net) - {"external"} or not all(
            isinstance(v, str) and 0 < len(v) <= 256 and "\n" not in v for v in net.values()):
        raise bad("net must be an empty object or hold the key of an external namespace")
    pid = data.get("pid")
    if pid is not None:
        ids = pid.get("ids") if isinstance(pid, dict) else None
        if not isinstance(ids, dict) or set(pid) != {"ids"} or not ids:
            raise bad("pid must hold ids")
        for host, inside in ids.items():
            if not (isinstance(host, str) and host.isdigit() and 0 < int(host) < 1 << 22
                    and isinstance(inside, int) and 0 < inside < 1 << 22):
                raise bad(f"pid ids: {host!r} -> {inside!r} is not a pair of PIDs")
        if len(set(ids.values())) != len(ids):
            raise bad("pid ids: two PIDs inside are the same")
    uts = data.get("uts")
    if uts is not None:
        if not isinstance(uts, dict) or set(uts) != {"hostname", "domainname"}:
            raise bad("uts must hold hostname and domainname")
        for key, value in uts.items():
            if not isinstance(value, str) or len(value.encode()) > _MAX_NAME \
                    or "\n" in value or "\0" in value:
                raise bad(f"uts {key}: a name of at most {_MAX_NAME} bytes on one line")
    ipc = data.get("ipc")
    if ipc is not None:
        sysctls = ipc.get("sysctls") if isinstance(ipc, dict) else None
        if not isinstance(sysctls, dict) or set(ipc) != {"sysctls"}:
            raise bad("ipc must hold sysctls")
        for name, value in sysctls.items():
            if name not in IPC_SYSCTLS:
                raise bad(f"ipc sysctl {name!r} is not an ipc namespace's")
            if not isinstance(value, str) or not _NUMBERS.fullmatch(value):
                raise bad(f"ipc sysctl {name}: {value!r} is not a list of numbers")
    return data


class Enter:
    """ckpt in new namespaces of the tree for the time of a restore (``leave``)."""

    def __init__(self, saved: dict[str, Any], net_fd: int = -1):
        """``net_fd``: the external network namespace to join (external_net_key)."""
        self.saved = saved
        self.kinds = [k for k in (*KINDS, "net") if k in saved]  # pid: by the root's clone
        self.join = {"net": net_fd} if external_net_key(saved) is not None else {}
        self.cgroup = "cgroup" in saved  # made by the root itself (tree.py)
        if self.join:
            self.kinds.remove("net")
        self.pids = {int(h): i for h, i in saved.get("pid", {}).get("ids", {}).items()}
        self.unshared: nsenter.Unshared | None = None

    def enter(self) -> None:
        """Make the namespaces, named and set as saved."""
        kinds = self.kinds
        if not kinds and not self.join:
            return
        try:
            self.unshared = nsenter.Unshared(kinds, self.join)
        except OSError as e:
            what = f"make new {' and '.join(kinds)} namespaces" if kinds else ""
            if self.join:
                what += (" or " if what else "") + "join the external network namespace " \
                    f"{external_net_key(self.saved)}"
            raise RestoreError(f"cannot {what}: {e.strerror}") from None
        uts = self.saved.get("uts")
        if uts is not None:
            try:
                nsenter.set_hostname(uts["hostname"], uts["domainname"])
            except OSError as e:
                raise RestoreError(f"cannot name the new uts namespace "
                                   f"{uts['hostname']!r}: {e.strerror}") from None
        for name, value in self.saved.get("ipc", {}).get("sysctls", {}).items():
            try:
                with open(f"/proc/sys/{name}", "w") as f:
                    f.write(value)
            except FileNotFoundError:
                log.warning("ipc sysctl %s does not exist here; left out", name)
            except OSError as e:
                raise RestoreError(f"cannot set {name} to {value} in the new ipc "
                                   f"namespace: {e.strerror}") from None
        if "net" in kinds:
            try:
                nsenter.loopback_up()
            except OSError as e:
                raise RestoreError(f"cannot bring up lo in the new network namespace: "
                                   f"{e.strerror}") from None
        log.info("in new %s namespaces%s", " and ".join(kinds) or "no",
                 ", in the external network namespace" if self.join else "")

    def leave(self) -> None:
        if self.unshared is not None:
            self.unshared.leave()
            self.unshared = None
