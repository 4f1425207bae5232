"""criu's command-line flags, every one, in one table saying what ckpt does with it;
the parsers of ckpt's criu commands are built from that table, and docs/flags.md
is its rendering (``python -m ckpt.flags > docs/flags.md``).

Each flag is one of:

* USE: ckpt does what criu does;
* NO_EFFECT: accepted, and a line in the log says why ckpt needs none of it;
* REFUSE: the command stops before it touches anything, with one line naming the
  flag and why (unless the flag is given its neutral value, e.g. ``--no-NAME``).

As with criu, every flag is accepted by every criu command (dump, pre-dump,
restore, check, page-server); where criu gives a flag no meaning for a command it
has no effect there, noted in the log. A flag whose feature is being built is
REFUSE with its ``api`` keyword named: making it USE passes its value to
``ckpt.dump``/``ckpt.restore`` under that keyword, with nothing else to wire.
"""

from __future__ import annotations

import os
import sys

from .errors import UnsupportedError, UsageError
from .kernel.record import dataclass

_Namespace = type(sys.implementation)  # types.SimpleNamespace, without importing types
TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

USE = "used"
NO_EFFECT = "accepted without effect"
REFUSE = "refused"

DUMP, PRE_DUMP, RESTORE, CHECK, PAGE_SERVER = "dump", "pre-dump", "restore", "check", \
    "page-server"
LAZY_PAGES = "lazy-pages"
CRIU_COMMANDS = (DUMP, PRE_DUMP, RESTORE, CHECK, PAGE_SERVER, LAZY_PAGES)
_DUMPS = frozenset({DUMP, PRE_DUMP})
_DR = frozenset({DUMP, RESTORE})
_ALL = frozenset(CRIU_COMMANDS)

DEFAULT_CONFIGS = ("/etc/criu/default.conf", "~/.criu/default.conf")


def size(text: str) -> int:
    """A size in bytes, with an optional K, M or G suffix (criu's --ghost-limit 1M)."""
    import re
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip(), re.I)
    if m is None:
        import argparse
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (e.g. 1048576, 512K, 64M)")
    return int(m[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[m[2].upper()]


class _Spelling:
    """A flag's ``long`` or ``dest``, both worked out on first use and kept in the flag's
    own attributes, which from then on hide this (a non-data descriptor): a command asks
    for every flag's several times (parse_simple, screen, api_kwargs), some 600 times."""

    def __init__(self, which: int):
        self.which = which

    def __get__(self, flag: Flag | None, owner: type | None = None) -> Any:
        if flag is None:
            return self
        long = next((n for n in flag.names if n.startswith("--")), flag.names[0])
        spelled = (long, long.lstrip("-").replace("-", "_"))
        flag.__dict__["long"], flag.__dict__["dest"] = spelled  # (frozen: not setattr)
        return spelled[self.which]


@dataclass(frozen=True)
class Flag:
    """One of criu's flags and what ckpt does with it."""

    names: tuple[str, ...]
    effect: str  # USE, NO_EFFECT or REFUSE
    what: str  # USE: what ckpt does; otherwise why not
    commands: frozenset[str] = _ALL  # where criu gives it a meaning
    value: str | None = None  # its argument's name; None for a switch
    optional: bool = False  # the argument may be left out (-x, --cpu-cap)
    bare: str = ""  # the value of an optional argument left out
    negatable: bool = False  # criu's --no-NAME form
    repeat: bool = False
    choices: tuple[str, ...] = ()
    neutral: tuple[str, ...] = ()  # values of a REFUSE flag that ask for nothing
    api: str | None = None  # keyword of ckpt.dump/pre_dump/restore it is passed as
    type: Callable[[str], Any] = str
    required: frozenset[str] = frozenset()  # commands that need it
    default: Any = None
    special: tuple[tuple[str, str, str], ...] = ()  # (command, effect, what) exceptions

    long = _Spelling(0)  # its long name (--name), or its only one
    dest = _Spelling(1)  # the attribute argparse gives its value

    def effect_on(self, command: str) -> tuple[str, str]:
        """(effect, what) of this flag given to ``command``."""
        for cmd, effect, what in self.special:
            if cmd == command:
                return effect, what
        if command in self.commands:
            return self.effect, self.what
        return NO_EFFECT, f"criu gives it no meaning for {command}"

    def spelled(self) -> str:
        """The flag as the docs show it: names, --no- form, argument."""
        names = ", ".join(self.names)
        if self.negatable:
            names += f", --no-{self.long[2:]}"
        if self.value is None:
            return names
        arg = f"[{self.value}]" if self.optional else self.value
        if self.choices:
            arg = ("[" if self.optional else "") + "|".join(self.choices) + \
                ("]" if self.optional else "")
        return f"{names} {arg}"


_NS = "namespaces are not supported yet"
_MNT = "ckpt dumps no mount namespace (a tree in a mount namespace of its own is refused)"
_CG = "cgroup roots, yards and chosen knobs are not supported yet"
_TLS = "the page server speaks no TLS"

FLAGS: tuple[Flag, ...] = (
    # ---- common to every command
    Flag(("-v", "--verbosity"), USE, "log level 0-4: -vN or --verbosity=N sets it, each v "
         "of -v, -vv, ... (and a bare --verbosity) raises it by one from 2 (warnings)",
         value="N", type=int, default=2),
    Flag(("--config",), USE, "read options from FILE, criu's format (one a line, without "
         "the leading --, # comments), after the default files and before the command line",
         value="FILE", repeat=True),
    Flag(("--no-default-config",), USE, "skip the default configuration files "
         "(/etc/criu/default.conf, ~/.criu/default.conf, $CRIU_CONFIG_FILE)"),
    Flag(("-D", "--images-dir"), USE, "folder of the images (default: the current folder)",
         value="DIR", default="."),
    Flag(("-W", "--work-dir"), USE, "folder of the log and the pidfile (default: -D)",
         value="DIR"),
    Flag(("-o", "--log-file"), USE, "log file, relative to the work folder; stderr without "
         "it", value="FILE"),
    Flag(("--pidfile",), USE, "write the restored root's PID (the page server's, the "
         "lazy-pages daemon's) to FILE, relative to the work folder", value="FILE",
         commands=frozenset({RESTORE, PAGE_SERVER, LAZY_PAGES})),
    Flag(("--log-pid",), NO_EFFECT, "ckpt writes one log for all processes", negatable=True),
    Flag(("--display-stats",), NO_EFFECT, "the log has the times (-v3)", negatable=True),
    Flag(("--close",), USE, "close the inherited fd FD first", value="FD", type=int,
         repeat=True),
    Flag(("-L", "--libdir"), NO_EFFECT, "ckpt loads no plugins", value="DIR"),
    Flag(("--action-script",), USE, "run SCRIPT (sh -c) at pre-dump, post-dump, "
         "pre-restore, setup-namespaces and post-setup-namespaces (a tree with namespaces of "
         "its own), post-restore, pre-resume and post-resume, with CRTOOLS_SCRIPT_ACTION, "
         "CRTOOLS_IMAGE_DIR and CRTOOLS_INIT_PID (the restored root) set; a script that "
         "fails fails the step, as in criu (which runs none at pre-dump)", value="SCRIPT",
         repeat=True, commands=_DR),
    Flag(("-V", "--version"), USE, "print the version and exit"),
    Flag(("-h", "--help"), USE, "print the help and exit"),
    Flag(("--stream",), REFUSE, "images through criu-image-streamer are not supported",
         negatable=True),
    # ---- dump and pre-dump
    Flag(("-t", "--tree"), USE, "the process to dump, with its descendants", value="PID",
         type=int, commands=_DUMPS, required=_DUMPS),
    Flag(("-R", "--leave-running"), USE, "let the processes run on after the dump",
         commands=frozenset({DUMP}), api="leave_running"),
    Flag(("-s", "--leave-stopped"), USE, "leave the processes stopped (SIGSTOP) after the "
         "dump", commands=frozenset({DUMP}), api="leave_stopped",
         special=((RESTORE, REFUSE, "leaving restored processes stopped is not supported "
                   "yet"),)),
    Flag(("--external",), USE, "unix[INODE]: a unix socket connected outside the tree "
         "may be dumped (restore it with --inherit-fd); mnt[POINT]:NAME at dump: the "
         "mount at POINT of the tree's own mount namespace is external, NAME its key; "
         "mnt[NAME]:PATH at restore: the host folder or file bound there",
         value="RES", repeat=True, commands=frozenset({DUMP, RESTORE})),
    Flag(("-x", "--ext-unix-sk"), USE, "connections to a unix listener of the tree from "
         "clients outside it, not accepted yet, come back as connections whose client "
         "left; INODE[,INODE...] names unix sockets connected outside the tree (as "
         "--external unix[INODE])", value="INODE",
         optional=True, commands=frozenset({DUMP})),
    Flag(("-j", "--shell-job"), USE, "the tree is a job of a shell on a terminal",
         negatable=True, commands=_DR, api="shell_job"),
    Flag(("-l", "--file-locks"), USE, "save file locks (flock, POSIX, OFD, leases); without "
         "it a tree holding one is refused", negatable=True, commands=frozenset({DUMP}),
         api="file_locks",
         special=((RESTORE, NO_EFFECT, "a restore always takes the saved locks again"),)),
    Flag(("--tcp-established",), USE, "save (restore) established TCP connections, in TCP "
         "repair mode", negatable=True, commands=_DR),
    Flag(("--tcp-close",), USE, "restore TCP connections closed (at dump: do not save their "
         "state)", negatable=True, commands=_DR),
    Flag(("--skip-in-flight",), USE, "drop TCP connections not yet accepted",
         negatable=True, commands=frozenset({DUMP})),
    Flag(("--network-lock",), USE, "how packets are kept from the connections between dump "
         "and restore (default: the first that works here)", value="METHOD",
         choices=("nftables", "iptables", "skip"), commands=_DR),
    Flag(("--ghost-limit",), USE, "most data of a deleted file saved (default 64M)", value="SIZE",
         type=size, commands=frozenset({DUMP}), api="ghost_limit"),
    Flag(("--link-remap",), USE, "a removed name of a file with other links is always "
         "saved as a link (the flag changes nothing)", negatable=True,
         commands=frozenset({DUMP}), api="link_remap"),
    Flag(("--ghost-fiemap",), USE, "deleted files' data is found with SEEK_DATA (the flag "
         "changes nothing)", negatable=True, commands=frozenset({DUMP}), api="ghost_fiemap"),
    Flag(("--track-mem",), USE, "track memory changes from now on, for a next dump",
         negatable=True, commands=_DUMPS, api="track_mem"),
    Flag(("--prev-images-dir",), USE, "parent images (relative to -D): pages unchanged "
         "since are left there", value="DIR", commands=_DUMPS, api="prev_images_dir"),
    Flag(("--overwrite",), USE, "ckpt's own: write into a -D that holds images already "
         "(they are replaced) or belongs to another user, which is refused without it "
         "(criu overwrites silently)", commands=_DUMPS | {PAGE_SERVER}, api="overwrite"),
    Flag(("--page-server",), USE, "send the images to a page server (--address, --port); "
         "lazy-pages: first take the images from the dump at --address, --port (criu's "
         "remote lazy migration, runc's checkpoint --lazy-pages: the dump hands its images "
         "over whole) unless -D holds them", negatable=True, commands=_DUMPS | {LAZY_PAGES}),
    Flag(("--address",), USE, "the page server's address (page-server: to listen on, "
         "default all)", value="ADDR", commands=_DUMPS | {PAGE_SERVER, LAZY_PAGES}),
    Flag(("--port",), USE, "the page server's port", value="PORT", type=int,
         commands=_DUMPS | {PAGE_SERVER, LAZY_PAGES}, required=frozenset({PAGE_SERVER})),
    Flag(("--freeze-cgroup",), NO_EFFECT, "ckpt stops the tree with ptrace", value="PATH",
         commands=_DUMPS),
    Flag(("--timeout",), NO_EFFECT, "ckpt stops the tree without a time limit",
         value="SECONDS", commands=_DUMPS),
    Flag(("--pre-dump-mode",), NO_EFFECT, "ckpt has one way of copying pages "
         "(process_vm_readv)", value="MODE", choices=("splice", "read"), commands=_DUMPS),
    Flag(("--auto-dedup",), NO_EFFECT, "parent images are kept whole", negatable=True),
    Flag(("--force-irmap",), NO_EFFECT, "inotify watches are found through their file "
         "handles", negatable=True, commands=_DUMPS),
    Flag(("--irmap-scan-path",), NO_EFFECT, "inotify watches are found through their file "
         "handles", value="PATH", repeat=True, commands=_DUMPS),
    Flag(("--evasive-devices",), NO_EFFECT, "devices are reopened by their path, or the "
         "restore fails naming it", negatable=True),
    Flag(("--cpu-cap",), NO_EFFECT, "ckpt restores the saved xstate on any CPU that can "
         "load it", value="CAP[,CAP]", optional=True),
    Flag(("--file-validation",), NO_EFFECT, "mapped files are checked by size and mtime",
         value="METHOD", choices=("filesize", "buildid")),
    Flag(("--skip-file-rwx-check",), NO_EFFECT, "ckpt reopens files with their saved "
         "access mode only", commands=frozenset({RESTORE})),
    Flag(("--unprivileged",), NO_EFFECT, "ckpt runs as root"),
    Flag(("--allow-uprobes",), NO_EFFECT, "ckpt does not look for uprobes"),
    Flag(("--weak-sysctls",), NO_EFFECT, "ckpt restores no sysctls", negatable=True),
    Flag(("--deprecated",), NO_EFFECT, "ckpt has no deprecated features", negatable=True),
    Flag(("--status-fd",), USE, "page-server, lazy-pages: write a zero byte to FD and close "
         "it once listening", value="FD", type=int,
         commands=frozenset({PAGE_SERVER, LAZY_PAGES})),
    Flag(("--manage-cgroups",), USE, "each process back into the cgroups it was in, made "
         "if missing; MODE as criu's: soft (the default, also without the flag: knobs of the "
         "cgroups ckpt makes), full (every knob), strict (the cgroups must not exist), props "
         "(they must exist; knobs written), none (they must exist), ignore (none saved, "
         "none joined)", value="MODE", optional=True, bare="soft",
         choices=("none", "props", "soft", "full", "strict", "ignore"), commands=_DR,
         api="manage_cgroups"),
    # ---- containers and other features ckpt lacks
    Flag(("--cgroup-root",), USE, "restore: where the tree goes in the hierarchy of "
         "controller CTL (in every other without CTL): its root's cgroup at dump becomes "
         "PATH, the cgroups below it move along", value="[CTL:]PATH", repeat=True,
         commands=frozenset({RESTORE}),
         special=((DUMP, REFUSE, "the cgroups are saved where they are"),)),
    Flag(("--cgroup-props",), REFUSE, _CG, value="SPEC", commands=_DUMPS),
    Flag(("--cgroup-props-file",), REFUSE, _CG, value="FILE", commands=_DUMPS),
    Flag(("--cgroup-dump-controller",), REFUSE, _CG, value="NAME", repeat=True,
         commands=_DUMPS),
    Flag(("--cgroup-yard",), REFUSE, _CG, value="PATH", commands=_DR),
    Flag(("-r", "--root"), USE, "the folder the root mount of a tree's own mount "
         "namespace comes back from (a container's rootfs)", value="PATH",
         commands=frozenset({RESTORE}), api="root"),
    Flag(("--veth-pair",), REFUSE, _NS, value="IN=OUT", repeat=True,
         commands=frozenset({RESTORE})),
    Flag(("--empty-ns",), USE, "net: the tree's own network namespace is not saved; the "
         "restore makes an empty one, its loopback up (sockets other than unix ones in "
         "it are refused)", value="net", commands=frozenset({DUMP, RESTORE}),
         api="empty_ns"),
    Flag(("-J", "--join-ns"), REFUSE, _NS, value="NS:PID|FILE[,OPTS]", repeat=True,
         commands=frozenset({RESTORE})),
    Flag(("-M", "--ext-mount-map"), NO_EFFECT, _MNT, value="KEY:VALUE|auto", repeat=True),
    Flag(("--enable-external-sharing",), NO_EFFECT, _MNT),
    Flag(("--enable-external-masters",), NO_EFFECT, _MNT),
    Flag(("--skip-mnt",), NO_EFFECT, _MNT, value="PATH", repeat=True),
    Flag(("--enable-fs",), NO_EFFECT, _MNT, value="FSNAMES"),
    Flag(("--mntns-compat-mode",), NO_EFFECT, _MNT, negatable=True),
    Flag(("--lsm-profile",), REFUSE, "LSM profiles are not set at restore",
         value="TYPE:NAME", commands=frozenset({RESTORE})),
    Flag(("--lsm-mount-context",), REFUSE, "LSM mount contexts are not set at restore",
         value="CTX", commands=frozenset({RESTORE})),
    Flag(("--lazy-pages",), USE, "restore: the processes run at once, their private "
         "anonymous pages filled on first touch (userfaultfd) by the `ckpt lazy-pages` "
         "daemon started first on the same images, which copies the rest behind; a "
         "daemon that dies leaves a process waiting on a fault stuck (as with criu)",
         commands=frozenset({RESTORE}), api="lazy_pages",
         special=((DUMP, REFUSE, "criu's remote post-copy from a frozen source is not "
                   "supported: dump, then `ckpt lazy-pages` and `ckpt restore --lazy-pages` "
                   "on the images"),
                  (PAGE_SERVER, REFUSE, "criu's remote post-copy is not supported: the "
                   "lazy-pages daemon serves local images"))),
    Flag(("--ps-socket",), REFUSE, "a page server connection made by the caller is not "
         "supported; give --address and --port", value="FD", commands=_DUMPS | {PAGE_SERVER}),
    Flag(("--tls",), REFUSE, _TLS, negatable=True, commands=_DUMPS | {PAGE_SERVER}),
    Flag(("--tls-cacert",), REFUSE, _TLS, value="FILE", commands=_DUMPS | {PAGE_SERVER}),
    Flag(("--tls-cacrl",), REFUSE, _TLS, value="FILE", commands=_DUMPS | {PAGE_SERVER}),
    Flag(("--tls-cert",), REFUSE, _TLS, value="FILE", commands=_DUMPS | {PAGE_SERVER}),
    Flag(("--tls-key",), REFUSE, _TLS, value="FILE", commands=_DUMPS | {PAGE_SERVER}),
    Flag(("--tls-no-cn-verify",), REFUSE, _TLS, commands=_DUMPS | {PAGE_SERVER}),
    Flag(("--ms",), REFUSE, "deprecated in criu too; see ckpt check",
         commands=frozenset({CHECK})),
    # ---- restore
    Flag(("-d", "--restore-detached"), USE, "return once the processes run instead of "
         "waiting for the root", negatable=True, commands=frozenset({RESTORE}),
         special=((PAGE_SERVER, REFUSE, "a page server in the background is not supported; "
                   "start it with &"),)),
    Flag(("--daemon",), USE, "the same as -d", negatable=True, commands=frozenset({RESTORE}),
         special=((PAGE_SERVER, REFUSE, "a page server in the background is not supported; "
                   "start it with &"),)),
    Flag(("-S", "--restore-sibling"), USE, "the root becomes a child of ckpt's parent "
         "(needs -d; with --new-pidns, the namespace's init does)", negatable=True,
         commands=frozenset({RESTORE})),
    Flag(("--inherit-fd",), USE, "give the caller's fd N to the files matching KEY",
         value="fd[N]:KEY", repeat=True, commands=frozenset({RESTORE}), api="inherit_fds"),
    Flag(("--exec-cmd",), USE, "once restored, run the command given after -- in ckpt's "
         "place: it becomes the parent of the restored root", commands=frozenset({RESTORE})),
    Flag(("--trust-images",), USE, "ckpt's own: restore, as root, images that users other "
         "than root could have written (refused otherwise: whoever can write the images can "
         "run anything as root; docs/security.md), with a warning",
         commands=frozenset({RESTORE}), api="trust_images"),
    # ---- check
    Flag(("--extra",), NO_EFFECT, "ckpt check probes every interface it uses",
         negatable=True, commands=frozenset({CHECK})),
    Flag(("--experimental",), NO_EFFECT, "ckpt check probes every interface it uses",
         negatable=True, commands=frozenset({CHECK})),
    Flag(("--all",), NO_EFFECT, "ckpt check probes every interface it uses",
         commands=frozenset({CHECK})),
    Flag(("--feature",), REFUSE, "ckpt check probes all its interfaces at once",
         value="NAME", commands=frozenset({CHECK})),
    # ---- ckpt's own, not criu's
    Flag(("--compress",), USE, "(ckpt's own) compress the page data with zstd, for images "
         "that travel (not with --prev-images-dir, --track-mem or --page-server)",
         commands=frozenset({DUMP}), api="compress"),
    Flag(("-q", "--quiet"), USE, "(ckpt's own) no progress line: a dump or restore that "
         "takes over a second shows the page data moved and the rate on stderr when it is "
         "a terminal", commands=frozenset({DUMP, PRE_DUMP, RESTORE})),
    Flag(("--new-pidns",), USE, "(ckpt's own) restore the tree in a PID namespace of its "
         "own, where every process keeps its saved PID whatever holds it on the host (the "
         "same images may run many times side by side): ckpt's minimal init is its PID 1, "
         "reaps orphans and exits with the root's status; the tree gets a mount namespace "
         "of its own whose /proc is the new namespace's (every other mount shared); "
         "--pidfile and the log name the root's PID on the host",
         commands=frozenset({RESTORE}), api="new_pidns"),
)

BY_DEST = {f.dest: f for f in FLAGS}
assert len(BY_DEST) == len(FLAGS), "two flags with one name"

# Options argparse must not see as flags of its own: help and version are its actions.
_ARGPARSE_OWN = {"help"}


def add_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Every criu flag, on the parser of ``command``."""
    import argparse
    for f in FLAGS:
        if f.dest in _ARGPARSE_OWN:
            continue
        effect, what = f.effect_on(command)
        note = "" if effect == USE else f" [{effect}: {what}]"
        kw: dict[str, Any] = {"dest": f.dest, "default": f.default,
                              "help": (f.what if effect == USE else "") + note}
        if f.dest == "version":
            from .version import __version__
            parser.add_argument(*f.names, action="version", version=f"ckpt {__version__}",
                                help=f.what)
            continue
        if f.value is None:
            kw["action"] = argparse.BooleanOptionalAction if f.negatable else "store_true"
        else:
            kw.update(metavar=f.value, type=f.type)
            if f.choices:
                kw["choices"] = f.choices
            if f.optional:
                kw.update(nargs="?", const=f.bare)
            if f.repeat:
                kw["action"] = "append"
        if command in f.required:
            kw["required"] = True
        parser.add_argument(*f.names, **kw)


def _given(value: Any) -> bool:
    """A value that asks for something: not absent, not --no-NAME, not an empty list."""
    return value is not None and value is not False and value != []


def screen(command: str, args: argparse.Namespace) -> list[str]:
    """Refuse the flags of ``args`` that ckpt cannot honour (UnsupportedError naming the
    first); return the log lines for those accepted without effect."""
    notes = []
    for f in FLAGS:
        value = getattr(args, f.dest, None)
        if not _given(value):
            continue
        effect, what = f.effect_on(command)
        if effect == REFUSE:
            values = value if isinstance(value, list) else [value]
            if all(v in f.neutral for v in values):
                continue
            shown = "" if value is True or value == "" else f" {' '.join(map(str, values))}"
            raise UnsupportedError(f"{f.long}{shown}: {what}")
        if effect == NO_EFFECT:
            notes.append(f"{f.long} accepted without effect: {what}")
    return notes


def api_kwargs(command: str, args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ckpt.dump/pre_dump/restore from the used flags that map to
    one directly (``api``), for those given."""
    out = {}
    for f in FLAGS:
        value = getattr(args, f.dest, None)
        if f.api and value is not None and f.effect_on(command)[0] == USE:
            out[f.api] = value
    return out


def _simple_names() -> dict[str, tuple[Flag, bool]]:
    """Each name of a flag of ``add_flags`` -> (its flag, whether it is the --no- form)."""
    if not _SIMPLE_NAMES:
        for f in FLAGS:
            if f.dest in _ARGPARSE_OWN or f.dest == "version":
                continue
            for n in f.names:
                _SIMPLE_NAMES[n] = (f, False)
                if f.negatable and n.startswith("--"):
                    _SIMPLE_NAMES[f"--no-{n[2:]}"] = (f, True)
    return _SIMPLE_NAMES


_SIMPLE_NAMES: dict[str, tuple[Flag, bool]] = {}
flag_names = _simple_names  # each flag's names, --no- forms too -> (flag, negated)


def parse_simple(command: str, argv: Sequence[str]) -> argparse.Namespace | None:
    """The arguments of criu command ``command`` (``argv``: those after its word) as
    argparse parses them with ``add_flags``, for a command line of plain words only:
    exact names, --NAME, --no-NAME, --NAME=VALUE, --NAME VALUE, -X, -X VALUE, a value
    not starting with -. None for any other, and for one argparse would refuse: then
    argparse parses it, and says what is wrong. No parser is built: argparse's, with
    its ~95 flags, costs a command about 5 ms with its import."""
    names = _simple_names()
    values: dict[str, Any] = {f.dest: f.default for f, _ in names.values()}
    given: set[str] = set()
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        name, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        hit = names.get(name)
        if hit is None:
            return None
        f, negated = hit
        given.add(f.dest)
        if f.value is None:  # a switch: store_true, or BooleanOptionalAction
            if eq:
                return None
            values[f.dest] = not negated
            continue
        if not eq:
            if f.optional or i == len(argv) or argv[i].startswith("-"):
                return None
            value = argv[i]
            i += 1
        try:
            converted = f.type(value)
        except Exception:  # argparse's message, from argparse
            return None
        if f.choices and converted not in f.choices:
            return None
        if f.repeat:
            values[f.dest] = [*(values[f.dest] or []), converted]
        else:
            values[f.dest] = converted
    if any(f.dest not in given for f in FLAGS if command in f.required):
        return None
    for f, _ in names.values():  # argparse converts a default given as a string
        if f.dest not in given and isinstance(f.default, str) and f.value is not None:
            values[f.dest] = f.type(f.default)
    return _Namespace(command=command, **values)


# ------------------------------------------------------------ the command line before argparse


def _takes_value() -> tuple[set[str], set[str]]:
    """(long flags, short flags) whose argument is required, so may be the next word."""
    longs = {n for f in FLAGS if f.value and not f.optional for n in f.names
             if n.startswith("--")}
    shorts = {n for f in FLAGS if f.value and not f.optional for n in f.names
              if not n.startswith("--")}
    return longs, shorts


def command_first(argv: Sequence[str], commands: Iterable[str]) -> list[str]:
    """``argv`` with its command word moved to the front: criu takes its flags before
    the command too (``criu -v4 -D DIR dump -t PID``)."""
    known = set(commands)
    longs, shorts = _takes_value()
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            break
        if a in known:
            return [a, *argv[:i], *argv[i + 1:]]
        if a in longs or a in shorts:
            i += 1  # its value is the next word
        elif not a.startswith("-"):
            break  # an unknown word: argparse names it
        i += 1
    return list(argv)


def verbosity(argv: Sequence[str]) -> list[str]:
    """criu's ways of saying verbosity turned into one ``--verbosity=N``: -vN and
    --verbosity=N set it; -v, -vv, ... and a bare --verbosity raise it from 2."""
    level: int | None = None
    out = []
    for a in argv:
        # -vN, --verbosity=N (N decimal digits, as re's \d); -v, -vv...
        number = a[2:] if a.startswith("-v") else a[12:] if a.startswith("--verbosity=") \
            else ""
        if number.isdecimal():
            level = int(number)
        elif len(a) > 1 and a[0] == "-" and a[1:] == "v" * (len(a) - 1):
            level = (2 if level is None else level) + len(a) - 1
        elif a == "--verbosity":
            level = (2 if level is None else level) + 1
        else:
            out.append(a)
    if level is not None:
        out.append(f"--verbosity={min(level, 4)}")
    return out


def parse_config(text: str, name: str) -> list[str]:
    """The arguments in a criu configuration file: one option a line without its
    leading --, then its argument (in double quotes if it holds spaces, \\" inside);
    # starts a comment."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        words: list[str] = []
        cur: list[str] | None = None
        quoted = False
        i = 0
        while i < len(line):
            c = line[i]
            if quoted:
                if c == "\\" and line[i + 1:i + 2] == '"':
                    cur.append('"')  # type: ignore[union-attr]
                    i += 1
                elif c == '"':
                    quoted = False
                else:
                    cur.append(c)  # type: ignore[union-attr]
            elif c == "#":
                break
            elif c.isspace():
                if cur is not None:
                    words.append("".join(cur))
                    cur = None
            elif c == '"':
                quoted = True
                cur = cur or []
            else:
                cur = (cur or []) + [c]
            i += 1
        if quoted:
            raise UsageError(f"{name}:{lineno}: unterminated \"")
        if cur is not None:
            words.append("".join(cur))
        if not words:
            continue
        if len(words) > 2 or words[0].startswith("-"):
            raise UsageError(f"{name}:{lineno}: expected an option without its leading -- "
                             f"and at most one argument, got {line.strip()!r}")
        out.append(f"--{words[0]}" + "".join(f"={w}" for w in words[1:]))
    return out


def default_config_paths(defaults: bool = True) -> list[tuple[str, bool]]:
    """(path, whether it must exist) of the configuration files criu reads before any
    it is given: the default files (unless not ``defaults``), then $CRIU_CONFIG_FILE."""
    paths = [(os.path.expanduser(p), False) for p in DEFAULT_CONFIGS] if defaults else []
    if os.environ.get("CRIU_CONFIG_FILE"):
        paths.append((os.environ["CRIU_CONFIG_FILE"], True))
    return paths


def config_args(argv: Sequence[str]) -> list[str]:
    """The arguments of the configuration files criu would read for ``argv``, in its
    order: the default files (unless --no-default-config), $CRIU_CONFIG_FILE, then each
    --config FILE."""
    paths = default_config_paths("--no-default-config" not in argv)
    for i, a in enumerate(argv):
        if a == "--":
            break
        if a == "--config" and i + 1 < len(argv):
            paths.append((argv[i + 1], True))
        elif a.startswith("--config="):
            paths.append((a.split("=", 1)[1], True))
    out: list[str] = []
    for path, must in paths:
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            if must:
                raise UsageError(f"--config {path}: no such file") from None
            continue
        except OSError as e:
            raise UsageError(f"cannot read the configuration file {path}: {e.strerror}"
                             ) from None
        out += parse_config(text, path)
    return out


# ------------------------------------------------------------ the docs


def help_epilog() -> str:
    """What ``ckpt --help`` says of criu's flags."""
    import textwrap
    parts = ["criu's flags, every one, are accepted by dump, pre-dump, restore, check and "
             "page-server (docs/flags.md says what each does):"]
    for effect, title in ((USE, "used"), (NO_EFFECT, "accepted without effect (noted in "
                                                     "the log)"),
                          (REFUSE, "refused, with a message naming them (not supported "
                                   "yet)")):
        names = " ".join(f.long for f in FLAGS if f.effect == effect)
        parts.append(textwrap.fill(f"{title}: {names}", width=88, initial_indent="  ",
                                   subsequent_indent="    ", break_on_hyphens=False,
                                   break_long_words=False))
    return "\n".join(parts)


def markdown() -> str:
    """docs/flags.md."""
    import textwrap
    head = textwrap.dedent("""\
        # criu's flags in ckpt

        `ckpt` takes every flag of criu's command line, so a script that works with
        `criu` works with `ckpt` (or `ckpt-criu`) in its place. As with criu, every
        flag is accepted by every criu command (`dump`, `pre-dump`, `restore`,
        `check`, `page-server`, `lazy-pages`), before or after the command word, and boolean
        flags have a `--no-` form. Configuration files are read as criu reads
        them (`/etc/criu/default.conf`, `~/.criu/default.conf`,
        `$CRIU_CONFIG_FILE`, `--config FILE`; `--no-default-config` skips the
        first two).

        What ckpt does with each:

        - **used**: what criu does (the table says how);
        - **accepted without effect**: a line in the log (`-v3`) says why ckpt
          needs none of it; the same for a flag given to a command for which
          criu gives it no meaning;
        - **refused**: the command stops before it touches anything, exit 1, one
          line naming the flag and why (`ckpt restore: error: --lsm-profile: LSM
          profiles are not set at restore`). Its neutral value (`--no-NAME`,
          `--manage-cgroups ignore`, `--root /`) is accepted.

        This file is generated from `src/ckpt/flags.py` (`python -m ckpt.flags >
        docs/flags.md`); a unit test checks that they agree.

        | flag | commands | ckpt |
        |------|----------|------|
        """)
    rows = []
    for f in FLAGS:
        cmds = "all" if f.commands == _ALL else ", ".join(c for c in CRIU_COMMANDS
                                                           if c in f.commands)
        what = f"{f.effect}: {f.what}" if f.effect != USE else f.what
        for cmd, effect, why in f.special:
            what += f"; {cmd}: {effect}: {why}"
        cells = (f"`{f.spelled()}`", cmds, what)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return head + "\n".join(rows) + "\n"


if __name__ == "__main__":
    import sys
    sys.stdout.write(markdown())
