"""A query's state on a rank: its distinct parameter rows per partition and the buffer its
tiles fill with Pauli estimates (exact) or moments (sampled)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hpcqnn.cutting.plan import CutPlan
from hpcqnn.cutting.program import Program
from hpcqnn.execution.compiled import CompiledProgram


@dataclass(frozen=True)
class Query:
    """One estimator query, built once and handed to the engine: what runs (``compiled``, this
    rank's form of a program, with parameter rows ``params`` [rows, circuit parameters]) and how
    it is measured (``shots``: None for exact values; the shots are drawn from the random
    streams of ``seed`` and ``stream``, ``cutting.shots``). ``number`` counts the estimator's
    queries (the timing logs' query). ``weights[j, o]`` is the coefficient of global Pauli term
    ``j`` in observable ``o``; only rank 0 contracts, so workers hold None."""

    number: int
    compiled: CompiledProgram
    params: np.ndarray
    shots: int | None = None
    seed: int | None = None
    weights: np.ndarray | None = None
    stream: int = 0

    @property
    def program(self) -> Program:
        return self.compiled.program

    @cached_property
    def rows(self) -> QueryRows:
        """The rows each partition needs (``query_rows``): distinct ones in exact mode, every
        row in sampled mode (each row draws its own shots)."""
        return query_rows(self.program.plan, self.params, sampled=self.program.sampled)

    @cached_property
    def allocation(self) -> tuple[np.ndarray, ...]:
        """Sampled mode: the shots of every (setting, subexperiment), or, where the split
        depends on the row, (setting, subexperiment, row) (``SettingBlocks.allocation``)."""
        assert self.shots and self.compiled.settings is not None, "a sampled query has shots"
        return self.compiled.settings.allocation(self.shots, self.kernels)

    @cached_property
    def kernels(self) -> list[np.ndarray] | None:
        """The cut kernels of this query's rows where the plan has trainable cuts
        (``CutPlan.kernels``), worked out once for the shot split and the contraction."""
        plan = self.program.plan
        return plan.kernels(self.params) if plan.trainable else None

    def experiments(self, circuit: int) -> int:
        """How many experiments program circuit ``circuit`` runs: (subexperiment, row) pairs,
        or rows for a coherent circuit."""
        partition = self.program.partition_of[circuit]
        return self.program.experiments_per_row(circuit) * len(self.rows.unique[partition])


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
    ``sums[b]`` is ``reconstruct.SettingBlocks`` block ``b``'s [settings, subexperiments, rows,
    K + K * K]: the summed signed outcomes of the K Paulis each setting measures, then of their
    pairwise products (``shots.moment_matrix``); ``setting_sums[k]`` views setting ``k``'s part
    [subexperiments, rows, K + K * K]. Each experiment is written by exactly one tile, so buffers
    filled on different ranks combine by summation (zeros elsewhere) into the serial result.
    """

    def __init__(self, compiled: CompiledProgram, rows: QueryRows):
        program = compiled.program
        partitions = program.plan.partitions
        shapes: list[tuple[int, ...]]
        if compiled.settings is not None:
            blocks = compiled.settings.blocks
            shapes = [(len(b.settings), b.subexperiments, rows.count, b.paulis * (b.paulis + 1)) for b in blocks]
        else:
            shapes = [(part.num_subexperiments, len(u), len(part.paulis)) for part, u in zip(partitions, rows.unique)]
        self.flat = np.zeros(sum(math.prod(shape) for shape in shapes))
        views, offset = [], 0
        for shape in shapes:
            views.append(self.flat[offset : offset + math.prod(shape)].reshape(shape))
            offset += math.prod(shape)
        self.rows = rows
        self.by_row: list[np.ndarray] = []
        self.by_experiment: list[np.ndarray] = []
        self.sums: list[np.ndarray] = []
        self.setting_sums: list[np.ndarray] = []
        if compiled.settings is not None:
            self.sums = views
            self.setting_sums = [np.empty((0, 0, 0))] * len(program.settings)
            for block, view in zip(blocks, views):
                for i, setting in enumerate(block.settings):
                    self.setting_sums[setting] = view[i]
        else:
            self.by_row = views
            self.by_experiment = [v.reshape(-1, v.shape[-1]) for v in views]

    def partition_estimates(self) -> list[np.ndarray]:
        """Exact mode: estimates shaped [subexperiments, query rows, local Paulis]."""
        return [e if same else e[:, inv] for e, inv, same in zip(self.by_row, self.rows.inverse, self.rows.in_order)]
