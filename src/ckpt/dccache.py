"""Compiled code of the methods ckpt's dataclasses write (kernel/record.py), kept in a
file next to ckpt's byte code: compiling each from source costs about 0.1 ms, and a
command writes dozens. ``install`` makes record.py look each source up in the file
first (read on the first method written); a source not found there (the code changed
since the file was made, another Python) compiles as before. ``python -m
ckpt.dccache`` (scripts/bootstrap.sh) makes the file by importing every module of
ckpt and writing every method of every class.

The file holds code run as ckpt's own, as its byte code is: it is read only from
ckpt's ``__pycache__``, in the format of this Python (the magic number of its byte
code first): {source: marshalled code}, each code unmarshalled when first used."""

from __future__ import annotations

import marshal
import os
import sys

from .kernel import record

PATH = os.path.join(os.path.dirname(__file__), "__pycache__",
                    f"dataclasses.{sys.implementation.cache_tag}.bin")


def _magic() -> bytes:
    return sys.modules["_frozen_importlib_external"].MAGIC_NUMBER  # type: ignore[no-any-return]


def load(path: str = PATH) -> dict[str, bytes]:
    """The table of the file at ``path``: {source: marshalled code}; empty when there is
    none or it is not this Python's."""
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


def install(path: str = PATH) -> None:
    """Have record.py take the code of the file at ``path`` for the sources it holds."""
    table: dict[str, bytes] | None = None

    def compile_cached(source: str) -> object:
        nonlocal table
        if table is None:
            table = load(path)
        raw = table.get(source)
        if raw is not None:
            try:
                return marshal.loads(raw)
            except (EOFError, ValueError, TypeError):
                pass
        return record._compile(source)

    record.compiler = compile_cached


def build(path: str = PATH) -> int:
    """Import every module of ckpt, write every method of its dataclasses, and save the
    code of each at ``path``; the number of sources saved."""
    import importlib
    import pkgutil
    table: dict[str, bytes] = {}

    def compile_noted(source: str) -> object:
        code = record._compile(source)
        table[source] = marshal.dumps(code)
        return code

    record.compiler = compile_noted
    try:
        for mod in pkgutil.walk_packages([os.path.dirname(__file__)], "ckpt."):
            if mod.name.rpartition(".")[2] == "__main__" or mod.name in sys.modules:
                continue
            try:
                importlib.import_module(mod.name)
            except ImportError:  # an optional module's dependency missing: its methods compile
                continue
        for cls in record.CLASSES:
            for method in record.unwritten(cls):
                record.write(cls, method)
    finally:
        record.compiler = record._compile
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(_magic() + marshal.dumps(table))
    os.replace(tmp, path)
    return len(table)


if __name__ == "__main__":
    print(f"ckpt.dccache: {build()} methods of dataclasses compiled into {PATH}")
    from . import modcache  # the modules' code too, for the commands' imports
    print(f"ckpt.dccache: {modcache.build()} modules compiled into {modcache.PATH}")
