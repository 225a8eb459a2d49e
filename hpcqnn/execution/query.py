"""A query's state on a rank: its distinct parameter rows per partition and the buffer its
tiles fill with Pauli estimates (exact) or moments (sampled)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hpcqnn.cutting.plan import CutPlan
from hpcqnn.cutting.program import Program
from hpcqnn.cutting.shots import sample_counts
from hpcqnn.execution.reconstruct import setting_blocks


@dataclass(frozen=True)
class Query:
    """One estimator query, built once and handed to the engine: what runs (``program`` with
    parameter rows ``params`` [rows, circuit parameters]) and how it is measured (``shots``:
    None for exact values; ``seed`` of the shot draws). ``weights[j, o]`` is the coefficient of
    global Pauli term ``j`` in observable ``o``; only rank 0 contracts, so workers hold None."""

    number: int
    program: Program
    params: np.ndarray
    shots: int | None = None
    seed: int | None = None
    weights: np.ndarray | None = None

    @cached_property
    def rows(self) -> QueryRows:
        """The rows each partition needs (``query_rows``): distinct ones in exact mode, every
        row in sampled mode (each row draws its own shots)."""
        return query_rows(self.program.plan, self.params, sampled=self.program.sampled)

    def experiments(self, circuit: int) -> int:
        """How many (subexperiment, row) experiments program circuit ``circuit`` runs."""
        return self.program.experiments(circuit, self.rows)

    def experiment_shots(self, circuit: int, start: int, stop: int) -> np.ndarray | None:
        """Shots of experiments ``start ... stop`` of ``circuit``; None in exact mode."""
        if not self.shots:
            return None
        return self.program.experiment_shots(circuit, start, stop, self.rows, self.shots)


@dataclass(frozen=True)
class QueryRows:
    """The parameter rows each partition runs for a query.

    Exact mode: rows that agree on a partition's parameters give it identical subexperiments,
    so a parameter-shift row of a weight in partition A needs no new run of partition B.
    Partition ``p`` runs ``unique[p]`` (full-width representative rows); query row ``r`` reads its
    result from ``unique[p][inverse[p][r]]``.

    Sampled mode: every query row is its own experiment row (``unique[p]`` is all rows, in order),
    so that each row draws independent shots (repeating a row averages shot noise, as with any
    estimator); ``same[p][r]`` is the first row equal to row ``r`` on partition ``p``'s
    parameters, and the simulator computes each distinct outcome distribution once.
    """

    count: int
    unique: list[np.ndarray]
    inverse: list[np.ndarray]
    in_order: list[bool]  # unique[p] is every query row in order (inverse[p] is the identity)
    same: list[np.ndarray] | None = None


def query_rows(plan: CutPlan, params: np.ndarray, sampled: bool = False) -> QueryRows:
    """Deduplicate ``params`` [rows, circuit parameters] per partition (deterministic); in
    sampled mode keep every row and record which ones are equal per partition instead."""
    unique, inverse, in_order, same = [], [], [], []
    for part in plan.partitions:
        if len(part.parameter_columns) == 0 or len(params) == 1:
            first, inv = np.zeros(1, dtype=np.int64), np.zeros(len(params), dtype=np.int64)
        else:
            _, first, inv = np.unique(
                params[:, part.parameter_columns], axis=0, return_index=True, return_inverse=True
            )
        inv = inv.reshape(-1)
        if sampled:
            unique.append(params)
            inverse.append(np.arange(len(params), dtype=np.int64))
            same.append(first[inv].astype(np.int64))
        else:
            unique.append(params[first])
            inverse.append(inv)
        in_order.append(sampled or bool(np.array_equal(inverse[-1], np.arange(len(params)))))
    return QueryRows(len(params), unique, inverse, in_order, same if sampled else None)


class QueryBuffers:
    """Everything a query's tiles contribute, in one flat float64 array.

    Exact mode: ``by_row[p]`` is partition ``p``'s estimates [subexperiments, rows, local
    Paulis] and ``by_experiment[p]`` the same array experiment-major [subexperiments * rows,
    local Paulis] (a coherent tile writes rows, an enumerated one experiments). Sampled mode:
    ``sums[b]`` is ``reconstruct.SettingBlocks`` block ``b``'s [circuits, subexperiments, rows,
    K + K * K]: the summed signed outcomes of the K Paulis each setting measures, then of their
    pairwise products (``shots.moment_matrix``); ``circuit_sums[i]`` views circuit ``i``'s part
    experiment-major. Each experiment is written by exactly one tile, so buffers filled on
    different ranks combine by summation (zeros elsewhere) into the serial result.
    """

    def __init__(self, program: Program, rows: QueryRows):
        partitions = program.plan.partitions
        shapes: list[tuple[int, ...]]
        if program.sampled:
            blocks = setting_blocks(program).blocks
            shapes = [(len(b.circuits), b.subexperiments, rows.count, b.paulis * (b.paulis + 1)) for b in blocks]
        else:
            shapes = [(part.num_subexperiments, len(u), len(part.paulis)) for part, u in zip(partitions, rows.unique)]
        self.flat = np.zeros(sum(math.prod(shape) for shape in shapes))
        views, offset = [], 0
        for shape in shapes:
            views.append(self.flat[offset : offset + math.prod(shape)].reshape(shape))
            offset += math.prod(shape)
        self.rows = rows
        self.by_row: list[np.ndarray] | None = None
        self.by_experiment: list[np.ndarray] | None = None
        self.sums: list[np.ndarray] | None = None
        self.circuit_sums: list[np.ndarray] | None = None
        if program.sampled:
            self.sums = views
            self.circuit_sums = [np.empty((0, 0))] * len(program.circuits)
            for block, view in zip(blocks, views):
                for c, circuit in enumerate(block.circuits):
                    self.circuit_sums[circuit] = view[c].reshape(-1, view.shape[-1])
        else:
            self.by_row = views
            self.by_experiment = [v.reshape(-1, v.shape[-1]) for v in views]

    def partition_estimates(self) -> list[np.ndarray]:
        """Exact mode: estimates shaped [subexperiments, query rows, local Paulis]."""
        assert self.by_row is not None, "exact mode has partition estimates"
        return [e if same else e[:, inv] for e, inv, same in zip(self.by_row, self.rows.inverse, self.rows.in_order)]


def measure(query: Query, circuit: int, start: int, raw: np.ndarray, shots: np.ndarray | None) -> np.ndarray:
    """A tile's measurement (it belongs to execution) from the simulator's raw outputs: every
    subexperiment's expectation values read out of coherent statevectors [subexperiments, rows,
    Paulis]; counts drawn from outcome probabilities (sampled mode), ``shots[e]`` for experiment
    ``e``; or Aer's expectation values as they are."""
    readout = query.program.coherent(circuit)
    if readout is not None:
        return readout.estimates(raw)
    if not query.program.sampled:
        return raw
    assert shots is not None, "a sampled query has shots"
    return sample_counts(raw, shots, query.seed, query.number, circuit, offset=start)


def accumulate_tile(program: Program, buffers: QueryBuffers, circuit: int, start: int, data: np.ndarray) -> None:
    """Store one tile's results (experiments ``start ...``) in ``buffers``.

    ``data`` is what ``measure`` returned: estimates [subexperiments, rows, Paulis] (a coherent
    circuit, whose experiments are rows), expectation values (exact) or counts (sampled), of
    which the Paulis' and their products' summed signed outcomes are stored, the ancilla parity
    folded in (``Program.moments``; reconstruction divides by the shots).
    """
    if program.sampled:
        assert buffers.circuit_sums is not None, "a sampled query has sums"
        np.matmul(data, program.moments(circuit), out=buffers.circuit_sums[circuit][start : start + len(data)])
        return
    assert buffers.by_row is not None and buffers.by_experiment is not None, "an exact query has estimates"
    p = program.partition_of[circuit]
    if program.coherent(circuit) is not None:
        buffers.by_row[p][:, start : start + data.shape[1]] = data
    else:
        buffers.by_experiment[p][start : start + len(data)] = data
