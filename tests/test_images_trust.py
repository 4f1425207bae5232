"""Restore as root takes only images no one but root could have written (as sshd's
StrictModes), unless told otherwise with --trust-images, which warns.

An unprivileged user's images, edited to make its process root (uid 0, every
capability) or to clear its no_new_privs, with every checksum recomputed, are
refused; the same images made root's are restored exactly as edited (the edit is
then root's), which is why the owner is what counts."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

from ckpt.images import INVENTORY, _canonical
from ckpt_helpers import (
    Builder,
    Procs,
    ckpt_fails,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    proc_status,
    restore_detached,
)

NOBODY = 65534


def _edit(images: Path, name: str, change: object) -> None:
    """Change JSON image ``name`` with ``change(doc)`` and recompute the checksums, as
    the image format documents them."""
    doc = json.loads((images / name).read_text())
    change(doc)  # type: ignore[operator]
    data = json.dumps(doc).encode()
    (images / name).write_bytes(data)
    inv = json.loads((images / INVENTORY).read_text())
    inv["files"][name] = {"size": len(data), "crc32": zlib.crc32(data)}
    del inv["crc32"]
    inv["crc32"] = zlib.crc32(_canonical(inv))
    (images / INVENTORY).write_text(json.dumps(inv))


def _chown_tree(path: Path, uid: int) -> None:
    for p in [path, *path.rglob("*")]:
        os.chown(p, uid, uid)


def _as_root_with_every_cap(doc: dict) -> None:
    """uid 0 with every capability root has here, no_new_privs cleared."""
    creds = doc["task"]["creds"]
    creds["uids"] = creds["gids"] = [0, 0, 0, 0]
    mine = int(proc_status(os.getpid())["CapBnd"], 16)
    creds["caps"] = {"eff": mine, "prm": mine, "inh": 0, "bnd": mine, "amb": 0}
    creds["no_new_privs"] = 0


def test_users_edited_images_are_refused(build: Builder, procs: Procs, images: Path) -> None:
    """A process of nobody's with no_new_privs, its images made nobody's and edited to
    uid 0, every capability and no_new_privs cleared: refused, naming the folder, and
    nothing runs; made root's again (root's own edit), restored as edited."""
    target = procs.start(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                          "--clear-groups", "--no-new-privs", build("counter")])
    target.out.wait_numbers(3)
    assert proc_status(target.pid)["NoNewPrivs"] == "1"
    dump_and_check_dead(procs, target, images)
    _edit(images, f"core-{target.pid}.json", _as_root_with_every_cap)
    _chown_tree(images, NOBODY)
    err = ckpt_fails("restore", "-D", images, "-d")
    assert err == (f"ckpt restore: error: {images} is the image folder of user {NOBODY}: "
                   "images that anyone but root could have written are not restored (a "
                   "crafted image runs anything with ckpt's privileges); make them root's "
                   "and writable by root only, or restore with --trust-images\n")
    assert not is_alive(target.pid)
    _chown_tree(images, 0)
    restored = restore_detached(procs, target.pid, target.out, images)
    status = proc_status(restored.pid)
    assert status["Uid"].split() == ["0"] * 4 and status["NoNewPrivs"] == "0"
    assert status["CapEff"] == proc_status(os.getpid())["CapBnd"]


def test_group_writable_image_or_folder_above(build: Builder, procs: Procs,
                                              tmp_path: Path) -> None:
    """One image writable by its group, a folder above writable by all (not sticky), a
    symbolic link of a user on the way: each refused, naming it; --trust-images
    restores with a warning."""
    shared = tmp_path / "shared"
    shared.mkdir()
    images = shared / "images"
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    dump_and_check_dead(procs, target, images)
    mm = images / f"mm-{target.pid}.json"
    os.chmod(mm, 0o660)
    assert f"{mm} is an image writable by its group: " in ckpt_fails("restore", "-D", images)
    os.chmod(mm, 0o600)
    os.chmod(shared, 0o777)
    assert f"{shared} is a folder above writable by all: " in ckpt_fails(
        "restore", "-D", images)
    os.chmod(shared, 0o1777)  # sticky, as /tmp: no one else can rename root's folder
    link = tmp_path / "link"
    os.symlink(images, link)
    os.lchown(link, NOBODY, NOBODY)
    assert f"{link} is a symbolic link of user {NOBODY}: " in ckpt_fails(
        "restore", "-D", link)
    os.chmod(shared, 0o777)
    res = ckpt_ok("restore", "-D", images, "-d", "--trust-images")
    assert f"{shared} is a folder above writable by all: restored all the same " \
           "(--trust-images)" in res.stderr
    procs.adopt(target.pid, target.out)
    target.out.wait_numbers(len(target.out.numbers()) + 3)


def test_sticky_tmp_and_root_links_are_fine(build: Builder, procs: Procs,
                                            tmp_path: Path) -> None:
    """Under a sticky folder open to all, through a symbolic link of root's: restored."""
    sticky = tmp_path / "sticky"
    sticky.mkdir(mode=0o1777)
    os.chmod(sticky, 0o1777)
    images = sticky / "images"
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    dump_and_check_dead(procs, target, images)
    link = tmp_path / "link"
    os.symlink(images, link)
    restore_detached(procs, target.pid, target.out, link)
    shutil.rmtree(sticky / "images")

