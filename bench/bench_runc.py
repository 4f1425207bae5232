"""How long runc takes to checkpoint and restore a container with ckpt as its criu
(issue 11), in one table.

Run as root, from the repository:

    .venv/bin/python bench/bench_runc.py [--rounds N]     # 5

The container is tests/test_runc.py's: a busybox shell counting into a bind-mounted
/data and onto its stdout (a file here), with its own pid, mount, uts, ipc and network
namespaces, about 30 mounts and runc's cgroups. Each round runs it, waits for its
counter, times ``runc --criu ckpt-criu checkpoint`` and then ``runc restore -d`` as
whole commands (runc's own work included: the wall time, and the CPU time of runc and
everything it ran), checks that the counter goes on, and removes the container.
With ``CKPT_BENCH_CRIU`` naming a criu that passes ``criu check``, the same rounds
run it too, interleaved, in a column of its own. It asserts nothing about speed.
Everything it creates is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import kill_and_reap, ready

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from runc_helpers import BUSYBOX, COUNTER, make_rootfs  # noqa: E402


def _cpu() -> float:
    """CPU seconds of every waited-for descendant so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@dataclass
class Times:
    """Wall and CPU seconds of each round, by step."""

    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def add(self, step: str, wall: float, cpu: float) -> None:
        self.wall.setdefault(step, []).append(wall)
        self.cpu.setdefault(step, []).append(cpu)


class Bench:
    """One container ID, its bundle and state under ``top``, run with a given criu."""

    def __init__(self, runc: str, top: Path):
        self.runc = runc
        self.top = top
        self.data = top / "data"
        self.data.mkdir()
        self.state = top / "state"
        self.bundle = top / "bundle"
        self.copiers: list[subprocess.Popen[bytes]] = []
        make_rootfs(self.bundle / "rootfs")
        subprocess.run([runc, "spec"], cwd=self.bundle, check=True)
        config = json.loads((self.bundle / "config.json").read_text())
        config["process"].update(terminal=False, args=["sh", "-c", COUNTER])
        config["root"]["readonly"] = False
        config["mounts"].append({"destination": "/data", "type": "bind",
                                 "source": str(self.data), "options": ["rbind", "rw"]})
        (self.bundle / "config.json").write_text(json.dumps(config))

    def runc_cmd(self, *args: str, criu: str | None = None) -> list[str]:
        return [self.runc, "--root", str(self.state), *(["--criu", criu] if criu else []),
                *args]

    def count(self) -> int:
        path = self.data / "count"
        return len(path.read_text().split()) if path.exists() else 0

    def wait_count(self, more: int, timeout: float = 30) -> None:
        want = self.count() + more
        deadline = time.monotonic() + timeout
        while self.count() < want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the counter did not go on ({self.count()} numbers)")
            time.sleep(0.02)

    def init(self, cid: str) -> int:
        res = subprocess.run(self.runc_cmd("state", cid), capture_output=True, text=True,
                             check=True)
        return int(json.loads(res.stdout)["pid"])

    def piped(self) -> int:
        """A pipe whose read end a ``cat`` appends to the container's log; its write
        end (the container's stdio are pipes, as under a shim)."""
        r, w = os.pipe()
        with open(self.top / "out", "ab") as out:
            self.copiers.append(subprocess.Popen(["cat"], stdin=r, stdout=out))
        os.close(r)
        return w

    def timed(self, argv: list[str], reap: int = 0) -> tuple[float, float]:
        """(wall, CPU) seconds of ``argv``; meanwhile process ``reap`` (ours, as the
        container's init is: runc run -d leaves it to its child subreaper) is reaped
        once it exits, as a shim would."""
        cpu0, t0 = _cpu(), time.perf_counter()
        with open(self.top / "runc.log", "ab") as log:
            w = self.piped()  # a restore's stdio become the container's
            proc = subprocess.Popen(argv, cwd=self.bundle, stdin=subprocess.DEVNULL,
                                    stdout=w if "restore" in argv else log, stderr=log)
            os.close(w)
            while proc.poll() is None:
                if reap:
                    try:
                        if os.waitpid(reap, os.WNOHANG)[0] == reap:
                            reap = 0
                    except ChildProcessError:
                        reap = 0
                time.sleep(0.002)
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        if proc.returncode != 0:
            said = (self.top / "runc.log").read_text().strip().splitlines()[-3:]
            raise RuntimeError(f"runc {argv[-6 if 'checkpoint' in argv else -7]} failed "
                               f"({proc.returncode}): {' '.join(said)}")
        return wall, cpu

    def round(self, criu: str, times: Times, n: int) -> None:
        cid = f"bench-{os.getpid()}-{n}"
        images, work = self.top / f"images-{n}", self.top / f"work-{n}"
        images.mkdir()
        work.mkdir()
        w = self.piped()
        subprocess.run(self.runc_cmd("run", "-d", cid), cwd=self.bundle, check=True,
                       stdin=subprocess.DEVNULL, stdout=w, stderr=w)
        os.close(w)
        try:
            self.wait_count(5)
            init = self.init(cid)
            times.add("checkpoint", *self.timed(self.runc_cmd(
                "checkpoint", "--image-path", str(images), "--work-path", str(work), cid,
                criu=criu), reap=init))
            kill_and_reap(init)
            times.add("restore -d", *self.timed(self.runc_cmd(
                "restore", "-d", "--image-path", str(images), "--work-path", str(work), cid,
                criu=criu)))
            self.wait_count(3)
        finally:
            init = 0
            try:
                init = self.init(cid)
            except (subprocess.CalledProcessError, ValueError):
                pass
            subprocess.run(self.runc_cmd("delete", "-f", cid), capture_output=True)
            if init:
                kill_and_reap(init)
                subprocess.run(self.runc_cmd("delete", "-f", cid), capture_output=True)
            shutil.rmtree(images, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
            for c in self.copiers:
                c.kill()
                c.wait()
            self.copiers.clear()


def working_criu() -> str | None:
    """criu from CKPT_BENCH_CRIU, when it passes ``criu check``."""
    path = os.environ.get("CKPT_BENCH_CRIU")
    if not path:
        return None
    res = subprocess.run([path, "check"], capture_output=True, text=True)
    if res.returncode != 0:
        print(f"CKPT_BENCH_CRIU={path}: criu check fails, no criu column "
              f"({(res.stderr or res.stdout).strip().splitlines()[-1:]})", file=sys.stderr)
        return None
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    runc = shutil.which("runc") or "/usr/sbin/runc"
    if not os.path.exists(runc) or not os.path.exists(BUSYBOX):
        sys.exit("bench_runc: runc and busybox-static are needed (scripts/bootstrap.sh)")
    if not ready("bench_runc", tempfile.gettempdir(), 64 << 20):
        sys.exit(1)
    tools = {"ckpt-criu": str(Path(sys.executable).with_name("ckpt-criu"))}
    criu = working_criu()
    if criu:
        tools["criu"] = criu
    times = {name: Times() for name in tools}
    with tempfile.TemporaryDirectory(prefix="bench-runc-") as tmp:
        bench = Bench(runc, Path(tmp))
        k = 0
        for _ in range(args.rounds):
            for name, path in tools.items():  # interleaved: the same load for each
                bench.round(path, times[name], k)
                k += 1
    cols = "".join(f" | {name} wall ms (min) | {name} CPU ms" for name in tools)
    version = subprocess.run([runc, "--version"], capture_output=True, text=True).stdout
    print(f"runc {version.split()[2]}, {args.rounds} rounds, median (minimum)\n")
    print(f"| step{cols} |")
    print("|---" * (1 + 2 * len(tools)) + "|")
    for step in ("checkpoint", "restore -d"):
        row = ""
        for name in tools:
            wall, cpu = times[name].wall[step], times[name].cpu[step]
            row += (f" | {1000 * statistics.median(wall):.0f} ({1000 * min(wall):.0f})"
                    f" | {1000 * statistics.median(cpu):.0f}")
        print(f"| runc {step}{row} |")


if __name__ == "__main__":
    main()
