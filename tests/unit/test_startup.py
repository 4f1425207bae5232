"""A command's start-up: what its imports leave out, checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_commands_do_not_import_inspect() -> None:
    """``dataclasses`` imports ``inspect`` (5 ms) for classes without a docstring only:
    with the import deferred, the drivers' modules never need it."""
    out = _run("import sys; from ckpt.deferred import defer_imports; defer_imports(); "
               "import ckpt.cli, ckpt.dumper, ckpt.restorer, ckpt.check, ckpt.show; "
               "print(type(sys.modules['inspect']).__name__)")
    assert out == "_Deferred"


def test_a_deferred_module_works_when_used() -> None:
    out = _run("import sys; from ckpt.deferred import defer_imports; defer_imports(); "
               "import inspect; from inspect import signature; "
               "print(inspect.isfunction(len), signature(lambda a: a))")
    assert out == "False (a)"


def test_no_subprocess_at_import() -> None:
    """ctypes.util.find_library runs ldconfig: libc is loaded by its name instead."""
    out = _run("import subprocess, sys; calls = []; "
               "subprocess.Popen.__init__ = lambda *a, **k: calls.append(a); "
               "import ckpt.dumper, ckpt.restorer, ckpt.check; print(len(calls))")
    assert out == "0"


def test_drivers_leave_out_what_few_commands_use() -> None:
    """The network lock and the inet kind are imported by a dump or restore that meets
    one; argparse's help formatter is sized without shutil."""
    out = _run("import sys; import ckpt.cli, ckpt.dumper, ckpt.restorer; "
               "ckpt.cli._parser('dump').parse_args(['dump', '-t', '1']); "
               "print(sorted(m for m in ('ckpt.netlock', 'ckpt.resources.sk_inet', "
               "'ckpt.resources.sk_tcp', 'shutil') if m in sys.modules))")
    assert out == "[]"
