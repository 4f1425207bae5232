"""The session keyring a process joined (``keyctl join``): its name, owner and
permissions, and the ``user`` keys in it, made again at restore by the process itself
before it clones its children and threads, which inherit it as they had.

Asking a process for its session keyring (``@s``) would give one that has none the
user's session keyring for good (the kernel installs it on a lookup), so the dump never
asks. It takes the keyrings /proc/keys shows (as ckpt and as the process's user see
them) and has the process probe each with a keyctl that changes nothing and that its
permissions allow a possessor only: those it possesses and ckpt does not are its own.
One keyring of its own holding user keys comes back; more (a process or thread
keyring, keyrings inside it) or keys of another type, whose payload no process can
read, are refused naming them. A keyring whose permissions give the process all a
possessor has cannot be told apart (runc's container keyrings are not: their user may
search them, not change their attributes).
"""

from __future__ import annotations

import binascii
import ctypes
import errno
import os

from ..errors import RestoreError, UnsupportedError
from ..kernel import libc
from ..schema import B64, U32, Int, List, Obj, Str

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

    from ..kernel.inject import Injector

FEATURE = "session-keyring"
KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_CHOWN, KEYCTL_SETPERM = 1, 4, 5
KEYCTL_DESCRIBE, KEYCTL_SEARCH, KEYCTL_READ = 6, 10, 11
KEY_SPEC_SESSION_KEYRING = -3
KEY_VIEW, KEY_READ, KEY_SEARCH, KEY_SETATTR = 0x01, 0x02, 0x08, 0x20  # in each byte of a mask
PROBE = b"user\0ckpt-probe-none\0"  # what a probing search looks for (never found)
PROBE_ROOM = 32  # where in the probe's memory a description may be written
ANONYMOUS = "_ses"  # the name of a keyring joined without one
_PRIVATE = {"_pid": "process keyring", "_tid": "thread keyring"}  # as the kernel names them
MAX_PAYLOAD = 32767  # a user key's largest payload

KEY = Obj(description=Str(4096), uid=U32, gid=U32, perm=U32, data=B64(MAX_PAYLOAD))
SCHEMA = Obj(serial=Int(1, (1 << 31) - 1), name=Str(4096), uid=U32, gid=U32, perm=U32,
             keys=List(KEY, max=200))


class Keyring:
    """One keyring /proc/keys shows: serial, permissions, owner, name."""

    __slots__ = ("serial", "perm", "uid", "gid", "name")

    def __init__(self, serial: int, perm: int, uid: int, gid: int, name: str):
        self.serial, self.perm, self.uid, self.gid, self.name = serial, perm, uid, gid, name

    def probe(self, uid: int, gid: int, buf: int) -> tuple[int, ...] | None:
        """The arguments of a keyctl that changes nothing and that a process of
        filesystem ids ``uid``/``gid`` may make on it only if it possesses it (``buf``:
        memory holding PROBE and room after it), or None when its permissions give that
        process whatever a possessor has."""
        if uid == self.uid:
            theirs = self.perm >> 16
        elif gid == self.gid:
            theirs = self.perm >> 8
        else:
            theirs = self.perm
        only = self.perm >> 24 & ~theirs
        if only & KEY_VIEW:
            return (KEYCTL_DESCRIBE, self.serial, buf + PROBE_ROOM, 64)
        if only & KEY_READ:
            return (KEYCTL_READ, self.serial, 0, 0)
        if only & KEY_SEARCH:
            return (KEYCTL_SEARCH, self.serial, buf, buf + 5, 0)
        if only & KEY_SETATTR:
            return (KEYCTL_SETPERM, self.serial, self.perm)  # as it is
        return None


def possessed(res: int) -> bool:
    """Whether a probe's raw result says the keyring is possessed."""
    return res >= 0 or res == -errno.ENOKEY  # (a search found no such key in it)


def _shown(text: str) -> list[Keyring]:
    """The keyrings of /proc/keys that a process may have joined: not the kernel's
    (named ".x") nor a user's own two (_uid.N, _uid_ses.N, which every process of the
    user reaches without joining them)."""
    out = []
    for line in text.splitlines():
        f = line.split(None, 8)
        if len(f) < 9 or f[7] != "keyring":
            continue
        name = f[8].rpartition(":")[0] if ":" in f[8] else f[8]
        if name.startswith((".", "_uid.", "_uid_ses.")):
            continue
        out.append(Keyring(int(f[0], 16), int(f[4], 16), int(f[5]), int(f[6]), name))
    return out


def _read_keys(fsuid: int) -> str:
    """/proc/keys as a process with filesystem uid ``fsuid`` sees it (the keys it may
    view): ckpt's thread takes that fsuid for the read."""
    nr = libc.NR["setfsuid"]
    old = libc._syscall(nr, fsuid, 0, 0, 0, 0, 0)
    try:
        with open("/proc/keys") as f:
            return f.read()
    finally:
        libc._syscall(nr, old, 0, 0, 0, 0, 0)


def _possessed_by_ckpt(rings: list[Keyring]) -> set[int]:
    buf = ctypes.create_string_buffer(PROBE + bytes(PROBE_ROOM + 64))
    got = set()
    for k in rings:
        args = k.probe(os.getuid(), os.getgid(), ctypes.addressof(buf))
        if args is None:
            continue
        res = libc._syscall(libc.NR["keyctl"], *(*args, 0, 0, 0, 0, 0)[:6])
        if possessed(res if res >= 0 else -ctypes.get_errno()):
            got.add(k.serial)
    return got


class Probe:
    """What one dump knows of keyrings: those each user may see, those ckpt possesses,
    and the one each dumped process joined (a child inherits its parent's)."""

    def __init__(self) -> None:
        self._seen: dict[int, list[Keyring]] = {}  # fsuid -> keyrings
        self._ckpt: set[int] = set()  # keyrings ckpt possesses, of those ...
        self._asked: set[int] = set()  # ... it probed
        self.joined: dict[int, int] = {}  # pid -> serial of the keyring it joined

    def _rings(self, fsuid: int) -> list[Keyring]:
        if fsuid not in self._seen:
            self._seen[fsuid] = _shown(_read_keys(fsuid))
        return self._seen[fsuid]

    def dump(self, pid: int, ppid: int, inj: Injector, scratch: int,
             uids: list[int], gids: list[int]) -> dict[str, Any] | None:
        """The keyring process ``pid`` (``inj`` runs in it; ``uids``/``gids``: its ids)
        joined and ckpt did not; None for none."""
        rings = {k.serial: k for k in self._rings(0) + self._rings(uids[3])}
        probes = [(s, k.probe(uids[3], gids[3], scratch)) for s, k in rings.items()]
        probes = [(s, args) for s, args in probes if args is not None]
        if not probes:
            return None
        new = [k for s, k in rings.items() if s not in self._asked]
        self._ckpt |= _possessed_by_ckpt(new)
        self._asked.update(k.serial for k in new)
        inj.write(scratch, PROBE)
        res = inj.raw_all([("keyctl", args) for _, args in probes])
        own = {s for (s, _), r in zip(probes, res, strict=True) if possessed(r)}
        own -= self._ckpt
        if own:  # a search's "no such key" also says a keyring that went away since
            gone = inj.raw_all([("keyctl", (KEYCTL_DESCRIBE, s, 0, 0)) for s in own])
            own = {s for s, r in zip(list(own), gone, strict=True) if r != -errno.ENOKEY}
        if not own:
            if ppid in self.joined:
                raise UnsupportedError(
                    f"process {pid} has ckpt's session keyring while its parent {ppid} "
                    "joined one of its own; a restore cannot give it back; not supported")
            return None
        if len(own) != 1:
            names = ", ".join(f"{rings[s].name!r}" for s in sorted(own))
            raise UnsupportedError(
                f"process {pid} holds keyrings {names} (a process or thread keyring, or "
                "keyrings inside its session keyring); only one session keyring of its "
                "own is supported")
        serial = own.pop()
        ring = rings[serial]
        if ring.name in _PRIVATE:
            raise UnsupportedError(
                f"process {pid} has a {_PRIVATE[ring.name]} (keyctl), which ckpt cannot "
                "give back; not supported")
        self.joined[pid] = serial
        keys = [_key(pid, inj, scratch, k, ring.name) for k in _linked(inj, scratch, serial)]
        return {"serial": serial, "name": ring.name, "uid": ring.uid, "gid": ring.gid,
                "perm": ring.perm, "keys": keys}


def _linked(inj: Injector, scratch: int, serial: int) -> list[int]:
    """The serials of the keys in keyring ``serial``, read by the process."""
    size = inj.call("keyctl", KEYCTL_READ, serial, scratch, 4096)
    raw = inj.read(scratch, min(size, 4096))
    return [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]


def _key(pid: int, inj: Injector, scratch: int, serial: int, ring: str) -> dict[str, Any]:
    """One key of the keyring: its description and owner, and its payload (a user key's:
    the process reads it; another type's cannot be read)."""
    n = inj.raw("keyctl", KEYCTL_DESCRIBE, serial, scratch, 4096)
    if n < 0:
        raise UnsupportedError(f"process {pid}: a key in its session keyring {ring!r} "
                               f"cannot be described ({os.strerror(-n)}); not supported")
    kind, uid, gid, perm, desc = inj.read(scratch, n - 1).decode().split(";", 4)
    if kind != "user":
        raise UnsupportedError(
            f"process {pid}: its session keyring {ring!r} holds a key {desc!r} of type "
            f"{kind!r}, whose payload cannot be saved (only user keys are); not supported")
    size = inj.raw("keyctl", KEYCTL_READ, serial, scratch, MAX_PAYLOAD)
    if size < 0:
        raise UnsupportedError(f"process {pid}: the key {desc!r} of its session keyring "
                               f"cannot be read ({os.strerror(-size)}); not supported")
    return {"description": desc, "uid": int(uid), "gid": int(gid), "perm": int(perm, 16),
            "data": binascii.b2a_base64(inj.read(scratch, size), newline=False).decode()}


def restore(pid: int, inj: Injector, scratch: int, ring: dict[str, Any] | None,
            parent: dict[str, Any] | None) -> None:
    """Make process ``pid`` join a keyring like ``ring`` with its keys, before it clones
    anything; not when it inherits it from ``parent`` (its parent's record)."""
    if ring is None or (parent is not None and parent["serial"] == ring["serial"]):
        return
    session = KEY_SPEC_SESSION_KEYRING
    try:
        if ring["name"] == ANONYMOUS:
            inj.call("keyctl", KEYCTL_JOIN_SESSION_KEYRING, 0)
        else:
            inj.write_string(scratch, ring["name"])
            inj.call("keyctl", KEYCTL_JOIN_SESSION_KEYRING, scratch)
        for k in ring["keys"]:
            data = binascii.a2b_base64(k["data"])
            inj.write(scratch, b"user\0" + os.fsencode(k["description"]) + b"\0")
            inj.write(scratch + 8192, data)
            serial = inj.call("add_key", scratch, scratch + 5, scratch + 8192, len(data),
                              session)
            inj.call("keyctl", KEYCTL_CHOWN, serial, k["uid"], k["gid"])
            inj.call("keyctl", KEYCTL_SETPERM, serial, k["perm"])
        inj.call("keyctl", KEYCTL_CHOWN, session, ring["uid"], ring["gid"])
        inj.call("keyctl", KEYCTL_SETPERM, session, ring["perm"])
    except OSError as e:
        raise RestoreError(f"process {pid}: its session keyring {ring['name']!r}: "
                           f"{os.strerror(e.errno or 0)}") from None
