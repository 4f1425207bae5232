"""The compiled code of ckpt's own modules in one file next to their byte code, which a
command imports them from: through Python's path finder each of the 80 to 90 modules
a dump or restore imports costs a look at its folder, two stats of its source, and an
open, fstat and read of its byte code (about 40 us); from the file, one stat of its
source, to see it unchanged since the file was made. A module whose source changed
since (or is not in the file) is imported as Python would. The code is compiled
without docstrings (``__doc__`` is None), which a command never shows.

``python -m ckpt.dccache`` (scripts/bootstrap.sh) writes the file (``build``);
``install`` (command.py) puts the finder first on ``sys.meta_path``, holding the file
open until ``release`` (once the command's modules are in). The file holds
code run as ckpt's own, as its byte code is, and is read only from ckpt's
``__pycache__``: the magic number of this Python's byte code, then a marshalled index
{module: (is a package, source path, its mtime in ns, its size, offset, length)}, its
length before it, and the marshalled code of each module after it."""

from __future__ import annotations

import _frozen_importlib  # always loaded: Python's own import machinery
import marshal
import os
import sys

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    import ast
    from types import CodeType, ModuleType
    from typing import Any

HERE = os.path.dirname(__file__)
PATH = os.path.join(HERE, "__pycache__", f"modules.{sys.implementation.cache_tag}.bin")
_LEAVE_OUT = ("ckpt.__main__",)  # run by runpy, which wants a loader of its own kind


def _magic() -> bytes:
    return sys.modules["_frozen_importlib_external"].MAGIC_NUMBER  # type: ignore[no-any-return]


class Finder:
    """Finds ckpt's modules in the file open at ``fd``; a loader of them too. ``index``:
    the file's; ``base``, where the code of the modules starts in it."""

    def __init__(self, path: str, fd: int, index: dict[str, tuple[bool, str, int, int, int, int]],
                 base: int):
        self.path = path
        self.fd = fd
        self.index = index
        self.base = base

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        entry = self.index.get(name)
        if entry is None:
            return None
        package, source, mtime, size = entry[:4]
        try:
            st = os.stat(source)
        except OSError:
            return None
        if st.st_mtime_ns != mtime or st.st_size != size:
            return None  # changed since the file was made: Python finds it
        spec = _frozen_importlib.ModuleSpec(name, self, origin=source, is_package=package)
        spec.has_location = True  # __file__ is the source, as Python sets it
        if package:
            spec.submodule_search_locations = [os.path.dirname(source)]
        return spec

    def create_module(self, spec: Any) -> None:
        return None  # the usual module object

    def get_code(self, name: str) -> CodeType:
        _, _, _, _, offset, length = self.index[name]
        if self.fd >= 0:
            return marshal.loads(os.pread(self.fd, length, self.base + offset))  # type: ignore[no-any-return]
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return marshal.loads(os.pread(fd, length, self.base + offset))  # type: ignore[no-any-return]
        finally:
            os.close(fd)

    def exec_module(self, module: ModuleType) -> None:
        exec(self.get_code(module.__name__), module.__dict__)

    def close(self) -> None:
        """Let go of the file (a later import opens it again)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def load(path: str = PATH) -> Finder | None:
    """The finder of the file at ``path``, which it holds open; None when there is none or
    it is not this Python's. Only the index is read: each module's code when imported."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        magic = _magic()
        head = os.pread(fd, len(magic) + 8, 0)
        if len(head) != len(magic) + 8 or not head.startswith(magic):
            raise ValueError("not this Python's")
        length = int.from_bytes(head[len(magic):], "little")
        index = marshal.loads(os.pread(fd, length, len(head)))
        if not isinstance(index, dict):
            raise ValueError("no index")
    except (OSError, EOFError, ValueError, TypeError):
        os.close(fd)
        return None
    return Finder(path, fd, index, len(head) + length)


_installed: Finder | None = None


def install(path: str = PATH) -> None:
    """Import ckpt's modules from the file at ``path`` from now on, where it has them."""
    global _installed
    finder = load(path)
    if finder is not None:
        sys.meta_path.insert(0, finder)  # type: ignore[arg-type]
        _installed = finder


def release() -> None:
    """The command's modules are in: the file is closed (opened again by a later import)."""
    if _installed is not None:
        _installed.close()


def _modules() -> list[tuple[str, str, bool]]:
    """(name, source, is a package) of every module of ckpt."""
    out = []
    for folder, dirs, files in os.walk(HERE):
        dirs[:] = sorted(d for d in dirs if d.isidentifier())
        rel = os.path.relpath(folder, os.path.dirname(HERE))
        package = rel.replace(os.sep, ".")
        for name in sorted(files):
            if not name.endswith(".py") or not name[:-3].isidentifier():
                continue
            source = os.path.join(folder, name)
            if name == "__init__.py":
                out.append((package, source, True))
            elif f"{package}.{name[:-3]}" not in _LEAVE_OUT:
                out.append((f"{package}.{name[:-3]}", source, False))
    return out


def _without_docstrings(tree: ast.Module) -> ast.Module:
    """``tree`` without the docstrings of its module, classes and functions, as ``python
    -OO`` compiles it (its asserts kept): a third of the time to unmarshal ckpt's code
    goes to them, and a command shows none."""
    import ast
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                body[0:1] = [ast.copy_location(ast.Pass(), body[0])] if len(body) == 1 else []
    return tree


def build(path: str = PATH, modules: list[tuple[str, str, bool]] | None = None) -> int:
    """Compile every module of ckpt (or ``modules``: (name, source, is a package)) into
    the file at ``path``; the number of modules."""
    import ast  # not on a command's way (its classes take a while to make)
    index: dict[str, tuple[bool, str, int, int, int, int]] = {}
    blobs: list[bytes] = []
    offset = 0
    for name, source, package in _modules() if modules is None else modules:
        with open(source, "rb") as f:
            st = os.fstat(f.fileno())
            text = f.read()
        tree = _without_docstrings(ast.parse(text, source))
        code = marshal.dumps(compile(tree, source, "exec", dont_inherit=True))
        blobs.append(code)
        index[name] = (package, source, st.st_mtime_ns, st.st_size, offset, len(code))
        offset += len(code)
    head = marshal.dumps(index)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(_magic() + len(head).to_bytes(8, "little") + head + b"".join(blobs))
    os.replace(tmp, path)
    return len(index)
