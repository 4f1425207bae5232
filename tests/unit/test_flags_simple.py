"""flags.parse_simple, the parser of plain command lines that spares a command argparse:
the same namespace as argparse's for every flag of every criu command, in each of its
plain forms, and None (argparse's turn) wherever argparse would refuse or its forms
differ."""

from __future__ import annotations

import pytest

from ckpt import cli, flags


def _argparse(argv: list[str]) -> dict[str, object]:
    return vars(cli._parser(argv[0]).parse_args(argv))


def _value_for(f: flags.Flag) -> str:
    if f.choices:
        return f.choices[-1]
    if f.type is int:
        return "7"
    if f.type is flags.size:
        return "64M"
    return "some value"


def _lines(command: str) -> list[list[str]]:
    """Command lines giving each flag in each plain form, some several at once."""
    out: list[list[str]] = [[]]
    required = [["-t", "1"]] if command in (flags.DUMP, flags.PRE_DUMP) else \
        [["--port", "0"]] if command == flags.PAGE_SERVER else [[]]
    for f in flags.FLAGS:
        if f.dest in ("help", "version"):
            continue
        for name in f.names:
            if f.value is None:
                out.append([name])
                if f.negatable and name.startswith("--"):
                    out.append([f"--no-{name[2:]}"])
                    out.append([name, f"--no-{name[2:]}"])
            else:
                v = _value_for(f)
                if name.startswith("--"):
                    out.append([f"{name}={v}"])
                if not f.optional:
                    out.append([name, v])
                    out.append([name, v, name, v + "0" if f.type is str and not f.choices
                                else v])
    return [[*required[0], *line] for line in out]


@pytest.mark.parametrize("command", flags.CRIU_COMMANDS)
def test_the_same_namespace_as_argparse(command: str) -> None:
    for line in _lines(command):
        argv = [command, *line]
        fast = flags.parse_simple(command, line)
        assert fast is not None, argv
        assert vars(fast) == _argparse(argv), argv


@pytest.mark.parametrize("line", [
    ["-t"], ["-t", "x"], ["-t", "-1"], ["--tree=1", "--bogus"], ["-t", "1", "word"],
    ["-t", "1", "--leave-running=yes"], ["-t", "1", "--no-leave-running"],
    ["-t", "1", "--network-lock=pigeons"], ["-t", "1", "--ghost-limit=lots"],
    ["-t", "1", "--leave-run"], ["-t1"], ["-Rt", "1"], ["-t", "1", "-h"],
    ["-t", "1", "--version"], ["-t", "1", "-x"], ["-t", "1", "--manage-cgroups"],
    ["-t", "1", "-D", "-"], ["-D", "x"],
])
def test_none_where_argparse_decides(line: list[str]) -> None:
    assert flags.parse_simple(flags.DUMP, line) is None
