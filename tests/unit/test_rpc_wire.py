"""The RPC's protobuf codec and option tables, as pure logic (no process involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckpt.rpc import options, schema
from ckpt.rpc.options import RequestError, screen
from ckpt.rpc.wire import UNKNOWN, WireError, decode, encode

# criu 3.17.1's answer to VERSION, as it sent it on this machine.
CRIU_3_17_VERSION = bytes.fromhex("080a10015206080310112001")


def test_decodes_criu_version_response() -> None:
    assert decode(CRIU_3_17_VERSION, "resp") == {
        "type": schema.VERSION, "success": True,
        "version": {"major_number": 3, "minor_number": 17, "sublevel": 1}}


def test_encodes_like_protobuf() -> None:
    assert encode({"type": schema.VERSION}, "req") == b"\x08\x0a"
    # field 1 (varint) -1 as ten bytes; field 10 (string); fields in number order
    assert encode({"log_file": "d", "images_dir_fd": -1}, "opts") == (
        b"\x08" + b"\xff" * 9 + b"\x01" + b"\x52\x01d")
    assert encode({"type": schema.RESTORE, "success": True, "restore": {"pid": 300}},
                  "resp") == b"\x08\x02\x10\x01\x22\x03\x08\xac\x02"


def test_round_trip_of_a_runc_like_request() -> None:
    req = {"type": schema.RESTORE, "opts": {
        "images_dir_fd": 5, "work_dir_fd": 6, "log_level": 4, "log_file": "restore.log",
        "rst_sibling": True, "notify_scripts": True, "root": "/run/runc/x/rootfs",
        "ext_mnt": [{"key": "/data", "val": "/srv/data"}, {"key": "/dev/null",
                                                           "val": "/dev/null"}],
        "inherit_fd": [{"key": "pipe:[123]", "fd": 1}, {"key": "pipe:[124]", "fd": 2}],
        "cg_root": [{"path": "/sys/fs/cgroup/x"}], "empty_ns": 0x40000000,
        "manage_cgroups_mode": 3, "ghost_limit": 1 << 20}}
    assert decode(encode(req, "req"), "req") == req


def test_message_field_sent_twice_is_merged() -> None:
    first = encode({"type": schema.DUMP, "opts": {"images_dir_fd": 3,
                                                   "external": ["unix[1]"]}}, "req")
    second = b"\x12" + bytes([len(x := encode({"images_dir_fd": 3, "pid": 7,
                                               "external": ["unix[2]"]}, "opts"))]) + x
    assert decode(first + second, "req")["opts"] == {
        "images_dir_fd": 3, "pid": 7, "external": ["unix[1]", "unix[2]"]}


def test_unknown_fields_are_skipped_and_named() -> None:
    data = (encode({"images_dir_fd": 1}, "opts")
            + b"\xf8\x07\x05"  # 127: varint
            + b"\xfd\x07" + b"\0" * 4  # 127: fixed32
            + b"\x81\x08" + b"\0" * 8  # 128: fixed64
            + b"\x82\x08\x02hi")  # 128: bytes
    assert decode(data, "opts") == {"images_dir_fd": 1, UNKNOWN: [127, 127, 128, 128]}


@pytest.mark.parametrize("data, words", [
    (b"\x08", "truncated varint"),
    (b"\x08" + b"\xff" * 11, "longer than 10"),
    (b"\x08\x01\x12\x05\x08\x01", "past the end"),
    (b"\x08\x01\x12\x02\x52\x01", "past the end"),  # inside opts
    (b"\x0a\x01x", "wire type 2, expected 0"),
    (b"\x08\x01\x12\x04\x52\x02\xff\xfe", "not UTF-8"),
    (b"\x08\x01\x12\x00", "images_dir_fd missing"),
    (b"\x08\x01\x0b", "wire type 3"),
    (b"\x00", "field number 0"),
    (b"\x08\x01\x25\x00\x00", "truncated fixed-size"),
])
def test_malformed_input(data: bytes, words: str) -> None:
    with pytest.raises(WireError, match=words):
        decode(data, "req")


def test_every_option_has_one_meaning() -> None:
    assert options.check_tables() == []


def test_screen_refuses_container_options_and_accepts_neutral_ones() -> None:
    with pytest.raises(RequestError, match="option veths: containers"):
        screen({"images_dir_fd": 3, "veths": [{"if_in": "a", "if_out": "b"}]})
    with pytest.raises(RequestError, match="option join_ns: containers"):
        screen({"images_dir_fd": 3, "join_ns": [{"ns": "net", "ns_file": "/x"}]})
    screen({"images_dir_fd": 3, "root": "/run/x", "cg_root": [{"path": "/x"}],
            "ext_mnt": [{"key": "/data", "val": "data"}], "empty_ns": 0x40000000})
    with pytest.raises(RequestError, match="option ps.fd"):
        screen({"images_dir_fd": 3, "ps": {"fd": 4}})
    screen({"images_dir_fd": 3, "root": "/", "manage_cgroups": False, "empty_ns": 0,
            "config_file": "/nonexistent/runc.conf",
            "manage_cgroups_mode": 0, "ext_mnt": [], "file_locks": False,
            "tcp_established": True, UNKNOWN: [99]})


def test_container_options_become_arguments() -> None:
    """runc's container options: ext_mnt as --external mnt[KEY]:VAL at dump and restore,
    empty_ns as "net" (other namespaces refused), root and cg_root at restore."""
    from ckpt.rpc.options import args_for
    from ckpt.rpc.schema import DUMP, RESTORE

    class _Dirs:
        images = work = "/tmp"

    opts = {"pid": 5, "ext_mnt": [{"key": "/data", "val": "data"}], "empty_ns": 0x40000000}
    args = args_for(DUMP, opts, _Dirs())  # type: ignore[arg-type]
    assert "mnt[/data]:data" in args["external"] and args["empty_ns"] == ("net",)
    args = args_for(RESTORE, {"root": "/r", "ext_mnt": [{"key": "data", "val": "/srv"}],
                              "cg_root": [{"ctrl": "cpu", "path": "/c"}, {"path": "/c"}]},
                    _Dirs())  # type: ignore[arg-type]
    assert args["root"] == "/r" and args["external"] == ("mnt[data]:/srv",)
    assert args["cg_root"] == {"cpu": "/c", "": "/c"}
    with pytest.raises(RequestError, match="empty_ns"):
        args_for(DUMP, {"pid": 5, "empty_ns": 0x20000000}, _Dirs())  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="cg_root at dump"):
        args_for(DUMP, {"pid": 5, "cg_root": [{"path": "/c"}]}, _Dirs())  # type: ignore[arg-type]


def test_config_file_wins_over_the_request(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """criu swrk: the default configuration files under the request's options, the
    request's config_file (runc's runc.conf, a container's org.criu.config) over them;
    each line becomes the criu_opts field its flag stands for."""
    from ckpt.rpc.config import with_files
    default, own = tmp_path / "default.conf", tmp_path / "own.conf"
    default.write_text("log-file default.log\ntcp-established\nshell-job\n")
    own.write_text("# the container's\nlog-file=own.log\nverbosity 1\nno-shell-job\n"
                   "manage-cgroups full\nnetwork-lock skip\nempty-ns net\n"
                   "ext-mount-map /data:data\ninherit-fd fd[5]:pipe:[12]\n"
                   "cgroup-root cpu:/a\nghost-limit 2M\nexternal unix[7]\n"
                   "skip-in-flight\nauto-dedup\n")
    monkeypatch.setenv("CRIU_CONFIG_FILE", str(default))
    monkeypatch.setenv("HOME", str(tmp_path))
    got = with_files({"images_dir_fd": 3, "log_file": "dump.log", "shell_job": True,
                      "tcp_established": False, "config_file": str(own)})
    assert got == {
        "images_dir_fd": 3, "config_file": str(own), "log_file": "own.log", "log_level": 1,
        "tcp_established": False, "shell_job": False, "manage_cgroups": True,
        "manage_cgroups_mode": 4, "network_lock": 3, "empty_ns": 0x40000000,
        "inherit_fd": [{"fd": 5, "key": "pipe:[12]"}],
        "cg_root": [{"ctrl": "cpu", "path": "/a"}], "ghost_limit": 2 << 20,
        "external": ["unix[7]"], "tcp_skip_in_flight": True}
    monkeypatch.delenv("CRIU_CONFIG_FILE")
    assert with_files({"images_dir_fd": 3, "config_file": str(tmp_path / "none.conf")}) \
        == {"images_dir_fd": 3, "config_file": str(tmp_path / "none.conf")}


@pytest.mark.parametrize("line, words", [
    ("page-server", ["page-server", "no RPC option"]),
    ("no-such-option", ["no-such-option", "not one of criu's options"]),
    ("--log-file x", ["expected an option without its leading --"]),
    ("manage-cgroups sideways", ["unknown mode sideways"]),
    ("inherit-fd 5:x", ["expected fd[N]:KEY"]),
])
def test_config_file_refused_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   line: str, words: list[str]) -> None:
    from ckpt.rpc.config import with_files
    monkeypatch.delenv("CRIU_CONFIG_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    conf = tmp_path / "c.conf"
    conf.write_text(line + "\n")
    with pytest.raises(RequestError) as e:
        with_files({"images_dir_fd": 3, "config_file": str(conf)})
    assert all(w in str(e.value) for w in [str(conf), *words]), str(e.value)
