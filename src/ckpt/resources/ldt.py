"""A process's x86 LDT (``modify_ldt``: Wine, DOSEMU, 16-bit code): read at dump with
injected calls, written back entry by entry at restore, before the registers, whose
segment selectors may name its entries (a selector naming an entry the table lacks
is silently loaded as 0).

Nothing in /proc shows an LDT. ``PROBE`` joins the calls every dump runs in each
process in one round trip (task.dump): reading one byte of the table to address 0
faults only when the process has a table, so a process without one costs nothing
more. One with one has it read whole (8192 entries, 64 KiB at most, the size of the
dump's scratch area). The table belongs to the address space: threads share it, a
fork copies it, an exec drops it; a restored process gets its own once its children
are cloned (a child that had none keeps none).

Every entry the kernel holds is one it made from a ``struct user_desc`` (or zero):
``Descriptor`` turns it back into one, and refuses a value no ``user_desc`` makes
(at dump: never seen; at restore: a forged image), so the restore writes only what
the process itself could have written.
"""

from __future__ import annotations

import struct

from ..errors import DumpError, UnsupportedError
from ..schema import U64, Bad, Field, Int, List, Tup

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from ..kernel.inject import Injector

ENTRIES = 8192  # LDT_ENTRIES
TABLE_BYTES = ENTRIES * 8
FEATURE = "ldt"
_READ, _WRITE = 0, 0x11  # modify_ldt's functions: read the table, write one entry
_EFAULT, _ENOSYS = 14, 38
# The one call of the dump's batch (task.dump) that tells whether there is a table.
PROBE = ("modify_ldt", (_READ, 0, 1))
_USER_DESC = struct.Struct("<IIII")  # entry_number, base_addr, limit, the bit fields


def _signed32(res: int) -> int:
    """modify_ldt's result: an int the kernel puts in rax unsigned (0xfffffff2: -EFAULT)."""
    res &= 0xFFFFFFFF
    return res - (1 << 32) if res >= 1 << 31 else res


def user_desc(raw: int) -> tuple[int, int, int] | None:
    """The ``struct user_desc`` (base, limit, bit fields) the kernel made entry ``raw``
    from (fill_ldt: type accessed, S set, DPL 3, never a 64-bit code segment); None
    if no user_desc makes it."""
    limit = (raw & 0xFFFF) | ((raw >> 48) & 0xF) << 16
    base = ((raw >> 16) & 0xFFFFFF) | ((raw >> 56) & 0xFF) << 24
    kind = (raw >> 40) & 0xF
    if (raw >> 44) & 0x7 != 0b111 or (raw >> 53) & 1 or not kind & 1:  # S, DPL 3, L
        return None
    present = (raw >> 47) & 1
    contents, read_exec_only = kind >> 2, not (kind >> 1) & 1
    if contents == 3 and present:  # the kernel refuses to make it
        return None
    bits = ((raw >> 54) & 1 | contents << 1 | read_exec_only << 3 | ((raw >> 55) & 1) << 4
            | (not present) << 5 | ((raw >> 52) & 1) << 6)
    return base, limit, bits


class Descriptor(Field):
    """An LDT entry as the kernel holds it, one a ``struct user_desc`` makes."""

    def check(self, value: object) -> None:
        U64.check(value)
        if user_desc(value) is None:  # type: ignore[arg-type]
            raise Bad(f"not an LDT entry modify_ldt makes: {value:#x}")


# ``task.ldt``: the entries that are not empty, [index, the 8 bytes as a number].
SCHEMA = List(Tup(Int(0, ENTRIES - 1), Descriptor()), max=ENTRIES)


def dump(pid: int, inj: Injector, scratch: int, probed: int) -> dict[str, list[list[int]]]:
    """The task fields of the LDT of the process ``inj`` runs in (``probed``: ``PROBE``'s
    raw result): ``ldt``, unless it has none; read into ``scratch`` (``TABLE_BYTES``
    free: the dump's whole scratch area)."""
    got = _signed32(probed)
    if got in (0, -_ENOSYS):  # none (ENOSYS: a kernel without modify_ldt)
        return {}
    if got != -_EFAULT:
        raise DumpError(f"process {pid}: cannot tell whether it has an LDT (modify_ldt: "
                        f"{got})")
    n = _signed32(inj.raw("modify_ldt", _READ, scratch, TABLE_BYTES))
    if n != TABLE_BYTES:
        raise DumpError(f"process {pid}: cannot read its LDT (modify_ldt: {n})")
    table = struct.unpack(f"<{ENTRIES}Q", inj.read(scratch, TABLE_BYTES))
    out = [[i, raw] for i, raw in enumerate(table) if raw]
    for i, raw in out:
        if user_desc(raw) is None:
            raise UnsupportedError(f"process {pid}: its LDT entry {i} ({raw:#018x}) is "
                                   "not one modify_ldt makes; not supported")
    return {"ldt": out}


def restore(inj: Injector, entries: list[list[int]], scratch: int) -> None:
    """Write the saved entries into the process ``inj`` runs in (one queued call each);
    a table whose entries are all empty is made by writing an empty entry 0."""
    for i, raw in entries or [[0, 0]]:
        base, limit, bits = user_desc(raw) or (0, 0, 0b0101000)  # (an empty entry)
        inj.later("modify_ldt", _WRITE, 0, _USER_DESC.size,
                  data=_USER_DESC.pack(i, base, limit, bits), data_at=1, scratch=scratch)
