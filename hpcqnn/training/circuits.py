"""The QNN circuit family used by the benchmark and the classifiers.

``n`` qubits in ``pieces`` consecutive blocks (two halves by default; block ``k`` holds qubits
``[k n / pieces, (k + 1) n / pieces)``). Features enter as RY(x_i); each of ``layers`` ansatz
layers applies RY(w) RZ(w) (``rotations="ryrz"``) or RY(w) (``"ry"``) to every qubit and a CX
ladder inside each block. ``cuts`` entanglers join every pair of neighbouring blocks (the last
qubit of one and the first of the next), one after each of the first ``cuts`` layers, so the same
circuit is the uncut baseline (one partition) or a cut problem with ``cuts x (pieces - 1)`` gate
cuts (labels ``"AA..BB..CC.."``, one letter per block). The entanglers are CX gates
(``entangler="cx"``) or trainable RZZ(w) gates (``"rzz"``, each with its own weight, after the
ansatz weights), cut with their angle unbound. The readout observable is Z on every qubit.
"""

from __future__ import annotations

import string
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
ENTANGLERS = ("cx", "rzz")


def cut_qnn(
    num_qubits: int, cuts: int, layers: int = 3, rotations: str = "ryrz", pieces: int = 2, entangler: str = "cx"
) -> CutQNN:
    """Build the QNN of ``pieces`` blocks with ``cuts`` entanglers between neighbouring blocks."""
    if num_qubits < 2:
        raise ValueError(f"num_qubits must be >= 2, got {num_qubits}")
    if not 2 <= pieces <= min(num_qubits, len(string.ascii_uppercase)):
        raise ValueError(
            f"pieces must be between 2 and min(num_qubits, 26) = {min(num_qubits, 26)}, got {pieces}"
        )
    if cuts < 0:
        raise ValueError(f"cuts must be >= 0, got {cuts}")
    if rotations not in ROTATIONS:
        raise ValueError(f"rotations must be one of {sorted(ROTATIONS)}, got {rotations!r}")
    if entangler not in ENTANGLERS:
        raise ValueError(f"entangler must be one of {ENTANGLERS}, got {entangler!r}")
    if layers < cuts:
        raise ValueError(f"layers ({layers}) must be >= cuts ({cuts}): one cut gate per layer")
    bounds = [k * num_qubits // pieces for k in range(pieces + 1)]
    inputs = ParameterVector("x", num_qubits)
    gates = ROTATIONS[rotations]
    ansatz_weights = len(gates) * num_qubits * layers
    weights = ParameterVector("w", ansatz_weights + (cuts * (pieces - 1) if entangler == "rzz" else 0))
    name = f"cut_qnn_{num_qubits}q_{cuts}c" + (f"_{pieces}p" if pieces != 2 else "")
    name += "_rzz" if entangler == "rzz" else ""
    qc = QuantumCircuit(num_qubits, name=name)
    for q in range(num_qubits):
        qc.ry(inputs[q], q)
    w = iter(weights[:ansatz_weights])
    entangler_weights = iter(weights[ansatz_weights:])
    for layer in range(layers):
        for q in range(num_qubits):
            for gate in gates:
                getattr(qc, gate)(next(w), q)
        for lo, hi in zip(bounds, bounds[1:]):
            for q in range(lo, hi - 1):
                qc.cx(q, q + 1)
        if layer < cuts:
            for boundary in bounds[1:-1]:
                if entangler == "rzz":
                    qc.rzz(next(entangler_weights), boundary - 1, boundary)
                else:
                    qc.cx(boundary - 1, boundary)
    labels = "".join(string.ascii_uppercase[k] * (hi - lo) for k, (lo, hi) in enumerate(zip(bounds, bounds[1:])))
    return CutQNN(qc, inputs, weights, SparsePauliOp("Z" * num_qubits), labels)
