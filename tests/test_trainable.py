"""Trainable cut gates: two-qubit rotations with unbound angles (parameter expressions) across
cuts, in exact and sampled mode, against Qiskit's StatevectorEstimator and qiskit-addon-cutting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterVector
from qiskit.circuit.library import (
    CPhaseGate,
    CRXGate,
    CRYGate,
    CRZGate,
    RXXGate,
    RYYGate,
    RZXGate,
    RZZGate,
)
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import Operator, SparsePauliOp

from hpcqnn import DistributedEstimator, cli
from hpcqnn.cutting.shots import subexperiment_weights
from hpcqnn.cutting.trainable import TRAINABLE_CUT_GATES, canonical_rzz
from hpcqnn.tools.reference import reference_query
from hpcqnn.training.circuits import cut_qnn
from hpcqnn.training.model import QNNClassifier
from tolerances import EXACT_ATOL

GATES = {
    "rzz": RZZGate, "rxx": RXXGate, "ryy": RYYGate, "rzx": RZXGate,
    "crx": CRXGate, "cry": CRYGate, "crz": CRZGate, "cp": CPhaseGate,
}
OBSERVABLES = [SparsePauliOp(["ZZZZ", "XIZY"], [1.0, 0.5]), SparsePauliOp(["IZXI", "YYII"], [-0.7, 0.4])]


def test_every_family_is_covered() -> None:
    assert sorted(GATES) == sorted(TRAINABLE_CUT_GATES)


@pytest.mark.parametrize("name", list(GATES))
def test_canonical_form_is_the_gate(name: str) -> None:
    """Single-qubit gates around one RZZ equal the gate up to a global phase, at any angle."""
    theta = Parameter("t")
    canonical = canonical_rzz(name, theta)
    assert [inst.operation.name for inst in canonical.data if inst.operation.num_qubits == 2] == ["rzz"]
    for angle in (0.37, -2.1, np.pi):
        assert Operator(canonical.assign_parameters({theta: angle})).equiv(Operator(GATES[name](angle)))


def trainable_circuit(name: str) -> tuple[QuantumCircuit, np.ndarray]:
    """4 qubits, halves {0, 1} and {2, 3}: RY inputs, the gate across the cut with angle
    ``2*x0 + x2 - 0.3``, an RZZ(x3) across the cut the other way round, and a CX cut."""
    x = ParameterVector("x", 4)
    qc = QuantumCircuit(4)
    for q in range(4):
        qc.ry(x[q], q)
    qc.cx(0, 1)
    qc.append(GATES[name](2 * x[0] + x[2] - 0.3), [1, 2])
    qc.cx(2, 3)
    qc.rzz(x[3], 3, 0)
    qc.cx(1, 3)
    for q in range(4):
        qc.rx(0.4 * (q + 1), q)
    return qc, np.random.default_rng(len(name)).uniform(-np.pi, np.pi, (5, 4))


def reference(circuit: QuantumCircuit, params: np.ndarray) -> np.ndarray:
    return StatevectorEstimator().run([(circuit, OBSERVABLES, params[:, None, :])]).result()[0].data.evs


@pytest.mark.parametrize("coherent", [True, False], ids=["coherent", "enumerated"])
@pytest.mark.parametrize("name", list(GATES))
def test_exact_values_match_statevector(name: str, coherent: bool) -> None:
    circuit, params = trainable_circuit(name)
    estimator = DistributedEstimator("AABB", device="CPU", coherent=coherent)
    program = estimator.program((circuit, OBSERVABLES, params[0]))
    assert program.plan.num_cuts == 3 and sum(a is not None for a in program.plan.cut_angles) == 2
    evs = estimator.run([(circuit, OBSERVABLES, params[:, None, :])]).result()[0].data.evs
    np.testing.assert_allclose(evs, reference(circuit, params), rtol=0, atol=EXACT_ATOL)


def test_plan_is_built_once_per_structure() -> None:
    circuit, params = trainable_circuit("crx")
    estimator = DistributedEstimator("AABB", device="CPU")
    for block in np.array_split(params, 3):
        estimator.run([(circuit, OBSERVABLES, block[:, None, :])]).result()
    assert len(estimator._programs) == 1


def test_bound_angles_give_the_same_values() -> None:
    """Bound per row, each circuit is cut with the addon's fixed-angle QPD (one plan per row):
    the values equal the trainable plan's."""
    circuit, params = trainable_circuit("cry")
    trainable = DistributedEstimator("AABB", device="CPU").run([(circuit, OBSERVABLES, params[:, None, :])])
    for row, evs in zip(params, trainable.result()[0].data.evs):
        bound = circuit.assign_parameters(row)
        estimator = DistributedEstimator("AABB", device="CPU")
        assert not estimator.program((bound, OBSERVABLES)).plan.trainable
        np.testing.assert_allclose(estimator.run([(bound, OBSERVABLES)]).result()[0].data.evs, evs, atol=EXACT_ATOL)


@pytest.mark.parametrize("name", ["crx", "cp"])
def test_addon_pipeline_with_bound_angles_agrees(name: str) -> None:
    """qiskit-addon-cutting cuts the gate only with its angle bound: its own pipeline
    (partition_problem -> generate_cutting_experiments -> SamplerV2 -> reconstruct) at 20 000
    shots lies within 5 standard errors of hpcqnn's exact value from the one trainable plan
    (the standard error: hpcqnn's sampled estimate at the same shots per subexperiment)."""
    x = ParameterVector("x", 2)
    qc = QuantumCircuit(2)
    qc.ry(x[0], 0)
    qc.ry(0.7, 1)
    qc.append(GATES[name](2 * x[1] - 0.4), [0, 1])
    qc.rx(x[0], 1)
    observable = SparsePauliOp(["ZZ", "XZ"], [1.0, 0.6])
    row = np.array([0.9, 1.3])
    exact = DistributedEstimator("AB", device="CPU").run([(qc, observable, row)]).result()[0].data.evs
    np.testing.assert_allclose(exact, StatevectorEstimator().run([(qc, observable, row)]).result()[0].data.evs,
                               atol=EXACT_ATOL)
    theirs, _ = reference_query(qc, "AB", observable, row, shots=20_000, seed=5)
    std = DistributedEstimator("AB", device="CPU", shots=20_000, shot_allocation="uniform", seed=5).run(
        [(qc, observable, row)]).result()[0].data.stds
    assert abs(theirs - exact) < 5 * std, (theirs, exact, std)


def test_parameter_shift_gradients_match_statevector() -> None:
    """A QNN whose entanglers across the cut are trainable RZZ gates: the classifier's
    parameter-shift gradient (one query) equals finite differences of StatevectorEstimator's."""
    qnn = cut_qnn(4, cuts=2, layers=2, rotations="ry", entangler="rzz")
    model = QNNClassifier(qnn, DistributedEstimator(qnn.partition_labels, device="CPU"))
    assert model.estimator.program((qnn.circuit, qnn.observable, np.zeros(qnn.circuit.num_parameters))).plan.trainable
    rng = np.random.default_rng(3)
    angles = rng.uniform(0, np.pi, (2, 4))
    weights = rng.uniform(-np.pi, np.pi, model.num_weights)
    values, gradient = model.expectations_with_gradient(angles, weights)

    reference_model = QNNClassifier(qnn, StatevectorEstimator())
    h = 1e-5
    for k in range(model.num_weights):
        step = np.zeros(model.num_weights)
        step[k] = h
        forward, backward = (reference_model.expectations(angles, weights + sign * step) for sign in (1, -1))
        central = (forward - backward) / (2 * h)
        np.testing.assert_allclose(gradient[:, k], central, rtol=0, atol=1e-8, err_msg=f"weight {k}")
    np.testing.assert_allclose(values, reference_model.expectations(angles, weights), rtol=0, atol=EXACT_ATOL)


def test_automatic_cut_finding_cuts_trainable_gates() -> None:
    x = ParameterVector("x", 6)
    qc = QuantumCircuit(6)
    for q in range(6):
        qc.ry(x[q], q)
    for q in range(5):
        qc.rzz(x[q] + x[q + 1], q, q + 1)
    qc.crx(2 * x[0], 2, 3)
    observable = SparsePauliOp(["ZZZZZZ", "XIIIIZ"], [1.0, 0.5])
    params = np.random.default_rng(4).uniform(-np.pi, np.pi, (3, 6))
    estimator = DistributedEstimator(max_subcircuit_qubits=3, device="CPU", seed=1)
    assert estimator.program((qc, observable, params[0])).plan.trainable
    evs = estimator.run([(qc, observable, params)]).result()[0].data.evs
    expected = StatevectorEstimator().run([(qc, observable, params)]).result()[0].data.evs
    np.testing.assert_allclose(evs, expected, rtol=0, atol=EXACT_ATOL)


@pytest.mark.parametrize("sampled", [False, True], ids=["exact", "sampled"])
def test_non_affine_angles(sampled: bool) -> None:
    """The ZZ feature map's 2*(pi - x)*(pi - y) and sin(x), bound once per distinct row,
    beside an affine angle."""
    x = ParameterVector("x", 3)
    qc = QuantumCircuit(3)
    qc.h(range(3))
    qc.rzz(2 * (np.pi - x[0]) * (np.pi - x[1]), 0, 1)
    qc.crx(x[2].sin(), 2, 0)
    qc.cry((x[0] - 1).sign(), 1, 0)  # no symbolic derivative: bound per row too
    qc.ry(x[2], 0)
    qc.rxx(x[2] + 1, 0, 1)
    observable = SparsePauliOp(["ZZZ", "XIX"], [1.0, 0.5])
    params = np.repeat(np.random.default_rng(6).uniform(-np.pi, np.pi, (3, 3)), 2, axis=0)
    estimator = DistributedEstimator("ABB", device="CPU", shots=5000 if sampled else None, seed=2)
    plan = estimator.program((qc, observable, params[0])).plan
    assert [a is not None and a.slopes is None for a in plan.cut_angles] == [True, True, True, False]
    data = estimator.run([(qc, observable, params)]).result()[0].data
    expected = StatevectorEstimator().run([(qc, observable, params)]).result()[0].data.evs
    if sampled:
        assert np.all(np.abs(data.evs - expected) < 5 * data.stds)
    else:
        np.testing.assert_allclose(data.evs, expected, rtol=0, atol=EXACT_ATOL)


# -- sampled mode ------------------------------------------------------------------------------


@pytest.mark.parametrize("coherent", [True, False], ids=["coherent", "enumerated"])
def test_sampled_estimates_converge_to_the_exact_value(coherent: bool) -> None:
    """Over 40 seeds the sampled means sit within 4 standard errors of the exact values, and
    the reported stds match the spread across seeds."""
    circuit, params = trainable_circuit("crz")
    params = params[:2]
    exact = reference(circuit, params)
    draws, stds = [], []
    for seed in range(40):
        result = DistributedEstimator("AABB", device="CPU", shots=300, seed=seed, coherent=coherent).run(
            [(circuit, OBSERVABLES, params[:, None, :])]
        ).result()[0]
        draws.append(result.data.evs)
        stds.append(result.data.stds)
    draws, stds = np.array(draws), np.array(stds)
    z = (draws.mean(axis=0) - exact) / (stds.mean(axis=0) / np.sqrt(len(draws)))
    assert np.all(np.abs(z) < 4), z
    ratio = draws.std(axis=0, ddof=1) / stds.mean(axis=0)
    assert np.all((ratio > 0.6) & (ratio < 1.5)), ratio


def test_proportional_shots_follow_each_rows_coefficients() -> None:
    """At angle 0 an RZZ is the identity: its terms with sin(phi/2) get no weight and no shots,
    at pi/2 they do; each row's budget is the same."""
    theta = Parameter("t")
    qc = QuantumCircuit(2)
    qc.h([0, 1])
    qc.rzz(theta, 0, 1)
    estimator = DistributedEstimator("AB", device="CPU", shots=1000, seed=1)
    program = estimator.program((qc, SparsePauliOp(["IX"]), [0.0]))
    assert program.shots_per_row
    params = np.array([[0.0], [np.pi / 2]])
    kernels = program.plan.kernels(params)
    weights = subexperiment_weights(program.plan, kernels)
    assert all(w.shape == (program.plan.partitions[p].num_subexperiments, 2) for p, w in enumerate(weights))
    shots = program.subexperiment_shots(1000, kernels)
    per_row = sum(n.sum(axis=0) for n in shots)
    assert per_row[0] == per_row[1] == 1000 * sum(len(n) for n in shots)
    assert any(np.any((n[:, 0] == 0) & (n[:, 1] > 0)) for n in shots)
    evs = estimator.run([(qc, SparsePauliOp("IX"), params)]).result()[0].data  # <X_0> = cos(t)
    np.testing.assert_allclose(evs.evs[0], 1.0, atol=1e-12)  # the identity: X on |+> in every shot
    assert abs(evs.evs[1]) < 5 * evs.stds[1]


def test_bench_trainable_compares_one_plan_with_a_plan_per_row(tmp_path) -> None:
    """``hpcqnn bench-trainable``: the trainable pipeline builds one plan, the bound one a plan
    per row; both give the statevector's values."""
    out = tmp_path / "bench.json"
    assert cli.main(["bench-trainable", "--qubits", "4", "--cuts", "2", "--rows", "3", "--queries", "1",
                     "--modes", "exact", "--json", str(out)]) == 0
    results = {r["pipeline"]: r for r in json.loads(out.read_text())["results"]}
    assert results["trainable"]["plans"] == 1 and results["bound per row"]["plans"] == 6  # warm-up + timed rows
    assert results["trainable"]["max_abs_difference"] < EXACT_ATOL
    assert results["bound per row"]["max_abs_difference"] < EXACT_ATOL
