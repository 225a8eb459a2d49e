"""Wire cuts (the addon's CutWire markers, Move gates, find_cuts with wire cuts) against the uncut
statevector, exact and sampled, alone and mixed with gate cuts."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp
from qiskit_addon_cutting import cut_wires, expand_observables
from qiskit_addon_cutting.instructions import CutWire, Move
from test_sampled import setting_distributions

from hpcqnn import CutPlanError, DistributedEstimator
from statevector import exact_values
from tolerances import EXACT_ATOL, ROUNDING_TOL


def relay_circuit(wire_cut: bool, gate_cut: bool = False) -> QuantumCircuit:
    """Six qubits: qubit 2 works with the left block {0, 1}, then carries its state to the right
    block {3, 4, 5}; ``wire_cut`` marks qubit 2's wire between the two with a CutWire.
    ``gate_cut`` adds a CX between the blocks after the move (cut when the blocks are partitions)."""
    params = ParameterVector("t", 12)
    k = iter(params)
    qc = QuantumCircuit(6)
    for q in range(6):
        qc.ry(next(k), q)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.cz(0, 2)
    for q in range(3):
        qc.rx(next(k), q)
    if wire_cut:
        qc.append(CutWire(), [2])
    qc.cx(2, 3)
    qc.cz(2, 4)
    qc.cx(2, 5)
    qc.cx(3, 4)
    qc.cz(4, 5)
    qc.cx(5, 2)
    if gate_cut:
        qc.cx(0, 5)
    for q in range(3, 6):
        qc.rx(next(k), q)
    return qc


OBSERVABLES = [
    SparsePauliOp(["ZZZZZZ", "XIIIIY", "IIZXII"], [1.0, 0.4, -0.7]),
    SparsePauliOp(["IIIZII", "YIIIIX"], [0.5, 1.2]),
]


def run(estimator: DistributedEstimator, circuit: QuantumCircuit, rows: np.ndarray, observables=OBSERVABLES):
    return estimator.run([(circuit, observables, rows[:, None, :])]).result()[0]


ROWS = np.random.default_rng(7).uniform(-np.pi, np.pi, (5, 12))


@pytest.mark.parametrize("minimal_basis,subexperiments", [(True, 4 + 4), (False, 4 + 6)])
def test_cut_wire_marker_matches_statevector(minimal_basis: bool, subexperiments: int):
    """A CutWire splits the circuit into the qubits the other gates connect; the wire cut's
    source side simulates 4 channels, its destination 4 of the 6 distinct preparations."""
    result = run(DistributedEstimator(minimal_basis=minimal_basis), relay_circuit(True), ROWS)
    np.testing.assert_allclose(
        result.data.evs, exact_values(relay_circuit(False), OBSERVABLES, ROWS[:, None, :]), rtol=0, atol=EXACT_ATOL
    )
    assert result.metadata["num_cuts"] == 1 and result.metadata["num_partitions"] == 2
    assert result.metadata["num_subexperiments"] == subexperiments


def test_wire_and_gate_cuts_together():
    """Labels then name the qubits of ``cut_wires(circuit)``: qubit 2's first segment is the
    new qubit 2, its continuation qubit 3."""
    circuit = relay_circuit(True, gate_cut=True)
    result = run(DistributedEstimator(partition_labels="AAABBBB"), circuit, ROWS)
    expected = exact_values(relay_circuit(False, gate_cut=True), OBSERVABLES, ROWS[:, None, :])
    np.testing.assert_allclose(result.data.evs, expected, rtol=0, atol=EXACT_ATOL)
    assert result.metadata["num_cuts"] == 2
    assert result.metadata["num_subexperiments"] == 4 * 4 + 4 * 4  # each partition holds a side of both


def test_move_gates_with_labels_match_statevector():
    """The addon's Move route: the user widens the circuit, moves the state and labels the qubits."""
    marked = relay_circuit(True)
    moved = cut_wires(marked)  # Move gates wrapped for cutting, one new qubit
    plain = QuantumCircuit(moved.num_qubits)
    for inst in moved.data:  # the same circuit with bare Move gates, as a user would write it
        op = Move() if inst.operation.name == "qpd_2q" else inst.operation
        plain.append(op, [moved.find_bit(q).index for q in inst.qubits])
    observables = [
        SparsePauliOp(expand_observables(o.paulis, marked, moved), o.coeffs) for o in OBSERVABLES
    ]
    labels = ["L" if q in (0, 1, 2) else "R" for q in range(plain.num_qubits)]
    assert [inst.operation.name for inst in plain.data].count("move") == 1
    result = run(DistributedEstimator(partition_labels=labels), plain, ROWS, observables)
    np.testing.assert_allclose(
        result.data.evs, exact_values(relay_circuit(False), OBSERVABLES, ROWS[:, None, :]), rtol=0, atol=EXACT_ATOL
    )


def test_find_cuts_with_wire_cuts_needs_fewer_subexperiments():
    """Into 4-qubit pieces: gate cuts alone need two CX cuts, a wire cut does it with one."""
    circuit = relay_circuit(False)
    expected = exact_values(circuit, OBSERVABLES, ROWS[:, None, :])
    counts = {}
    for wire_cuts in (False, True):
        result = run(DistributedEstimator(max_subcircuit_qubits=4, wire_cuts=wire_cuts, seed=1), circuit, ROWS)
        np.testing.assert_allclose(result.data.evs, expected, rtol=0, atol=EXACT_ATOL)
        counts[wire_cuts] = result.metadata["num_subexperiments"]
    assert counts[True] < counts[False]


@pytest.mark.parametrize("allocation", ["uniform", "proportional"])
def test_sampled_wire_cut_within_errors(allocation: str):
    estimator = DistributedEstimator(partition_labels="AAABBBB", shots=4000, seed=3, shot_allocation=allocation)
    result = run(estimator, relay_circuit(True, gate_cut=True), ROWS)
    exact = exact_values(relay_circuit(False, gate_cut=True), OBSERVABLES, ROWS[:, None, :])
    assert np.all(result.data.stds > 0)
    assert np.all(np.abs(result.data.evs - exact) <= 5 * result.data.stds), (result.data.evs - exact) / result.data.stds


def test_wire_cuts_and_resets_run_coherently_with_the_templates_distributions():
    """Wire cuts' channels (resets on both sides) and a reset of the circuit itself swap onto
    fresh qubits, so both partitions run coherently: exact values equal the templates', and
    every sampled setting's outcome distributions equal the templates' to rounding."""
    circuit = relay_circuit(True, gate_cut=True)
    circuit.reset(1)  # partition A
    circuit.ry(0.4, 1)
    circuit.cx(1, 0)
    rows = ROWS[:3]
    exact = {
        coherent: run(DistributedEstimator(partition_labels="AAABBBB", coherent=coherent), circuit, rows)
        for coherent in (True, False)
    }
    np.testing.assert_allclose(exact[True].data.evs, exact[False].data.evs, rtol=0, atol=EXACT_ATOL)
    program = DistributedEstimator(partition_labels="AAABBBB").program((circuit, OBSERVABLES, rows[:, None, :]))
    assert all(program.coherent_circuits) and "fresh qubit" in repr(program)
    coherent, enumerated = (setting_distributions(circuit, OBSERVABLES[0], rows, "AAABBBB", c) for c in (True, False))
    for k, found in coherent.items():
        np.testing.assert_allclose(found, enumerated[k], rtol=0, atol=ROUNDING_TOL)


def test_move_inside_one_partition_is_refused():
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.append(Move(), [0, 1])
    qc.cx(1, 2)
    with pytest.raises(CutPlanError, match=r"\(Move\) on qubits \[0, 1\].*must join two partitions"):
        DistributedEstimator(partition_labels="AAB").run([(qc, SparsePauliOp("ZZZ"))])


def test_labels_must_cover_the_qubits_cut_wires_adds():
    with pytest.raises(CutPlanError, match="6 labels, the circuit has 7 qubits.*each CutWire adds one"):
        DistributedEstimator(partition_labels="AAABBB").run([(relay_circuit(True), OBSERVABLES[0], ROWS[0])])
