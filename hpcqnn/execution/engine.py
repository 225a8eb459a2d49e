"""Engines run queries: simulate tiles, turn outputs into Pauli estimates, reconstruct.

``Engine`` is what the estimator needs of one; ``LocalEngine`` runs every tile in this process,
``hpcqnn.parallel``'s MPI engine spreads them over the ranks of a job. Both compile each program
once per rank when it arrives (``compile``), and share ``run_tiles`` (execute and accumulate a
batch of tiles through the circuits' readouts) and ``finish_query`` (the final contraction).
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Protocol

import numpy as np

from hpcqnn.cutting.program import Program
from hpcqnn.execution.compiled import CompiledProgram, compile_program
from hpcqnn.execution.devices import Placement, to_host
from hpcqnn.execution.query import Query, QueryBuffers
from hpcqnn.execution.simulator import AerRunner
from hpcqnn.execution.tiles import Tile, pack
from hpcqnn.options import CALL_BYTES, CALL_EXPERIMENTS, SAMPLE_BLOCK
from hpcqnn.run.timing import PhaseRecorder


class Engine(Protocol):
    """Where an estimator's queries execute."""

    recorder: PhaseRecorder

    @property
    def size(self) -> int:
        """Ranks taking part in every query."""

    @property
    def placement(self) -> Placement:
        """Where this process (rank 0 of the engine) simulates."""

    @property
    def rank_devices(self) -> list[str]:
        """Where each rank computes ("CPU", "GPU 0", ...), in rank order."""

    def compile(self, program: Program) -> CompiledProgram:
        """Make ``program`` known to every rank, each compiling it once; queries carry the result."""

    def evaluate(self, query: Query) -> tuple[np.ndarray, np.ndarray | None]:
        """Expectation values [rows, observables] and, in sampled mode, their variances."""


def finish_query(query: Query, buffers: QueryBuffers, xp: ModuleType = np) -> tuple[np.ndarray, np.ndarray | None]:
    """Expectation values [rows, observables] and, in sampled mode, their variances.

    Needs the query's observable weights, which only rank 0 holds (None is an error).
    """
    if query.weights is None:
        raise ValueError("finish_query needs the query's observable weights (only rank 0 contracts)")
    compiled, shots = query.compiled, query.shots or 0
    blocks = compiled.settings
    if blocks is not None and not shots:
        raise ValueError("a sampled program's query needs shots")
    contract, kernels = compiled.contraction, query.kernels
    if blocks is None:
        estimates = buffers.partition_estimates()
        if contract.local_terms:  # a sum of local terms: 1 + partitions combined terms per observable
            narrow, columns, combine = contract.local_operands(estimates, query.weights, xp)
            absorbed = contract.spread(contract.absorb(contract.operands(narrow), xp, kernels), columns, xp)
        else:
            absorbed = contract.absorb(contract.operands(contract.pauli_terms(estimates, xp)), xp, kernels)
            combine = query.weights
        return to_host(contract.values(absorbed, xp) @ xp.asarray(combine)), None
    scales = blocks.shot_scales(shots, query.allocation, xp)
    moments = blocks.means_and_products(buffers.sums, scales, xp)
    if blocks.stacked and contract.coupling is not None:  # two halves measuring their terms: the common QNN
        stacked = moments[0][0]
        grads = [contract.stacked_sensitivities(stacked, xp)]
        values = (stacked[0] * grads[0][0]).sum(axis=0)
    else:
        operands = contract.operands(blocks.terms(moments, xp))
        absorbed = contract.absorb(operands, xp, kernels)
        values = contract.values(absorbed, xp)
        grads = blocks.stack(contract.sensitivities(operands, absorbed, xp, kernels), xp)
    evs = to_host(values @ xp.asarray(query.weights))
    return evs, to_host(blocks.variance(grads, moments, query.weights, scales, xp))


def run_tiles(
    runner: AerRunner, query: Query, tiles: list[Tile], buffers: QueryBuffers, recorder: PhaseRecorder
) -> float:
    """Simulate ``tiles`` and measure them, then accumulate what they measured in ``buffers``
    (each circuit's ``readout.Readout``). The tiles go to Aer in calls (``call_pieces``), each
    measured as soon as it returns, so only one call's raw outputs (whole statevectors, for
    coherent circuits) are held at a time.

    Returns the execution seconds.
    """
    counts = {
        "n_circuits": len({t.circuit for t in tiles}), "n_rows": query.rows.count,
        "n_experiments": sum(t.stop - t.start for t in tiles), "n_tiles": len(tiles),
    }
    readouts = query.compiled.readouts
    measured = []
    with recorder.phase(query.number, "execute", **counts):
        start = time.time()
        for call in call_pieces(query, tiles):
            allocation = query.allocation if query.shots else None
            outputs = runner.run(query.compiled, query.rows, call, allocation)
            measured += [(p, readouts[p.circuit].measure(query, p.start, raw)) for p, raw in zip(call, outputs)]
        elapsed = time.time() - start
    with recorder.phase(query.number, "accumulate", **counts):
        for piece, values in measured:
            readouts[piece.circuit].accumulate(buffers, piece.start, values)
    return elapsed


def call_pieces(query: Query, tiles: list[Tile]) -> list[list[Tile]]:
    """The Aer calls of ``tiles`` (``tiles.pack``): at most CALL_EXPERIMENTS experiments and,
    where the experiments save much (whole statevectors), CALL_BYTES of outputs per call; pieces
    start at multiples of SAMPLE_BLOCK in sampled mode, whose shots are drawn per block."""
    limits = [max(1, min(CALL_EXPERIMENTS, CALL_BYTES // r.output_bytes)) for r in query.compiled.readouts]
    return pack(tiles, limits, SAMPLE_BLOCK if query.program.sampled else 1)


class LocalEngine:
    """Runs every tile of a query in this process, then reconstructs."""

    size = 1

    def __init__(self, runner: AerRunner, xp: ModuleType = np, recorder: PhaseRecorder | None = None):
        self.runner = runner
        self.xp = xp
        self.recorder = recorder or PhaseRecorder()
        self._compiled = 0

    def compile(self, program: Program) -> CompiledProgram:
        self._compiled += 1
        return compile_program(program, self.runner, key=self._compiled - 1)

    @property
    def placement(self) -> Placement:
        return self.runner.placement

    @property
    def rank_devices(self) -> list[str]:
        return [self.runner.placement.label]

    def evaluate(self, query: Query) -> tuple[np.ndarray, np.ndarray | None]:
        tiles = [Tile(i, 0, query.experiments(i)) for i in range(len(query.program.circuits))]
        buffers = QueryBuffers(query.compiled, query.rows)
        run_tiles(self.runner, query, tiles, buffers, self.recorder)
        with self.recorder.phase(query.number, "contract", n_rows=query.rows.count):
            result = finish_query(query, buffers, self.xp)
        self.recorder.flush()
        return result
