"""The estimator runs every MPI test script performs; tests/test_mpi.py repeats them serially."""

from __future__ import annotations

import numpy as np
from qiskit.quantum_info import SparsePauliOp

from hpcqnn.circuits import cut_qnn

MODEL = cut_qnn(6, cuts=3, layers=3)
SEED = 5
SHOTS = 1000
#: Observables whose Pauli terms differ from MODEL.observable's, so a second program is built.
MIXED = [
    SparsePauliOp(["ZIIIIZ", "IIXXII"], [0.7, -0.4]),
    SparsePauliOp(["IIZZII", "YIIIIY", "IIIIII"], [1.1, 0.3, 0.25]),
]


def runs() -> list[list[tuple]]:
    """Four runs, one engine query each: 20 rows; a second program with two observables; two
    pubs batched into one 5-row query; a single row (some ranks get no sampled tiles)."""
    rng = np.random.default_rng(2024)
    circuit, observable = MODEL.circuit, MODEL.observable

    def rows(k: int) -> np.ndarray:
        return rng.uniform(-np.pi, np.pi, (k, circuit.num_parameters))

    return [
        [(circuit, observable, rows(20))],
        [(circuit, MIXED, rows(20)[:, None, :])],
        [(circuit, observable, rows(3)), (circuit, observable, rows(2))],
        [(circuit, MIXED[0], rows(1)[0])],
    ]


def collect(estimator, selected: list[list[tuple]] | None = None) -> dict[str, np.ndarray]:
    """Run ``selected`` (default: ``runs()``) in order; evs and stds keyed ``evs/RUN/PUB``."""
    arrays = {}
    for r, pubs in enumerate(runs() if selected is None else selected):
        for p, result in enumerate(estimator.run(pubs).result()):
            arrays[f"evs/{r}/{p}"] = np.asarray(result.data.evs)
            arrays[f"stds/{r}/{p}"] = np.asarray(result.data.stds)
    return arrays
