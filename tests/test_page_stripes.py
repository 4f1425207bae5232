"""Page data in stripes over two files (pages.stripes, feature ``pages-stripes``): a big
dump writes each file from a thread of its own, and every reader of page data reads the
logical stream back through the stripes: the restore, the chain of parent images of an
incremental dump, the lazy-pages daemon. A changed or missing stripe file is refused
before anything is created.

``CKPT_PAGE_STRIPES=FROM,SIZE`` makes small processes striped (1 MiB in the first file,
then stripes of 64 KiB: hundreds of them, most runs cut by one), as dumps of more than
64 MiB are by default."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from ckpt.kernel import uffd
from ckpt_helpers import (
    Builder,
    Procs,
    ckpt_fails,
    ckpt_ok,
    dump_and_check_dead,
    only_child,
    pages_bytes,
    restore_detached,
    ticks_go_on,
)
from test_incremental import churn, restore_and_check, start_incr, still_running
from test_lazy_pages import Daemon, daemons  # noqa: F401 (a fixture)

MIB = 1 << 20
SMALL_STRIPES = f"{MIB},{64 << 10}"


@pytest.fixture
def small_stripes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CKPT_PAGE_STRIPES", SMALL_STRIPES)


def striped(images: Path, pid: int) -> dict:
    """The ``stripes`` of ``pid``'s mm, checked against the folder: two files, both
    listed in the inventory, the feature named."""
    mm = json.loads((images / f"mm-{pid}.json").read_text())
    inv = json.loads((images / "inventory.json").read_text())
    s = mm["stripes"]
    assert s["files"] == [f"pages-{pid}.img", f"pages-{pid}-1.img"]
    assert set(s["files"]) <= set(inv["files"])
    assert "pages-stripes" in inv["needs"]
    return s


def verify(proc_out_pid: tuple, start: int) -> str:
    out, pid = proc_out_pid
    os.kill(pid, signal.SIGUSR1)
    return out.wait_line(r"^verify ", timeout=60, start=start)


def test_big_dump_in_stripes_restores(build: Builder, procs: Procs, images: Path) -> None:
    """96 MiB: more than 64 MiB, so striped by default; the restored process finds every
    byte of its memory, and ``ckpt show`` reads the folder."""
    target = procs.start([build("bigmem"), "96"])
    target.out.wait_line(r"^ready$", timeout=30)
    target.out.wait_numbers(2)
    dump_and_check_dead(procs, target, images, timeout=120)
    pid = target.pid
    s = striped(images, pid)
    assert s["from"] == 64 * MIB
    assert pages_bytes(images, pid) >= 96 * MIB
    assert (images / f"pages-{pid}-1.img").stat().st_size >= 12 * MIB
    ckpt_ok("show", images)
    restore_detached(procs, pid, target.out, images, timeout=120)
    assert verify((target.out, pid), len(target.out.lines())) == f"verify ok {96 * MIB}"
    target.out.wait_numbers(len(target.out.numbers()) + 2)


@pytest.mark.usefixtures("small_stripes")
@pytest.mark.parametrize("damage", ["flipped", "truncated", "missing"])
def test_damaged_second_stripe_is_refused(build: Builder, procs: Procs, images: Path,
                                          damage: str) -> None:
    """The second file changed, cut short or gone: the restore names it and fails,
    nothing left running under the PID."""
    target = procs.start([build("bigmem"), "8"])
    target.out.wait_line(r"^ready$", timeout=30)
    dump_and_check_dead(procs, target, images)
    pid = target.pid
    striped(images, pid)
    second = images / f"pages-{pid}-1.img"
    if damage == "flipped":
        data = bytearray(second.read_bytes())
        data[len(data) // 2] ^= 0x10
        second.write_bytes(bytes(data))
    elif damage == "truncated":
        os.truncate(second, second.stat().st_size - 4096)
    else:
        second.unlink()
    err = ckpt_fails("restore", "-D", images, "-d")
    assert second.name in err, err
    assert not os.path.exists(f"/proc/{pid}")


@pytest.mark.usefixtures("small_stripes")
def test_stripes_of_other_files_are_refused(build: Builder, procs: Procs,
                                            images: Path) -> None:
    """mm-PID.json naming another process's file for a stripe: refused at once."""
    from ckpt_helpers import edit_image

    target = procs.start([build("bigmem"), "8"])
    target.out.wait_line(r"^ready$", timeout=30)
    dump_and_check_dead(procs, target, images)
    pid = target.pid
    edit_image(images, f"mm-{pid}.json",
               lambda mm: mm["stripes"].update(files=[f"pages-{pid}.img", "pages-1-1.img"]))
    err = ckpt_fails("restore", "-D", images, "-d")
    assert "stripes" in err, err
    assert not os.path.exists(f"/proc/{pid}")


@pytest.mark.usefixtures("small_stripes")
def test_incremental_over_stripes(build: Builder, procs: Procs, tmp_path: Path) -> None:
    """pre-dump (striped) -> dump on top of it (striped too), a child sharing memory
    with its parent (shared memory after the runs): every byte comes back from the
    chain's stripes."""
    target = start_incr(procs, build, "-m", "160", "-f")
    pid = target.pid
    kid = procs.adopt(only_child(pid), target.out)
    parent, child = tmp_path / "parent", tmp_path / "child"
    ckpt_ok("pre-dump", "-t", pid, "-D", parent, "--track-mem")
    still_running(target)
    striped(parent, pid)
    churn(target)
    ckpt_ok("dump", "-t", pid, "-D", child, "--prev-images-dir", "../parent")
    procs.wait_gone(target)
    procs.wait_gone(kid)
    in_parent = json.loads((child / f"mm-{pid}.json").read_text())["in_parent"]
    assert sum(n for _, n in in_parent) * 4096 > 16 * MIB
    restore_and_check(procs, target, child, len(target.out.numbers()), child=True)


@pytest.mark.skipif(not uffd.available(), reason="no userfaultfd here")
@pytest.mark.usefixtures("small_stripes")
def test_lazy_pages_over_stripes(build: Builder, procs: Procs, images: Path,
                                 daemons: list[Daemon], tmp_path: Path) -> None:  # noqa: F811
    """The lazy-pages daemon checks both files and serves chunks read across stripes;
    the restore writes the pages it keeps from them too."""
    target = procs.start([build("lazyheap"), "24"])
    target.out.wait_line(r"^ready$", timeout=30)
    ticks_go_on(target.out, more=2)
    dump_and_check_dead(procs, target, images)
    striped(images, target.pid)
    daemon = Daemon(images, tmp_path / "lazy.log")
    daemons.append(daemon)
    restore_detached(procs, target.pid, target.out, images, "--lazy-pages", timeout=120)
    ticks_go_on(target.out, more=3)
    assert daemon.wait() == 0, daemon.log_text()
    assert verify((target.out, target.pid), len(target.out.lines())).startswith("verify ok ")
    ticks_go_on(target.out, more=2)


def test_spliced_pages_then_shared_memory(build: Builder, procs: Procs,
                                          shm_path: Path) -> None:
    """A process moving its own pages into the file (pages.splice: one file, never
    striped) and holding shared memory, saved after its runs: found at its offset."""
    target = start_incr(procs, build, "-m", "160", "-f")
    pid = target.pid
    kid = procs.adopt(only_child(pid), target.out)
    images = shm_path / "images"
    ckpt_ok("dump", "-t", pid, "-D", images, timeout=120)
    procs.wait_gone(target)
    procs.wait_gone(kid)
    mm = json.loads((images / f"mm-{pid}.json").read_text())
    assert "stripes" not in mm and mm["shmem"]
    restore_and_check(procs, target, images, len(target.out.numbers()), child=True)


@pytest.mark.skipif(not uffd.available(), reason="no userfaultfd here")
@pytest.mark.usefixtures("small_stripes")
def test_lazy_pages_daemon_refuses_a_changed_stripe(build: Builder, procs: Procs,
                                                    images: Path) -> None:
    """The daemon checks every file of the page data before it serves any: a flipped
    byte in the second one is named, and it does not start."""
    target = procs.start([build("lazyheap"), "8"])
    target.out.wait_line(r"^ready$", timeout=30)
    dump_and_check_dead(procs, target, images)
    second = images / f"pages-{target.pid}-1.img"
    data = bytearray(second.read_bytes())
    data[len(data) // 3] ^= 0x01
    second.write_bytes(bytes(data))
    err = ckpt_fails("lazy-pages", "-D", images, timeout=60)
    assert f"{second.name}: corrupted" in err, err
