"""The QNN circuit family used by the benchmark and the classifiers.

``n`` qubits in two halves A = [0, n/2) and B = [n/2, n). Features enter as RY(x_i); each of
``layers`` ansatz layers applies RY(w) RZ(w) (``rotations="ryrz"``) or RY(w) (``"ry"``) to every
qubit and a CX ladder inside each half.
``cuts`` CX gates join the halves (qubits n/2-1 and n/2), one after each of the first ``cuts``
layers, so the same circuit is the uncut baseline (one partition) or a ``cuts``-cut problem
(labels ``"A"*(n/2) + "B"*(n - n/2)``). The readout observable is Z on every qubit.
"""

from __future__ import annotations

from dataclasses import dataclass

from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp


@dataclass(frozen=True)
class CutQNN:
    circuit: QuantumCircuit
    inputs: ParameterVector
    weights: ParameterVector
    observable: SparsePauliOp
    partition_labels: str

    @property
    def num_qubits(self) -> int:
        return self.circuit.num_qubits


ROTATIONS = {"ry": ("ry",), "ryrz": ("ry", "rz")}


def cut_qnn(num_qubits: int, cuts: int, layers: int = 3, rotations: str = "ryrz") -> CutQNN:
    """Build the two-half QNN with ``cuts`` CX gates across the halves."""
    if num_qubits < 2:
        raise ValueError(f"num_qubits must be >= 2, got {num_qubits}")
    if cuts < 0:
        raise ValueError(f"cuts must be >= 0, got {cuts}")
    if rotations not in ROTATIONS:
        raise ValueError(f"rotations must be one of {sorted(ROTATIONS)}, got {rotations!r}")
    if layers < cuts:
        raise ValueError(f"layers ({layers}) must be >= cuts ({cuts}): one cut gate per layer")
    half = num_qubits // 2
    inputs = ParameterVector("x", num_qubits)
    gates = ROTATIONS[rotations]
    weights = ParameterVector("w", len(gates) * num_qubits * layers)
    qc = QuantumCircuit(num_qubits, name=f"cut_qnn_{num_qubits}q_{cuts}c")
    for q in range(num_qubits):
        qc.ry(inputs[q], q)
    w = iter(weights)
    for layer in range(layers):
        for q in range(num_qubits):
            for gate in gates:
                getattr(qc, gate)(next(w), q)
        for lo, hi in ((0, half), (half, num_qubits)):
            for q in range(lo, hi - 1):
                qc.cx(q, q + 1)
        if layer < cuts:
            qc.cx(half - 1, half)
    labels = "A" * half + "B" * (num_qubits - half)
    return CutQNN(qc, inputs, weights, SparsePauliOp("Z" * num_qubits), labels)
