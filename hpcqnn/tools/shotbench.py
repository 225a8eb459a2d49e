"""Sampled-mode accuracy at equal total shots: uniform vs |coefficient|-proportional allocation.

For each problem (the two-half QNN with its cut CX gates replaced by another two-qubit gate, and
the 40-qubit QNN in 10-qubit pieces) both allocations spend the same budget per parameter row,
``shots`` times the measurement settings; ``repeats`` seeds of each give the root-mean-square
error against exact mode (itself checked against the statevector in the tests) and the mean
reported standard error. One process; no MPI needed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit.library import CPhaseGate, CRXGate, CXGate, RZZGate
from qiskit.quantum_info import SparsePauliOp

from hpcqnn.training.circuits import cut_qnn

#: Cut gates of the two-half problems: name -> the gate put where the QNN has its cut CX.
CUT_GATES = {
    "CX": CXGate(),
    "RZZ(0.3)": RZZGate(0.3),
    "RZZ(1.0)": RZZGate(1.0),
    "CP(0.5)": CPhaseGate(0.5),
    "CRX(0.5)": CRXGate(0.5),
}


def with_cut_gate(circuit: QuantumCircuit, labels: str, gate) -> QuantumCircuit:
    """``circuit`` with every gate between differently labelled qubits replaced by ``gate``."""
    out = circuit.copy_empty_like()
    for inst in circuit.data:
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        crossing = len({labels[q] for q in qubits}) > 1
        out.append(gate if crossing else inst.operation, inst.qubits)
    return out


def problems(qubits: int, cuts: int) -> list[tuple[str, QuantumCircuit, str, list[SparsePauliOp]]]:
    """(name, circuit, partition labels, observables) of every problem of the study."""
    model = cut_qnn(qubits, cuts, layers=max(3, cuts))
    n = qubits
    local = SparsePauliOp.from_sparse_list([("Z", [0], 1.0), ("ZZ", [n // 2 - 1, n // 2], 0.7), ("X", [n - 1], 0.5)], n)
    found = [
        (f"{name} x{cuts}, {n}q", with_cut_gate(model.circuit, model.partition_labels, gate), model.partition_labels,
         [model.observable, local])
        for name, gate in CUT_GATES.items()
    ]
    big = cut_qnn(40, 1, layers=2, pieces=4)
    big_local = SparsePauliOp.from_sparse_list([("Z", [0], 1.0), ("ZZ", [9, 10], 0.7), ("Z", [39], -0.5)], 40)
    found.append(("CX x3, 40q in 10q pieces", big.circuit, big.partition_labels, [big_local]))
    return found


def study(
    qubits: int = 8,
    cuts: int = 3,
    shots: int = 1000,
    rows: int = 8,
    repeats: int = 20,
    seed: int = 1234,
    progress=print,
) -> list[dict]:
    """One result per problem: errors and reported stds of both allocations at equal budgets."""
    from hpcqnn.estimator import DistributedEstimator

    results = []
    for name, circuit, labels, observables in problems(qubits, cuts):
        params = np.random.default_rng(seed).uniform(-np.pi, np.pi, (rows, 1, circuit.num_parameters))
        pub = (circuit, observables, params)
        exact = DistributedEstimator(partition_labels=labels, device="CPU").run([pub]).result()[0].data.evs
        entry: dict[str, Any] = {"problem": name, "shots_per_setting": shots, "rows": rows, "repeats": repeats}
        for allocation in ("uniform", "proportional"):
            estimator = DistributedEstimator(
                partition_labels=labels, shots=shots, shot_allocation=allocation, seed=seed, device="CPU"
            )
            start = time.perf_counter()
            outcomes = []
            for repeat in range(repeats):  # each repeat its own seed: a seeded run repeats its shots
                estimator.seed = seed + repeat
                outcomes.append(estimator.run([pub]).result()[0])
            program = estimator.program(pub)
            entry["settings"] = sum(len(w) for w in program.shot_weights())
            entry[f"{allocation}_total_shots_per_row"] = sum(int(n.sum()) for n in program.subexperiment_shots(shots))
            entry[f"{allocation}_rmse"] = float(np.sqrt(np.mean([np.square(o.data.evs - exact) for o in outcomes])))
            entry[f"{allocation}_mean_std"] = float(np.mean([o.data.stds for o in outcomes]))
            entry[f"{allocation}_seconds"] = time.perf_counter() - start
        entry["rmse_ratio"] = entry["proportional_rmse"] / entry["uniform_rmse"]
        results.append(entry)
        progress(format_row(entry))
    return results


HEADER = (
    f"{'problem':<26} {'settings':>8} {'shots/row':>10} {'RMSE unif.':>11} {'RMSE prop.':>11} {'ratio':>6} "
    f"{'std unif.':>10} {'std prop.':>10}"
)


def format_row(entry: dict) -> str:
    return (
        f"{entry['problem']:<26} {entry['settings']:>8} {entry['proportional_total_shots_per_row']:>10} "
        f"{entry['uniform_rmse']:>11.5f} {entry['proportional_rmse']:>11.5f} {entry['rmse_ratio']:>6.2f} "
        f"{entry['uniform_mean_std']:>10.5f} {entry['proportional_mean_std']:>10.5f}"
    )
