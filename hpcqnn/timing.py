"""Per-query phase timing: rows of (query, phase, t_start, t_end, n_circuits, n_rows, ...).

One clock for the whole run on every rank: ``time.time()`` (Unix epoch seconds), so rows of
different ranks and hosts line up. A recorder keeps rows in memory and, when given a sink (the
HDF5 timing log), hands it the new rows after every query.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple, Protocol

PHASES = ("partition", "generate", "execute", "reconstruct", "reduce", "wait", "straggle")


class PhaseRow(NamedTuple):
    query: int
    phase: str
    t_start: float
    t_end: float
    n_circuits: int = 0
    n_rows: int = 0
    n_experiments: int = 0
    n_tiles: int = 0
    bytes: int = 0
    injected_delay: float = 0.0


class TimingSink(Protocol):
    def write(self, rows: list[PhaseRow]) -> None: ...


class PhaseRecorder:
    """Collects timing rows; ``flush`` passes rows not yet written to the sink."""

    def __init__(self, sink: TimingSink | None = None) -> None:
        self.rows: list[PhaseRow] = []
        self.sink = sink
        self._written = 0

    @contextmanager
    def phase(self, query: int, name: str, **counts) -> Iterator[dict]:
        """Time a block; the block may add counts (e.g. ``n_experiments``) to the yielded dict."""
        start = time.time()
        extra = dict(counts)
        try:
            yield extra
        finally:
            self.rows.append(PhaseRow(query, name, start, time.time(), **extra))

    def add(self, row: PhaseRow) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        if self.sink is not None and self._written < len(self.rows):
            self.sink.write(self.rows[self._written :])
        self._written = len(self.rows)

    def seconds(self, query: int) -> dict[str, float]:
        """Total seconds per phase of one query."""
        totals: dict[str, float] = defaultdict(float)
        for row in self.rows:
            if row.query == query:
                totals[row.phase] += row.t_end - row.t_start
        return dict(totals)
