"""DistributedEstimator against Qiskit's reference estimators, the way their own suites check them.

Each behaviour is compared with ``StatevectorEstimator`` (or, for resets, which a statevector
cannot evolve exactly, with ``DensityMatrix``): every standard gate uncut, inside a cut partition,
cut by labels and by ``find_cuts``; metadata; precision; seeds; classical bits, measurements,
resets, delays; pubs without rows; Aer failures; qiskit-machine-learning on top.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Gate, Parameter
from qiskit.circuit.library import CHGate, get_standard_gate_name_mapping
from qiskit.exceptions import QiskitError
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import DensityMatrix, SparsePauliOp
from test_qml import make_qnn  # EstimatorQNN on a 4-qubit, 2-cut QNN (default_precision 0)

from hpcqnn import CutPlanError, DistributedEstimator, SimulationError
from hpcqnn.execution import devices
from hpcqnn.execution.compiled import compile_program
from hpcqnn.execution.engine import LocalEngine
from hpcqnn.execution.simulator import AerRunner
from hpcqnn.training.circuits import cut_qnn
from tolerances import EXACT_ATOL

STANDARD_GATES = {name: op for name, op in sorted(get_standard_gate_name_mapping().items()) if isinstance(op, Gate)}
ANGLES = (0.37, -1.21, 2.03, 0.58)


def reference(circuit: QuantumCircuit, observable: SparsePauliOp, values=None) -> np.ndarray:
    pub = (circuit, observable) if values is None else (circuit, observable, values)
    return StatevectorEstimator().run([pub]).result()[0].data.evs


def gate_circuit(name: str, width: int, qubits: list[int], symbolic: bool) -> tuple[QuantumCircuit, list[float]]:
    """Rotations on every qubit, the gate on ``qubits``, rotations again. With ``symbolic`` the
    gate's angles are circuit parameters (bound per row), else numbers."""
    template = STANDARD_GATES[name]
    values = list(ANGLES[: len(template.params)])
    params = [Parameter(f"g{i}") for i in range(len(values))] if symbolic else values
    gate = type(template)(*params) if template.params else template
    qc = QuantumCircuit(width)
    rng = np.random.default_rng(sum(map(ord, name)))
    for q in range(width):
        qc.ry(rng.uniform(-np.pi, np.pi), q)
        qc.rz(rng.uniform(-np.pi, np.pi), q)
    qc.append(gate, qubits)
    for q in range(width):
        qc.rx(rng.uniform(-np.pi, np.pi), q)
    return qc, values if symbolic else []


def gate_observable(width: int, name: str) -> SparsePauliOp:
    rng = np.random.default_rng(len(name))
    labels = ["".join(rng.choice(list("IXYZ"), width)) for _ in range(4)] + ["Z" * width]
    return SparsePauliOp(labels, rng.normal(size=len(labels))).simplify()


def compare(estimator: DistributedEstimator, qc: QuantumCircuit, values: list[float]) -> None:
    observable = gate_observable(qc.num_qubits, qc.data[2 * qc.num_qubits].operation.name)
    pub = (qc, observable, values) if values else (qc, observable)
    evs = estimator.run([pub]).result()[0].data.evs
    np.testing.assert_allclose(evs, reference(*pub), atol=EXACT_ATOL)


# -- 1. every standard gate ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(STANDARD_GATES))
def test_standard_gate_uncut(name: str) -> None:
    n = STANDARD_GATES[name].num_qubits
    qc, values = gate_circuit(name, n + 1, list(range(n)), symbolic=True)
    compare(DistributedEstimator(), qc, values)


@pytest.mark.parametrize("coherent", [True, False])
@pytest.mark.parametrize("name", [name for name, op in STANDARD_GATES.items() if op.num_qubits])
def test_standard_gate_inside_a_cut_partition(name: str, coherent: bool) -> None:
    """The gate on partition A, which two CX/CZ cuts join to partition B."""
    n = STANDARD_GATES[name].num_qubits
    qc, values = gate_circuit(name, n + 2, list(range(n)), symbolic=True)
    cut = QuantumCircuit(n + 2)
    cut.cx(n - 1, n)
    qc = cut.compose(qc)
    qc.cz(0, n + 1)
    estimator = DistributedEstimator(partition_labels="A" * n + "BB", coherent=coherent)
    observable = gate_observable(n + 2, name)
    pub = (qc, observable, values) if values else (qc, observable)
    program = estimator.program(pub)
    assert program.plan.num_cuts == 2
    assert (program.coherent(0) is not None) == coherent
    np.testing.assert_allclose(estimator.run([pub]).result()[0].data.evs, reference(*pub), atol=EXACT_ATOL)


MULTI_QUBIT = [name for name, op in STANDARD_GATES.items() if op.num_qubits >= 2]


@pytest.mark.parametrize("name", MULTI_QUBIT)
def test_standard_gate_cut_by_labels(name: str) -> None:
    """The gate spans two partitions (its first qubit alone): cut as one gate where the addon
    cuts it, else unrolled and its pieces cut."""
    n = STANDARD_GATES[name].num_qubits
    qc, _ = gate_circuit(name, n, list(range(n)), symbolic=False)
    estimator = DistributedEstimator(partition_labels="A" + "B" * (n - 1))
    assert estimator.program((qc, gate_observable(n, name))).plan.num_cuts >= 1
    compare(estimator, qc, [])


@pytest.mark.parametrize("name", [name for name in MULTI_QUBIT if STANDARD_GATES[name].num_qubits == 2])
def test_two_qubit_gate_cut_by_find_cuts(name: str) -> None:
    qc, _ = gate_circuit(name, 2, [0, 1], symbolic=False)
    estimator = DistributedEstimator(max_subcircuit_qubits=1)
    assert estimator.program((qc, gate_observable(2, name))).plan.num_cuts >= 1
    compare(estimator, qc, [])


def test_cuttable_gate_is_cut_once() -> None:
    """A CH across partitions is one cut (the addon's CH decomposition), not its unrolled CXs."""
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.ch(0, 1)
    estimator = DistributedEstimator(partition_labels="AB")
    assert estimator.program((qc, SparsePauliOp("ZZ"))).plan.num_cuts == 1
    assert estimator.run([(qc, SparsePauliOp("ZZ"))]).result()[0].data.evs == pytest.approx(0.5, abs=EXACT_ATOL)


# -- 2. metadata -------------------------------------------------------------------------------


def test_metadata_has_circuit_metadata_and_the_requested_precision() -> None:
    qc = QuantumCircuit(2, metadata={"name": "bell", "n": 2})
    qc.h(0)
    qc.cx(0, 1)
    observable = SparsePauliOp("ZZ")
    for precision in (None, 0.1):
        ours = DistributedEstimator(partition_labels="AB").run([(qc, observable)], precision=precision).result()[0]
        ref = StatevectorEstimator().run([(qc, observable)], precision=precision).result()[0]
        assert ours.metadata["circuit_metadata"] == ref.metadata["circuit_metadata"] == {"name": "bell", "n": 2}
        assert ours.metadata["target_precision"] == ref.metadata["target_precision"] == (precision or 0.0)
        assert ours.data.evs == pytest.approx(1.0, abs=EXACT_ATOL)  # exact mode meets any precision
        assert ours.data.stds == 0.0
    sampled = DistributedEstimator(partition_labels="AB", shots=400, seed=1)
    default, own = sampled.run([(qc, observable), (qc, observable, None, 0.05)]).result()
    assert default.metadata["target_precision"] == pytest.approx(1 / 20)
    assert own.metadata["target_precision"] == 0.05 and own.metadata["shots"] == 400
    asked = sampled.run([(qc, observable)], precision=0.2).result()[0]
    assert asked.metadata["target_precision"] == 0.2 and asked.metadata["shots"] == 25


def test_a_precision_that_overrides_shots_is_said_once(capsys, monkeypatch) -> None:
    """EstimatorQNN passes precision 1/64, which replaces the estimator's shots with 4096: said
    once on stderr, not on every query; a precision giving the same shots says nothing."""
    monkeypatch.setattr(devices, "_ANNOUNCED", set())  # what this process said before
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    estimator = DistributedEstimator(partition_labels="AB", shots=1000, seed=3)
    for _ in range(3):
        result = estimator.run([(qc, SparsePauliOp("ZZ"))], precision=1 / 64).result()[0]
    assert result.metadata["shots"] == 4096
    err = capsys.readouterr().err
    assert err.count("overrides shots=1000: 4096 shots per setting") == 1 and "EstimatorQNN" in err
    DistributedEstimator(partition_labels="AB", shots=400).run([(qc, SparsePauliOp("ZZ"))], precision=0.05)
    assert capsys.readouterr().err == ""


# -- 3. precision 0 ----------------------------------------------------------------------------


def test_precision_zero_gives_exact_values_from_a_sampled_estimator() -> None:
    model = cut_qnn(4, cuts=2, layers=2)
    rows = np.random.default_rng(3).uniform(-1, 1, (5, model.circuit.num_parameters))
    pub = (model.circuit, model.observable, rows)
    estimator = DistributedEstimator(partition_labels=model.partition_labels, shots=100, seed=2)
    for result in (
        estimator.run([pub], precision=0).result()[0],
        estimator.run([(*pub, 0.0)], precision=0.5).result()[0],  # the pub's own precision wins
    ):
        np.testing.assert_allclose(result.data.evs, reference(*pub), atol=EXACT_ATOL)
        assert np.all(result.data.stds == 0) and result.metadata["shots"] is None
        assert result.metadata["target_precision"] == 0.0
    sampled = estimator.run([pub]).result()[0]
    assert np.all(sampled.data.stds > 0)


# -- 4. seeds ----------------------------------------------------------------------------------


def test_seeded_runs_reproduce_and_rows_draw_independently() -> None:
    """As with Qiskit's seeded estimators: the same pubs give the same values on every run of a
    seeded estimator, and on a fresh one with the same seed; another seed differs. Repeated rows
    are independent draws whose spread matches the reported standard errors, and their mean
    converges to the exact value."""
    model = cut_qnn(4, cuts=1, layers=1)
    row = np.random.default_rng(4).uniform(-1, 1, model.circuit.num_parameters)
    rows = np.repeat(row[None], 400, axis=0)
    pub = (model.circuit, model.observable, rows)

    def estimator() -> DistributedEstimator:
        return DistributedEstimator(partition_labels=model.partition_labels, shots=200, seed=12)

    first, second = estimator(), estimator()
    a1, b1 = (e.run([pub]).result()[0].data for e in (first, second))
    a2, b2 = (e.run([pub]).result()[0].data for e in (first, second))
    np.testing.assert_array_equal(a1.evs, b1.evs)
    np.testing.assert_array_equal(a1.evs, a2.evs)
    np.testing.assert_array_equal(a2.stds, b2.stds)
    first.seed = 13
    assert not np.array_equal(first.run([pub]).result()[0].data.evs, a1.evs)

    exact = float(reference(model.circuit, model.observable, row))
    assert len(np.unique(a1.evs)) > 300  # not one draw repeated
    spread, reported = np.std(a1.evs, ddof=1), np.mean(a1.stds)
    assert 0.8 < spread / reported < 1.25, (spread, reported)
    assert abs(np.mean(a1.evs) - exact) < 5 * reported / np.sqrt(len(rows))


def test_equal_rows_are_simulated_once_but_drawn_apart() -> None:
    """Sampled mode keeps one simulated outcome distribution for equal rows (within an Aer call)
    and draws each row's shots from it."""
    model = cut_qnn(4, cuts=1, layers=1)
    row = np.random.default_rng(6).uniform(-1, 1, model.circuit.num_parameters)
    estimator = DistributedEstimator(partition_labels=model.partition_labels, shots=100, seed=3)
    execute = estimator.engine.runner.backend._execute_circuits
    simulated: list[int] = []

    def counting(circuits, noise, config):
        output = execute(circuits, noise, config)
        simulated.append(len(output["results"]))
        return output

    estimator.engine.runner.backend._execute_circuits = counting
    estimator.run([(model.circuit, model.observable, row)]).result()
    once = sum(simulated)
    simulated.clear()
    evs = estimator.run([(model.circuit, model.observable, np.repeat(row[None], 30, axis=0))]).result()[0].data.evs
    assert sum(simulated) == once and len(np.unique(evs)) == 30


# -- 5. classical bits and measurements ------------------------------------------------------


def test_classical_bits_without_measurements_are_accepted() -> None:
    qc = QuantumCircuit(3, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.ry(0.4, 2)
    qc.cz(1, 2)
    observable = SparsePauliOp(["XXI", "ZIZ", "IYX"], [0.5, 1.0, -0.3])
    for estimator in (DistributedEstimator(), DistributedEstimator(partition_labels="AAB")):
        np.testing.assert_allclose(
            estimator.run([(qc, observable)]).result()[0].data.evs, reference(qc, observable), atol=EXACT_ATOL
        )


@pytest.mark.parametrize("final", [True, False])
def test_measurements_are_refused_as_the_statevector_estimator_refuses_them(final: bool) -> None:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    if final:
        qc.measure_all()
    else:
        qc.measure_all(add_bits=True)
        qc.h(1)
    with pytest.raises(QiskitError):
        StatevectorEstimator().run([(qc, SparsePauliOp("XX"))]).result()
    with pytest.raises(CutPlanError, match="measurement .*remove_final_measurements"):
        DistributedEstimator().run([(qc, SparsePauliOp("XX"))])
    if final:
        stripped = qc.remove_final_measurements(inplace=False)
        value = DistributedEstimator().run([(stripped, SparsePauliOp("XX"))]).result()[0].data.evs
        assert value == pytest.approx(1.0, abs=EXACT_ATOL)


# -- 6. resets -------------------------------------------------------------------------------


def reset_circuit() -> QuantumCircuit:
    """Resets of entangled qubits (a mixed state follows) on both sides of the cuts."""
    qc = QuantumCircuit(4)
    for q, angle in enumerate((0.3, 1.1, -0.7, 2.2)):
        qc.ry(angle, q)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.reset(1)
    qc.h(1)
    qc.cx(1, 0)
    qc.cz(2, 3)
    qc.reset(3)
    qc.rx(0.9, 3)
    qc.cx(2, 3)
    qc.cx(1, 2)
    return qc


RESET_OBSERVABLE = SparsePauliOp(["ZZII", "IXZI", "IIYZ", "XIIX", "ZIIZ"], [0.8, -0.5, 0.6, 1.0, 0.4])


@pytest.mark.parametrize(
    "options",
    [{}, {"partition_labels": "AABB"}, {"partition_labels": "AABB", "coherent": False}, {"max_subcircuit_qubits": 2}],
    ids=["uncut", "cut", "cut-enumerated", "find-cuts"],
)
def test_resets_are_exact(options: dict) -> None:
    qc = reset_circuit()
    expected = DensityMatrix(qc).expectation_value(RESET_OBSERVABLE).real
    evs = DistributedEstimator(**options).run([(qc, RESET_OBSERVABLE)]).result()[0].data.evs
    assert evs == pytest.approx(expected, abs=EXACT_ATOL)


def test_resets_sampled_within_their_standard_errors() -> None:
    qc = reset_circuit()
    expected = DensityMatrix(qc).expectation_value(RESET_OBSERVABLE).real
    result = DistributedEstimator(partition_labels="AABB", shots=2000, seed=5).run([(qc, RESET_OBSERVABLE)]).result()[0]
    assert abs(result.data.evs - expected) < 5 * result.data.stds


# -- 7. delays -------------------------------------------------------------------------------


def test_delays_are_identities() -> None:
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.delay(160, 0)
    qc.cx(0, 1)
    qc.delay(2e-7, 2, unit="s")
    qc.ry(0.5, 2)
    qc.cx(1, 2)
    qc.delay(40, [0, 1, 2])
    observable = SparsePauliOp(["XXZ", "ZZI", "IZX"], [1.0, -0.4, 0.7])
    for estimator in (DistributedEstimator(), DistributedEstimator(partition_labels="AAB")):
        np.testing.assert_allclose(
            estimator.run([(qc, observable)]).result()[0].data.evs, reference(qc, observable), atol=EXACT_ATOL
        )


# -- 8. pubs without rows -----------------------------------------------------------------------


def test_pubs_without_rows_give_empty_values_like_the_reference() -> None:
    theta = Parameter("t")
    qc = QuantumCircuit(2)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    fixed = QuantumCircuit(2)
    fixed.h(0)
    zz = SparsePauliOp("ZZ")
    pubs = [
        (fixed, zz, np.zeros((0, 0))),
        (qc, zz, np.zeros((0, 1))),
        (qc, [[zz], [zz]], np.zeros((0, 1))),
        (qc, zz, [[0.3]]),
    ]
    estimator = DistributedEstimator(partition_labels="AB")
    ours = estimator.run(pubs).result()
    ref = StatevectorEstimator().run(pubs).result()
    for a, b in zip(ours, ref):
        assert a.data.evs.shape == b.data.evs.shape and a.data.stds.shape == b.data.evs.shape
        np.testing.assert_allclose(a.data.evs, b.data.evs, atol=EXACT_ATOL)
    assert [r.data.evs.shape for r in ours] == [(0,), (0,), (2, 0), (1,)]
    assert estimator.num_queries == 1  # only the pub with a row ran


# -- 9. simulator failures ---------------------------------------------------------------------


def test_instruction_aer_does_not_know_is_a_simulation_error() -> None:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    program = DistributedEstimator().program((qc, SparsePauliOp("ZZ")))
    broken = program.circuits[0].copy_empty_like()
    broken.append(CHGate(), [0, 1])
    for inst in program.circuits[0].data:
        broken.append(inst)
    program = dataclasses.replace(program, circuits=(broken,))
    with pytest.raises(SimulationError, match="instruction 'ch'"):  # when the program is compiled for Aer
        compile_program(program, AerRunner("CPU"))


def test_aer_failure_names_its_cause() -> None:
    qc = QuantumCircuit(20)
    qc.h(range(20))
    engine = LocalEngine(AerRunner("CPU", options={"max_memory_mb": 1}))
    with pytest.raises(SimulationError, match="(?i)memory"):
        DistributedEstimator(engine=engine).run([(qc, SparsePauliOp("Z" * 20))])


# -- qiskit-machine-learning on top -------------------------------------------------------------


def classifier_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(21)
    x = rng.uniform(-1, 1, (12, 4))
    y = np.where(x[:, 0] * x[:, 3] > 0, 1, -1)
    return x, y


def test_neural_network_classifier_trains_as_with_the_reference() -> None:
    from qiskit_machine_learning.algorithms import NeuralNetworkClassifier
    from qiskit_machine_learning.optimizers import L_BFGS_B

    x, y = classifier_data()
    fitted = []
    for estimator in (DistributedEstimator(partition_labels="AABB"), StatevectorEstimator()):
        qnn = make_qnn(estimator)
        classifier = NeuralNetworkClassifier(
            qnn, optimizer=L_BFGS_B(maxiter=6), initial_point=np.linspace(-1, 1, qnn.num_weights)
        )
        classifier.fit(x, y)
        fitted.append((classifier.weights, classifier.predict(x), classifier.score(x, y)))
    (w_cut, p_cut, s_cut), (w_ref, p_ref, s_ref) = fitted
    assert not np.allclose(w_ref, np.linspace(-1, 1, len(w_ref)))  # it trained
    np.testing.assert_allclose(w_cut, w_ref, atol=1e-8)
    np.testing.assert_array_equal(p_cut, p_ref)
    assert s_cut == s_ref


def test_torch_connector_matches_the_reference() -> None:
    import torch  # the torch extra, which `make test` installs: a missing torch fails, it does not skip
    from qiskit_machine_learning.connectors import TorchConnector

    x, _ = classifier_data()
    inputs = torch.tensor(x[:4], dtype=torch.float64)
    outputs, grads = [], []
    for estimator in (DistributedEstimator(partition_labels="AABB"), StatevectorEstimator()):
        qnn = make_qnn(estimator)
        layer = TorchConnector(qnn, initial_weights=np.linspace(-1, 1, qnn.num_weights))
        out = layer(inputs)
        out.sum().backward()
        outputs.append(out.detach().numpy())
        grads.append(layer.weight.grad.detach().numpy())
    np.testing.assert_allclose(outputs[0], outputs[1], atol=EXACT_ATOL)
    np.testing.assert_allclose(grads[0], grads[1], atol=EXACT_ATOL)
