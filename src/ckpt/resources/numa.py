"""NUMA memory policies: each thread's (``set_mempolicy``) and each mapping's own
(``mbind``). A thread's is read by an injected ``get_mempolicy`` (the mode of every
thread in one round, the nodes of the rare one that has a policy); a mapping's from
/proc/PID/numa_maps, which shows a mapping without a policy of its own with its
thread's, so only those that differ are a mapping's own. At restore a thread sets its
policy itself (injected ``set_mempolicy``), a mapping gets its own with ``mbind``.
"""

from __future__ import annotations

from ..kernel import procfs
from ..kernel.lazyre import LazyPattern
from ..schema import Int, List, Obj

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

    from ..kernel.inject import Injector

MAX_NODES = 1024  # the node mask ckpt reads and writes: CONFIG_NODES_SHIFT 10
MASK_BYTES = MAX_NODES // 8
# modes as numa_maps names them (mpol_to_str), and their numbers
MODES = {"default": 0, "prefer": 1, "bind": 2, "interleave": 3, "local": 4,
         "prefer (many)": 5, "weighted interleave": 6}
FLAGS = {"static": 1 << 15, "relative": 1 << 14, "balancing": 1 << 13}
MODE_MASK = 0xff

# A policy: the mode with its flags, and the nodes.
SCHEMA = Obj(mode=Int(1, 0xffff), nodes=List(Int(0, MAX_NODES - 1), max=MAX_NODES))

_POLICY = LazyPattern(r"(weighted interleave|prefer \(many\)|interleave|default|prefer|local"
                     r"|bind)(?:=([a-z|]+))?(?::([0-9,-]+))?(?:\s|$)")


def nodes_of(mask: bytes) -> list[int]:
    bits = int.from_bytes(mask, "little")
    return [n for n in range(MAX_NODES) if bits >> n & 1]


def _mask(nodes: list[int]) -> bytes:
    return sum(1 << n for n in nodes).to_bytes(MASK_BYTES, "little")


def thread_policy(inj: Injector, scratch: int, mode: int) -> dict[str, Any] | None:
    """The policy of the thread ``inj`` runs in, whose mode (read already) is ``mode``;
    None for the default one."""
    if mode == 0:
        return None
    inj.call("get_mempolicy", scratch, scratch + 8, MAX_NODES, 0, 0)
    raw = inj.read(scratch, 8 + MASK_BYTES)
    return {"mode": int.from_bytes(raw[:4], "little"), "nodes": nodes_of(raw[8:])}


def set_thread_policy(inj: Injector, scratch: int, policy: dict[str, Any] | None) -> None:
    """Give the thread ``inj`` runs in ``policy`` (None: the default one)."""
    if policy is None:
        inj.call("set_mempolicy", 0, 0, 0)
        return
    inj.write(scratch, _mask(policy["nodes"]))
    inj.call("set_mempolicy", policy["mode"], scratch, MAX_NODES)


def parse(text: str) -> dict[str, Any] | None:
    """The policy a numa_maps line shows after its address ("interleave:0-3 anon=..."),
    None for an unknown form."""
    if text.startswith("default") and text[7:8] in ("", " "):  # most lines, no pattern
        return {"mode": MODES["default"], "nodes": []}
    m = _POLICY.match(text)
    if m is None:
        return None
    mode = MODES[m[1]]
    for flag in (m[2] or "").split("|"):
        if flag:
            if flag not in FLAGS:
                return None
            mode |= FLAGS[flag]
    nodes: list[int] = []
    for part in (m[3] or "").split(","):
        if part:
            lo, _, hi = part.partition("-")
            nodes += range(int(lo), int(hi or lo) + 1)
    return {"mode": mode, "nodes": nodes}


def mapping_policies(pid: int, task: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    """start address -> the policy of each mapping of ``pid`` that has one of its own
    (differs from ``task``, its first thread's: None for the default one)."""
    own = task or {"mode": 0, "nodes": []}
    out = {}
    for start, rest in procfs.numa_maps(pid):
        policy = parse(rest)
        if policy is not None and policy != own:
            out[start] = policy
    return out


def bind(inj: Injector, scratch: int, start: int, end: int, policy: dict[str, Any]) -> None:
    """Give the mapping at ``start``..``end`` its own ``policy``."""
    inj.write(scratch, _mask(policy["nodes"]))
    inj.call("mbind", start, end - start, policy["mode"], scratch, MAX_NODES, 0)


