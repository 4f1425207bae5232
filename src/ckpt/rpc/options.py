"""What each of criu's RPC options (``criu_opts``) means to ckpt: used, accepted
without effect (logged), or refused with an error that names it.

Every option criu knows is in exactly one table below; tests check that. The
container options runc sends are used (``root``, ``ext_mnt``, ``empty_ns``,
``cg_root``, ...); those of criu's other container work (veths, joined namespaces,
mount masters, cgroup properties) are refused together (``CONTAINER``).
"""

from __future__ import annotations

import errno
import os

from ..errors import CkptError
from ..log import logger
from ..resources.filekind import TcpFlags
from .schema import CG_MODES, DUMP, MESSAGES, PRE_DUMP, RESTORE, SINGLE_PRE_DUMP

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.rpc")


class RequestError(CkptError):
    """A request ckpt cannot serve; ``errno`` goes into the response's cr_errno."""

    def __init__(self, message: str, err: int = errno.EBADRQC):
        super().__init__(message)
        self.errno = err


# Options ckpt reads (see args_for and Dirs).
USED = {
    "images_dir_fd", "images_dir", "work_dir_fd", "log_file", "log_level", "log_to_stderr",
    "pid", "leave_running", "leave_stopped", "shell_job", "ext_unix_sk", "unix_sk_ino",
    "external", "ghost_limit", "track_mem", "parent_img", "ps", "notify_scripts",
    "inherit_fd", "rst_sibling", "exec_cmd", "file_locks", "tcp_established",
    "tcp_skip_in_flight", "tcp_close", "network_lock", "manage_cgroups",
    "manage_cgroups_mode", "root", "ext_mnt", "empty_ns", "cg_root", "orphan_pts_master",
    "lazy_pages", "config_file", "status_fd",
}

# Accepted, logged, and without effect: why ckpt needs none of them.
IGNORED = {
    "evasive_devices": "devices are reopened by their path, or the restore fails naming it",
    "link_remap": "a removed name of a file with other links is always saved as a link",
    "auto_dedup": "parent images are kept whole",
    "cpu_cap": "ckpt restores the saved xstate on any CPU that can load it",
    "force_irmap": "inotify watches are found through their file handles",
    "irmap_scan_paths": "inotify watches are found through their file handles",
    "timeout": "ckpt freezes without a time limit",
    "weak_sysctls": "ckpt restores no sysctls",
    "pre_dump_mode": "ckpt has one way of copying pages",
    "pidfd_store_sk": "ckpt does not keep pidfds between pre-dumps",
    "skip_file_rwx_check": "ckpt reopens files with their saved access mode only",
    "unprivileged": "ckpt runs as root",
    "display_stats": "the log has the times",
    "allow_uprobes": "ckpt does not look for uprobes",
    "ghost_fiemap": "the data of deleted files is found with SEEK_DATA/SEEK_HOLE",
    "file_validation_method": "mapped files are checked by size and mtime",
    "freeze_cgroup": "ckpt freezes the tree with ptrace alone (the cgroup is left as it is)",
}

# Refused when set to anything but their neutral value: ckpt cannot do it yet.
UNSUPPORTED = {
    "lsm_profile": "LSM profiles are not set at restore",
    "lsm_mount_context": "LSM mount contexts are not set at restore",
    "tls": "the page server speaks no TLS",
    "tls_cacert": "the page server speaks no TLS",
    "tls_cacrl": "the page server speaks no TLS",
    "tls_cert": "the page server speaks no TLS",
    "tls_key": "the page server speaks no TLS",
    "tls_no_cn_verify": "the page server speaks no TLS",
}

# Refused when set to anything but their neutral value: container work of criu's that
# ckpt does not do (runc sends none of these).
CONTAINER = {
    "veths", "auto_ext_mnt", "ext_sharing",
    "ext_masters", "skip_mnt", "enable_fs", "join_ns",
    "cgroup_props", "cgroup_props_file", "cgroup_dump_controller",
    "cgroup_yard", "mntns_compat_mode",
}

DEFAULT_LOG = "criu.log"  # criu's name for the log of an RPC request without log_file


def _neutral(name: str, value: Any) -> bool:
    """True for a value that asks for nothing (false, empty, "/", cgroups left alone)."""
    if name == "root":
        return value in ("", "/")
    return not value


def screen(opts: dict[str, Any]) -> None:
    """Refuse the options ckpt cannot honour; log those it accepts without effect."""
    for number in opts.get("_unknown", []):
        log.warning("option field %d is unknown to ckpt; ignored", number)
    for name, value in opts.items():
        if name in USED or name == "_unknown" or _neutral(name, value):
            continue
        if name in CONTAINER:
            raise RequestError(f"option {name}: containers (namespaces, mounts, cgroups) are "
                               "not supported yet", errno.EOPNOTSUPP)
        if name in UNSUPPORTED:
            raise RequestError(f"option {name}: {UNSUPPORTED[name]}", errno.EOPNOTSUPP)
        if name in IGNORED:
            log.info("option %s accepted without effect: %s", name, IGNORED[name])
    ps = opts.get("ps") or {}
    if ps.get("fd") is not None:
        raise RequestError("option ps.fd: a page server connection made by the client is "
                           "not supported; give address and port", errno.EOPNOTSUPP)


def _resolve_dir(peer: int, fd: int, what: str) -> tuple[str, int]:
    """(path, held fd) of the folder that the client has open as ``fd``."""
    try:
        held = os.open(f"/proc/{peer}/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise RequestError(f"{what} {fd}: cannot open the client's fd {fd} (process "
                           f"{peer}): {e.strerror}", e.errno) from None
    try:
        path = os.readlink(f"/proc/self/fd/{held}")
        st, mine = os.stat(path), os.fstat(held)
        if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            return path, held
    except OSError:
        pass
    return f"/proc/self/fd/{held}", held  # unreachable by name: through our own fd


class Dirs:
    """The images and work folders of a request, and how its log is set up."""

    def __init__(self, images: str, work: str, log_file: str | None, verbosity: int,
                 held: list[int]):
        self.images = images
        self.work = work
        self.log_file = log_file  # absolute; None for stderr
        self.verbosity = verbosity
        self.held = held  # fds of the folders, closed by close()

    def close(self) -> None:
        for fd in self.held:
            os.close(fd)
        self.held.clear()

    @classmethod
    def from_opts(cls, opts: dict[str, Any], peer: int) -> Dirs:
        held: list[int] = []
        try:
            if opts.get("images_dir_fd", -1) >= 0:
                images, fd = _resolve_dir(peer, opts["images_dir_fd"], "images_dir_fd")
                held.append(fd)
            elif opts.get("images_dir"):
                images = opts["images_dir"]
                if not os.path.isdir(images):
                    raise RequestError(f"images_dir {images}: not a folder", errno.ENOENT)
            else:
                raise RequestError("neither images_dir_fd nor images_dir given")
            work = images
            if opts.get("work_dir_fd") is not None:
                work, fd = _resolve_dir(peer, opts["work_dir_fd"], "work_dir_fd")
                held.append(fd)
            log_file: str | None = None
            if opts.get("log_file"):
                if "/" in opts["log_file"]:
                    raise RequestError(f"log_file {opts['log_file']!r}: a name in the work "
                                       "folder, without '/', as in criu")
                log_file = os.path.join(work, opts["log_file"])
            elif not opts.get("log_to_stderr"):
                log_file = os.path.join(work, DEFAULT_LOG)
        except BaseException:
            for fd in held:
                os.close(fd)
            raise
        return cls(images, work, log_file, opts.get("log_level", 2), held)


# criu_network_lock_method
NETWORK_LOCKS = {1: "iptables", 2: "nftables", 3: "skip"}


def _tcp(opts: dict[str, Any]) -> dict[str, Any]:
    """The TCP options and the network lock, as ckpt.dump and ckpt.restore take them."""
    method = opts.get("network_lock")
    if method is not None and method not in NETWORK_LOCKS:
        raise RequestError(f"option network_lock: unknown method {method}")
    return {"tcp": TcpFlags(established=bool(opts.get("tcp_established")),
                            close=bool(opts.get("tcp_close")),
                            skip_in_flight=bool(opts.get("tcp_skip_in_flight"))),
            "network_lock": NETWORK_LOCKS.get(method) if method is not None else None}


def _cgroups(opts: dict[str, Any]) -> str | None:
    """criu's cgroup mode: ``manage_cgroups`` true is soft, false ignore (as criu's
    service reads it), ``manage_cgroups_mode`` wins; None for criu's default."""
    mode = None
    if opts.get("manage_cgroups") is not None:
        mode = "soft" if opts["manage_cgroups"] else "ignore"
    number = opts.get("manage_cgroups_mode")
    if number is not None:
        if number not in CG_MODES:
            raise RequestError(f"option manage_cgroups_mode: unknown mode {number}")
        mode = CG_MODES[number]
    return mode


CLONE_NEWNET, CLONE_NEWPID = 0x40000000, 0x20000000


def _empty_ns(opts: dict[str, Any], restore: bool = False) -> tuple[str, ...]:
    """criu's empty_ns: only the network namespace may be left unsaved; at restore,
    CLONE_NEWPID asks for a new, empty PID namespace around the tree (ckpt's
    --new-pidns, which no field of criu's names; criu refuses that bit)."""
    flags = opts.get("empty_ns") or 0
    allowed = CLONE_NEWNET | (CLONE_NEWPID if restore else 0)
    if flags & ~allowed:
        raise RequestError(f"option empty_ns {flags:#x}: only CLONE_NEWNET is supported"
                           + (" (and CLONE_NEWPID at restore: --new-pidns)" if restore else ""),
                           errno.EOPNOTSUPP)
    return ("net",) if flags & CLONE_NEWNET else ()


def args_for(kind: int, opts: dict[str, Any], dirs: Dirs) -> dict[str, Any]:
    """Keyword arguments of ckpt.dump, ckpt.pre_dump or ckpt.restore for request ``kind``."""
    mounts = tuple(f"mnt[{e['key']}]:{e['val']}" for e in opts.get("ext_mnt", []))
    if kind == RESTORE:
        inherit = [f"fd[{e['fd']}]:{e['key']}" for e in opts.get("inherit_fd", [])]
        if opts.get("external"):
            raise RequestError("option external at restore: give each external file to "
                               "restore through inherit_fd", errno.EOPNOTSUPP)
        return {"detach": True, "shell_job": opts.get("shell_job") or None,
                "inherit_fds": inherit, "sibling": bool(opts.get("rst_sibling")),
                "manage_cgroups": _cgroups(opts), "root": opts.get("root") or None,
                "external": mounts, "empty_ns": _empty_ns(opts, restore=True),
                "new_pidns": bool((opts.get("empty_ns") or 0) & CLONE_NEWPID),
                "cg_root": {e.get("ctrl") or "": e["path"] for e in opts.get("cg_root", [])},
                # the lazy-pages daemon listens in the work folder (pages/lazy.py)
                "lazy_pages": bool(opts.get("lazy_pages")), "work_dir": dirs.work,
                **_tcp(opts)}
    if opts.get("lazy_pages") and not (opts.get("ps") or {}).get("port"):
        raise RequestError("option lazy_pages at dump: give ps, where the lazy-pages "
                           "daemon takes the images from (criu's remote lazy migration)",
                           errno.EOPNOTSUPP)
    if opts.get("inherit_fd"):
        log.info("option inherit_fd is for restores; ignored")
    parent = opts.get("parent_img")
    ps = opts.get("ps")
    args: dict[str, Any] = {
        # The runtime owns the folder it hands over (runc's ./checkpoint, reused from one
        # checkpoint to the next) and expects criu's overwriting; files are still
        # created safely in it (images.Folder).
        "overwrite": True,
        # criu's pre-dumps always track memory: the next dump builds on them
        "track_mem": bool(opts.get("track_mem")) or kind in (PRE_DUMP, SINGLE_PRE_DUMP),
        "prev_images_dir": parent or None,
        # with lazy_pages the images are written whole, then handed over (offer)
        "page_server": (ps.get("address") or "127.0.0.1", ps["port"])
        if ps and ps.get("port") and not opts.get("lazy_pages") else None,
    }
    if ps and not ps.get("port"):
        raise RequestError("option ps: a page server needs a port")
    if kind in (PRE_DUMP, SINGLE_PRE_DUMP):
        return args
    assert kind == DUMP
    if opts.get("cg_root"):
        raise RequestError("option cg_root at dump: the cgroups are saved as they are",
                           errno.EOPNOTSUPP)
    if opts.get("leave_running") and opts.get("leave_stopped"):
        raise RequestError("options leave_running and leave_stopped exclude each other")
    external = list(opts.get("external", []))
    external += [f"unix[{u['inode']}]" for u in opts.get("unix_sk_ino", [])]
    external += mounts  # POINT -> NAME: the mounts the restore binds from the host
    if opts.get("root") not in (None, "", "/"):
        log.info("option root at dump: the tree's root is read through /proc/PID/root")
    return {**args, "leave_running": bool(opts.get("leave_running")),
            "ext_unix_sk": bool(opts.get("ext_unix_sk")),
            "leave_stopped": bool(opts.get("leave_stopped")),
            "shell_job": bool(opts.get("shell_job")), "external": tuple(external),
            "ghost_limit": opts.get("ghost_limit"), "file_locks": bool(opts.get("file_locks")),
            "manage_cgroups": _cgroups(opts), "empty_ns": _empty_ns(opts),
            "orphan_pts_master": bool(opts.get("orphan_pts_master")), **_tcp(opts)}


def check_tables() -> list[str]:
    """Option names of the schema in no table, or in more than one (for tests)."""
    tables = [USED, set(IGNORED), set(UNSUPPORTED), CONTAINER]
    return [f.name for f in MESSAGES["opts"].values()
            if sum(f.name in t for t in tables) != 1]
