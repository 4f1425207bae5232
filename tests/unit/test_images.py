"""Image folders are checked before use: a folder written by ImageWriter reads back,
and any damage (a flipped byte, a truncated or grown file, a missing file, a changed
inventory, an unknown format version) is an ImageError naming the file."""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path

import pytest

from ckpt.errors import CkptError, ImageError
from ckpt.images import (
    FEATURES,
    IMAGE_NAME,
    INVENTORY,
    READ_VERSIONS,
    VERSION,
    ImageReader,
    ImageWriter,
    _canonical,
)
from ckpt_helpers import run_ckpt

CORE = {"pid": 4242, "comm": "demo", "regs": list(range(27))}
MM = {"vmas": [{"start": 4096, "end": 12288, "prot": 3}], "brk": 65536}
PAGES = bytes(range(256)) * 48  # three pages of raw data
FILES = ["core-4242.json", "mm-4242.json", "pages-4242.img"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A complete image folder: two JSON files, one raw file, the inventory."""
    d = tmp_path / "images"
    w = ImageWriter(str(d))
    w.write_json("core-4242.json", CORE)
    w.write_json("mm-4242.json", MM)
    raw = w.raw("pages-4242.img")
    raw.write(PAGES[:5000])
    raw.write(memoryview(PAGES)[5000:])
    w.finish({"type": "dump", "tasks": [{"pid": 4242}]})
    return d


def refused(folder: Path, culprit: Path, pattern: str) -> str:
    """Opening and verifying ``folder`` fails with an ImageError that names ``culprit``
    and matches ``pattern``; returns the message."""
    with pytest.raises(ImageError) as e:
        ImageReader(str(folder)).verify()
    msg = str(e.value)
    assert str(culprit) in msg, msg
    assert re.search(pattern, msg, re.I), f"/{pattern}/ not in: {msg}"
    assert "\n" not in msg, msg
    return msg


def flip(path: Path, index: int) -> None:
    data = bytearray(path.read_bytes())
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


def rewrite_inventory(folder: Path, change: dict[str, object], sign: bool) -> None:
    """Change fields of the inventory; with ``sign`` its checksum is made to match again."""
    path = folder / INVENTORY
    body = json.loads(path.read_text())
    body.update(change)
    if sign:
        del body["crc32"]
        body["crc32"] = zlib.crc32(_canonical(body))
    path.write_text(json.dumps(body))


# ------------------------------------------------------------------ intact


def test_written_folder_reads_back(folder: Path) -> None:
    reader = ImageReader(str(folder))
    reader.verify()
    assert reader.version == VERSION
    assert reader.inventory["tasks"] == [{"pid": 4242}]
    assert sorted(reader.files) == FILES
    assert reader.files["pages-4242.img"] == {"size": len(PAGES), "crc32": zlib.crc32(PAGES)}
    assert reader.load_json("core-4242.json") == CORE
    assert reader.load_json("mm-4242.json") == MM
    assert (folder / "pages-4242.img").read_bytes() == PAGES
    assert not [p for p in os.listdir(folder) if p.endswith(".tmp")]


# ------------------------------------------------------------------ damaged files


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("where", [0.0, 0.5, 1.0], ids=["first", "middle", "last"])
def test_flipped_byte(folder: Path, name: str, where: float) -> None:
    path = folder / name
    flip(path, min(int(path.stat().st_size * where), path.stat().st_size - 1))
    refused(folder, path, r"corrupted \(checksum mismatch\)")


@pytest.mark.parametrize("name", FILES)
def test_truncated_file(folder: Path, name: str) -> None:
    path = folder / name
    size = path.stat().st_size
    os.truncate(path, size // 2)
    msg = refused(folder, path, r"truncated")
    assert f"{size // 2} bytes" in msg and str(size) in msg, msg


def test_grown_file(folder: Path) -> None:
    path = folder / "pages-4242.img"
    with open(path, "ab") as f:
        f.write(b"\0")
    refused(folder, path, rf"{len(PAGES) + 1} bytes, the inventory says {len(PAGES)}")


@pytest.mark.parametrize("name", FILES)
def test_missing_file(folder: Path, name: str) -> None:
    (folder / name).unlink()
    refused(folder, folder / name, r"missing")


def test_json_file_not_in_inventory(folder: Path) -> None:
    (folder / "extra.json").write_text("{}\n")
    reader = ImageReader(str(folder))
    reader.verify()  # files the inventory does not list are not read at all
    with pytest.raises(ImageError, match=r"extra\.json: not listed in the inventory"):
        reader.load_json("extra.json")


# ------------------------------------------------------------------ the inventory


def test_missing_inventory(folder: Path) -> None:
    (folder / INVENTORY).unlink()
    msg = refused(folder, folder / INVENTORY, r"missing")
    assert "no complete dump" in msg, msg


def test_missing_folder(tmp_path: Path) -> None:
    refused(tmp_path / "nowhere", tmp_path / "nowhere", r"does not exist")


def test_inventory_field_changed(folder: Path) -> None:
    """A task's PID changed: the inventory's own checksum no longer matches."""
    rewrite_inventory(folder, {"tasks": [{"pid": 4243}]}, sign=False)
    refused(folder, folder / INVENTORY, r"corrupted \(checksum mismatch\)")


def test_inventory_file_size_changed(folder: Path) -> None:
    """The size recorded for a file changed, to hide a truncation: caught by the
    inventory's own checksum."""
    body = json.loads((folder / INVENTORY).read_text())
    body["files"]["pages-4242.img"]["size"] -= 1
    rewrite_inventory(folder, {"files": body["files"]}, sign=False)
    refused(folder, folder / INVENTORY, r"checksum mismatch")


def test_inventory_bad_checksum(folder: Path) -> None:
    rewrite_inventory(folder, {"crc32": 12345}, sign=False)
    refused(folder, folder / INVENTORY, r"corrupted \(checksum mismatch\)")


def test_inventory_not_json(folder: Path) -> None:
    path = folder / INVENTORY
    path.write_bytes(path.read_bytes()[:-10])
    refused(folder, path, r"corrupted")


@pytest.mark.parametrize("body", [[], {"format": "criu", "version": VERSION}, "x"],
                         ids=["list", "other-format", "string"])
def test_not_an_inventory(folder: Path, body: object) -> None:
    (folder / INVENTORY).write_text(json.dumps(body))
    refused(folder, folder / INVENTORY, r"not a ckpt image inventory")


@pytest.mark.parametrize("version", [max(READ_VERSIONS) + 1, 0, "2", None])
@pytest.mark.parametrize("sign", [True, False], ids=["signed", "unsigned"])
def test_unknown_version(folder: Path, version: object, sign: bool) -> None:
    """A version this ckpt does not read is named as such, whether or not the
    checksum matches: the version is checked first."""
    rewrite_inventory(folder, {"version": version}, sign=sign)
    msg = refused(folder, folder / INVENTORY, rf"image format version {version} is not "
                                              rf"supported")
    assert ", ".join(map(str, READ_VERSIONS)) in msg, msg


@pytest.mark.parametrize("needs", [["no-such-feature"], ["tcp", "teleport"]])
def test_unknown_feature_is_refused(folder: Path, needs: list[str]) -> None:
    """A dump that uses a feature this ckpt does not know is refused, naming it."""
    rewrite_inventory(folder, {"needs": needs}, sign=True)
    msg = refused(folder, folder / INVENTORY, r"which this ckpt does not know")
    assert needs[-1] in msg and "tcp," not in msg, msg


@pytest.mark.parametrize("needs", ["tcp", [1], {"tcp": 1}])
def test_malformed_needs_is_refused(folder: Path, needs: object) -> None:
    rewrite_inventory(folder, {"needs": needs}, sign=True)
    refused(folder, folder / INVENTORY, r"needs: not a list of feature names")


def test_needs_are_recorded(tmp_path: Path) -> None:
    """What a dump needs is listed once, sorted; a feature name not in FEATURES is a bug."""
    w = ImageWriter(str(tmp_path / "f"))
    for name in ("tcp", "fown", "tcp"):
        w.need(name)
    with pytest.raises(ValueError):
        w.need("teleport")
    w.finish({"tasks": []})
    reader = ImageReader(str(tmp_path / "f"))
    assert reader.inventory["needs"] == ["fown", "tcp"]
    assert set(reader.inventory["needs"]) <= set(FEATURES)


# ------------------------------------------------------------------ the writer


def test_new_dump_removes_a_stale_inventory(folder: Path) -> None:
    """A second dump into the folder (overwrite): until it finishes, the folder is no
    dump at all."""
    w = ImageWriter(str(folder), overwrite=True)
    refused(folder, folder / INVENTORY, r"missing")
    w.write_json("core-4242.json", CORE)
    w.finish({"type": "dump", "tasks": [{"pid": 4242}]})
    ImageReader(str(folder)).verify()


def test_abort_after_finish_leaves_no_dump(folder: Path) -> None:
    w = ImageWriter(str(folder), overwrite=True)
    w.write_json("core-4242.json", CORE)
    w.finish({"type": "dump", "tasks": [{"pid": 4242}]})
    w.abort()
    refused(folder, folder / INVENTORY, r"missing")


# ------------------------------------------------------------------ through the CLI


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
def test_show_refuses_a_damaged_folder(folder: Path, damage: str) -> None:
    """``ckpt show`` checks the folder first: one line naming the file, exit 1."""
    path = folder / "mm-4242.json"
    if damage == "flip":
        flip(path, 3)
    elif damage == "truncate":
        os.truncate(path, 5)
    else:
        path.unlink()
    res = run_ckpt("show", folder)
    assert res.returncode == 1, res.stderr
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckpt show: error: "), res.stderr
    assert str(path) in lines[0], lines[0]


# ------------------------------------------------------------------ the folder is no trap


def test_planted_symlinks_are_replaced(tmp_path: Path) -> None:
    """Symlinks planted under the names a dump writes (towards a file of the dumper's)
    are replaced by the dump's own files, never written through; without overwrite the
    folder is refused, naming them."""
    canary = tmp_path / "canary"
    canary.write_text("keep\n")
    d = tmp_path / "images"
    d.mkdir()
    names = ["core-4242.json", "pages-4242.img", "inventory.json.tmp", "inventory.json"]
    for name in names:
        (d / name).symlink_to(canary)
    with pytest.raises(CkptError, match=r"already holds images \(core-4242.json, "
                                        r"inventory.json, inventory.json.tmp, \.\.\.\)"):
        ImageWriter(str(d))
    w = ImageWriter(str(d), overwrite=True)
    w.write_json("core-4242.json", CORE)
    w.raw("pages-4242.img").write(PAGES)
    w.finish({"type": "dump", "tasks": [{"pid": 4242}]})
    w.close()
    assert canary.read_text() == "keep\n"
    for name in ["core-4242.json", "pages-4242.img", "inventory.json"]:
        assert not (d / name).is_symlink(), name
    assert not os.path.lexists(d / "inventory.json.tmp")
    ImageReader(str(d)).verify()


def test_abort_removes_what_the_dump_wrote(tmp_path: Path) -> None:
    """A failed dump leaves the folder as it found it: the next dump needs no overwrite."""
    d = tmp_path / "images"
    d.mkdir()
    (d / "notes.txt").write_text("mine\n")
    w = ImageWriter(str(d))
    w.write_json("core-4242.json", CORE)
    w.raw("pages-4242.img").write(PAGES)
    w.abort()
    assert sorted(os.listdir(d)) == ["notes.txt"]
    ImageWriter(str(d)).close()


@pytest.mark.parametrize("name, image", [("core-12.json", True), ("files.json", True),
                                         ("pages-12.img", True), ("sk-queues.img", True),
                                         ("inventory.json.tmp", True), ("dump.log", False),
                                         ("restore.pid", False), ("notes.txt", False)])
def test_image_names(name: str, image: bool) -> None:
    """What makes a folder one that holds images: the names a dump writes, not its log."""
    assert bool(IMAGE_NAME.fullmatch(name)) == image
