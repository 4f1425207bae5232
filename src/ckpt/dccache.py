"""Compiled code of the methods ``dataclasses`` writes for ckpt's classes, kept in a
file next to ckpt's byte code: each ``@dataclass`` compiles its ``__init__``,
``__repr__``, ``__eq__``... from source as its module is imported, about 15 ms of a
command's start-up (a fifth of its imports). ``install`` makes ``dataclasses`` look
each source up in the file first; a source not found there (the code changed since
the file was made, another Python) compiles as before. ``python -m ckpt.dccache``
(scripts/bootstrap.sh) makes the file by importing every module of ckpt.

The file holds code run as ckpt's own, as its byte code is: it is read only from
ckpt's ``__pycache__``, in the format of this Python (the magic number of its byte
code first)."""

from __future__ import annotations

import builtins
import marshal
import os
import sys

PATH = os.path.join(os.path.dirname(__file__), "__pycache__",
                    f"dataclasses.{sys.implementation.cache_tag}.bin")


def _magic() -> bytes:
    return sys.modules["_frozen_importlib_external"].MAGIC_NUMBER  # type: ignore[no-any-return]


def _compile(source: str) -> object:
    # as exec(source) in dataclasses compiles it: no __future__ flags of this module
    return compile(source, "<string>", "exec", dont_inherit=True)


def load(path: str = PATH) -> dict[str, object]:
    """The table of the file at ``path``: {source: code}; empty when there is none or it
    is not this Python's."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    magic = _magic()
    if not data.startswith(magic):
        return {}
    try:
        table = marshal.loads(data[len(magic):])
    except (EOFError, ValueError, TypeError):
        return {}
    return table if isinstance(table, dict) else {}


def install(path: str = PATH) -> int:
    """Have ``dataclasses`` take the code of the file at ``path`` for the sources it
    holds; the number of sources (0: nothing changed)."""
    import dataclasses
    table = load(path)
    if not table or not hasattr(dataclasses, "_create_fn"):
        return 0

    def exec_cached(source: object, globals: dict | None = None,  # noqa: A002
                    locals: dict | None = None) -> None:  # noqa: A002
        code = table.get(source) if isinstance(source, str) else None
        if code is None:
            code = _compile(source) if isinstance(source, str) else source
        builtins.exec(code, globals, locals)  # type: ignore[arg-type]

    dataclasses.exec = exec_cached  # type: ignore[attr-defined]  # its only exec
    return len(table)


def build(path: str = PATH) -> int:
    """Import every module of ckpt, noting the code of each method ``dataclasses``
    writes, and save it at ``path``; the number of sources saved."""
    import dataclasses
    import importlib
    import pkgutil
    table: dict[str, object] = {}

    def exec_noted(source: object, globals: dict | None = None,  # noqa: A002
                   locals: dict | None = None) -> None:  # noqa: A002
        if isinstance(source, str):
            source = table.setdefault(source, _compile(source))
        builtins.exec(source, globals, locals)  # type: ignore[arg-type]

    dataclasses.exec = exec_noted  # type: ignore[attr-defined]
    try:
        for mod in pkgutil.walk_packages([os.path.dirname(__file__)], "ckpt."):
            if mod.name.rpartition(".")[2] == "__main__" or mod.name in sys.modules:
                continue
            try:
                importlib.import_module(mod.name)
            except ImportError:  # an optional module's dependency missing: its methods compile
                continue
    finally:
        del dataclasses.exec  # type: ignore[attr-defined]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(_magic() + marshal.dumps(table))
    os.replace(tmp, path)
    return len(table)


if __name__ == "__main__":
    print(f"ckpt.dccache: {build()} methods of dataclasses compiled into {PATH}")
