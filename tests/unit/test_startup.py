"""A command's start-up: what its imports leave out, checked in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_commands_do_not_import_inspect_nor_traceback() -> None:
    """``dataclasses`` imports ``inspect`` (5 ms) for classes without a docstring only,
    ``logging`` ``traceback`` (2 ms, with linecache and tokenize) to show exceptions
    only: with the imports deferred, the drivers' modules never need them."""
    out = _run("import sys; from ckpt.deferred import defer_imports; defer_imports(); "
               "import ckpt.cli, ckpt.dumper, ckpt.restorer, ckpt.check, ckpt.show; "
               "print(type(sys.modules['inspect']).__name__, "
               "type(sys.modules['traceback']).__name__, "
               "[m for m in ('linecache', 'tokenize') if m in sys.modules])")
    assert out == "_Deferred _Deferred []"


def test_a_deferred_traceback_shows_exceptions() -> None:
    """logging, holding the stand-in, formats an exception with the real module."""
    out = _run("import sys; from ckpt.deferred import defer_imports; defer_imports(); "
               "import io, logging; s = io.StringIO(); log = logging.getLogger('t'); "
               "log.addHandler(logging.StreamHandler(s))\n"
               "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('failed')\n"
               "print('ZeroDivisionError: division by zero' in s.getvalue(), "
               "'line 3' in s.getvalue())")
    assert out == "True True"


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


_METHODS = """
import importlib, sys
from ckpt.kernel import record
out = []
for name in ("ckpt.kernel.procfs", "ckpt.resources.filekind", "ckpt.dumper", "ckpt.netlock"):
    mod = importlib.import_module(name)
    for cls in sorted(vars(mod).values(), key=repr):
        if record.is_record(cls) and cls.__module__ == name:
            for meth in record.unwritten(cls):
                fn = record.write(cls, meth)
                out.append((cls.__qualname__, meth, fn.__defaults__ is not None,
                            fn.__code__.co_code, fn.__code__.co_consts, fn.__code__.co_names,
                            fn.__code__.co_varnames))
print(repr(out))
"""


def test_dataclass_code_from_the_file_is_the_code_compiled(tmp_path) -> None:
    """Methods whose code came from dccache's file are those record.py compiles: same
    byte code, constants and names; and the file is used (each method written a hit)."""
    path = tmp_path / "dataclasses.bin"
    built = _run(f"import ckpt.dccache as d; print(d.build({str(path)!r}))")
    assert int(built) > 100
    plain = _run(_METHODS)
    hits = (f"import ckpt.dccache as d; from ckpt.kernel import record; d.install({str(path)!r})"
            f"; table = d.load({str(path)!r}); seen = []; cached = record.compiler\n"
            "def noted(source):\n    seen.append(source in table)\n    return cached(source)\n"
            "record.compiler = noted\n" + _METHODS + "print(len(seen), all(seen))")
    count, all_hits = _run(hits).splitlines()[-1].split()
    assert int(count) > 10 and all_hits == "True"
    cached = _run(f"import ckpt.dccache as d; d.install({str(path)!r})\n" + _METHODS)
    assert cached == plain
    assert "__init__" in plain


def test_dataclass_code_of_another_source_still_compiles(tmp_path) -> None:
    path = tmp_path / "dataclasses.bin"
    _run(f"import ckpt.dccache as d; d.build({str(path)!r})")
    out = _run(f"import ckpt.dccache as d; d.install({str(path)!r})\n"
               "from ckpt.kernel.record import dataclass\n"
               "@dataclass(frozen=True)\nclass Odd:\n    zz_unheard_of: int = 3\n"
               "print(Odd(), Odd(4) == Odd(4), hash(Odd()) == hash(Odd(3)))")
    assert out == "Odd(zz_unheard_of=3) True True"


def test_a_file_of_another_python_is_not_used(tmp_path) -> None:
    path = tmp_path / "dataclasses.bin"
    path.write_bytes(b"\0\0\r\n" + b"junk")
    assert _run(f"import ckpt.dccache as d; print(d.load({str(path)!r}))") == "{}"


def test_commands_import_neither_dataclasses_nor_json_nor_re() -> None:
    """ckpt's dataclasses (kernel/record.py) need not the standard module (which imports
    re, enum, copy and inspect and writes every method at import); a dump writes JSON
    with json's C encoder alone; regular expressions are compiled (and re imported) on
    first use (kernel/lazyre.py), and a dump of a plain process uses none."""
    out = _run("import sys; from ckpt import command; command.begin(); "
               "import ckpt.cli, ckpt.dumper; "
               "print(sorted(m for m in ('dataclasses', 'json', 'copy', 're', 'enum') "
               "if m in sys.modules))")
    assert out == "[]"


def test_the_command_ends_with_its_status_its_output_and_its_log(tmp_path) -> None:
    """command.end: a thread that is no daemon finishes, atexit functions run (logging
    closes its file), stdout is flushed though not a terminal, the status is as given;
    the collector is back on once started."""
    log = tmp_path / "log"
    res = subprocess.run(
        [sys.executable, "-c",
         "import gc, logging, sys; from ckpt import command; command.begin(); "
         "off = gc.isenabled(); command.started(); "
         f"h = logging.FileHandler({str(log)!r}); logging.getLogger('t').addHandler(h); "
         "logging.getLogger('t').warning('kept'); sys.stdout.write(f'{off} {gc.isenabled()}'); "
         "import threading, time; threading.Thread(target=lambda: (time.sleep(0.3), "
         "sys.stdout.write(' late'))).start(); command.end(3)"], capture_output=True, text=True)
    assert (res.returncode, res.stdout, log.read_text()) == (3, "False True late", "kept\n")


def test_a_dump_imports_only_what_a_dump_needs() -> None:
    """socket (with selectors, and its enums built at import) serves a restore's fds
    and a PID namespace's init; the restore's drivers, the RPC server, check, show,
    subprocess and zstandard serve other commands: a dump's imports leave them out."""
    out = _run("import sys; from ckpt import command; command.begin(); "
               "import ckpt.cli, ckpt.dumper; "
               "ckpt.cli._parser('dump').parse_args(['dump', '-t', '1']); "
               "print(sorted(m for m in ('socket', 'selectors', 'ckpt.restorer', 'ckpt.tree', "
               "'ckpt.validate', 'ckpt.rpc', 'ckpt.check', 'ckpt.show', 'subprocess', "
               "'zstandard', 'hashlib', 'tempfile', 'pathlib') if m in sys.modules))")
    assert out == "[]"


def test_a_check_kept_for_the_boot_imports_no_probe(tmp_path) -> None:
    """A check printing what the last one found this boot imports neither the probes
    nor what they run on (ctypes, ptrace, procfs): only check and recovery's notes
    (with jsontext, their JSON; not ``json``, with ``re`` and ``enum``)."""
    cache = tmp_path / "check.json"
    _run(f"from ckpt import check; check.save_lines(check.cache_key(), ['note: kept'], "
         f"{str(cache)!r})")
    out = _run(f"import os, sys; os.environ['CKPT_CHECK_CACHE'] = {str(cache)!r}; "
               "os.environ['CKPT_NETLOCK_DIR'] = '/nonexistent'; "
               "from ckpt import command; command.begin(); import ckpt.cli; "
               "before = set(sys.modules); from ckpt import check; status = check.run_checks(); "
               "print(status, sorted(m for m in set(sys.modules) - before "
               "if m.startswith(('ckpt', 'ctypes')) or m in ('json', 're', 'enum')))")
    assert out.splitlines() == ["note: kept", "Looks good.",
                                "0 ['ckpt.check', 'ckpt.jsontext', 'ckpt.recovery']"]


def test_a_dump_imports_only_what_it_runs() -> None:
    """The modules of a plain ``ckpt dump`` (its command line parsed, the log set up)
    leave out what only other trees, other command lines or a log record need."""
    out = _run("import sys; import ckpt.cli, ckpt.dumper, ckpt.rpc.stats\n"
               "from ckpt import flags, log; log.setup(2)\n"
               "assert flags.parse_simple('dump', ['-t', '1', '-D', 'x']) is not None\n"
               "print(sorted(m for m in ('typing', 'logging', 'argparse', 'gettext', "
               "'textwrap', 'signal', 'base64', 'ckpt.new_pidns', 'ckpt.resources.mounts', "
               "'ckpt.resources.tty', 'ckpt.kernel.mountinfo', 'ckpt.rpc.wire', "
               "'ckpt.rpc.schema', 'functools', 'collections', 'bisect', '_bisect', 'mmap') "
               "if m in sys.modules))")
    assert out == "[]"


def test_no_module_of_ckpt_imports_typing() -> None:
    """typing (about 2.5 ms with what it imports) stays out of every command: ckpt's
    modules name its types under ``TYPE_CHECKING`` (False) only."""
    out = _run("import os, sys\nimport ckpt\nroot = os.path.dirname(ckpt.__file__)\n"
               "for d, _, files in os.walk(root):\n"
               "    for f in files:\n"
               "        if f.endswith('.py') and f != '__main__.py':\n"
               "            rel = os.path.relpath(os.path.join(d, f), root)[:-3]\n"
               "            rel = rel.replace(os.sep, '.').removesuffix('__init__')\n"
               "            __import__(('ckpt.' + rel).rstrip('.'))\n"
               "print('typing' in sys.modules)")
    assert out == "False"


def test_a_restore_imports_only_what_it_runs() -> None:
    """The modules of a plain ``ckpt restore`` (its fd pair made) leave out the dump's
    page path, --new-pidns, the socket and signal modules (their enums built at
    import): _signal and raw syscalls serve (not even _socket's library); and
    terminals (tty.py, with termios and base64) and job control, which a tree
    without a terminal never uses; nor json, re and contextlib (images are read by
    json's C scanner, jsontext.py)."""
    out = _run("import sys; import ckpt.cli, ckpt.restorer, ckpt.rpc.stats\n"
               "from ckpt.resources import fdtable; fdtable.FdSender().close()\n"
               "print(sorted(m for m in ('typing', 'logging', 'argparse', 'signal', 'socket', "
               "'selectors', 'ckpt.dumper', 'ckpt.pages.save', 'ckpt.new_pidns', 'zlib_ng', "
               "'ckpt.resources.tty', 'ckpt.job_control', 'termios', 'base64', '_socket', "
               "'json', 're', 'enum', 'contextlib', 'functools', 'collections') "
               "if m in sys.modules))")
    assert out == "[]"


def test_the_commands_import_no_re() -> None:
    """The installed ``ckpt`` (bin/ckpt) imports no ``re``, as pip's entry point script
    did first thing: a restore's imports, up to its first error, hold none of re, enum,
    json or contextlib."""
    script = os.path.join(os.path.dirname(sys.executable), "ckpt")
    env = {**os.environ, "CKPT_NETLOCK_DIR": "/nonexistent"}  # no lock notes to recover
    res = subprocess.run([sys.executable, "-X", "importtime", script, "restore", "-D",
                          "/nonexistent/ckpt-images", "-d"], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 1 and "ckpt restore: error: /nonexistent" in res.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in res.stderr.splitlines()
                if line.startswith("import time:")}
    assert "ckpt.restorer" in imported
    assert sorted({"re", "enum", "json", "contextlib"} & imported) == []


_FROM_FILE = ("import sys\n"
              "def from_file(name):\n"
              "    return type(sys.modules[name].__spec__.loader).__name__ == 'Finder'\n")


def test_modules_come_from_the_one_file_as_python_would_import_them(tmp_path) -> None:
    """modcache: ckpt's modules imported from the file, with the __file__, package path
    and code Python would give them; modules left out of it found as usual."""
    path = tmp_path / "modules.bin"
    assert int(_run(f"import ckpt.modcache as m; print(m.build({str(path)!r}))")) > 100
    out = _run(f"import ckpt.modcache as m; m.install({str(path)!r})\n" + _FROM_FILE +
               "import ckpt.restorer, ckpt.resources.mem, ckpt.pages.fill\n"
               "from ckpt import restorer\n"
               "print(from_file('ckpt.restorer'), from_file('ckpt.resources'),\n"
               "      restorer.__file__.endswith('src/ckpt/restorer.py'),\n"
               "      ckpt.resources.__path__[0].endswith('src/ckpt/resources'),\n"
               "      callable(restorer.restore), from_file('ckpt.modcache'))\n"
               "m.release(); import ckpt.show; print(from_file('ckpt.show'))")
    assert out.split() == ["True", "True", "True", "True", "True", "False", "True"]


def test_a_module_changed_since_the_file_was_made_is_imported_from_its_source(
        tmp_path) -> None:
    package = tmp_path / "pkg_mc"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("VALUE = 'old'\n")
    path = tmp_path / "modules.bin"
    built = [("pkg_mc", str(package / "__init__.py"), True),
             ("pkg_mc.mod", str(package / "mod.py"), False)]
    _run(f"import ckpt.modcache as m; print(m.build({str(path)!r}, {built!r}))")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
            f"import ckpt.modcache as m; m.install({str(path)!r})\n" + _FROM_FILE +
            "import pkg_mc.mod; print(pkg_mc.mod.VALUE, from_file('pkg_mc.mod'))")
    assert _run(code) == "old True"
    (package / "mod.py").write_text("VALUE = 'newer'\n")
    assert _run(code) == "newer False"


def test_a_modules_file_of_another_python_is_not_used(tmp_path) -> None:
    path = tmp_path / "modules.bin"
    path.write_bytes(b"\0\0\r\n" + b"junk" * 10)
    assert _run(f"import ckpt.modcache as m; print(m.load({str(path)!r}))") == "None"


def test_a_restore_imports_the_kinds_of_trees_it_restores_only() -> None:
    """A tree's own mounts, namespaces and cgroups, its file locks and SysV objects, and
    the guard of a tree of several processes: restorer.py and validate.py import their
    modules for the images (or flags) that need them."""
    out = _run("import sys; from ckpt import command; command.begin(); "
               "import ckpt.cli, ckpt.restorer, ckpt.validate; "
               "print(sorted(m for m in ('ckpt.resources.mounts', 'ckpt.resources.treens', "
               "'ckpt.resources.cgroups', 'ckpt.guard', 'select', 'ckpt.resources.locks', "
               "'ckpt.resources.sysv', 'ckpt.kernel.sysvipc') if m in sys.modules))")
    assert out == "[]"
