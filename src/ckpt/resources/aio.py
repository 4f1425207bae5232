"""Linux AIO contexts (io_setup): the ring a context shows as a mapping, "/[aio]".

A context is known by its ring's address (the aio_context_t is that address). Dump:
the ring's header (struct aio_ring: nr, head, tail, checked to be a ring this code
understands) goes in the mapping's entry; its pages, with the completed events not
yet reaped, go in the pages file like any other memory. Requests still in flight
are not visible from outside the kernel and are not saved (with a process frozen,
only O_DIRECT I/O and IOCB_CMD_POLL can be).

Restore, inside the process, once its other mappings exist: io_setup a context of
the same size; complete as many one-byte writes to /dev/null (synchronous, so
done at once) as the saved ring had events up to its tail, reaping them by moving
the ring's head, so that the kernel's own tail is the saved one; then move the ring
to its saved address with mremap (the kernel follows: the context's id becomes
that address). The pages restore then puts back the saved header and events.
"""

from __future__ import annotations

import os
import struct

from ..errors import RestoreError, UnsupportedError
from ..kernel import libc
from ..kernel.inject import Injector
from ..schema import Bad, Check, Int, Obj

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

PATH = "/[aio] (deleted)"
_HEADER = struct.Struct("<8I")  # id, nr, head, tail, magic, compat, incompat, header length
_EVENT = 32  # struct io_event
_MAGIC, _COMPAT, _INCOMPAT = 0xA10A10A1, 1, 0
_IOCB = struct.Struct("<QIIHhIQQqQII")  # struct iocb, 64 bytes
_IOCB_CMD_PWRITE = 1
_BATCH = 64  # iocbs submitted at once
SCRATCH = 16 << 10  # where in the restore's scratch area this module writes


def _in_ring(header: dict[str, int]) -> None:
    if header["head"] >= header["nr"] or header["tail"] >= header["nr"]:
        raise Bad("head and tail must be below nr")


# A ring's header, in its mapping's entry of mm-PID.json.
SCHEMA = Check(Obj(nr=Int(1, 1 << 24), head=Int(0, 1 << 24), tail=Int(0, 1 << 24)), _in_ring)


def is_ring(path: str) -> bool:
    return path == PATH


def dump(pid: int, start: int, end: int) -> dict[str, Any]:
    """The header of the ring at ``start`` of frozen ``pid``, checked."""
    where = f"process {pid} AIO context {start:#x}"
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        raw = os.pread(fd, _HEADER.size, start)
    finally:
        os.close(fd)
    if len(raw) != _HEADER.size:
        raise UnsupportedError(f"{where}: its ring cannot be read")
    _id, nr, head, tail, magic, compat, incompat, hlen = _HEADER.unpack(raw)
    size_nr = (end - start - _HEADER.size) // _EVENT
    if (magic, compat, incompat, hlen) != (_MAGIC, _COMPAT, _INCOMPAT, _HEADER.size) \
            or nr != size_nr or head >= nr or tail >= nr:
        raise UnsupportedError(f"{where}: a ring of a layout ckpt does not know "
                               f"(magic {magic:#x}, nr {nr}, header {hlen} bytes); not supported")
    return {"nr": nr, "head": head, "tail": tail}


def _requested(nr: int) -> int:
    """What io_setup was asked for, to get ``nr`` events again: the kernel doubles the
    request and adds 2 (after raising it to 4 per CPU), then fills the ring's pages."""
    return (nr - 2) // 2


def restore(inj: Injector, scratch: int, v: dict[str, Any], devnull: int) -> None:
    """Make the AIO context of mapping entry ``v`` again, at its saved address, with
    the kernel's tail where it was. ``devnull``: a target fd of /dev/null, write-only."""
    ring = v["aio"]
    nr, head, tail = int(ring["nr"]), int(ring["head"]), int(ring["tail"])
    length = v["end"] - v["start"]
    where = f"AIO context {v['start']:#x}"
    if not 2 < nr == (length - _HEADER.size) // _EVENT or head >= nr or tail >= nr:
        raise RestoreError(f"{where}: bad ring in the image ({ring})")
    at = scratch + SCRATCH
    inj.write(at, bytes(8))
    try:
        inj.call("io_setup", _requested(nr), at)
    except OSError as e:
        raise RestoreError(f"{where}: io_setup failed: {os.strerror(e.errno)}") from None
    ctx = struct.unpack("<Q", inj.read(at, 8))[0]
    got = _HEADER.unpack(inj.read(ctx, _HEADER.size))[1]
    if got != nr:
        raise RestoreError(f"{where}: this machine makes rings of {got} events for the "
                           f"request that made {nr} (another CPU count?)")
    _advance_tail(inj, at, ctx, devnull, head, tail if tail >= head else nr + tail)
    moved = inj.call("mremap", ctx, length, length, libc.MREMAP_MAYMOVE | libc.MREMAP_FIXED,
                     v["start"])
    if moved != v["start"]:
        raise RestoreError(f"{where}: the ring could not be moved to its address")


def _advance_tail(inj: Injector, at: int, ctx: int, devnull: int, head: int,
                  count: int) -> None:
    """Complete ``count`` writes at once, the ring's head following (up to ``head``)."""
    iocbs, ptrs, byte = at + 64, at + 64 + _BATCH * _IOCB.size, at + 8
    done = 0
    while done < count:
        k = min(_BATCH, count - done)
        inj.write(iocbs, b"".join(
            _IOCB.pack(0, 0, 0, _IOCB_CMD_PWRITE, 0, devnull, byte, 1, 0, 0, 0, 0)
            for _ in range(k)))
        inj.write(ptrs, b"".join(struct.pack("<Q", iocbs + i * _IOCB.size) for i in range(k)))
        try:
            n = inj.call("io_submit", ctx, k, ptrs)
        except OSError as e:
            raise RestoreError(f"AIO context: io_submit failed: {os.strerror(e.errno)}") from None
        if n <= 0:
            raise RestoreError("AIO context: io_submit took no request")
        done += n
        # Reaped: the kernel counts free slots from the ring's head.
        inj.write(ctx + 8, struct.pack("<I", min(done, head)))
