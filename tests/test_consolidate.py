"""Consolidation before cutting and the sampling overhead gamma: runs of gates on one pair of
qubits across partitions are cut once where that is cheaper; values against StatevectorEstimator."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.circuit.library import real_amplitudes, zz_feature_map
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparsePauliOp

from hpcqnn import CutPlanError, DistributedEstimator, ExecutionConfigError
from tolerances import EXACT_ATOL

OBSERVABLE = SparsePauliOp(["ZZZZ", "XIIZ", "IYXI"], [1.0, 0.4, -0.3])


def reference(circuit: QuantumCircuit, params=None) -> np.ndarray:
    pub = (circuit, OBSERVABLE) if params is None else (circuit, OBSERVABLE, params)
    return StatevectorEstimator().run([pub]).result()[0].data.evs


def cx_ry_cx(rotations_everywhere: bool) -> QuantumCircuit:
    """CX(1, 2) . RY . CX(1, 2) across halves {0, 1} | {2, 3}."""
    qc = QuantumCircuit(4)
    qc.h(range(4))
    qc.cx(0, 1)
    qc.cx(1, 2)
    for q in range(4) if rotations_everywhere else [2]:
        qc.ry(0.3 + 0.2 * q, q)
    qc.cx(1, 2)
    qc.cx(2, 3)
    qc.rx(0.5, range(4))
    return qc


@pytest.mark.parametrize("everywhere", [True, False], ids=["RY on all four qubits", "RY on the target"])
def test_bound_run_is_cut_once_through_kak(everywhere: bool) -> None:
    circuit = cx_ry_cx(everywhere)
    merged = DistributedEstimator("AABB", device="CPU").program((circuit, OBSERVABLE))
    separate = DistributedEstimator("AABB", device="CPU", consolidate=False).program((circuit, OBSERVABLE))
    assert separate.plan.num_cuts == 2 and separate.plan.gamma == pytest.approx(9.0)
    assert merged.plan.num_cuts == 1 and merged.plan.gamma < 9.0 - 1e-6
    assert f"gamma {merged.plan.gamma:.4g}" in repr(merged)
    for coherent in (True, False):
        result = DistributedEstimator("AABB", device="CPU", coherent=coherent).run([(circuit, OBSERVABLE)]).result()[0]
        np.testing.assert_allclose(result.data.evs, reference(circuit), rtol=0, atol=EXACT_ATOL)
        assert result.metadata["gamma"] == pytest.approx(merged.plan.gamma)


def test_cancelling_pair_costs_nothing() -> None:
    """CX . CX on the pair is the identity: gamma 1, one trivial cut."""
    qc = QuantumCircuit(4)
    qc.h(range(4))
    qc.cx(1, 2)
    qc.cx(1, 2)
    qc.cx(0, 1)
    plan = DistributedEstimator("AABB", device="CPU").program((qc, OBSERVABLE)).plan
    assert plan.gamma == pytest.approx(1.0)
    evs = DistributedEstimator("AABB", device="CPU").run([(qc, OBSERVABLE)]).result()[0].data.evs
    np.testing.assert_allclose(evs, reference(qc), rtol=0, atol=EXACT_ATOL)


def test_zz_pattern_with_an_unbound_angle_becomes_one_trainable_rzz() -> None:
    """CX . P(theta) . CX (the ZZ feature map's pattern) is RZZ(theta): one trainable cut whose
    gamma is 1 + 2|sin theta| <= 3, where the two CX cuts cost 9."""
    x = ParameterVector("x", 4)
    qc = QuantumCircuit(4)
    for q in range(4):
        qc.ry(x[q], q)
    qc.cx(1, 2)
    qc.p(2 * (np.pi - x[1]) * (np.pi - x[2]), 2)
    qc.cx(1, 2)
    qc.rz(x[0], 2)
    params = np.random.default_rng(2).uniform(-np.pi, np.pi, (4, 4))
    estimator = DistributedEstimator("AABB", device="CPU")
    plan = estimator.program((qc, OBSERVABLE, params[0])).plan
    assert plan.num_cuts == 1 and plan.cut_angles[0] is not None and plan.gamma == 3.0
    assert DistributedEstimator("AABB", consolidate=False).program((qc, OBSERVABLE, params[0])).plan.gamma == 9.0
    result = estimator.run([(qc, OBSERVABLE, params)]).result()
    np.testing.assert_allclose(result[0].data.evs, reference(qc, params), rtol=0, atol=EXACT_ATOL)
    phi = 2 * (np.pi - params[:, 1]) * (np.pi - params[:, 2])
    assert result[0].metadata["gamma"] == pytest.approx(np.max(1 + 2 * np.abs(np.sin(phi))))


def test_zz_feature_map_and_real_amplitudes_cut_into_halves() -> None:
    """qiskit's zz_feature_map (linear entanglement) + real_amplitudes on 4 qubits, cut into
    halves: the feature map's crossing CX . P . CX pairs are trainable RZZ cuts."""
    features = zz_feature_map(4, reps=2, entanglement="linear")
    ansatz = real_amplitudes(4, reps=1, entanglement="linear")
    qc = features.compose(ansatz)
    params = np.random.default_rng(3).uniform(0, np.pi, (3, qc.num_parameters))
    estimator = DistributedEstimator("AABB", device="CPU")
    plan = estimator.program((qc, OBSERVABLE, params[0])).plan
    assert sum(a is not None for a in plan.cut_angles) == 2  # one per feature-map repetition
    assert plan.num_cuts == 3  # and the ansatz's CX
    evs = estimator.run([(qc, OBSERVABLE, params)]).result()[0].data.evs
    np.testing.assert_allclose(evs, reference(qc, params), rtol=0, atol=EXACT_ATOL)


def test_max_gamma_refuses_costly_plans_by_name() -> None:
    circuit = cx_ry_cx(True)
    with pytest.raises(CutPlanError, match=r"gamma = 9 \(the product over its 2 cuts: 3, 3\) exceeds max_gamma=8"):
        DistributedEstimator("AABB", consolidate=False, max_gamma=8).program((circuit, OBSERVABLE))
    DistributedEstimator("AABB", max_gamma=8).program((circuit, OBSERVABLE))  # consolidated: below
    with pytest.raises(ExecutionConfigError, match="max_gamma must be a number >= 1"):
        DistributedEstimator(max_gamma=0.5)


def test_a_reset_ends_a_run():
    """CX . reset . CX on the pair is no unitary run: cut gate by gate, values as the reference."""
    qc = QuantumCircuit(4)
    qc.h(range(4))
    qc.cx(1, 2)
    qc.reset(1)
    qc.ry(0.4, 1)
    qc.cx(1, 2)
    qc.ry(0.3, range(4))
    estimator = DistributedEstimator("AABB", device="CPU")
    assert estimator.program((qc, OBSERVABLE)).plan.num_cuts == 2
    np.testing.assert_allclose(estimator.run([(qc, OBSERVABLE)]).result()[0].data.evs, reference(qc), atol=EXACT_ATOL)
