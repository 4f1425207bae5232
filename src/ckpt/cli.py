"""The ``ckpt`` command: a thin layer over the Python API, with criu's flags."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

from . import __version__
from . import log as ckpt_log
from .errors import CkptError, UsageError


def _normalize_verbosity(argv: list[str]) -> list[str]:
    """criu spells verbosity -v4 or -vvvv; turn both into --verbosity=N."""
    out = []
    for a in argv:
        if re.fullmatch(r"-v\d", a):
            out.append(f"--verbosity={a[2:]}")
        elif re.fullmatch(r"-v+", a):
            out.append(f"--verbosity={min(4, 1 + len(a) - 1)}")
        else:
            out.append(a)
    return out


def _size(text: str) -> int:
    """A size in bytes, with an optional K, M or G suffix (criu's --ghost-limit 1M)."""
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip(), re.I)
    if m is None:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (e.g. 1048576, 512K, 64M)")
    return int(m[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[m[2].upper()]


def _page_server(args: argparse.Namespace) -> tuple[str, int] | None:
    """(address, port) of --page-server, or None; --address/--port need it, and it them."""
    if not args.page_server:
        if args.address is not None or args.port is not None:
            raise UsageError("--address and --port go with --page-server")
        return None
    if args.address is None or args.port is None:
        raise UsageError("--page-server needs --address and --port")
    return args.address, args.port


def _tcp(args: argparse.Namespace) -> dict[str, Any]:
    from .resources.filekind import TcpFlags
    return {"tcp": TcpFlags(established=args.tcp_established, close=args.tcp_close,
                            skip_in_flight=getattr(args, "skip_in_flight", False)),
            "network_lock": args.network_lock}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ckpt", description="Checkpoint/restore of Linux processes.")
    p.add_argument("--version", action="version", version=f"ckpt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-D", "--images-dir", required=True, metavar="DIR",
                        help="folder of the images")
        sp.add_argument("-o", "--log-file", metavar="LOG", help="log file, relative to DIR")
        sp.add_argument("--verbosity", type=int, default=2, metavar="N",
                        help="log level 0-4 (also -v0..-v4 or -vvvv)")
        sp.add_argument("-j", "--shell-job", action="store_true",
                        help="the process is a job of a shell on a terminal")
        sp.add_argument("-l", "--file-locks", action="store_true",
                        help="save file locks (flock, POSIX, OFD, leases); a restore always "
                             "takes the saved ones again")

    def tcp(sp: argparse.ArgumentParser, dump: bool) -> None:
        sp.add_argument("--tcp-established", action="store_true",
                        help="save (restore) established TCP connections")
        sp.add_argument("--tcp-close", action="store_true",
                        help="restore TCP connections closed" + (
                            " (at dump: do not save their state)" if dump else ""))
        if dump:
            sp.add_argument("--skip-in-flight", action="store_true",
                            help="drop TCP connections not yet accepted")
        sp.add_argument("--network-lock", choices=("nftables", "iptables", "skip"),
                        default=None, help="how to keep packets from the connections "
                        "between dump and restore (default: the first that works here)")

    def incremental(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--track-mem", action="store_true",
                        help="track memory changes from now on, for a next dump")
        sp.add_argument("--prev-images-dir", metavar="DIR",
                        help="parent images (relative to -D): pages unchanged since are "
                             "left there")
        sp.add_argument("--page-server", action="store_true",
                        help="send the images to a page server (--address, --port)")
        sp.add_argument("--address", metavar="ADDR", help="the page server's address")
        sp.add_argument("--port", type=int, metavar="PORT", help="the page server's port")

    d = sub.add_parser("dump", help="checkpoint a process into a folder of images")
    d.add_argument("-t", "--tree", type=int, required=True, metavar="PID",
                   help="the process to dump")
    common(d)
    d.add_argument("-R", "--leave-running", action="store_true",
                   help="let the process run on after the dump")
    d.add_argument("-s", "--leave-stopped", action="store_true",
                   help="leave the process stopped (SIGSTOP) after the dump")
    d.add_argument("--external", action="append", default=[], metavar="RES",
                   help="an external resource, e.g. unix[INODE]")
    d.add_argument("--ghost-limit", type=_size, default=None, metavar="SIZE",
                   help="most data of a deleted file to save, e.g. 64M (the default)")
    d.add_argument("--ghost-fiemap", action=argparse.BooleanOptionalAction, default=None,
                   help="criu's; no effect: deleted files' data is found with SEEK_DATA")
    d.add_argument("--link-remap", action="store_true",
                   help="criu's; no effect: a removed name of a file with other links is "
                        "always saved as a link")
    tcp(d, dump=True)
    incremental(d)

    pd = sub.add_parser("pre-dump", help="save the memory pages of a process and let it run on")
    pd.add_argument("-t", "--tree", type=int, required=True, metavar="PID",
                    help="the process to pre-dump")
    common(pd)
    incremental(pd)

    ps = sub.add_parser("page-server", help="receive the images of one dump over TCP")
    ps.add_argument("-D", "--images-dir", required=True, metavar="DIR",
                    help="folder to write the images into")
    ps.add_argument("--address", default="0.0.0.0", metavar="ADDR",
                    help="address to listen on (default: all)")
    ps.add_argument("--port", type=int, required=True, metavar="PORT",
                    help="TCP port to listen on (0: any free port, printed)")
    ps.add_argument("-o", "--log-file", metavar="LOG", help="log file, relative to DIR")
    ps.add_argument("--verbosity", type=int, default=2, metavar="N",
                    help="log level 0-4 (also -v0..-v4 or -vvvv)")

    r = sub.add_parser("restore", help="restore a process from a folder of images")
    common(r)
    r.add_argument("-d", "--restore-detached", action="store_true",
                   help="return once the process runs instead of waiting for it")
    r.add_argument("--pidfile", metavar="FILE", help="write the restored PID here "
                   "(relative to DIR)")
    r.add_argument("--inherit-fd", action="append", default=[], metavar="fd[N]:KEY",
                   help="give the restorer's fd N to the files matching KEY")
    tcp(r, dump=False)

    sub.add_parser("check", help="check that the kernel has what ckpt needs")

    sw = sub.add_parser("swrk", help="serve criu's RPC on an inherited socket (as runc runs "
                        "criu)")
    sw.add_argument("fd", type=int, metavar="FD", help="the SOCK_SEQPACKET socket's fd")

    s = sub.add_parser("show", help="decode images to JSON")
    s.add_argument("path", metavar="DIR|FILE")
    s.add_argument("--fds", action="store_true", help="list each fd with its inherit-fd key")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_normalize_verbosity(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "dump":
            from .dumper import dump
            if args.leave_running and args.leave_stopped:
                raise UsageError("-R (--leave-running) and -s (--leave-stopped) exclude each other")
            server = _page_server(args)
            ckpt_log.setup(args.verbosity, args.log_file, args.images_dir, create_dir=True)
            dump(args.tree, args.images_dir, leave_running=args.leave_running,
                 leave_stopped=args.leave_stopped, shell_job=args.shell_job,
                 external=tuple(args.external), ghost_limit=args.ghost_limit,
                 track_mem=args.track_mem, prev_images_dir=args.prev_images_dir,
                 page_server=server, file_locks=args.file_locks, link_remap=args.link_remap,
                 ghost_fiemap=args.ghost_fiemap, **_tcp(args))
            return 0
        if args.command == "pre-dump":
            from .dumper import pre_dump
            server = _page_server(args)
            ckpt_log.setup(args.verbosity, args.log_file, args.images_dir, create_dir=True)
            pre_dump(args.tree, args.images_dir, track_mem=args.track_mem,
                     prev_images_dir=args.prev_images_dir, page_server=server)
            return 0
        if args.command == "page-server":
            from .page_server import serve
            ckpt_log.setup(args.verbosity, args.log_file, args.images_dir, create_dir=True)

            def ready(addr: str, port: int) -> None:
                print(f"ckpt page-server: listening on {addr}:{port}", flush=True)

            serve(args.images_dir, args.port, args.address, ready=ready)
            return 0
        if args.command == "restore":
            from .restorer import restore
            ckpt_log.setup(args.verbosity, args.log_file, args.images_dir)
            res = restore(args.images_dir, detach=args.restore_detached,
                          shell_job=args.shell_job or None, inherit_fds=args.inherit_fd,
                          pidfile=args.pidfile, **_tcp(args))
            if res.exit_status is None:
                return 0
            return res.exit_status if res.exit_status >= 0 else 128 - res.exit_status
        if args.command == "check":
            from .check import run_checks
            return run_checks()
        if args.command == "swrk":
            from .rpc.server import serve_fd
            return serve_fd(args.fd)
        if args.command == "show":
            from .show import show
            json.dump(show(args.path, fds=args.fds), sys.stdout, indent=1)
            sys.stdout.write("\n")
            return 0
    except CkptError as e:
        ckpt_log.failure(args.command, e)
        print(f"ckpt {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        ckpt_log.failure(args.command, CkptError("interrupted (Ctrl-C)").with_traceback(
            e.__traceback__))
        return 130
    except BrokenPipeError:  # ``ckpt show DIR | head``
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug: in the log too, then the traceback as Python shows it
        ckpt_log.failure(args.command, e)
        raise
    return 2


if __name__ == "__main__":
    sys.exit(main())
