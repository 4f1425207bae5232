"""criu's flags on ckpt's command line: every one accepted by every criu command;
used, accepted without effect (a log line saying why) or refused with one line
naming it, never argparse's usage error. Configuration files, flags before the
command word, criu's verbosity forms. No root, no processes (but for the CLI runs
against a free PID).
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from ckpt import cli, flags
from ckpt.errors import UnsupportedError, UsageError
from ckpt_helpers import ckpt_cmd, free_pid, run_ckpt, scaled

ROOT = Path(__file__).resolve().parents[2]

# criu 4.x's long flags (its --help and man page), with the short ones, for dump,
# pre-dump, restore and the common options; each must be in ckpt's table.
CRIU_FLAGS = """
-t --tree -s --leave-stopped -R --leave-running -d --restore-detached -S --restore-sibling
--daemon -D --images-dir -W --work-dir -o --log-file -J --join-ns -r --root -x --ext-unix-sk
-h --help --tcp-established --close --log-pid -V --version --evasive-devices --pidfile
--veth-pair --action-script --link-remap -j --shell-job -l --file-locks --page-server
--address --port --prev-images-dir --ms --track-mem --auto-dedup -L --libdir --cpu-cap
--force-irmap -M --ext-mount-map --exec-cmd --manage-cgroups --cgroup-root --inherit-fd
--feature --skip-mnt --enable-fs --enable-external-sharing --enable-external-masters
--freeze-cgroup --ghost-limit --irmap-scan-path --lsm-profile --timeout --external
--empty-ns --lazy-pages --extra --experimental --all --cgroup-props --cgroup-props-file
--cgroup-dump-controller --skip-in-flight --deprecated --display-stats --weak-sysctls
--status-fd --tcp-close -v --verbosity --ps-socket --stream --config --no-default-config
--tls-cacert --tls-cacrl --tls-cert --tls-key --tls --tls-no-cn-verify --cgroup-yard
--pre-dump-mode --file-validation --lsm-mount-context --network-lock --ghost-fiemap
--mntns-compat-mode --unprivileged --allow-uprobes --skip-file-rwx-check
""".split()

@pytest.fixture(autouse=True)
def _no_config_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The user's own criu configuration stays out of these tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CRIU_CONFIG_FILE", raising=False)
    monkeypatch.setattr(flags, "DEFAULT_CONFIGS", (str(tmp_path / "etc-default.conf"),
                                                   "~/.criu/default.conf"))


def _parse(*argv: str) -> tuple[argparse.Namespace, list[str]]:
    prepared, tail = cli._prepare(list(argv))
    return cli._parser().parse_args(prepared), tail


def _sample(f: flags.Flag) -> list[str]:
    """``f`` given with a value that asks for something."""
    if f.value is None:
        return [f.long]
    if f.choices:
        value = next(c for c in f.choices if c not in f.neutral)
    elif f.type in (int, flags.size):
        value = "7"
    else:
        value = "x"
    return [f"{f.long}={value}"]


def test_every_criu_flag_is_in_the_table() -> None:
    names = {n for f in flags.FLAGS for n in f.names}
    assert [n for n in CRIU_FLAGS if n not in names] == []


def test_docs_list_every_flag() -> None:
    """docs/flags.md is the table's rendering (python -m ckpt.flags > docs/flags.md)."""
    assert (ROOT / "docs" / "flags.md").read_text() == flags.markdown()


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli._parser().parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for f in flags.FLAGS:
        assert f.long in out.split(), f.long


@pytest.mark.parametrize("command", flags.CRIU_COMMANDS)
@pytest.mark.parametrize("flag", [f for f in flags.FLAGS
                                  if f.dest not in ("help", "version", "config")],
                         ids=lambda f: f.long)
def test_every_flag_accepted(command: str, flag: flags.Flag) -> None:
    """Parsed by every criu command; then used, noted, or refused naming the flag."""
    required = ["-t", "1"] if command in (flags.DUMP, flags.PRE_DUMP) else []
    required += ["--port", "1"] if command == flags.PAGE_SERVER else []
    args, _ = _parse(command, *required, *_sample(flag))
    effect, why = flag.effect_on(command)
    if effect == flags.REFUSE:
        with pytest.raises(UnsupportedError) as e:
            flags.screen(command, args)
        assert str(e.value).startswith(flag.long) and why in str(e.value)
    elif effect == flags.NO_EFFECT:
        assert f"{flag.long} accepted without effect: {why}" in flags.screen(command, args)
    else:
        assert not any(n.startswith(flag.long + " ") for n in flags.screen(command, args))


@pytest.mark.parametrize("flag", [f for f in flags.FLAGS if f.negatable], ids=lambda f: f.long)
def test_negated_flags_ask_for_nothing(flag: flags.Flag) -> None:
    args, _ = _parse("restore", f"--no-{flag.long[2:]}")
    assert getattr(args, flag.dest) is False
    assert flags.screen("restore", args) == []


@pytest.mark.parametrize(("argv", "dest"), [
    (["--root", "/"], "root"),
])
def test_neutral_values_accepted(argv: list[str], dest: str) -> None:
    args, _ = _parse("restore", *argv)
    assert getattr(args, dest)
    assert flags.screen("restore", args) == []


@pytest.mark.parametrize(("argv", "mode"), [
    ([], None), (["--manage-cgroups"], "soft"), (["--manage-cgroups=ignore"], "ignore"),
    (["--manage-cgroups", "strict"], "strict"),
])
def test_manage_cgroups_passed(argv: list[str], mode: str | None) -> None:
    """--manage-cgroups[=MODE] goes to dump and restore; bare, it is soft (as in criu);
    without it None (criu's default, soft, chosen by cgroups.py)."""
    for command in ("dump", "restore"):
        args, _ = _parse(command, *(["-t", "1"] if command == "dump" else []), *argv)
        assert flags.screen(command, args) == []
        assert flags.api_kwargs(command, args).get("manage_cgroups") == mode


def test_refused_at_restore_only() -> None:
    """-s leaves a dump's processes stopped; leaving restored ones stopped is refused."""
    args, _ = _parse("dump", "-t", "1", "-s")
    assert flags.screen("dump", args) == []
    assert flags.api_kwargs("dump", args)["leave_stopped"] is True
    args, _ = _parse("restore", "-s")
    with pytest.raises(UnsupportedError, match="^--leave-stopped: leaving restored"):
        flags.screen("restore", args)


def test_flag_of_another_command_has_no_effect() -> None:
    args, _ = _parse("restore", "--ghost-limit", "1M", "-R")
    notes = flags.screen("restore", args)
    assert "--ghost-limit accepted without effect: criu gives it no meaning for restore" in notes
    assert "--leave-running accepted without effect: criu gives it no meaning for restore" \
        in notes
    assert "ghost_limit" not in flags.api_kwargs("restore", args)


def test_api_kwargs() -> None:
    args, _ = _parse("dump", "-t", "5", "-R", "-j", "--ghost-limit", "2M", "--track-mem",
                     "--prev-images-dir", "../p")
    assert flags.api_kwargs("dump", args) == {
        "leave_running": True, "shell_job": True, "ghost_limit": 2 << 20, "track_mem": True,
        "prev_images_dir": "../p"}
    args, _ = _parse("restore", "--inherit-fd", "fd[3]:a", "--inherit-fd", "fd[4]:b",
                     "--no-shell-job")
    assert flags.api_kwargs("restore", args) == {"inherit_fds": ["fd[3]:a", "fd[4]:b"],
                                                 "shell_job": False}


# ------------------------------------------------------------ the command line's shape


@pytest.mark.parametrize(("argv", "expected"), [
    (["dump", "-t", "1"], ["dump", "-t", "1"]),
    (["-v4", "-D", "dump", "dump", "-t", "1"], ["dump", "-v4", "-D", "dump", "-t", "1"]),
    (["--images-dir", "restore", "restore"], ["restore", "--images-dir", "restore"]),
    (["-o", "x.log", "--shell-job", "restore", "-d"], ["restore", "-o", "x.log",
                                                        "--shell-job", "-d"]),
    (["--ext-unix-sk", "dump"], ["dump", "--ext-unix-sk"]),  # an optional value: not eaten
    (["frobnicate", "dump"], ["frobnicate", "dump"]),  # argparse names the unknown word
])
def test_command_first(argv: list[str], expected: list[str]) -> None:
    assert flags.command_first(argv, flags.CRIU_COMMANDS) == expected


@pytest.mark.parametrize(("argv", "level"), [
    ([], None), (["-v0"], 0), (["-v4"], 4), (["-v"], 3), (["-vv"], 4), (["-vvvv"], 4),
    (["--verbosity"], 3), (["--verbosity=1"], 1), (["-v1", "-v"], 2), (["-v", "-v"], 4),
])
def test_verbosity(argv: list[str], level: int | None) -> None:
    """As criu: -vN and --verbosity=N set the level, each v raises it from 2 (at most 4)."""
    out = flags.verbosity(["-t", "1", *argv])
    assert out[:2] == ["-t", "1"]
    assert out[2:] == ([] if level is None else [f"--verbosity={level}"])


def test_exec_cmd_after_double_dash() -> None:
    args, tail = _parse("restore", "-D", "d", "--exec-cmd", "--", "prog", "-v", "--x")
    assert args.exec_cmd and tail == ["prog", "-v", "--x"]


CONFIG = """\
# a comment
tcp-close   # not this one: see below
no-tcp-close
ghost-limit 2M
log-file "my log.txt"
external "unix[12]"
action-script "echo \\"hi\\" # not a comment"

verbosity 4
"""


def test_parse_config() -> None:
    assert flags.parse_config(CONFIG, "c.conf") == [
        "--tcp-close", "--no-tcp-close", "--ghost-limit=2M", "--log-file=my log.txt",
        "--external=unix[12]", '--action-script=echo "hi" # not a comment', "--verbosity=4"]


@pytest.mark.parametrize(("text", "message"), [
    ('log-file "x', 'c.conf:1: unterminated "'),
    ("--tree 5", "c.conf:1: expected an option without its leading --"),
    ("a b c", "c.conf:1: expected an option without its leading --"),
])
def test_bad_config(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        flags.parse_config(text, "c.conf")


def test_config_files_in_criu_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default files, then $CRIU_CONFIG_FILE, then --config, then the command line: the
    last word wins."""
    home = tmp_path / "home" / ".criu"
    home.mkdir(parents=True)
    (home / "default.conf").write_text("ghost-limit 1K\nshell-job\n")
    env_conf = tmp_path / "env.conf"
    env_conf.write_text("ghost-limit 2K\n")
    given = tmp_path / "given.conf"
    given.write_text("ghost-limit 3K\ntrack-mem\n")
    monkeypatch.setenv("CRIU_CONFIG_FILE", str(env_conf))
    args, _ = _parse("dump", "-t", "1", "--config", str(given))
    assert (args.ghost_limit, args.shell_job, args.track_mem) == (3 << 10, True, True)
    args, _ = _parse("dump", "-t", "1", "--config", str(given), "--ghost-limit", "4K",
                     "--no-shell-job")
    assert (args.ghost_limit, args.shell_job) == (4 << 10, False)
    args, _ = _parse("dump", "-t", "1", "--no-default-config")
    assert (args.ghost_limit, args.shell_job) == (2 << 10, None)
    monkeypatch.delenv("CRIU_CONFIG_FILE")
    args, _ = _parse("dump", "-t", "1")
    assert (args.ghost_limit, args.shell_job) == (1 << 10, True)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--config .*: no such file"):
        _parse("dump", "-t", "1", "--config", str(tmp_path / "nope.conf"))


# ------------------------------------------------------------ through the command


def _cli(*args: str) -> tuple[int, str]:
    """Exit status and stderr of ``ckpt ARGS`` (HOME is the test's: no user config)."""
    res = run_ckpt(*args)
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, res.stderr


@pytest.mark.parametrize(("argv", "line"), [
    (["dump", "--lazy-pages"], "ckpt dump: error: --lazy-pages: criu's remote post-copy "
                               "from a frozen source is not supported: dump, then `ckpt "
                               "lazy-pages` and `ckpt restore --lazy-pages` on the images"),
    (["dump", "--cgroup-yard", "/x"], "ckpt dump: error: --cgroup-yard /x: cgroup roots, "
                                      "yards and chosen knobs are not supported yet"),
    (["page-server", "--lazy-pages", "--port", "1"],
     "ckpt page-server: error: --lazy-pages: criu's remote post-copy is not supported: the "
     "lazy-pages daemon serves local images"),
    (["restore", "--veth-pair", "a=b"], "ckpt restore: error: --veth-pair a=b: namespaces "
                                        "are not supported yet"),
])
def test_refused_flag_one_line(tmp_path: Path, argv: list[str], line: str) -> None:
    """Exit 1, one line naming the flag; nothing created."""
    images = tmp_path / "images"
    extra = ["-t", str(free_pid())] if argv[0] == "dump" else []
    code, err = _cli(*argv, *extra, "-D", str(images), "-o", "x.log")
    assert (code, err) == (1, line + "\n")
    assert not images.exists()


def test_no_effect_flags_logged(tmp_path: Path) -> None:
    """Accepted; the log says why they change nothing (the dump then fails: no process)."""
    images = tmp_path / "images"
    pid = free_pid()
    code, err = _cli("-v4", "--force-irmap", "--irmap-scan-path", "/usr", "dump",
                     "-t", str(pid), "-D", str(images), "-o", "d.log", "--cpu-cap=none",
                     "--no-tcp-established", "--auto-dedup")
    assert code == 1 and f"process {pid}" in err, err
    log = (images / "d.log").read_text()
    for flag in ("--force-irmap", "--irmap-scan-path", "--cpu-cap", "--auto-dedup"):
        assert f"{flag} accepted without effect" in log, log
    assert "tcp-established" not in log


def test_work_dir_holds_the_log(tmp_path: Path) -> None:
    images, work = tmp_path / "images", tmp_path / "work"
    work.mkdir()
    code, _ = _cli("dump", "-t", str(free_pid()), "-D", str(images), "-W", str(work),
                   "-o", "w.log", "--log-pid", "-v3")
    assert code == 1
    assert "--log-pid accepted without effect" in (work / "w.log").read_text()
    assert not images.exists()


def test_images_dir_defaults_to_the_current_folder(tmp_path: Path) -> None:
    """As criu: without -D the images are in the current folder."""
    res = subprocess.run([*ckpt_cmd(), "restore"], cwd=tmp_path, capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, timeout=scaled(60))
    assert res.returncode == 1
    assert res.stderr == "ckpt restore: error: ./inventory.json: missing; . holds no " \
        "complete dump\n"
