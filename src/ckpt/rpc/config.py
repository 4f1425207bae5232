"""criu's configuration files in RPC sessions, read as ``criu swrk`` reads them: the
default files (``/etc/criu/default.conf``, ``~/.criu/default.conf``,
``$CRIU_CONFIG_FILE``) under the request's options, and the request's own
``config_file`` (runc's ``/etc/criu/runc.conf``, or a container's ``org.criu.config``
annotation) over them: its options win, as in criu.

Each option of a file becomes the ``criu_opts`` field it stands for; one that no
field carries (``--page-server``, ``--tree``, ...) refuses the request, naming it and
the file, unless ckpt gives it no effect anyway (logged).
"""

from __future__ import annotations

import errno

from .. import flags
from ..errors import UsageError
from ..log import logger
from .options import NETWORK_LOCKS, RequestError
from .schema import CG_MODES, MESSAGES

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.rpc")

CLONE_NEWNET = 0x40000000
# criu's flags whose criu_opts field has another name than the flag's.
RENAMED = {"--skip-in-flight": "tcp_skip_in_flight", "--prev-images-dir": "parent_img",
           "--verbosity": "log_level", "--cgroup-root": "cg_root"}


def with_files(opts: dict[str, Any]) -> dict[str, Any]:
    """The request's options with the default configuration files under them and its
    ``config_file`` over them."""
    out: dict[str, Any] = {}
    for path, must in flags.default_config_paths():
        out.update(_read(path, must))
    out.update(opts)
    path = opts.get("config_file")
    if path:
        out.update(_read(path, False))
    return out


def _read(path: str, must: bool) -> dict[str, Any]:
    """The criu_opts fields that configuration file ``path`` sets ({} when it does not
    exist and need not)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        if must:
            raise RequestError(f"configuration file {path}: no such file", errno.ENOENT
                               ) from None
        log.info("configuration file %s does not exist; nothing to read", path)
        return {}
    except OSError as e:
        raise RequestError(f"configuration file {path}: {e.strerror}", e.errno) from None
    try:
        args = flags.parse_config(text, path)
    except UsageError as e:
        raise RequestError(f"configuration file {e}", errno.EINVAL) from None
    out: dict[str, Any] = {}
    for arg in args:
        name, eq, value = arg.partition("=")
        try:
            _set(out, name, value if eq else None)
        except (UsageError, ValueError) as e:
            raise RequestError(f"configuration file {path}: {name}: {e}", errno.EINVAL
                               ) from None
    log.info("configuration file %s: %s", path, out)
    return out


def _set(out: dict[str, Any], name: str, value: str | None) -> None:
    """Set in ``out`` the criu_opts field that criu's flag ``name`` (``--name`` or
    ``--no-name``) given ``value`` stands for."""
    known = flags.flag_names().get(name)
    if known is None:
        raise UsageError("not one of criu's options")
    flag, negated = known
    if flag.effect == flags.NO_EFFECT:
        log.info("configuration option %s accepted without effect: %s", name, flag.what)
        return
    field = RENAMED.get(flag.long, flag.long[2:].replace("-", "_"))
    kind = next((f for f in MESSAGES["opts"].values() if f.name == field), None)
    if kind is None:
        raise UsageError("no RPC option of criu's carries it; give it in the request")
    if flag.long == "--manage-cgroups":
        out["manage_cgroups"] = not negated
        if value:
            modes = {m: n for n, m in CG_MODES.items() if n != 6}
            if value not in modes:
                raise UsageError(f"unknown mode {value}")
            out["manage_cgroups_mode"] = modes[value]
    elif flag.long == "--network-lock":
        methods = {m: n for n, m in NETWORK_LOCKS.items()}
        if value not in methods:
            raise UsageError(f"unknown method {value}")
        out[field] = methods[value]
    elif flag.long == "--empty-ns":
        if value != "net":
            raise UsageError("only net")
        out[field] = CLONE_NEWNET
    elif flag.long == "--verbosity":
        out[field] = int(value) if value else 4
    elif field == "cg_root":
        ctrl, _, path = (value or "").rpartition(":")
        out.setdefault(field, []).append({"ctrl": ctrl, "path": path} if ctrl
                                         else {"path": path})
    elif field == "inherit_fd":
        spec, _, key = (value or "").partition(":")
        if not (spec.startswith("fd[") and spec.endswith("]") and spec[3:-1].isdigit()):
            raise UsageError(f"{value}: expected fd[N]:KEY")
        out.setdefault(field, []).append({"fd": int(spec[3:-1]), "key": key})
    elif kind.type == "bool":
        out[field] = not negated
    elif kind.repeated and kind.type == "string":
        out.setdefault(field, []).append(value)
    elif kind.type == "string":
        out[field] = value
    elif kind.type in ("int32", "uint32"):
        out[field] = flags.size(value) if field == "ghost_limit" else int(value or "")
    else:
        raise UsageError("not settable from a configuration file")
