"""Restore as root takes only images no one but root could have written (as sshd's
StrictModes), unless told otherwise with --trust-images, which warns; and what it
makes on the host from image content stays within what the process had.

An unprivileged user's images, edited to make its process root (uid 0, every
capability) or to clear its no_new_privs, with every checksum recomputed, are
refused; the same images made root's are restored exactly as edited (the edit is
then root's), which is why the owner is what counts. A deleted device node is made
again only with no more access than /dev gives to that device; a deleted file whose
folder is a symbolic link now is made next to it, never where the link leads."""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import pytest

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Builder,
    Procs,
    ckpt_fails,
    ckpt_ok,
    dump_and_check_dead,
    edit_image,
    is_alive,
    left_behind,
    printed_fds,
    proc_status,
    restore_detached,
    scaled,
    ticks_go_on,
)

NOBODY = 65534


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
    edit_image(images, f"core-{target.pid}.json", _as_root_with_every_cap)
    _chown_tree(images, NOBODY)
    err = ckpt_fails("restore", "-D", images, "-d")
    assert err == (f"ckpt restore: error: {images} is the image folder of user {NOBODY}: "
                   "images that anyone but root could have written are not restored (a "
                   "crafted image runs anything with ckpt's privileges); make them root's "
                   "and writable by root only, or restore with --trust-images\n")
    assert not left_behind(target.pid)
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


def _guarded_device() -> tuple[int, int] | None:
    """A character device /dev has a node of that others may not write to."""
    for e in os.scandir("/dev"):
        st = e.stat(follow_symlinks=False)
        if stat.S_ISCHR(st.st_mode) and not st.st_mode & 0o002:
            return os.major(st.st_rdev), os.minor(st.st_rdev)
    return None


def test_deleted_device_nodes_grant_no_more_than_dev(procs: Procs, images: Path,
                                                     tmp_path: Path) -> None:
    """A deleted node of a device /dev guards, open to all, or of a device /dev has no
    node of: refused at dump, naming it, the process left running. (A node no wider
    than /dev's is restored: tests/test_ghost_nodes.py.)"""
    guarded = _guarded_device()
    if guarded is None:
        pytest.skip("/dev has no character device that others may not write to")
    d = tmp_path / "nodes"
    d.mkdir()
    for name, dev in (("wide", guarded), ("unknown", (250, 250))):
        os.mknod(d / name, 0o666 | stat.S_IFCHR, os.makedev(*dev))
        os.chmod(d / name, 0o666)
        target = procs.start([PYTHON, PROGS / "holdfiles.py", f"n=path:{d / name}",
                              f"unlink:{d / name}"], name=name)
        target.out.wait_line(r"^3 ")
        err = ckpt_fails("dump", "-t", target.pid, "-D", images)
        assert f"cannot recreate deleted character device {d / name}: " in err, err
        assert ("would give more access to device" if name == "wide"
                else "/dev has no node of device 250:250") in err, err
        assert is_alive(target.pid)


def test_ghost_folder_now_a_symbolic_link(procs: Procs, images: Path,
                                          tmp_path: Path) -> None:
    """A deleted file whose folder was replaced by a symbolic link since the dump comes
    back next to the link, under a hidden name, and nothing is made where it leads."""
    d = tmp_path / "top"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("deleted data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = procs.start([PYTHON, PROGS / "holdfiles.py", f"f=rw:{d / 'sub' / 'f'}",
                          f"unlink:{d / 'sub' / 'f'}"])
    fds = printed_fds(target.out)
    target.out.wait_line(r"^3 ")
    dump_and_check_dead(procs, target, images)
    (d / "sub").rmdir()
    (d / "sub").symlink_to(elsewhere)
    restored = restore_detached(procs, target.pid, target.out, images)
    ticks_go_on(target.out)
    assert os.readlink(f"/proc/{restored.pid}/fd/{fds['f']}") == \
        f"{d}/.f.ckpt-ghost.0 (deleted)"
    with open(f"/proc/{restored.pid}/fd/{fds['f']}") as f:
        assert f.read() == "deleted data"
    assert os.listdir(elsewhere) == [] and sorted(os.listdir(d)) == ["sub"]


def test_pidfile_never_through_a_planted_link(build: Builder, procs: Procs,
                                              tmp_path: Path) -> None:
    """A symbolic link planted under the pidfile's name is removed, not followed: the
    file it led to is unchanged, the pidfile holds the restored PID."""
    images = tmp_path / "images"
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    dump_and_check_dead(procs, target, images)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "pid").symlink_to(victim)
    restore_detached(procs, target.pid, target.out, images, "--pidfile", tmp_path / "pid")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "pid").is_symlink()
    assert (tmp_path / "pid").read_text() == f"{target.pid}\n"


def _says_hi(path: Path, pid: int) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(scaled(10))
        c.connect(str(path))
        assert c.recv(64) == f"hi {pid}\n".encode()


def test_socket_file_folder_now_a_users_symbolic_link(procs: Procs, images: Path,
                                                      tmp_path: Path) -> None:
    """A listener bound in a folder of nobody's, through a symbolic link of root's:
    replaced since the dump by nobody's link to a folder of root's, the folder makes
    the restore refuse, naming it, with nothing made where the link leads and
    nothing running; put back, the socket comes back through root's link, under the
    same name, its file with its owner and mode, and answers."""
    users = tmp_path / "users"
    users.mkdir()
    os.chown(users, NOBODY, NOBODY)
    (tmp_path / "via").symlink_to(users)  # root's link on the way, as /var/run -> /run
    path = tmp_path / "via" / "l.sock"
    target = procs.start([PYTHON, PROGS / "unixlisten.py", str(path)])
    target.out.wait_line("^ready")
    os.chmod(users / "l.sock", 0o640)
    os.chown(users / "l.sock", NOBODY, 0)
    _says_hi(path, target.pid)
    dump_and_check_dead(procs, target, images)

    victim = tmp_path / "root-only"
    victim.mkdir(mode=0o700)
    users.rename(tmp_path / "users.moved")  # what nobody could do in a folder of theirs
    users.symlink_to(victim)
    os.lchown(users, NOBODY, NOBODY)
    err = ckpt_fails("restore", "-D", images, "-d")
    assert f"cannot bind {path}: users on the way is a symbolic link of uid {NOBODY}'s" \
        in err, err
    assert os.listdir(victim) == [] and not is_alive(target.pid)

    users.unlink()
    (tmp_path / "users.moved").rename(users)
    restored = restore_detached(procs, target.pid, target.out, images)
    ticks_go_on(target.out)
    st = os.lstat(users / "l.sock")
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (NOBODY, 0)
    _says_hi(path, restored.pid)


def test_socket_file_through_a_users_symbolic_link(procs: Procs, images: Path,
                                                   tmp_path: Path) -> None:
    """A listener bound through a symbolic link of a user's (nobody's ~/run -> a folder):
    the restore follows root's links only, so it reaches the folder by the path the
    dump resolved (it refused the link after the kill); the socket comes back in that
    folder under the name the process gave, and answers through the link."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "run"
    link.symlink_to(real)
    os.lchown(link, NOBODY, NOBODY)
    path = link / "l.sock"
    target = procs.start([PYTHON, PROGS / "unixlisten.py", str(path)])
    target.out.wait_line("^ready")
    _says_hi(path, target.pid)
    dump_and_check_dead(procs, target, images)
    restored = restore_detached(procs, target.pid, target.out, images)
    ticks_go_on(target.out)  # "BAD" if its name is not the path it gave
    assert stat.S_ISSOCK(os.lstat(real / "l.sock").st_mode) and link.is_symlink()
    _says_hi(path, restored.pid)
