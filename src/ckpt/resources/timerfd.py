"""timerfd: its clock, the time left to the next expiry, the interval, and the
expirations not read yet.

At dump ``timerfd_gettime`` on ckpt's duplicate first folds the expirations of
a periodic timer that fired unread into its tick count and re-arms it, as a
read would but without consuming them (invisible to the process); fdinfo then
shows the exact ``ticks`` and a non-zero ``it_value`` for an armed timer.

At restore the timer is armed again relative to the restore (the time the
process was not running does not count), except an absolute (TFD_TIMER_ABSTIME)
timer on CLOCK_REALTIME or CLOCK_REALTIME_ALARM: it keeps its wall-clock
deadline, so expirations missed while the process was down are counted on
its next read, as if it had kept running. An absolute timer of another clock
(CLOCK_MONOTONIC, CLOCK_BOOTTIME) is armed absolute again, as far from the
restore's now as it was from the dump's (fdinfo shows the flag as before).
Unread ticks go back with TFD_IOC_SET_TICKS (CONFIG_CHECKPOINT_RESTORE). No
--inherit-fd key but ``orig-fd[N]``.
"""

from __future__ import annotations

import os
import time

from ..errors import DumpError, RestoreError
from ..kernel import anon, procfs
from ..log import logger
from ..schema import NAT, S32, U32, U64, Opt
from .filekind import Description, DumpCtx, FileKind, OpenFd, RestoreCtx

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.timerfd")

_WALL_CLOCKS = {anon.CLOCK_REALTIME, anon.CLOCK_REALTIME_ALARM}
_BASE_CLOCK = {anon.CLOCK_BOOTTIME_ALARM: anon.CLOCK_BOOTTIME}  # the time an alarm clock reads


class TimerFds(FileKind):
    KIND = "timerfd"
    LINK = "anon_inode:[timerfd]"
    # its own fields in files.json
    SCHEMA = {
        "clockid": S32, "settime_flags": U32, "ticks": U64, "value_ns": NAT, "interval_ns": NAT,
        "deadline_ns": Opt(NAT)}

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        info, pid, fd, dup = f.info, f.pid, f.fd, f.dup
        if info.timerfd is None:
            raise DumpError(f"process {pid} fd {fd}: cannot read the timerfd's state from "
                            "its fdinfo")
        try:
            for _ in range(10):
                anon.timerfd_gettime(dup)  # fold unread periodic expirations into ticks
                now = time.clock_gettime_ns(info.timerfd.clockid)
                tfd = procfs.fdinfo(os.getpid(), dup).timerfd
                assert tfd is not None  # the same file as ``info``'s
                if tfd.value_ns or not tfd.interval_ns:
                    break  # else it fired again between the two reads
        except OSError as e:
            raise DumpError(f"process {pid} fd {fd}: cannot read the timerfd's state: "
                            f"{e}") from None
        clockid, ticks, settime_flags = tfd.clockid, tfd.ticks, tfd.settime_flags
        value, interval = tfd.value_ns, tfd.interval_ns
        desc: dict[str, Any] = {"clockid": clockid, "settime_flags": settime_flags,
                                "ticks": ticks, "value_ns": value, "interval_ns": interval}
        if settime_flags & anon.TFD_TIMER_ABSTIME and clockid in _WALL_CLOCKS and value:
            desc["deadline_ns"] = now + value
        log.info("process %d fd %d: timerfd clock %d, next in %d ns, interval %d ns, "
                 "%d unread", pid, fd, clockid, value, interval, ticks)
        return desc

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        try:
            fd = anon.timerfd_create(desc["clockid"], anon.TFD_CLOEXEC)
        except OSError as e:
            raise RestoreError(f"cannot create a timerfd on clock {desc['clockid']}: "
                               f"{e.strerror}") from None
        try:
            self._arm(fd, desc)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _arm(self, fd: int, desc: dict[str, Any]) -> None:
        value, interval = desc["value_ns"], desc["interval_ns"]
        armed = bool(value or interval or "deadline_ns" in desc)
        try:
            if "deadline_ns" in desc:
                anon.timerfd_settime(
                    fd, anon.TFD_TIMER_ABSTIME
                    | (desc["settime_flags"] & anon.TFD_TIMER_CANCEL_ON_SET),
                    desc["deadline_ns"], interval)
            elif value and desc["settime_flags"] & anon.TFD_TIMER_ABSTIME:
                # due as long after the restore as after the dump, and still absolute
                clock = _BASE_CLOCK.get(desc["clockid"], desc["clockid"])
                anon.timerfd_settime(fd, anon.TFD_TIMER_ABSTIME,
                                     time.clock_gettime_ns(clock) + value, interval)
            elif armed:
                anon.timerfd_settime(fd, 0, value or 1, interval)
        except OSError as e:
            raise RestoreError(f"cannot arm a timerfd: {e.strerror}") from None
        ticks = desc["ticks"]
        if not ticks:
            return
        try:
            # settime cleared the count; keep any expiry since (a very short timer)
            state = procfs.fdinfo(os.getpid(), fd).timerfd
            now = state.ticks if state is not None else 0
            anon.timerfd_set_ticks(fd, ticks + now)
        except OSError as e:
            if not armed:
                # A one-shot timer that fired unread: firing it again at once gives
                # its (one) expiration back.
                anon.timerfd_settime(fd, 0, 1, 0)
                if ticks > 1:
                    log.warning("timerfd: %d unread expirations restored as 1 "
                                "(TFD_IOC_SET_TICKS failed: %s)", ticks, e.strerror)
            else:
                log.warning("timerfd: %d unread expirations lost (TFD_IOC_SET_TICKS failed: "
                            "%s; the kernel lacks CONFIG_CHECKPOINT_RESTORE?)",
                            ticks, e.strerror)

