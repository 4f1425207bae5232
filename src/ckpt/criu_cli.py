"""``ckpt-criu``: ckpt under criu's command line, to be installed or named as
``criu`` (``runc --criu ckpt-criu``): ``swrk FD``, ``--version`` (``-V``) in
criu's words, and every other command and flag as ``ckpt`` has them."""

from __future__ import annotations

import sys

from . import __version__
from .kernel import interrupts


def version_text() -> str:
    """What ``criu --version`` prints, with the criu version whose protocol ckpt serves."""
    from .rpc.server import CRIU_VERSION
    return f"Version: {CRIU_VERSION[0]}.{CRIU_VERSION[1]}\nGitID: ckpt-{__version__}\n"


def main(argv: list[str] | None = None) -> int:
    from .deferred import defer_imports
    defer_imports()
    try:
        interrupts.install()  # raises at once for a signal noted during start-up
    except interrupts.Interrupted as e:
        print(f"ckpt: {e}", file=sys.stderr)
        return e.exit_status
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["--version"], ["-V"]):
        sys.stdout.write(version_text())
        return 0
    if len(args) == 2 and args[0] == "swrk" and args[1].isdigit():
        # runc's call, once or twice per checkpoint: straight to the server, no argparse
        from . import command
        from .errors import CkptError
        from .rpc.server import serve_fd
        command.started()
        try:
            return serve_fd(int(args[1]))
        except CkptError as e:
            print(f"ckpt swrk: error: {e}", file=sys.stderr)
            return 1
        except interrupts.Interrupted as e:
            print(f"ckpt swrk: {e}", file=sys.stderr)
            return e.exit_status
        except Exception as e:
            if (cut := interrupts.within(e)) is None:
                raise
            print(f"ckpt swrk: {cut}", file=sys.stderr)
            return cut.exit_status
    from .cli import main as ckpt_main
    return ckpt_main(args)


def run() -> None:
    """The ``ckpt-criu`` command's entry point: ``main``, then out at once (command.end)."""
    from .command import end
    end(main())


if __name__ == "__main__":
    sys.exit(main())
