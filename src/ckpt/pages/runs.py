"""Runs of pages (``[vaddr, npages]``, as ``mm-PID.json`` lists them): appended in
address order and merged, or several lists merged into spans, overlaps refused."""

from __future__ import annotations

from ..kernel.libc import PAGE_SIZE as PAGE


class Runs:
    """A list of ``[vaddr, npages]`` runs, merging a run that continues the last one."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []

    def add(self, vaddr: int, npages: int) -> None:
        if self.runs and self.runs[-1][0] + self.runs[-1][1] * PAGE == vaddr:
            self.runs[-1][1] += npages
        else:
            self.runs.append([vaddr, npages])

    @property
    def pages(self) -> int:
        return sum(n for _, n in self.runs)


def merge_runs(*lists: list[list[int]]) -> list[tuple[int, int]]:
    """Runs ``[vaddr, npages]`` of several disjoint lists, as sorted, merged [start, end).

    Raises ValueError when two runs overlap."""
    spans = sorted((int(a), int(a) + int(n) * PAGE) for runs in lists for a, n in runs)
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if out and s <= out[-1][1]:
            if s < out[-1][1]:
                raise ValueError(f"page runs overlap at {s:#x}")
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out
