"""The estimator runs every MPI test script performs; tests/test_mpi.py repeats them serially."""

from __future__ import annotations

import numpy as np
from qiskit.quantum_info import SparsePauliOp
from qiskit_addon_cutting.instructions import CutWire

from hpcqnn.training.circuits import cut_qnn

MODEL = cut_qnn(6, cuts=3, layers=3)
SEED = 5
SHOTS = 1000
#: Observables whose Pauli terms differ from MODEL.observable's, so a second program is built.
MIXED = [
    SparsePauliOp(["ZIIIIZ", "IIXXII"], [0.7, -0.4]),
    SparsePauliOp(["IIZZII", "YIIIIY", "IIIIII"], [1.1, 0.3, 0.25]),
]


def wire_cut_circuit():
    """A 4-qubit QNN whose qubit 1, after its ansatz, carries its state into the other half
    through a wire cut (pieces {0, 1} and {1', 2, 3}: 5 qubits after cut_wires)."""
    qc = cut_qnn(4, cuts=0, layers=2).circuit.copy()
    qc.append(CutWire(), [1])
    qc.cx(1, 2)
    qc.cz(1, 3)
    qc.ry(0.3, 1)
    return qc


CHAIN = cut_qnn(8, cuts=1, layers=2, pieces=4)  # four partitions in a chain, three CX cuts
TRAINABLE = cut_qnn(6, cuts=2, layers=2, entangler="rzz")  # two trainable RZZ cuts
#: Cut shapes beyond MODEL: name -> (estimator options, the circuit, its observables).
SHAPES = {
    "wire": ({}, wire_cut_circuit(), [SparsePauliOp(["ZZZZ", "XIIY"], [1.0, 0.5]), SparsePauliOp("IZZI")]),
    "chain": (
        {"partition_labels": CHAIN.partition_labels},
        CHAIN.circuit,
        [CHAIN.observable, SparsePauliOp(["ZIIIIIIZ", "IIIXXIII"], [0.6, -0.8])],
    ),
    "trainable": (
        {"partition_labels": TRAINABLE.partition_labels},
        TRAINABLE.circuit,
        [TRAINABLE.observable, SparsePauliOp(["ZIIIIZ", "IIXXII"], [0.7, -0.4])],
    ),
    # the wire cut's pieces as FakeManilaV2 runs them: noisy density matrices, readout errors
    "noisy": ({"backend": "FakeManilaV2"}, wire_cut_circuit(), [SparsePauliOp(["ZZZZ", "XIIY"], [1.0, 0.5])]),
}


def shape_runs(name: str) -> list[list[tuple]]:
    """Two runs of a SHAPES entry: 6 rows of both observables; then a single row."""
    _, circuit, observables = SHAPES[name]
    rng = np.random.default_rng(7)
    values = rng.uniform(-np.pi, np.pi, (6, circuit.num_parameters))
    return [[(circuit, observables, values[:, None, :])], [(circuit, observables[0], values[0])]]


def runs() -> list[list[tuple]]:
    """Five runs, one engine query each: 20 rows; a second program with two observables; two
    pubs batched into one 5-row query; a single row (some ranks get no sampled tiles); 131 rows
    (three blocks of rows per coherent circuit, so ranks share one circuit's rows and shots)."""
    rng = np.random.default_rng(2024)
    circuit, observable = MODEL.circuit, MODEL.observable

    def rows(k: int) -> np.ndarray:
        return rng.uniform(-np.pi, np.pi, (k, circuit.num_parameters))

    return [
        [(circuit, observable, rows(20))],
        [(circuit, MIXED, rows(20)[:, None, :])],
        [(circuit, observable, rows(3)), (circuit, observable, rows(2))],
        [(circuit, MIXED[0], rows(1)[0])],
        [(circuit, observable, rows(131))],
    ]


def collect(estimator, selected: list[list[tuple]] | None = None) -> dict[str, np.ndarray]:
    """Run ``selected`` (default: ``runs()``) in order; evs and stds keyed ``evs/RUN/PUB``."""
    arrays = {}
    for r, pubs in enumerate(runs() if selected is None else selected):
        for p, result in enumerate(estimator.run(pubs).result()):
            arrays[f"evs/{r}/{p}"] = np.asarray(result.data.evs)
            arrays[f"stds/{r}/{p}"] = np.asarray(result.data.stds)
    return arrays
