"""Run syscalls inside a ptrace-stopped task, with no code of ours in it, leaving the
task runnable between any two of them.

The task's registers are pointed at a ``syscall`` instruction that already exists
in its address space (in its vDSO, or a helper page at restore) and it is resumed
with PTRACE_SYSCALL: it stops on entering the syscall and again on leaving it,
where the result is read. ``orig_rax`` is -1 in injected registers, so the
kernel's syscall-restart logic leaves the injected call alone, and the trap flag
is cleared.

Syscall stops are not signals, which is why this is not done by single-stepping
the instruction: a single-step trap is a forced SIGTRAP, which (while SIGTRAP is
blocked) resets the task's SIGTRAP handler to SIG_DFL, merges with a SIGTRAP the
task already had pending, and kills the task if ckpt dies before taking it back.
The tracee must have PTRACE_O_TRACESYSGOOD (``ptrace.INJECT_OPTIONS``).

Between two calls the task waits at that syscall-exit stop with its own state
back in place: its registers (as they resume its interrupted syscall), its
signal mask, and no pending trap. If ckpt dies there, the kernel lets it run on
as if nothing happened (the exit stop's SIGTRAP|0x80 is no signal and is
dropped). ``settle`` takes it back to a plain trap stop before it is let go.

``park_at`` writes, in bytes of the task's code that nothing runs (the padding
at the end of its vDSO), ``syscall`` followed by a loop of ``pause()``, and
runs every later call from there. Should ckpt die during one of them, the task
does not run on with borrowed registers: it stops in ``pause()`` with every
signal blocked, to be woken by the next ckpt (see ckpt/recovery.py), which puts
its own registers back. Parked, a run of calls (``raw_all``) leaves the task its
borrowed registers and blocked mask from one call to the next, for the same reason,
and puts its own back after the last.

A task in a group stop (SIGSTOP, Ctrl-Z) runs injected syscalls all the same:
the trap it reports first when resumed (PTRACE_EVENT_STOP) is passed over, and
it stays stopped once detached.

A restore's new processes run many calls whose results nobody reads (munmap, mmap
MAP_FIXED, mprotect, close, chdir, setsid...): ``later`` queues them and the next
``call``, ``raw`` or ``flush`` runs the queue in one round trip (``BATCH_CODE``, in the
restore's helper area: a loop over a table of syscalls that ends on ``int3``); what a
queued call points to (a path, a struct) goes with the table, after it, and its
failure may raise an error of the caller's making once the batch has run. That trap is a forced
SIGTRAP, harmless only while the process's signal actions are still the defaults and
ckpt's death kills it (EXITKILL): a restore batches only until the process's signals
are restored (``stop_batching``).

A dump batches too, where the parking area is written whole (PARK_AREA): its copy of
the batch loop ends in the parking code rather than on a trap, and the table ends
by unblocking a signal the task ignores, which ckpt sent it (``SignalBatch``), at whose
delivery stop ckpt takes it. A dump's ``raw_all`` (the 62 signal actions) is one round trip then.
"""

from __future__ import annotations

import os
import struct

from . import interrupts, libc, ptrace
from .procfs import ProcessGone
from .record import dataclass

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

_TRAP_FLAG = 0x100  # EFLAGS.TF
_SYSCALL = b"\x0f\x05"
_MOV_EAX = 0xB8
_U64 = 1 << 64
ALL_BLOCKED = _U64 - 1

# syscall; then forever: mov eax, __NR_pause; syscall; jmp back to the mov
PARK_CODE = b"\x0f\x05" + b"\xb8" + libc.NR["pause"].to_bytes(4, "little") + b"\x0f\x05\xeb\xf7"

# The parking code, then at SPLICE_ENTRY (pages/splice.py) a loop that moves runs of the
# task's own memory into a pipe it makes, closes the pipe and parks (x86-64), run with
# rbx at a block: int fds[2] (-1, -1 before), u64 runs, u64 result (0 or -errno), u64
# runs done, then per run u64 address, u64 length:
#   pipe2(block, O_CLOEXEC); on failure: result = rax, park
#   r12 = block + 32, r13 = runs
#   next: if r13 == 0: done
#   more: rax = vmsplice(fds[1], r12, 1, 0); if rax <= 0: result = rax, done
#         [r12] += rax; [r12+8] -= rax; if not zero: more
#         r12 += 16; r13 -= 1; runs done += 1; next
#   done: close(fds[0]); close(fds[1]); park
# The task keeps the read end open all along: should ckpt die, nothing reads the pipe
# and the loop waits on a full pipe (no SIGPIPE, which would go to the whole process);
# ckpt/recovery.py then closes what ``splice_fds_open`` says is open.
_PARK_AND_SPLICE = PARK_CODE + bytes.fromhex(
    "0000000000b8250100004889dfbe000008000f054885c075584c8d63204c8b6b084d85ed7436b816"
    "0100008b7b044c89e6ba010000004531d20f054885c07e1849010424492944240875db4983c41049"
    "ffcd48ff4318ebc948894310b8030000008b3b0f05b8030000008b7b040f05eb8648894310eb80")
SPLICE_ENTRY = 0x10
SPLICE_HEAD = 32  # the block's fields before its runs
_PIPE_MADE, _READ_CLOSED, _WRITE_CLOSED = 0x1F, 0x70, 0x7A  # rip (offsets) after each


def splice_fds_open(offset: int, fds: tuple[int, int]) -> list[int]:
    """The fds of the splice loop's pipe still open in a task stopped at ``offset`` of the
    parking area (rip - park), ``fds`` as its block holds them (-1: never made)."""
    if not _PIPE_MADE <= offset < _WRITE_CLOSED:
        return []
    ends = [fds[1]] if offset >= _READ_CLOSED else list(fds)
    return [fd for fd in ends if fd >= 0]
_RESTARTS = (libc.ERESTARTSYS, libc.ERESTARTNOINTR, libc.ERESTARTNOHAND)

# The batch loop (x86-64), run with rbx at the table: for each 64-byte entry (u32 syscall
# number, u32 flags, six arguments, the result) the syscall, its result stored; it stops
# at the number 0xffffffff, or after a failed entry whose flag 1 (must succeed) is set,
# on its last byte, int3:
#   loop: mov eax,[rbx]; cmp eax,-1; je done; mov rdi,[rbx+8]; mov rsi,[rbx+16];
#         mov rdx,[rbx+24]; mov r10,[rbx+32]; mov r8,[rbx+40]; mov r9,[rbx+48]; syscall
#         mov [rbx+56],rax; add rbx,64; cmp rax,-4095; jb loop
#         test byte [rbx-60],1; jz loop
#   done: int3
BATCH_CODE = bytes.fromhex(
    "8b0383f8ff7430488b7b08488b7310488b53184c8b53204c8b43284c8b4b"
    "300f05488943384883c340483d01f0ffff72cff643c40174c9cc")
BATCH_ENTRY = 64
# The parking area (``park_at``): the parking code, the splice loop at SPLICE_ENTRY, and at
# PARKED_BATCH_ENTRY BATCH_CODE again, whose end parks (a jump to the pause loop) instead
# of trapping: a dump's run of calls in one round trip (``SignalBatch``).
PARKED_BATCH_ENTRY = 0x90
PARK_AREA = (_PARK_AND_SPLICE + bytes(PARKED_BATCH_ENTRY - len(_PARK_AND_SPLICE))
             + BATCH_CODE[:-1] + b"\xe9"
             + (len(b"\x0f\x05") - (PARKED_BATCH_ENTRY + len(BATCH_CODE) - 1 + 5)).to_bytes(
                 4, "little", signed=True))
_BATCH_AFTER_SYSCALL = 0x21  # the batch loop's rip once its syscall returned
_SIG_SETMASK = 2
_MUST_SUCCEED = 1
_END = struct.pack("<I", 0xFFFFFFFF)
_ENTRY = struct.Struct("<II6Q")  # an entry but its result, which the loop writes
_ZEROS = (0,) * 6  # the arguments not given
_U64_MASK = 0xFFFFFFFFFFFFFFFF
_SIGTRAP_BIT = 1 << (5 - 1)
# Calls that never join a batch: the new task would start in the loop, or there is no return.
_ALONE = frozenset(("clone", "clone3", "fork", "vfork", "execve", "execveat", "exit",
                    "exit_group", "rt_sigreturn"))


class _Queued:
    """A call ``later`` queued: its arguments, how its failure counts, its data, what
    reads its result."""

    __slots__ = ("name", "args", "check", "ok", "data", "data_at", "failed", "then", "room")

    def __init__(self, name: str, args: tuple[int, ...], check: bool,
                 ok: tuple[int, ...] = (), data: bytes | Callable[[int], bytes] | None = None,
                 data_at: int = 0, failed: Callable[[int], BaseException] | None = None,
                 then: Callable[[int, int], None] | None = None):
        self.name, self.args, self.check, self.ok = name, args, check, ok
        self.data, self.data_at, self.failed, self.then = data, data_at, failed, then
        # the bytes its data takes after the table (a maker of data makes as many for
        # any address)
        self.room = 0 if data is None else _aligned(len(data(0) if callable(data) else data))


def _aligned(n: int) -> int:
    return (n + 7) & ~7


def _signed(res: int) -> int:
    """A syscall's raw result (rax, or a batch entry's) as a signed number."""
    return res - _U64 if res >= 1 << 63 else res


def _results(table: bytes, n: int) -> list[int]:
    """The raw results the batch loop wrote into the first ``n`` entries of ``table``."""
    return [_signed(struct.unpack_from("<Q", table, i * BATCH_ENTRY + 56)[0])
            for i in range(n)]


@dataclass(frozen=True)
class BatchArea:
    """Where a task has ``BATCH_CODE`` (``code``) and room for a table of ``entries``
    syscalls (``table``), in memory no batched call maps over."""

    code: int
    table: int
    entries: int


@dataclass(frozen=True)
class SignalBatch:
    """What lets a dump run a run of calls (``Injector.raw_all``) in one round trip from
    its parking area's batch loop: room for the table at ``table`` (``entries`` calls,
    in scratch memory no call of the run writes) and ``signal``, one the process
    ignores (SIG_IGN, or a default action that ignores it) and the task does not block,
    a standard one (an RT signal's queue may be full).
    ckpt sends the task that signal before it runs the batch, every signal blocked; the
    table ends with calls that unblock that signal alone, then block every signal
    again: ckpt takes the task at the signal's delivery stop (and drops the signal).
    Should ckpt be dead by then, the signal is ignored as the kernel would have
    ignored it from anyone without ckpt there (an ignored signal that is not blocked
    is dropped when sent; only a tracee queues it), and the task runs on to park as
    after any call (module doc). The trap that ends a restore's batch would kill it,
    or run a handler of its own."""

    table: int
    entries: int
    signal: int


class InjectionError(OSError):
    """An injected syscall failed inside the target."""


def find_syscall_site(code: bytes, base: int) -> int | None:
    """The address of the first ``syscall`` instruction that follows ``mov eax, imm32``
    (0xb8 and 4 bytes) in ``code``."""
    at = code.find(_SYSCALL, 5)
    while at >= 0:
        if code[at - 5] == _MOV_EAX:
            return base + at
        at = code.find(_SYSCALL, at + 1)
    return None


def vdso_syscall_offset(vdso_code: bytes) -> int:
    site = find_syscall_site(vdso_code, 0)
    if site is None:
        raise RuntimeError("no syscall instruction found in the vDSO")
    return site


def resumable(regs: ptrace.UserRegs) -> ptrace.UserRegs:
    """``regs`` of a task stopped in an interrupted syscall, rewritten as the kernel
    resumes it when no signal handler runs: the syscall runs again (through
    restart_syscall for ERESTART_RESTARTBLOCK). Loaded at a syscall-exit stop,
    where no restart logic runs, they let the task go on as if never stopped."""
    out = regs.copy()
    nr = out.orig_rax - _U64 if out.orig_rax >= 1 << 63 else out.orig_rax
    err = _U64 - out.rax if out.rax >= 1 << 63 else 0
    if nr >= 0 and (err in _RESTARTS or err == libc.ERESTART_RESTARTBLOCK):
        out.rax = out.orig_rax if err in _RESTARTS else libc.NR["restart_syscall"]
        out.rip -= 2
    out.orig_rax = _U64 - 1
    return out


class Injector:
    """Executes syscalls in stopped task ``pid`` through the instruction at ``site``.

    ``regs`` are the task's registers as it was stopped; ``mask``, its signal mask:
    both are put back after every call (``mask`` None: the mask is left as the
    caller set it, and must block every signal). ``options`` are the ptrace options
    the task was seized with (INJECT_OPTIONS at least), for whoever needs to add
    one for a while.

    ``batch``: where the task has the batch loop (module doc); without it ``later``
    runs each call at once.

    Holds the task's /proc/PID/mem open until ``close``; as a context manager it
    closes it on leaving the ``with`` block (running the queued calls first, unless
    the block failed)."""

    def __init__(self, pid: int, site: int, regs: ptrace.UserRegs, *, mask: int | None = None,
                 options: int = ptrace.INJECT_OPTIONS, batch: BatchArea | None = None,
                 parks: bool = False):
        self.pid = pid
        self.site = site
        self.regs = regs.copy()  # as stopped: what ``settle`` gives back
        self.home = resumable(regs)  # what the task resumes with from a syscall-exit stop
        self.mask = mask
        self.options = options
        self.count = 0  # syscalls run
        self.trips = 0  # round trips they took (a batch is one)
        self.on_entry: Callable[[], None] | None = None  # called at each entry stop (tests)
        self.scratch: tuple[int, int] | None = None  # (address, size) of map_scratch's area
        self._parked: tuple[int, bytes, int] | None = None  # park_at's (address, bytes, site)
        # Where the whole parking area is (PARK_AREA, written by this task's ``park_at`` or
        # another thread's), whose batch loop a run of calls may take (``SignalBatch``).
        self.area: int | None = None
        self.parks = parks  # ``site`` is parking code (park_at's, or another thread's)
        self._at_exit = False  # the task waits at a syscall-exit stop of ours
        self._code_running = False  # runs the parking area's code (``run_code``)
        self.batch = batch
        self.signal_batch: SignalBatch | None = None  # a dump's, when parked (PARK_AREA)
        self._queue: list[_Queued] = []
        self._data = 0  # bytes of the queued calls' data
        self._mem = os.open(f"/proc/{pid}/mem", os.O_RDWR)

    def close(self) -> None:
        """Run the queued calls, then let go of the task's memory."""
        try:
            self.flush()
        finally:
            if self._mem >= 0:
                os.close(self._mem)
                self._mem = -1

    def discard(self) -> None:
        """Let go of the task's memory, the queued calls not run: the restore failed,
        nothing more runs in the task."""
        self._queue.clear()
        self._data = 0
        self.close()

    def __enter__(self) -> Injector:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is not None:
            self.discard()
        else:
            self.close()

    # ------------------------------------------------------------ calls

    def raw(self, name: str, *args: int) -> int:
        """Run syscall ``name``; return its raw result (a negative errno on failure).
        Calls queued by ``later`` run first, in the same round trip when they can."""
        if self._queue:
            if name not in _ALONE:
                self._queue.append(_Queued(name, args, False))
                return self._run_queue()[-1]
            self.flush()
        with interrupts.held():  # never leave the task with borrowed registers
            return self._one(name, args, block=True, home=True)

    def raw_all(self, calls: Sequence[tuple[str, tuple[int, ...]]]) -> list[int]:
        """``raw`` of each of ``calls`` (name, arguments), in order; their raw results.
        With a batch area, after the queued calls, in as few batches as its table
        allows (module doc). Parked (``park_at``), the task keeps the calls' registers
        and its mask blocked from one call to the next and gets its own back after the
        last: killed in between, ckpt leaves it parked as if killed during a call
        (module doc). Else each call is a ``raw`` of its own."""
        if self.batch is not None and not any(name in _ALONE for name, _ in calls):
            return self._batched(calls)
        if not self.parks:
            return [self.raw(name, *args) for name, args in calls]
        if self._signalled_fits(calls):
            return self._signalled(calls)
        last = len(calls) - 1
        with interrupts.held():
            return [self._one(name, args, block=i == 0, home=i == last)
                    for i, (name, args) in enumerate(calls)]

    def clone_all(self, calls: Sequence[tuple[str, tuple[int, ...]]]) -> list[int]:
        """``raw_all`` of clone3 calls that make threads, in as few batches as the table
        allows: the task must be traced with PTRACE_O_TRACECLONE, so that each new
        thread stops before it runs an instruction (it would start in the batch loop);
        whoever takes it gives it registers of its own."""
        if self.batch is None:
            return [self.raw(name, *args) for name, args in calls]
        return self._batched(calls)

    def _batched(self, calls: Sequence[tuple[str, tuple[int, ...]]]) -> list[int]:
        assert self.batch is not None
        out: list[int] = []
        for name, args in calls:
            self._queue.append(_Queued(name, args, False))
            if len(self._queue) >= self.batch.entries or (self._data and not self._fits(1)):
                out += self._run_queue()
        if self._queue:
            out += self._run_queue()
        return out[len(out) - len(calls):]

    def _signalled_fits(self, calls: Sequence[tuple[str, tuple[int, ...]]]) -> bool:
        """Whether ``calls`` run as one batch of the parking area (``SignalBatch``)."""
        sb = self.signal_batch
        return (sb is not None and self.area is not None and self.mask is not None
                and self.site in (self.area, self._parked[0] if self._parked else None)
                and 1 < len(calls) <= sb.entries - 3 and not self._queue
                and not any(name in _ALONE for name, _ in calls))

    def _signalled(self, calls: Sequence[tuple[str, tuple[int, ...]]]) -> list[int]:
        """``calls`` run by the parking area's batch loop, ended by the batch's signal
        (``SignalBatch``); their raw results. The task is left at that signal's
        delivery stop with its own registers and mask, as at the exit of a call."""
        with interrupts.held():
            self._signal_start(calls)
            return self._signal_end(calls)

    def _signal_start(self, calls: Sequence[tuple[str, tuple[int, ...]]]) -> None:
        """``_signalled`` up to the task resumed into its batch loop (``_signal_end``
        takes it at the signal; once this returned, it must be called whatever happens:
        the task holds ckpt's registers). On a failure the task is sent home. Under
        ``interrupts.held``."""
        sb, area = self.signal_batch, self.area
        assert sb is not None and area is not None
        sig = sb.signal
        ending = len(calls)  # the entry that unblocks the signal
        masks = sb.table + (ending + 2) * BATCH_ENTRY + len(_END)
        entries = [*calls, ("rt_sigprocmask", (_SIG_SETMASK, masks, 0, 8)),
                   ("rt_sigprocmask", (_SIG_SETMASK, masks + 8, 0, 8))]
        table = bytearray(BATCH_ENTRY * len(entries))
        for i, (name, args) in enumerate(entries):
            _ENTRY.pack_into(table, i * BATCH_ENTRY, libc.NR[name], 0,
                             *[a & _U64_MASK for a in args], *_ZEROS[len(args):])
        table += _END + struct.pack("<QQ", ALL_BLOCKED & ~(1 << (sig - 1)), ALL_BLOCKED)
        self.write(sb.table, bytes(table))
        regs = self.home.copy()
        regs.rip = area + PARKED_BATCH_ENTRY
        regs.rbx = sb.table
        regs.eflags &= ~_TRAP_FLAG
        try:
            ptrace.set_regs(self.pid, regs)
            ptrace.set_sigmask(self.pid, ALL_BLOCKED)
            self._at_exit = True  # from here on, whatever happens, it goes home
            for _ in calls:
                self._entered()  # the task holds ckpt's registers (fault points)
            libc.syscall("tkill", self.pid, sig)  # pending until the table unblocks it
            ptrace.cont(self.pid)
        except BaseException:
            try:
                self._go_home()
            except (OSError, ProcessGone):
                pass
            raise

    def _signal_end(self, calls: Sequence[tuple[str, tuple[int, ...]]]) -> list[int]:
        """The rest of ``_signalled``, after ``_signal_start``: the task taken at the
        batch's signal and sent home; the calls' raw results."""
        sb, area = self.signal_batch, self.area
        assert sb is not None and area is not None
        try:
            self._await_batch(area + PARKED_BATCH_ENTRY + _BATCH_AFTER_SYSCALL, sb.signal,
                              (sb.table + len(calls) * BATCH_ENTRY,), resume=False)
        finally:
            try:
                self._go_home()
            except (OSError, ProcessGone):
                pass
        self.trips += 1
        done = self.read(sb.table, BATCH_ENTRY * len(calls))
        self.count += len(calls)
        return _results(done, len(calls))

    def _one(self, name: str, args: tuple[int, ...], block: bool, home: bool) -> int:
        """One call, its registers loaded (with ``block``, every signal blocked first),
        its result read; with ``home`` the task's own registers and mask back after it.
        On a failure the task is left as ``raw`` leaves it."""
        entered = False
        try:
            self._load(name, args, mask=block)
            ptrace.syscall(self.pid)
            self._await(name)
            entered = True
            self._entered()
            ptrace.syscall(self.pid)
            self._await(name)
            return self._result(home)
        except BaseException:
            self._abandon(entered)
            raise

    def _load(self, name: str, args: tuple[int, ...], mask: bool = True) -> None:
        """The call's registers, and every signal blocked (unless ``mask`` is False: it
        is already), in the stopped task."""
        regs = self.home.copy()
        regs.rip = self.site
        regs.rax = libc.NR[name]
        # Arguments not given are 0, never left-over registers: prctl and others
        # refuse non-zero unused arguments.
        padded = tuple(args) + (0,) * (6 - len(args))
        for reg, val in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), padded, strict=True):
            setattr(regs, reg, val & 0xFFFFFFFFFFFFFFFF)
        regs.eflags &= ~_TRAP_FLAG
        # Registers first, mask after (and back in the other order): should ckpt
        # die in between, the task parks, and is woken with its own mask.
        ptrace.set_regs(self.pid, regs)
        if self.mask is not None and mask:
            ptrace.set_sigmask(self.pid, ALL_BLOCKED)

    def _entered(self) -> None:
        if self.on_entry is not None:
            self.on_entry()

    def _result(self, home: bool = True) -> int:
        """At the call's exit stop: its result, the task's own registers back (unless
        not ``home``)."""
        res = ptrace.get_regs(self.pid).rax
        self._at_exit = True
        if home:
            self._go_home()
        self.count += 1
        self.trips += 1
        return _signed(res)

    def call(self, name: str, *args: int) -> int:
        """Run syscall ``name``; raise InjectionError when it fails."""
        return self.checked(name, self.raw(name, *args))

    def call_then_trap(self, name: str, *args: int, others: Sequence[int] = ()) -> int:
        """Run syscall ``name``, the task's last injected call, and leave the task (with
        ``others``, stopped tasks of the same tracer: its threads) at a plain trap stop
        just after it (ptrace.trap_stop_all): let go from the call's entry stop with an
        interrupt pending, it traps as the call returns, one stop fewer than ``call``
        and ``trap_stop_all`` after it. The task keeps the call's registers and mask:
        whoever takes it from there loads its own. InjectionError if the call failed."""
        self.flush()
        with interrupts.held():
            self._load(name, args)
            ptrace.syscall(self.pid)
            self._await(name)
            self._entered()
            ptrace.trap_stop_all([self.pid, *others])
            res = _signed(ptrace.get_regs(self.pid).rax)
        self.count += 1
        self.trips += 1
        return self.checked(name, res)

    def call_all(self, calls: Sequence[tuple[str, tuple[int, ...]]]) -> list[int]:
        """``raw_all``; InjectionError for the first call that failed, once all ran (for
        calls that change nothing, queries)."""
        results = self.raw_all(calls)
        for (name, _), res in zip(calls, results, strict=True):
            self.checked(name, res)
        return results

    def checked(self, name: str, res: int) -> int:
        """``res``, the raw result of an injected ``name``; InjectionError if it failed."""
        if -4096 < res < 0:
            raise InjectionError(-res, f"{name} in process {self.pid}: {os.strerror(-res)}")
        return res

    def later(self, name: str, *args: int, check: bool = True, ok: tuple[int, ...] = (),
              data: bytes | Callable[[int], bytes] | None = None, data_at: int = 0,
              scratch: int = 0, failed: Callable[[int], BaseException] | None = None,
              then: Callable[[int, int], None] | None = None) -> None:
        """Queue syscall ``name``, whose result nobody needs, to run before the next call
        (see the module doc); ``check``: its failure raises InjectionError then (or
        ``failed(errno)``), and the calls queued after it do not run; ``ok``: errnos that
        are no failure (the calls after it run whatever it returns, and ckpt raises for
        the others once they ran). Its arguments must point to nothing in the task's
        memory (``write`` does not wait for the queue), but to ``data``: the bytes (or
        what ``data(address)`` makes for its address) the argument ``data_at`` then
        points to, which go with the batch's table. Without a batch area it runs at
        once, ``data`` written at ``scratch``. ``then(result, address of its data)``, once
        it ran and did not fail, reads what it wrote there (before any other call)."""
        if self.batch is None:
            if data is not None:
                self.write(scratch, data(scratch) if callable(data) else data)
                args = (*args[:data_at], scratch, *args[data_at + 1:])
            res = self.raw(name, *args)
            if check and -res not in ok:
                self._fail(_Queued(name, args, check, ok, failed=failed), res)
            if then is not None:
                then(res, scratch)
            return
        queued = _Queued(name, args, check, ok, data, data_at, failed, then)
        if queued.room and self._queue and not self._fits(1, queued.room):
            self.flush()
        self._queue.append(queued)
        self._data += queued.room
        if len(self._queue) >= self.batch.entries or (self._data and not self._fits(1)):
            self.flush()

    def _fits(self, calls: int, data: int = 0) -> bool:
        """Whether the queue and ``calls`` more calls (with ``data`` bytes) fit the batch
        area: their table, its end mark and their data."""
        assert self.batch is not None
        n = len(self._queue) + calls
        return n <= self.batch.entries and _aligned(BATCH_ENTRY * n + len(_END)) + \
            self._data + data <= (self.batch.entries + 1) * BATCH_ENTRY

    def _fail(self, queued: _Queued, res: int) -> None:
        if queued.failed is not None and -4096 < res < 0:
            raise queued.failed(-res)
        self.checked(queued.name, res)

    def flush(self) -> None:
        """Run the queued calls (``later``) now: anything ckpt does to the task other than
        through this injector may need them done."""
        if self._queue:
            self._run_queue()

    def stop_batching(self) -> None:
        """Run the queued calls and queue no more: from here on the task's signal actions
        are its own, which the batch's trap would change."""
        self.flush()
        self.batch = None

    def _run_queue(self) -> list[int]:
        """Run the queue in one round trip; the raw results of every call run. Raises
        InjectionError for the first failure of a checked call (the rest did not run)."""
        assert self.batch is not None
        queue, self._queue = self._queue, []
        area = self.batch
        data_at = _aligned(BATCH_ENTRY * len(queue) + len(_END))
        table = bytearray(data_at + self._data)
        self._data = 0
        nr = libc.NR
        placed = [0] * len(queue)  # where each call's data is
        for i, q in enumerate(queue):
            args = q.args
            if q.data is not None:
                placed[i] = area.table + data_at
                data = q.data(placed[i]) if callable(q.data) else q.data
                table[data_at:data_at + len(data)] = data
                args = (*args[:q.data_at], placed[i], *args[q.data_at + 1:])
                data_at += _aligned(len(data))
            _ENTRY.pack_into(table, i * BATCH_ENTRY, nr[q.name],
                             _MUST_SUCCEED if q.check and not q.ok else 0,
                             *[a & _U64_MASK for a in args], *_ZEROS[len(args):])
        table[BATCH_ENTRY * len(queue):BATCH_ENTRY * len(queue) + len(_END)] = _END
        with interrupts.held():
            self.write(area.table, bytes(table))
            mask = ptrace.get_sigmask(self.pid)
            regs = self.home.copy()
            regs.rip = area.code
            regs.rbx = area.table
            regs.eflags &= ~_TRAP_FLAG
            ptrace.set_regs(self.pid, regs)
            if self.mask is not None:
                ptrace.set_sigmask(self.pid, ALL_BLOCKED)
            try:
                self._await_batch(area.code + len(BATCH_CODE))
            finally:
                if mask & _SIGTRAP_BIT:  # the trap unblocked SIGTRAP (a forced signal)
                    ptrace.set_sigmask(self.pid, mask)
                self._go_home()
        self._at_exit = True  # a signal-delivery stop, which ``settle`` takes as one
        self.trips += 1
        done = self.read(area.table, BATCH_ENTRY * len(queue))
        results = _results(done, len(queue))
        for q, res, at in zip(queue, results, placed, strict=True):
            self.count += 1
            if q.check and -res not in q.ok:
                self._fail(q, res)
            if q.then is not None:
                q.then(res, at)
        return results

    def _await_batch(self, rip: int, sig: int = 5, entries: tuple[int, ...] = (),
                     resume: bool = True) -> None:
        """Resume the task (unless not ``resume``: it runs already) and wait for the
        batch loop's stop at ``rip``: the delivery stop of its trap (SIGTRAP), or of
        ``sig`` with rbx at one of ``entries`` (a dump's batch, ``SignalBatch``: the
        entry that unblocks it)."""
        if resume:
            ptrace.cont(self.pid)
        while True:
            stop = ptrace.wait_stop(self.pid)
            if stop.exited:
                raise ProcessGone(self.pid, f"died during injected syscalls: {stop.describe()}")
            if stop.event == 0 and stop.stopsig == sig:
                regs = ptrace.get_regs(self.pid)
                if regs.rip == rip and (not entries or regs.rbx in entries):
                    return
            if stop.event in (ptrace.PTRACE_EVENT_STOP, ptrace.PTRACE_EVENT_CLONE):
                resume = 0  # a group-stop or interrupt trap; a traced clone's event
            elif stop.event == 0 and stop.stopsig in ptrace.STOP_SIGNALS:
                resume = stop.stopsig
            else:
                raise InjectionError(0, f"unexpected stop during injected syscalls in process "
                                        f"{self.pid}: {stop.describe()}")
            ptrace.cont(self.pid, resume)

    def _await(self, name: str) -> None:
        """Wait for the resumed task's next syscall stop (the entry of the injected call,
        or its exit), resuming it from any other stop on the way."""
        while True:
            stop = ptrace.wait_stop(self.pid)
            if stop.exited:
                raise ProcessGone(self.pid, f"died during injected {name}: {stop.describe()}")
            if stop.stopsig == ptrace.SYSCALL_STOP:
                return
            if stop.event in (ptrace.PTRACE_EVENT_STOP, ptrace.PTRACE_EVENT_CLONE,
                              ptrace.PTRACE_EVENT_FORK):
                sig = 0  # a group-stop or interrupt trap; a traced clone's event
            elif stop.event == 0 and stop.stopsig in ptrace.STOP_SIGNALS:
                sig = stop.stopsig  # someone stopped the task meanwhile: let it stop
            else:
                raise InjectionError(0, f"unexpected stop during injected {name} in process "
                                        f"{self.pid}: {stop.describe()}")
            ptrace.syscall(self.pid, sig)

    def _go_home(self) -> None:
        if self.mask is not None:
            ptrace.set_sigmask(self.pid, self.mask)
        ptrace.set_regs(self.pid, self.home)

    def _abandon(self, entered: bool) -> None:
        """After a failure in the middle of a call: the task's own state back, the
        call skipped if it has not run yet."""
        try:
            if entered:  # at the entry stop: skip the call, stop at its exit
                ptrace.set_regs(self.pid, self.home)
                ptrace.syscall(self.pid)
                ptrace.wait_stop(self.pid)
            self._go_home()
        except (OSError, ProcessGone):
            pass

    def settle(self) -> None:
        """Take the task from the syscall-exit stop of the last call to a plain ptrace
        stop holding the registers and mask it was stopped with: from there the
        kernel itself resumes its interrupted syscall, or delivers a signal that came
        meanwhile, exactly as it would have. Call before detaching."""
        settle_all([self])

    # ------------------------------------------------------------ parking, scratch memory

    def park_at(self, addr: int, code: bytes = PARK_CODE) -> bool:
        """Write the parking code (``code``: PARK_CODE, or PARK_AREA with the splice loop)
        at ``addr``, in executable memory that nothing runs, and run later calls from
        there (module doc); ``unpark`` puts the bytes back. False if the memory cannot
        be written: calls stay where they were."""
        old = self.read(addr, len(code))
        try:
            self.write(addr, code)  # through /proc/PID/mem: the page is read-only
        except OSError:
            return False
        self._parked = (addr, old, self.site)
        if len(code) >= len(PARK_AREA):
            self.area = addr
        self.site = addr
        self.parks = True
        return True

    @property
    def splice_loop(self) -> int | None:
        """The address of the splice loop (PARK_AREA) when the task is parked with it."""
        if self._parked is None or len(self._parked[1]) < len(PARK_AREA):
            return None
        return self._parked[0] + SPLICE_ENTRY

    # ------------------------------------------------------------ code of the parking area

    def start_code(self, entry: int, rbx: int) -> int:
        """Run the parking area's code at ``entry`` with ``rbx``, every signal blocked, up
        to the exit of its first syscall; return that syscall's raw result. The task
        keeps the borrowed registers (should ckpt die, it goes on to park) until
        ``end_code``; ``run_code`` lets it go on meanwhile."""
        self.flush()
        with interrupts.held():
            regs = self.home.copy()
            regs.rip = entry
            regs.rbx = rbx
            regs.eflags &= ~_TRAP_FLAG
            ptrace.set_regs(self.pid, regs)
            ptrace.set_sigmask(self.pid, ALL_BLOCKED)
            self._at_exit = True  # from here on, whatever happens, ``end_code`` goes home
            for _ in range(2):  # its entry, then its exit
                ptrace.syscall(self.pid)
                self._await("the parking area's code")
            res = ptrace.get_regs(self.pid).rax
        return _signed(res)

    def run_code(self) -> None:
        """Let the code started by ``start_code`` run on, unwatched but for ``code_stopped``."""
        ptrace.cont(self.pid)
        self._code_running = True

    def code_stopped(self) -> None:
        """Take the stops of the task running the code (a signal that stops it, a group
        stop) without waiting: each is let go on, as ``raw`` does."""
        while True:
            stop = ptrace.poll_stop(self.pid)
            if stop is None:
                return
            if stop.exited:
                raise ProcessGone(self.pid, f"died in the parking area's code: {stop.describe()}")
            sig = stop.stopsig if stop.event == 0 and stop.stopsig in ptrace.STOP_SIGNALS else 0
            ptrace.cont(self.pid, sig)

    def end_code(self) -> int:
        """Stop the task (its code done, or waiting: it is stopped wherever it is), put
        its own registers and mask back; return where it was, as an offset in the
        parking area."""
        assert self._parked is not None
        with interrupts.held():
            if self._code_running:  # else it waits at the exit of the code's first syscall
                ptrace.interrupt(self.pid)
                while True:
                    stop = ptrace.wait_stop(self.pid)
                    if stop.exited:
                        raise ProcessGone(self.pid, f"died in the parking area's code: "
                                                    f"{stop.describe()}")
                    if stop.event == ptrace.PTRACE_EVENT_STOP:
                        break
                    sig = stop.stopsig if stop.event == 0 \
                        and stop.stopsig in ptrace.STOP_SIGNALS else 0
                    ptrace.cont(self.pid, sig)
                self._code_running = False
            where = ptrace.get_regs(self.pid).rip - self._parked[0]
            self._go_home()
        return where

    def unpark(self) -> None:
        if self._parked is not None:
            addr, old, self.site = self._parked
            self.area = None
            self.write(addr, old)
            self._parked = None
            self.parks = False

    def map_scratch(self, addr: int, size: int) -> None:
        """Map ``size`` bytes of scratch memory in the task at ``addr`` (free there)."""
        with interrupts.held():  # an interrupt after the call would leave it unknown
            self.call("mmap", addr, size, libc.PROT_READ | libc.PROT_WRITE,
                      libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_FIXED_NOREPLACE, -1, 0)
            self.scratch = (addr, size)

    def unmap_scratch(self) -> None:
        if self.scratch is not None:
            with interrupts.held():
                self.call("munmap", *self.scratch)
                self.scratch = None

    # ------------------------------------------------------------ memory

    def read(self, addr: int, size: int) -> bytes:
        return os.pread(self._mem, size, addr)

    def write(self, addr: int, data: bytes) -> None:
        done = 0
        while done < len(data):
            n = os.pwrite(self._mem, data[done:], addr + done)
            if n <= 0:  # no error: its address space is gone (killed meanwhile)
                raise ProcessGone(self.pid, "its memory is gone")
            done += n

    def write_string(self, addr: int, s: str) -> int:
        data = os.fsencode(s) + b"\0"
        self.write(addr, data)
        return len(data)


def settle_all(injs: Sequence[Injector]) -> None:
    """``Injector.settle`` of each of ``injs`` (the threads of a process), one round trip
    for them all."""
    for inj in injs:
        inj.flush()
    waiting = [inj for inj in injs if inj._at_exit]
    if not waiting:
        return
    with interrupts.held():
        ptrace.trap_stop_all([inj.pid for inj in waiting])
        for inj in waiting:
            inj._at_exit = False
            ptrace.set_regs(inj.pid, inj.regs)


def raw_each(calls: Sequence[tuple[Injector, str, tuple[int, ...]]]) -> list[int]:
    """One syscall in each of several tasks (the threads of a process, one call each),
    their round trips overlapping: every task is resumed into its call before ckpt
    waits for the first, and so on to their exits. Raw results, in order; each task as
    ``Injector.raw`` leaves it, and on a failure each left as ``raw`` leaves it then."""
    return [got[0] for got in raw_runs([(inj, [(name, args)]) for inj, name, args in calls])]


def raw_runs(runs: Sequence[tuple[Injector, Sequence[tuple[str, tuple[int, ...]]]]]
             ) -> list[list[int]]:
    """A run of syscalls in each of several tasks (``(injector, [(name, arguments)...])``,
    the threads of a process), the tasks' round trips overlapping: each goes on to its
    next call as soon as ckpt has taken the result of the one before, while the others
    run theirs. Raw results, per task in order. Between two calls of a parked task
    (``Injector.parks``) it keeps the calls' registers and every signal blocked and gets
    its own back after its last, as ``Injector.raw_all``; else after each. Each task
    is left as ``raw`` leaves it, and on a failure as ``raw`` leaves it then. When
    every task can take its run as one batch (``SignalBatch``), each is one round trip,
    all of them overlapping (``_signalled_runs``)."""
    for inj, _calls in runs:
        inj.flush()
    if runs and all(inj._signalled_fits(calls) for inj, calls in runs):
        return _signalled_runs(runs)
    # Where each task is in its current call: 0 loaded, 1 going to the entry, 2 at it,
    # 3 going to the exit, 4 back home (that call done); ``step`` is that call.
    where = [0] * len(runs)
    step = [0] * len(runs)
    results: list[list[int]] = [[] for _ in runs]
    with interrupts.held():
        failed = -1
        try:
            for i, (inj, calls) in enumerate(runs):
                failed = i
                if not calls:
                    where[i] = 4
                    continue
                name, args = calls[0]
                inj._load(name, args)
                ptrace.syscall(inj.pid)
                where[i] = 1
            going = [i for i in range(len(runs)) if where[i] != 4]
            while going:
                for i in going:
                    failed = i
                    inj, calls = runs[i]
                    name, args = calls[step[i]]
                    inj._await(name)
                    if where[i] == 1:
                        where[i] = 2
                        inj._entered()
                        ptrace.syscall(inj.pid)
                        where[i] = 3
                        continue
                    last = step[i] == len(calls) - 1
                    stay = inj.parks and not last  # its calls' registers kept
                    results[i].append(inj._result(home=not stay))
                    where[i] = 4
                    if last:
                        continue
                    step[i] += 1
                    name, args = calls[step[i]]
                    where[i] = 0
                    inj._load(name, args, mask=not stay)
                    ptrace.syscall(inj.pid)
                    where[i] = 1
                going = [i for i in going if where[i] != 4]
        except BaseException:
            for i, (inj, calls) in enumerate(runs):
                w = where[i]
                if w == 4 and len(results[i]) == len(calls):
                    continue
                if i == failed:  # stopped where it failed, as in ``raw``
                    inj._abandon(w >= 2)
                    continue
                if w in (1, 3):  # running: taken at its next stop
                    try:
                        inj._await(calls[step[i]][0])
                    except (OSError, ProcessGone):
                        continue
                    w += 1
                if w == 4:  # the call ran: its own registers back
                    inj._at_exit = True
                    inj._go_home()
                else:
                    inj._abandon(w == 2)
            raise
    return results


def _signalled_runs(runs: Sequence[tuple[Injector, Sequence[tuple[str, tuple[int, ...]]]]]
                    ) -> list[list[int]]:
    """``raw_runs`` of runs that each fit a batch (``Injector._signalled``): every task
    resumed into its batch before ckpt waits for the first. On a failure, each task
    started is taken at its signal (or its death) and sent home before the error is
    raised."""
    started = 0
    results: list[list[int]] = []
    with interrupts.held():
        try:
            for inj, calls in runs:
                inj._signal_start(calls)  # on a failure it goes home itself
                started += 1
            for inj, calls in runs:
                results.append(inj._signal_end(calls))  # and so does this
        except BaseException:
            ended = len(results) + 1 if started == len(runs) else 0
            for inj, calls in runs[ended:started]:
                try:
                    inj._signal_end(calls)
                except (OSError, ProcessGone):
                    pass
            raise
    return results
