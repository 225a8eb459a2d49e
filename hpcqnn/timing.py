"""Per-query phase timing: rows of (query, phase, t_start, t_end, n_circuits, n_rows)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

PHASES = ("partition", "generate", "execute", "reconstruct", "reduce", "wait")


class PhaseRow(NamedTuple):
    query: int
    phase: str
    t_start: float
    t_end: float
    n_circuits: int
    n_rows: int


class PhaseRecorder:
    """Collects timing rows in memory; one clock (``time.perf_counter``) for the whole run."""

    def __init__(self) -> None:
        self.rows: list[PhaseRow] = []

    @contextmanager
    def phase(self, query: int, name: str, n_circuits: int = 0, n_rows: int = 0) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.rows.append(PhaseRow(query, name, start, time.perf_counter(), n_circuits, n_rows))

    def seconds(self, query: int) -> dict[str, float]:
        """Total seconds per phase of one query."""
        totals: dict[str, float] = defaultdict(float)
        for row in self.rows:
            if row.query == query:
                totals[row.phase] += row.t_end - row.t_start
        return dict(totals)
