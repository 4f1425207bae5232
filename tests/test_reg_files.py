"""Regular files changed between dump and restore (the rule of files_reg.py): grown or
replaced files are reopened, an offset beyond the end is kept, a file that shrank is
refused at restore, and a path that leads to another file than the open one is
refused at dump, the process running on."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Procs,
    ckpt_fails,
    dump_and_check_dead,
    fd_pos_flags,
    is_alive,
    printed_fds,
    proc_status,
    restore_detached,
    ticks_go_on,
)


def test_grown_replaced_and_beyond_the_end(procs: Procs, images: Path, tmp_path: Path
                                           ) -> None:
    """A file that grew and one replaced by a larger file (a rename over it) are reopened
    at their offsets, the replaced one as the new file; an offset beyond the end of the
    file stays where it was."""
    grown, replaced, short = tmp_path / "grown", tmp_path / "replaced", tmp_path / "short"
    grown.write_bytes(b"g" * 100)
    replaced.write_bytes(b"r" * 100)
    short.write_bytes(b"s" * 10)
    target = procs.start([PYTHON, PROGS / "holdfiles.py", f"g=r:{grown}@50",
                          f"rep=rw:{replaced}@20", f"b=rw:{short}@1000"])
    target.out.wait_line(r"^3 ")
    fds = printed_fds(target.out)
    dump_and_check_dead(procs, target, images)
    with open(grown, "ab") as f:
        f.write(b"more")
    new = tmp_path / "new"
    new.write_bytes(b"n" * 200)
    new.rename(replaced)

    restored = restore_detached(procs, target.pid, target.out, images)
    ticks_go_on(target.out)
    assert [fd_pos_flags(restored.pid, fds[k])[0] for k in ("g", "rep", "b")] == [50, 20, 1000]
    assert os.stat(f"/proc/{restored.pid}/fd/{fds['rep']}").st_ino == replaced.stat().st_ino
    assert short.stat().st_size == 10


def test_shrunk_file_is_refused_at_restore(procs: Procs, images: Path, tmp_path: Path
                                           ) -> None:
    """A file truncated after the dump: the restore refuses, naming it and both sizes,
    and creates nothing."""
    data = tmp_path / "data"
    data.write_bytes(b"d" * 100)
    target = procs.start([PYTHON, PROGS / "holdfiles.py", f"d=r:{data}@10"])
    target.out.wait_line(r"^3 ")
    dump_and_check_dead(procs, target, images)
    os.truncate(data, 40)
    err = ckpt_fails("restore", "-D", images, "-d")
    assert f"{data} shrank since the dump (now 40 bytes, 100 then)" in err, err
    assert not os.path.exists(f"/proc/{target.pid}")


def test_path_leading_to_another_file_is_refused_at_dump(procs: Procs, images: Path,
                                                         tmp_path: Path) -> None:
    """A file whose path now leads elsewhere (another file mounted over it): the dump
    refuses, naming the fd and the path, and the process runs on untouched."""
    data, other = tmp_path / "data", tmp_path / "other"
    data.write_bytes(b"d" * 100)
    other.write_bytes(b"o" * 100)
    target = procs.start([PYTHON, PROGS / "holdfiles.py", f"d=r:{data}@10"])
    target.out.wait_line(r"^3 ")
    fd = printed_fds(target.out)["d"]
    subprocess.run(["mount", "--bind", other, data], check=True)
    try:
        err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    finally:
        subprocess.run(["umount", data], check=True)
    assert f"process {target.pid} fd {fd}: the path {data} leads to another file" in err, err
    assert not (images / "inventory.json").exists()
    assert is_alive(target.pid) and proc_status(target.pid)["TracerPid"] == "0"
    ticks_go_on(target.out)
