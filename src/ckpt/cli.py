"""The ``ckpt`` command: a thin layer over the Python API, with every one of criu's
flags (flags.py says what ckpt does with each).

SIGINT, SIGTERM, SIGHUP and SIGPIPE make any command roll back and exit with
128 + the signal's number, one line, no traceback (kernel/interrupts.py): noted
from the first import of ckpt, raised once ``main`` can catch them.
"""

from __future__ import annotations

import errno
import os
import sys

from . import command, flags, progress
from . import log as ckpt_log
from .errors import CkptError, UsageError
from .kernel import interrupts, safefs
from .log import logger
from .version import __version__

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    import argparse
    from typing import Any

log = logger("ckpt.cli")

OWN_COMMANDS = ("swrk", "show")


def _page_server(args: argparse.Namespace) -> tuple[str, int] | None:
    """(address, port) of --page-server, or None; --address/--port need it, and it them."""
    if not args.page_server:
        if args.address is not None or args.port is not None:
            raise UsageError("--address and --port go with --page-server")
        return None
    if args.address is None or args.port is None:
        raise UsageError("--page-server needs --address and --port")
    return args.address, args.port


_COLUMNS: list[int] = []


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size finds it, without importing
    shutil (and the three compression modules it imports); asked once."""
    if _COLUMNS:
        return _COLUMNS[0]
    try:
        width = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            width = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            width = 80
    _COLUMNS.append(width)
    return width


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command`` (one of ours), only that command's: the others are
    there for the help of the whole, and their parsers and flags cost start-up time."""
    import argparse

    class _Formatter(argparse.HelpFormatter):
        """argparse's help formatter, given its width: argparse makes one to check each
        flag as it is added (about 95 per command), and each asked shutil for the width
        (an environment lookup and an ioctl)."""

        def __init__(self, prog: str) -> None:
            super().__init__(prog, width=_columns() - 2)

    class _RawFormatter(argparse.RawDescriptionHelpFormatter, _Formatter):
        """The same, for the top parser, whose description and epilog keep their lines."""

    if command not in (*flags.CRIU_COMMANDS, *OWN_COMMANDS):
        command = None
    p = argparse.ArgumentParser(prog="ckpt", description="Checkpoint/restore of Linux processes.",
                                epilog=flags.help_epilog(), formatter_class=_RawFormatter)
    p.add_argument("-V", "--version", action="version", version=f"ckpt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        flags.DUMP: "checkpoint a process tree into a folder of images",
        flags.PRE_DUMP: "save the memory pages of a process tree and let it run on",
        flags.RESTORE: "restore a process tree from a folder of images",
        flags.CHECK: "check that the kernel has what ckpt needs",
        flags.PAGE_SERVER: "receive the images of one dump over TCP",
        flags.LAZY_PAGES: "serve the pages of a restore --lazy-pages on first touch",
    }
    for name in flags.CRIU_COMMANDS:
        if command in (None, name):
            sp = sub.add_parser(name, help=helps[name], formatter_class=_Formatter)
            flags.add_flags(sp, name)
    if command in (None, "swrk"):
        sw = sub.add_parser("swrk", help="serve criu's RPC on an inherited socket (as runc "
                            "runs criu)", formatter_class=_Formatter)
        sw.add_argument("fd", type=int, metavar="FD", help="the SOCK_SEQPACKET socket's fd")
    if command in (None, "show"):
        s = sub.add_parser("show", help="decode images to JSON", formatter_class=_Formatter)
        s.add_argument("path", metavar="DIR|FILE")
        s.add_argument("--fds", action="store_true",
                       help="list each fd with its inherit-fd key")
    return p


def _prepare(argv: list[str]) -> tuple[list[str], list[str]]:
    """(arguments for argparse, the command after ``--`` for --exec-cmd): the command
    word first, then the configuration files' options, then the command line's."""
    argv = flags.command_first(argv, (*flags.CRIU_COMMANDS, *OWN_COMMANDS))
    if not argv or argv[0] not in flags.CRIU_COMMANDS:
        return argv, []
    command, rest = argv[0], argv[1:]
    tail: list[str] = []
    if "--" in rest:
        cut = rest.index("--")
        rest, tail = rest[:cut], rest[cut + 1:]
    rest = flags.verbosity([*flags.config_args(rest), *rest])
    return [command, *rest], tail


def _tcp(args: argparse.Namespace) -> dict[str, Any]:
    """criu's TCP flags as ckpt.dump and ckpt.restore take them."""
    from .resources.filekind import TcpFlags
    return {"tcp": TcpFlags(established=bool(args.tcp_established), close=bool(args.tcp_close),
                            skip_in_flight=bool(args.skip_in_flight)),
            "network_lock": args.network_lock}


def _work_dir(args: argparse.Namespace) -> str:
    return args.work_dir or args.images_dir


def _setup_log(args: argparse.Namespace, notes: list[str], create: bool) -> None:
    work = _work_dir(args)
    ckpt_log.setup(args.verbosity, args.log_file, work,
                   create_dir=create and work == args.images_dir)
    for note in notes:
        log.info("%s", note)


def _claim_folder(args: argparse.Namespace) -> None:
    """Refuse -D before a log is written in it, as the dump would (images.Folder)."""
    from .images import Folder
    if os.path.lexists(args.images_dir):  # a folder still to make is nobody else's
        Folder.for_dump(args.images_dir, bool(args.overwrite)).close()


def _external(args: argparse.Namespace) -> tuple[str, ...]:
    """--external, and the inodes named by -x/--ext-unix-sk as unix[INODE]."""
    out = list(args.external or [])
    if args.ext_unix_sk:
        for ino in args.ext_unix_sk.split(","):
            if not ino.strip().isdigit():
                raise UsageError(f"--ext-unix-sk {args.ext_unix_sk}: expected socket inode "
                                 "numbers, separated by commas")
            out.append(f"unix[{int(ino)}]")
    return tuple(out)


def _notify(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    if not args.action_script:
        return None
    from .hooks import action_scripts
    return action_scripts(args.action_script, args.images_dir)


def _dump(args: argparse.Namespace, notes: list[str]) -> int:
    from .kernel import procfs
    procfs.warm_locks()  # the dump's own read of /proc/locks, soon, will wait less
    from .dumper import dump
    command.started()
    if args.leave_running and args.leave_stopped:
        raise UsageError("-R (--leave-running) and -s (--leave-stopped) exclude each other")
    server = _page_server(args)
    external = _external(args)
    _claim_folder(args)
    _setup_log(args, notes, create=True)
    res = dump(args.tree, args.images_dir, external=external, page_server=server,
               notify=_notify(args), ext_unix_sk=args.ext_unix_sk is not None, **_tcp(args),
               wait_exit=False, **flags.api_kwargs(flags.DUMP, args))
    from .rpc import stats
    stats.write(_work_dir(args), stats.DUMP_FILE, stats.dump_entry(res))
    return 0


def _pre_dump(args: argparse.Namespace, notes: list[str]) -> int:
    from .dumper import pre_dump
    command.started()
    server = _page_server(args)
    _claim_folder(args)
    _setup_log(args, notes, create=True)
    res = pre_dump(args.tree, args.images_dir, page_server=server,
                   **flags.api_kwargs(flags.PRE_DUMP, args))
    from .rpc import stats
    stats.write(_work_dir(args), stats.DUMP_FILE, stats.dump_entry(res))
    return 0


def _cgroup_roots(given: list[str]) -> dict[str, str]:
    """criu's --cgroup-root [CTL:]PATH values as {controller ("" for the rest): path}."""
    out = {}
    for value in given:
        ctrl, _, path = value.rpartition(":")
        if not path.startswith("/"):
            raise UsageError(f"--cgroup-root {value}: expected [CONTROLLER:]/PATH")
        out[ctrl] = path
    return out


def _restore(args: argparse.Namespace, notes: list[str], exec_cmd: list[str]) -> int:
    from .restorer import restore
    command.started()
    detach = bool(args.restore_detached or args.daemon)
    if args.restore_sibling and not detach:
        raise UsageError("--restore-sibling (-S) goes with --restore-detached (-d)")
    if args.exec_cmd and not exec_cmd:
        raise UsageError("--exec-cmd needs the command after --")
    pidfile = None
    if args.pidfile:
        pidfile = os.path.abspath(os.path.join(_work_dir(args), args.pidfile))
    _setup_log(args, notes, create=False)
    res = restore(args.images_dir, detach=detach or bool(args.exec_cmd), pidfile=pidfile,
                  work_dir=_work_dir(args),
                  sibling=bool(args.restore_sibling), notify=_notify(args), **_tcp(args),
                  external=tuple(args.external or ()),
                  cg_root=_cgroup_roots(args.cgroup_root or []),
                  **flags.api_kwargs(flags.RESTORE, args))
    from .rpc import stats
    stats.write(_work_dir(args), stats.RESTORE_FILE, stats.restore_entry(res))
    if args.exec_cmd:
        log.info("executing %s", exec_cmd)
        try:
            os.execvp(exec_cmd[0], exec_cmd)
        except OSError as e:
            raise CkptError(f"--exec-cmd: cannot execute {exec_cmd[0]}: {e.strerror} "
                            f"(process {res.pid} was restored and runs)") from None
    if res.exit_status is None:
        return 0
    return res.exit_status if res.exit_status >= 0 else 128 - res.exit_status


def _page_server_command(args: argparse.Namespace, notes: list[str]) -> int:
    from .page_server import serve
    command.started()
    _claim_folder(args)
    _setup_log(args, notes, create=True)

    def ready(addr: str, port: int) -> None:
        _listening(args, f"ckpt page-server: listening on {addr}:{port}")

    serve(args.images_dir, args.port, args.address or "0.0.0.0", ready=ready,
          overwrite=bool(args.overwrite))
    return 0


def _lazy_pages_command(args: argparse.Namespace, notes: list[str]) -> int:
    from .lazy_pages import serve
    command.started()
    server = _page_server(args)
    _setup_log(args, notes, create=False)
    if server is not None:  # criu's remote lazy migration: the images from the dump
        from .page_server import fetch
        fetch(args.images_dir, *server)

    def ready(path: str) -> None:
        _listening(args, f"ckpt lazy-pages: listening on {path}")

    return serve(args.images_dir, _work_dir(args), ready=ready)


def _listening(args: argparse.Namespace, line: str) -> None:
    """A server listens: ``line`` on stdout, its PID in --pidfile, a zero byte to
    --status-fd (criu's page-server and lazy-pages)."""
    print(line, flush=True)
    if args.pidfile:
        safefs.write_new(os.path.join(_work_dir(args), args.pidfile),
                         f"{os.getpid()}\n".encode())
    if args.status_fd is not None:
        os.write(args.status_fd, b"\0")
        os.close(args.status_fd)


def _close_fds(fds: list[int] | None) -> None:
    """criu's --close FD: fds the caller leaves open by mistake."""
    for fd in fds or ():
        try:
            os.close(fd)
        except OSError as e:
            if e.errno != errno.EBADF:
                raise


def main(argv: list[str] | None = None) -> int:
    from .deferred import defer_imports
    defer_imports()  # before a command's modules import dataclasses
    raw = list(sys.argv[1:] if argv is None else argv)
    try:
        interrupts.install()  # raises at once for a signal noted during start-up
        prepared, exec_cmd = _prepare(raw)
        args = flags.parse_simple(prepared[0], prepared[1:]) \
            if prepared and prepared[0] in flags.CRIU_COMMANDS else None
        if args is None:  # not plain words only: argparse parses it, or says what is wrong
            args = _parser(prepared[0] if prepared else None).parse_args(prepared)
    except CkptError as e:
        interrupts.record()  # reporting it: a signal now is only noted
        _say(f"ckpt: error: {e}")
        return 1
    except interrupts.Interrupted as e:
        _say(f"ckpt: {e}")
        return e.exit_status
    except Exception as e:
        interrupts.record()
        if (cut := interrupts.within(e)) is None:
            raise
        _say(f"ckpt: {cut}")
        return cut.exit_status
    if exec_cmd and args.command != flags.RESTORE:
        _parser(args.command).error(f"unrecognized arguments: -- {' '.join(exec_cmd)}")
    try:
        if args.command in flags.CRIU_COMMANDS:
            notes = flags.screen(args.command, args)
            _close_fds(args.close)
            progress.enable(args.command, quiet=bool(args.quiet))
        if args.command == flags.DUMP:
            return _dump(args, notes)
        if args.command == flags.PRE_DUMP:
            return _pre_dump(args, notes)
        if args.command == flags.RESTORE:
            return _restore(args, notes, exec_cmd)
        if args.command == flags.PAGE_SERVER:
            return _page_server_command(args, notes)
        if args.command == flags.LAZY_PAGES:
            return _lazy_pages_command(args, notes)
        if args.command == flags.CHECK:
            from .check import run_checks
            command.started()
            if args.log_file:
                _setup_log(args, notes, create=False)
            return run_checks()
        if args.command == "swrk":
            from .rpc.server import serve_fd
            command.started()
            return serve_fd(args.fd)
        if args.command == "show":
            import json

            from .show import show
            command.started()
            json.dump(show(args.path, fds=args.fds), sys.stdout, indent=1)
            sys.stdout.write("\n")
            return 0
    except CkptError as e:
        interrupts.record()  # reporting it (the log may import logging): only noted now
        ckpt_log.failure(args.command, e)
        _say(f"ckpt {args.command}: error: {e}")
        return 1
    except interrupts.Interrupted as e:
        if args.command == "show" and e.signum == interrupts.SIGPIPE:  # ``ckpt show | head``
            return _quiet_stdout()
        ckpt_log.failure(args.command, CkptError(str(e)).with_traceback(e.__traceback__))
        _say(f"ckpt {args.command}: {e}")
        return e.exit_status
    except BrokenPipeError:  # ``ckpt show DIR | head``
        return _quiet_stdout()
    except Exception as e:  # a bug: in the log too, then the traceback as Python shows it
        interrupts.record()
        if (cut := interrupts.within(e)) is not None:  # the signal came while a late import
            ckpt_log.failure(args.command, CkptError(str(cut)).with_traceback(cut.__traceback__))
            _say(f"ckpt {args.command}: {cut}")
            return cut.exit_status
        ckpt_log.failure(args.command, e)
        raise
    finally:
        interrupts.record()  # done: a signal now changes nothing
        progress.finish()
    return 2


def _say(line: str) -> None:
    """One line on stderr, if stderr is still there."""
    try:
        print(line, file=sys.stderr)
    except OSError:
        pass


def _quiet_stdout() -> int:
    """stdout was closed by its reader: end quietly (Python would complain at exit)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def run() -> None:
    """The ``ckpt`` command's entry point: ``main``, then out at once (command.end)."""
    command.end(main())


if __name__ == "__main__":
    sys.exit(main())
