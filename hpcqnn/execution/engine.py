"""A query's numeric pipeline: simulate tiles, turn outputs into Pauli estimates, reconstruct."""

from __future__ import annotations

import time
from types import ModuleType

import numpy as np

from hpcqnn.execution.devices import to_host
from hpcqnn.cutting.program import (
    Program,
    QueryBuffers,
    QueryRows,
    accumulate_tile,
    draw_shots,
    query_rows,
    sampled_variance,
)
from hpcqnn.execution.reconstruct import contraction_operands, reconstruct_terms, term_sensitivities
from hpcqnn.execution.simulator import AerRunner
from hpcqnn.execution.tiles import Tile
from hpcqnn.run.timing import PhaseRecorder


def finish_query(
    program: Program, buffers: QueryBuffers, weights: np.ndarray, xp: ModuleType = np
) -> tuple[np.ndarray, np.ndarray | None]:
    """Expectation values [rows, observables] and, in sampled mode, their variances.

    ``weights[j, o]`` is the coefficient of global Pauli term ``j`` in observable ``o``.
    """
    estimates = buffers.partition_estimates(program)
    operands = contraction_operands(program.plan, estimates, xp)
    evs = to_host(reconstruct_terms(operands, xp) @ xp.asarray(weights))
    if buffers.covariances is None:
        return evs, None
    sensitivities = [to_host(s) for s in term_sensitivities(program.plan, operands, weights, xp)]
    return evs, sampled_variance(program, buffers, sensitivities)


def run_tiles(
    runner: AerRunner,
    program: Program,
    rows: QueryRows,
    tiles: list[Tile],
    buffers: QueryBuffers,
    shots: int | None,
    seed: int | None,
    query: int,
    recorder: PhaseRecorder,
) -> float:
    """Simulate ``tiles`` (and draw their shots), then store their estimates in ``buffers``.

    Returns the execution seconds. Serial and MPI engines share this step.
    """
    experiments = sum(t.stop - t.start for t in tiles)
    counts = {"n_circuits": len({t.circuit for t in tiles}), "n_rows": rows.count, "n_experiments": experiments, "n_tiles": len(tiles)}
    with recorder.phase(query, "execute", **counts):
        start = time.time()
        outputs = runner.run(program, rows, tiles)
        per_tile = [program.experiment_shots(t.circuit, t.start, t.stop, rows, shots) if shots else None for t in tiles]
        data = [
            draw_shots(program, t.circuit, t.start, raw, n, seed, query) for t, raw, n in zip(tiles, outputs, per_tile)
        ]
        elapsed = time.time() - start
    with recorder.phase(query, "accumulate", **counts):
        for tile, values, n in zip(tiles, data, per_tile):
            accumulate_tile(program, buffers, tile.circuit, tile.start, values, n)
    return elapsed


class LocalEngine:
    """Runs every tile of a query in this process, then reconstructs."""

    def __init__(self, runner: AerRunner, xp: ModuleType = np, recorder: PhaseRecorder | None = None):
        self.runner = runner
        self.xp = xp
        self.recorder = recorder or PhaseRecorder()

    @property
    def device(self) -> str:
        return self.runner.device

    @property
    def rank_devices(self) -> list[str]:
        """Where each rank computes ("CPU", "GPU 0", ...): this process alone."""
        return [self.runner.placement.label]

    def evaluate(
        self,
        program: Program,
        params: np.ndarray,
        weights: np.ndarray,
        shots: int | None,
        seed: int | None,
        query: int,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        rows = query_rows(program.plan, params)
        tiles = [Tile(i, 0, program.experiments(i, rows)) for i in range(len(program.circuits))]
        buffers = QueryBuffers(program, rows)
        run_tiles(self.runner, program, rows, tiles, buffers, shots, seed, query, self.recorder)
        with self.recorder.phase(query, "contract", n_rows=rows.count):
            result = finish_query(program, buffers, weights, self.xp)
        self.recorder.flush()
        return result
