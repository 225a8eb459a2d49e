"""Per-query phase timing: rows of (query, phase, t_start, t_end, n_circuits, n_rows, ...).

One clock for the whole run on every rank: ``time.time()`` (Unix epoch seconds), so rows of
different ranks and hosts line up. A recorder keeps rows in memory and, when given a sink (the
HDF5 timing log), hands it the new rows after every query.

Reconstruction is two phases: ``accumulate`` turns a tile's simulator outputs into estimates in
the rank's query buffer (every rank, as tiles finish) and ``contract`` is rank 0's final tensor
contraction. Summaries add ``reconstruct``, their sum (the paper's reconstruction share).
Timing logs before schema 2 named both ``reconstruct`` (``upgrade_phases`` tells them apart).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple, Protocol

import numpy as np

PHASES = ("partition", "generate", "broadcast", "execute", "straggle", "accumulate", "contract", "wait", "reduce")
RECONSTRUCTION_PHASES = ("accumulate", "contract")
#: Version of the timing-log layout: 2 split ``reconstruct`` into ``accumulate`` and ``contract``.
SCHEMA_VERSION = 2


def with_reconstruct(seconds: dict[str, float]) -> dict[str, float]:
    """Per-phase figures plus ``reconstruct``: the sum of the reconstruction phases."""
    return {**seconds, "reconstruct": sum(seconds.get(p, 0.0) for p in RECONSTRUCTION_PHASES)}


def upgrade_phases(phases: np.ndarray, n_experiments: np.ndarray, schema_version: int) -> np.ndarray:
    """Phase names of a log written at ``schema_version`` in today's names: before version 2 a
    ``reconstruct`` row with experiments was a tile's accumulation, one without the contraction."""
    if schema_version >= SCHEMA_VERSION:
        return phases
    old = phases == phases.dtype.type("reconstruct")
    upgraded = phases.copy()
    upgraded[old & (n_experiments > 0)] = "accumulate"
    upgraded[old & (n_experiments == 0)] = "contract"
    return upgraded


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
        self._by_query: dict[int, list[PhaseRow]] = defaultdict(list)

    @contextmanager
    def phase(self, query: int, name: str, **counts) -> Iterator[dict]:
        """Time a block; the block may add counts (e.g. ``n_experiments``) to the yielded dict."""
        start = time.time()
        extra = dict(counts)
        try:
            yield extra
        finally:
            self.add(PhaseRow(query, name, start, time.time(), **extra))

    def add(self, row: PhaseRow) -> None:
        self.rows.append(row)
        self._by_query[row.query].append(row)

    def restore(self, rows: list[PhaseRow]) -> None:
        """Take ``rows`` as already written (a resumed run's earlier queries, from its log)."""
        for row in rows:
            self.add(row)
        self._written = len(self.rows)

    def flush(self) -> None:
        if self.sink is not None and self._written < len(self.rows):
            self.sink.write(self.rows[self._written :])
        self._written = len(self.rows)

    def seconds(self, query: int) -> dict[str, float]:
        """Total seconds per phase of one query, with ``reconstruct`` (``with_reconstruct``)."""
        totals: dict[str, float] = defaultdict(float)
        for row in self._by_query.get(query, ()):
            totals[row.phase] += row.t_end - row.t_start
        return with_reconstruct(totals)


def query_summary(rows: list[PhaseRow]) -> dict:
    """Per-query wall time and phase shares over a rank's rows: medians and 95th percentiles."""
    by_query: dict[int, list[PhaseRow]] = defaultdict(list)
    for row in rows:
        by_query[row.query].append(row)
    walls, shares = [], defaultdict(list)
    for query_rows in by_query.values():
        wall = max(r.t_end for r in query_rows) - min(r.t_start for r in query_rows)
        walls.append(wall)
        per_phase: dict[str, float] = defaultdict(float)
        for r in query_rows:
            per_phase[r.phase] += r.t_end - r.t_start
        for phase, seconds in with_reconstruct({p: per_phase.get(p, 0.0) for p in PHASES}).items():
            shares[phase].append(seconds / wall if wall > 0 else 0.0)
    if not walls:
        return {"queries": 0}
    return {
        "queries": len(walls),
        "query_seconds_median": float(np.median(walls)),
        "query_seconds_p95": float(np.percentile(walls, 95)),
        "phase_share_median": {p: float(np.median(v)) for p, v in shares.items()},
        "phase_share_p95": {p: float(np.percentile(v, 95)) for p, v in shares.items()},
    }
