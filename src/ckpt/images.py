"""The image folder: versioned metadata files, raw data files, and their checksums.

Every file's size and CRC-32 is recorded in ``inventory.json``, which is written
last and carries a checksum of its own. ``ImageReader.verify`` checks them all
before a restore changes anything. See docs/image-format.md.
"""

from __future__ import annotations

import ctypes
import json
import os
import zlib
from typing import Any

from .errors import ImageError

FORMAT = "ckpt-images"
VERSION = 1
INVENTORY = "inventory.json"
_CHUNK = 8 << 20


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class RawWriter:
    """An image file of raw bytes (page data, pipe data), checksummed as it is written."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.size = 0
        self.crc = 0

    def write(self, data: bytes | memoryview) -> int:
        """Append ``data``; return the offset it was written at."""
        off = self.size
        mv = memoryview(data)
        self.crc = zlib.crc32(mv, self.crc)
        done = 0
        while done < len(mv):
            done += os.write(self.fd, mv[done:])
        self.size += len(mv)
        return off

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


class ImageWriter:
    """Writes one image folder; nothing is valid until ``finish`` wrote the inventory."""

    def __init__(self, directory: str):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        # A stale inventory must never describe new files.
        try:
            os.unlink(os.path.join(directory, INVENTORY))
        except FileNotFoundError:
            pass
        self.files: dict[str, dict[str, int]] = {}
        self._raw: dict[str, RawWriter] = {}

    def write_json(self, name: str, obj: Any) -> None:
        data = json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n"
        path = os.path.join(self.dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            mv = memoryview(data)
            done = 0
            while done < len(mv):
                done += os.write(fd, mv[done:])
            os.fsync(fd)
        finally:
            os.close(fd)
        self.files[name] = {"size": len(data), "crc32": zlib.crc32(data)}

    def raw(self, name: str) -> RawWriter:
        w = RawWriter(os.path.join(self.dir, name))
        self._raw[name] = w
        return w

    def finish(self, inventory: dict[str, Any]) -> None:
        """Close raw files, write the inventory, and fsync the folder."""
        for name, w in self._raw.items():
            w.close()
            self.files[name] = {"size": w.size, "crc32": w.crc}
        body = dict(inventory, format=FORMAT, version=VERSION, files=self.files)
        body["crc32"] = zlib.crc32(_canonical(body))
        self.write_json_plain(INVENTORY, body)
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def write_json_plain(self, name: str, obj: Any) -> None:
        tmp = os.path.join(self.dir, name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.dir, name))

    def abort(self) -> None:
        for w in self._raw.values():
            if w.fd >= 0:
                os.close(w.fd)
                w.fd = -1


class ImageReader:
    """Reads and verifies an image folder written by ``ImageWriter``."""

    def __init__(self, directory: str):
        self.dir = directory
        if not os.path.isdir(directory):
            raise ImageError(f"image folder {directory} does not exist")
        path = os.path.join(directory, INVENTORY)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise ImageError(f"{path}: missing; {directory} holds no complete dump") from None
        try:
            inv = json.loads(raw)
        except ValueError as e:
            raise ImageError(f"{path}: corrupted ({e})") from None
        if not isinstance(inv, dict) or inv.get("format") != FORMAT:
            raise ImageError(f"{path}: not a ckpt image inventory")
        if inv.get("version") != VERSION:
            raise ImageError(f"{path}: image format version {inv.get('version')} is not "
                             f"supported (this ckpt reads version {VERSION})")
        crc = inv.pop("crc32", None)
        if crc != zlib.crc32(_canonical(inv)):
            raise ImageError(f"{path}: corrupted (checksum mismatch)")
        self.inventory: dict[str, Any] = inv
        self.files: dict[str, dict[str, int]] = inv["files"]

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def verify(self) -> None:
        """Check every file's size and CRC-32 against the inventory."""
        buf = None
        for name, meta in sorted(self.files.items()):
            path = self.path(name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise ImageError(f"{path}: missing from the image folder") from None
            try:
                size = os.fstat(fd).st_size
                if size != meta["size"]:
                    raise ImageError(f"{path}: truncated or changed: {size} bytes, "
                                     f"the inventory says {meta['size']}")
                if buf is None:
                    buf = bytearray(_CHUNK)
                mv = memoryview(buf)
                crc = 0
                while True:
                    n = os.readv(fd, [mv])
                    if n == 0:
                        break
                    crc = zlib.crc32(mv[:n], crc)
                if crc != meta["crc32"]:
                    raise ImageError(f"{path}: corrupted (checksum mismatch)")
            finally:
                os.close(fd)

    def load_json(self, name: str) -> Any:
        if name not in self.files:
            raise ImageError(f"{self.path(name)}: not listed in the inventory")
        try:
            with open(self.path(name), "rb") as f:
                return json.load(f)
        except FileNotFoundError:
            raise ImageError(f"{self.path(name)}: missing from the image folder") from None
        except ValueError as e:
            raise ImageError(f"{self.path(name)}: corrupted ({e})") from None


def ctypes_view(addr: int, size: int) -> memoryview:
    """A memoryview on raw memory at ``addr`` (no copy)."""
    return memoryview((ctypes.c_char * size).from_address(addr)).cast("B")
