"""One parameterised template per partition for all of its subexperiments.

Subexperiments use the deferred-measurement principle: a QPD measurement has no classical
feed-forward, so it becomes a CX onto a fresh ancilla whose Z joins the measured Pauli, and a
reset becomes a SWAP with a fresh ancilla that is never measured.

Each cut location becomes U3 segments separated by switchable gadgets (CRX(pi)+P(pi/2) == CX
onto the measurement ancilla, RXX RYY RZZ(pi/2) == SWAP with the reset ancilla; angle 0 switches
them off). A subexperiment is then a row of "term parameter" values, so the simulator runs one
template per partition for all (subexperiment, parameter row) pairs instead of one circuit per
subexperiment. Resets of the circuit itself (not of a QPD term) arrive already deferred
(``coherent.defer_resets``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.synthesis import OneQubitEulerDecomposer
from qiskit_addon_cutting.qpd.instructions import SingleQubitQPDGate

from hpcqnn.cutting.partition import cut_id

_MARKERS = ("qpd_measure", "reset")


def _markers(ops) -> list[str]:
    return [op.name for op in ops if op.name in _MARKERS]


def _supersequence(a: list[str], b: list[str]) -> list[str]:
    """Shortest common supersequence of two marker sequences (tiny, so plain DP)."""
    n, m = len(a), len(b)
    best: list[list[list[str]]] = [[[] for _ in range(m + 1)] for _ in range(n + 1)]
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 or j == 0:
                best[i][j] = a[:i] + b[:j]
            elif a[i - 1] == b[j - 1]:
                best[i][j] = best[i - 1][j - 1] + [a[i - 1]]
            else:
                x, y = best[i - 1][j] + [a[i - 1]], best[i][j - 1] + [b[j - 1]]
                best[i][j] = x if len(x) <= len(y) else y
    return best[n][m]


@dataclass
class Location:
    """One cut location in a partition's template: U3 segments between switchable gadgets."""

    pattern: list[str]  # gadget kinds in order
    values: np.ndarray  # [channels, parameters of this location]


_EULER = OneQubitEulerDecomposer("U3")


def channel_location(channels: list[list]) -> Location:
    """Gadget pattern and parameter rows that realise each of ``channels`` (op lists)."""
    pattern: list[str] = []
    for ops in channels:
        pattern = _supersequence(pattern, _markers(ops))
    rows = []
    for ops in channels:
        segments, on = [np.eye(2, dtype=complex)], []
        slot = 0
        for op in ops:
            if op.name in _MARKERS:
                while pattern[slot] != op.name:  # gadgets this term skips stay off
                    segments.append(np.eye(2, dtype=complex))
                    on.append(False)
                    slot += 1
                segments.append(np.eye(2, dtype=complex))
                on.append(True)
                slot += 1
            else:
                segments[-1] = op.to_matrix() @ segments[-1]
        while slot < len(pattern):
            segments.append(np.eye(2, dtype=complex))
            on.append(False)
            slot += 1
        row = list(_EULER.angles(segments[0]))  # same order as ``build_template`` creates parameters
        for kind, enabled, u in zip(pattern, on, segments[1:]):
            if kind == "qpd_measure":
                row += [np.pi, np.pi / 2] if enabled else [0.0, 0.0]
            else:
                row.append(np.pi / 2 if enabled else 0.0)
            row += _EULER.angles(u)
        rows.append(row)
    return Location(pattern, np.array(rows, dtype=float))


def build_template(
    subcircuit: QuantumCircuit, locations: dict[int, Location]
) -> tuple[QuantumCircuit, tuple[Parameter, ...], tuple[int, ...], list[int]]:
    """The partition's circuit with every QPD placeholder replaced by its parameterised gadget;
    also the measurement ancillas and the cut ids in the order their parameters were made."""
    width = subcircuit.num_qubits
    extra = sum(len(loc.pattern) for loc in locations.values())
    circuit = QuantumCircuit(width + extra, name="subexperiment_template")
    term_parameters: list[Parameter] = []
    measured: list[int] = []
    order: list[int] = []
    ancilla = width

    def new(c: int) -> Parameter:
        parameter = Parameter(f"_hpcqnn_qpd{c}_{len(term_parameters)}")
        term_parameters.append(parameter)
        return parameter

    for inst in subcircuit.data:
        op = inst.operation
        qs = [subcircuit.find_bit(b).index for b in inst.qubits]
        if op.name == "barrier":
            continue
        if not isinstance(op, SingleQubitQPDGate):
            circuit.append(op, qs)
            continue
        c = cut_id(op)
        order.append(c)
        q = qs[0]
        circuit.u(new(c), new(c), new(c), q)
        for kind in locations[c].pattern:
            if kind == "qpd_measure":
                circuit.crx(new(c), q, ancilla)
                circuit.p(new(c), q)
                measured.append(ancilla)
            else:
                angle = new(c)
                circuit.rxx(angle, q, ancilla)
                circuit.ryy(angle, q, ancilla)
                circuit.rzz(angle, q, ancilla)
            ancilla += 1
            circuit.u(new(c), new(c), new(c), q)
    return circuit, tuple(term_parameters), tuple(measured), order
