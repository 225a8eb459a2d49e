"""Qiskit Aer execution of work tiles: every tile of a call goes into one Aer run.

A tile is (circuit index in the program, first row, row count). Rows are bound through Aer's
``parameter_binds`` (runtime binding), never as circuit copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from qiskit_aer import AerSimulator

from .errors import HpcqnnError
from .measurement import Program


class Tile(NamedTuple):
    """A unit of work: one program circuit for a contiguous block of parameter rows."""

    circuit: int
    start: int
    stop: int


class SimulationError(HpcqnnError, RuntimeError):
    """Aer reported a failed simulation."""


class AerRunner:
    """Runs program tiles on one Aer statevector simulator."""

    def __init__(self, device: str = "CPU", threads: int = 0):
        self.device = device
        self.threads = threads
        self.backend = AerSimulator(method="statevector", device=device, max_parallel_threads=threads)

    def run(self, program: Program, params: np.ndarray, tiles: Sequence[Tile]) -> list[np.ndarray]:
        """Raw outputs per tile, each shaped [tile rows, outputs of that circuit]."""
        if not tiles:
            return []
        circuits = [program.circuits[t.circuit] for t in tiles]
        column = {p: i for i, p in enumerate(program.plan.parameters)}
        binds = [
            {p: params[t.start : t.stop, column[p]].tolist() for p in circuit.parameters}
            for t, circuit in zip(tiles, circuits)
        ]
        output = self.backend._execute_circuits_job(  # the public run() builds a Result object
            circuits,  # per experiment, which costs more than the simulation of small circuits
            binds,
            {"shots": 1, "runtime_parameter_bind_enable": True},
            format_result=False,
        )
        results = output.get("results", [])
        if not output.get("success", False) or not all(r.get("success", False) for r in results):
            failed = next((r.get("status") for r in results if not r.get("success", False)), None)
            raise SimulationError(f"Aer simulation failed: {failed or output.get('status')}")

        out, k = [], 0
        for t, circuit, bind in zip(tiles, circuits, binds):
            rows = t.stop - t.start
            experiments = rows if bind else 1  # a parameter-free circuit runs once for all rows
            values = [_outputs(program, t.circuit, r["data"]) for r in results[k : k + experiments]]
            k += experiments
            out.append(np.broadcast_to(np.asarray(values), (rows, len(values[0]))).copy())
        return out


def _outputs(program: Program, circuit: int, data: dict) -> np.ndarray:
    if not program.sampled:
        count = len(program.plan.partitions[program.partition_of[circuit]].paulis)
        return np.array([data[f"e{j}"] for j in range(count)], dtype=float)
    return np.asarray(data["p"], dtype=float)
