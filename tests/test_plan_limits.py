"""Plans refused at plan time, by name, before any rank simulates: partition labels that cannot
name a partition, and partitions whose statevector would not fit in memory."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp

from hpcqnn import CutPlanError, DistributedEstimator
from hpcqnn.cutting.partition import available_memory
from hpcqnn.training.circuits import cut_qnn


def wide_circuit(qubits: int) -> QuantumCircuit:
    circuit = QuantumCircuit(qubits)
    theta = Parameter("theta")
    for q in range(qubits):
        circuit.ry(theta, q)
    return circuit


def test_an_uncut_circuit_too_wide_for_memory_is_refused_with_the_numbers():
    qubits = 40  # 16 TiB of amplitudes
    assert 16 * 2**qubits > available_memory()
    estimator = DistributedEstimator()
    with pytest.raises(CutPlanError, match=r"partition 0 has 40 qubits: its statevector alone needs 16,384\.0 GiB "
                       r"per rank, and this host has [\d,.]+ GiB available; cut the circuit"):
        estimator.run([(wide_circuit(qubits), SparsePauliOp("Z" * qubits), [0.3])])
    assert estimator.num_queries == 0  # nothing ran


def test_the_same_circuit_cut_into_narrow_partitions_is_accepted():
    qubits = 40
    estimator = DistributedEstimator(partition_labels=[q // 10 for q in range(qubits)])
    assert len(estimator.program((wide_circuit(qubits), SparsePauliOp("Z" * qubits), [0.3])).plan.partitions) == 4


@pytest.mark.parametrize("labels", [[[0], [0], [1], [1]], ["A", "A", {"B"}, "B"]])
def test_unhashable_partition_labels_are_refused_by_name(labels):
    qnn = cut_qnn(4, cuts=1, layers=1)
    with pytest.raises(CutPlanError, match=r"partition_labels\[\d\] is .*cannot name a partition \(not hashable\)"):
        values = [0.1] * qnn.circuit.num_parameters
        DistributedEstimator(partition_labels=labels).run([(qnn.circuit, qnn.observable, values)])
