"""Exact mode against the uncut circuit's statevector, caching, broadcasting and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterVector
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import DensityMatrix, SparseObservable, SparsePauliOp, Statevector

from hpcqnn import (
    CutPlanError,
    DistributedEstimator,
    ExecutionConfigError,
    ObservableError,
    ParameterShapeError,
    ParameterValueError,
)
from hpcqnn.training.circuits import cut_qnn
from statevector import exact_values
from tolerances import EXACT_ATOL


def random_circuit(num_qubits: int, labels: str, cuts: int, rng: np.random.Generator):
    """Random layered circuit: local entanglers inside partitions plus ``cuts`` CX/CZ across them."""
    params = ParameterVector("p", 3 * num_qubits)
    qc = QuantumCircuit(num_qubits)
    groups = {lab: [q for q in range(num_qubits) if labels[q] == lab] for lab in dict.fromkeys(labels)}
    crossing = [(a, b) for a in range(num_qubits) for b in range(num_qubits) if labels[a] != labels[b]]
    k = iter(params)
    for layer in range(3):
        for q in range(num_qubits):
            getattr(qc, ("ry", "rx", "rz")[(q + layer) % 3])(next(k), q)
        for qubits in groups.values():
            for a, b in zip(qubits, qubits[1:]):
                (qc.cx if rng.random() < 0.5 else qc.cz)(a, b)
        for _ in range(cuts // 3 + (layer < cuts % 3)):
            a, b = crossing[rng.integers(len(crossing))]
            (qc.cx if rng.random() < 0.5 else qc.cz)(a, b)
    return qc


def random_observable(num_qubits: int, terms: int, rng: np.random.Generator) -> SparsePauliOp:
    labels = ["".join(rng.choice(list("IXYZ"), num_qubits)) for _ in range(terms)]
    return SparsePauliOp(labels, rng.normal(size=terms)).simplify()


CASES = [
    (4, "AABB", 1),
    (4, "ABAB", 2),
    (5, "AABBB", 0),
    (6, "AAABBB", 3),
    (6, "AABBCC", 2),
    (7, "AABBCCC", 4),
    (8, "AAAABBBB", 2),
    (10, "AAAAABBBBB", 1),
    (9, "AAABBBCCC", 3),
]


@pytest.mark.parametrize("coherent", [True, False])
@pytest.mark.parametrize("minimal_basis", [True, False])
@pytest.mark.parametrize("num_qubits,labels,cuts", CASES)
def test_exact_matches_uncut_statevector(num_qubits, labels, cuts, minimal_basis, coherent):
    rng = np.random.default_rng(num_qubits * 31 + cuts)
    circuit = random_circuit(num_qubits, labels, cuts, rng)
    observable = random_observable(num_qubits, 4, rng)
    rows = rng.uniform(-np.pi, np.pi, (7, circuit.num_parameters))
    estimator = DistributedEstimator(partition_labels=labels, minimal_basis=minimal_basis, coherent=coherent)
    result = estimator.run([(circuit, observable, rows)]).result()[0]
    np.testing.assert_allclose(result.data.evs, exact_values(circuit, observable, rows), atol=EXACT_ATOL)
    assert np.all(result.data.stds == 0)
    assert result.metadata["num_partitions"] == len(set(labels))


@pytest.mark.parametrize("gate", ["cx", "cz", "rzz", "cp", "crx", "cry", "swap", "ecr", "ch"])
def test_coherent_subexperiments_of_every_cut_gate_match_the_statevector(gate):
    """Each cut gate's channels become a few unitary branches (S^dagger, S, I for CX) under a
    control register; the coherent circuit must give the enumerated subexperiments' values."""
    rng = np.random.default_rng(5)
    theta = ParameterVector("t", 8)
    circuit = QuantumCircuit(4)
    for q in range(4):
        circuit.ry(theta[q], q)
    circuit.cx(0, 1)
    circuit.cx(2, 3)
    getattr(circuit, gate)(*(([0.7] if gate in ("rzz", "cp", "crx", "cry") else []) + [1, 2]))
    for q in range(4):
        circuit.rx(theta[4 + q], q)
    observable = random_observable(4, 5, rng)
    rows = rng.uniform(-np.pi, np.pi, (6, 8))
    values = {}
    for coherent in (True, False):
        estimator = DistributedEstimator(partition_labels="AABB", coherent=coherent)
        values[coherent] = estimator.run([(circuit, observable, rows)]).result()[0].data.evs
        program = estimator.program((circuit, observable, rows))
        assert [program.coherent(c) is not None for c in range(len(program.circuits))] == [coherent] * 2
    np.testing.assert_allclose(values[True], exact_values(circuit, observable, rows), atol=1e-10)
    np.testing.assert_allclose(values[True], values[False], atol=1e-12)


def test_three_partitions_enumerate_only_their_own_cuts():
    rng = np.random.default_rng(5)
    qc = QuantumCircuit(6)
    for q in range(6):
        qc.ry(Parameter(f"a{q}"), q)
    qc.cx(1, 2)  # A-B
    qc.cz(3, 4)  # B-C
    qc.cx(0, 1)
    qc.cx(4, 5)
    observable = random_observable(6, 3, rng)
    rows = rng.uniform(-3, 3, (4, 6))
    # per cut side: 5 distinct local channels of 6 QPD terms; 4 of them span all 5
    for minimal, per_side in ((False, 5), (True, 4)):
        estimator = DistributedEstimator(partition_labels="AABBCC", minimal_basis=minimal)
        result = estimator.run([(qc, observable, rows)]).result()[0]
        np.testing.assert_allclose(result.data.evs, exact_values(qc, observable, rows), atol=EXACT_ATOL)
        plan = estimator.program((qc, observable, rows)).plan
        touched = {p.label: len(p.cut_ids) for p in plan.partitions}
        assert touched == {"A": 1, "B": 2, "C": 1}
        assert plan.num_subexperiments == per_side + per_side**2 + per_side


def test_plan_is_built_once_per_circuit_structure():
    model = cut_qnn(6, cuts=2, layers=2)
    estimator = DistributedEstimator(partition_labels=model.partition_labels)
    rng = np.random.default_rng(0)
    for query in range(3):
        rows = rng.uniform(-1, 1, (3, model.circuit.num_parameters))
        estimator.run([(model.circuit, model.observable, rows)]).result()
        phases = estimator.recorder.seconds(query)
        assert ("partition" in phases) == (query == 0)
        assert ("generate" in phases) == (query == 0)
        assert phases["execute"] > 0 and phases["reconstruct"] > 0
    program = estimator.program((model.circuit, model.observable, rows))
    # a structurally identical copy hits the same plan
    copy = (model.circuit.copy(), model.observable, rows)
    assert estimator.program(copy) is program
    estimator.run([copy]).result()
    phases = estimator.recorder.seconds(estimator.num_queries - 1)
    assert "partition" not in phases and "generate" not in phases


def test_plans_built_in_one_run_are_timed_under_the_query_that_executes_them():
    """Two structures in one ``run`` are two queries; each plan's partition and generate rows
    belong to its own query, and the metadata of each pub names the query it ran in."""
    first, second = cut_qnn(6, cuts=1, layers=2), cut_qnn(6, cuts=2, layers=2)
    estimator = DistributedEstimator(partition_labels=first.partition_labels)
    rows = np.random.default_rng(1).uniform(-1, 1, (2, first.circuit.num_parameters))
    results = estimator.run(
        [
            (first.circuit, first.observable, rows),
            (second.circuit, second.observable, rows[:, : second.circuit.num_parameters]),
        ]
    ).result()
    assert [r.metadata["query"] for r in results] == [0, 1]
    assert [r.metadata["num_cuts"] for r in results] == [1, 2]
    planned = [row.query for row in estimator.recorder.rows if row.phase in ("partition", "generate")]
    assert planned == [0, 0, 1, 1]
    assert estimator.num_queries == 2


def test_broadcasting_and_several_pubs_in_one_batch():
    model = cut_qnn(4, cuts=1, layers=1)
    rng = np.random.default_rng(2)
    rows = rng.uniform(-2, 2, (3, 1, model.circuit.num_parameters))
    observables = [SparsePauliOp("ZZZZ"), SparsePauliOp(["XIIX", "IZZI"], [0.5, -1.0])]
    estimator = DistributedEstimator(partition_labels=model.partition_labels)
    pubs = [(model.circuit, observables, rows), (model.circuit, observables[0], rows[0, 0])]
    result = estimator.run(pubs).result()
    assert result[0].data.evs.shape == (3, 2)
    assert result[1].data.evs.shape == ()
    for o, obs in enumerate(observables):
        np.testing.assert_allclose(
            result[0].data.evs[:, o], exact_values(model.circuit, obs, rows[:, 0]), atol=EXACT_ATOL
        )
    np.testing.assert_allclose(
        result[1].data.evs, exact_values(model.circuit, observables[0], rows[0])[0], atol=EXACT_ATOL
    )
    assert estimator.num_queries == 2  # the two observable sets are two plans


def test_parameter_free_circuit_and_bound_angle_cut():
    qc = QuantumCircuit(4)
    qc.h(range(4))
    qc.rzz(0.7, 1, 2)  # a cut gate with a bound angle is fine
    qc.cx(0, 3)
    observable = SparsePauliOp(["ZZZZ", "XXII"], [1.0, 0.3])
    result = DistributedEstimator(partition_labels="AABB").run([(qc, observable)]).result()[0]
    assert result.data.evs == pytest.approx(exact_values(qc, observable), abs=EXACT_ATOL)


def test_automatic_cuts_respect_max_subcircuit_qubits():
    model = cut_qnn(6, cuts=1, layers=2)
    estimator = DistributedEstimator(max_subcircuit_qubits=3, seed=1)
    rows = np.random.default_rng(3).uniform(-1, 1, (2, model.circuit.num_parameters))
    result = estimator.run([(model.circuit, model.observable, rows)]).result()[0]
    np.testing.assert_allclose(result.data.evs, exact_values(model.circuit, model.observable, rows), atol=EXACT_ATOL)
    plan = estimator.program((model.circuit, model.observable, rows)).plan
    assert all(len(p.qubits) <= 3 for p in plan.partitions)
    assert plan.num_cuts >= 1


def test_library_blocks_are_unrolled_before_cutting():
    from qiskit.circuit.library import real_amplitudes

    ansatz = real_amplitudes(4, reps=2)
    observable = SparsePauliOp("ZIIZ")
    rows = np.random.default_rng(4).uniform(-1, 1, (2, ansatz.num_parameters))
    result = DistributedEstimator(partition_labels="AABB").run([(ansatz, observable, rows)]).result()[0]
    np.testing.assert_allclose(result.data.evs, exact_values(ansatz, observable, rows), atol=EXACT_ATOL)


# -- bad input: named errors before anything is simulated ----------------------------------


@pytest.fixture
def small():
    return cut_qnn(4, cuts=1, layers=1)


def test_labels_of_wrong_length(small):
    with pytest.raises(CutPlanError, match="3 labels.*4 qubits"):
        DistributedEstimator(partition_labels="AAB").run([(small.circuit, small.observable, np.zeros(12))])


PROJECTOR_TERMS = [("0+ZZ", 0.8), ("rIl1", -0.5), ("-ZIX", 0.3), ("IIII", 0.2)]


@pytest.mark.parametrize("labels", [None, "AABB"], ids=["uncut", "cut"])
def test_projector_observables(small, labels):
    """SparseObservable terms with projectors (0 1 + - r l) are expanded exactly into Pauli sums:
    the values equal <psi|O|psi> with O's dense matrix (Qiskit's), exact and sampled."""
    observable = SparseObservable.from_list(PROJECTOR_TERMS)
    params = np.random.default_rng(5).uniform(-np.pi, np.pi, (3, 12))
    matrix = observable.to_matrix()
    expected = [
        np.real(state.conj() @ matrix @ state)
        for state in (Statevector(small.circuit.assign_parameters(row)).data for row in params)
    ]
    exact = DistributedEstimator(partition_labels=labels).run([(small.circuit, observable, params)]).result()[0]
    np.testing.assert_allclose(exact.data.evs, expected, rtol=0, atol=EXACT_ATOL)
    sampled = DistributedEstimator(partition_labels=labels, shots=4000, seed=3)
    data = sampled.run([(small.circuit, observable, params)]).result()[0].data
    assert np.all(np.abs(data.evs - expected) < 5 * data.stds), (data.evs, expected, data.stds)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([np.nan] + [0.0] * 11, "must be finite: nan at index"),
        ([0.0] * 11 + [np.inf], "must be finite: inf at index"),
        (["a"] * 12, "must be real numbers, got an array of dtype <U1"),
        ([1j] * 12, "must be real numbers, got an array of dtype complex128"),
    ],
    ids=["nan", "inf", "strings", "complex"],
)
def test_parameter_values_that_the_references_refuse(small, values, message):
    """NaN, infinite, non-numeric values: a ParameterValueError (also a TypeError and a
    ValueError) naming the value, before anything runs, cut or not, exact or sampled."""
    for shots in (None, 100):
        estimator = DistributedEstimator(partition_labels=small.partition_labels, shots=shots, seed=1)
        with pytest.raises(ParameterValueError, match=message) as caught:
            estimator.run([(small.circuit, small.observable, values)])
        assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)
        assert estimator.num_queries == 0
    with pytest.raises((ValueError, TypeError, RuntimeError, ZeroDivisionError)):  # so does the reference
        StatevectorEstimator().run([(small.circuit, small.observable, values)]).result()


def test_negative_num_queries_is_refused():
    estimator = DistributedEstimator()
    with pytest.raises(ExecutionConfigError, match="num_queries must be an integer >= 0, got -5"):
        estimator.num_queries = -5
    assert estimator.num_queries == 0


def test_circuit_without_qubits_gives_the_constants_as_the_reference():
    circuit = QuantumCircuit(0)
    observables = [SparsePauliOp(""), SparsePauliOp([""], [2.5])]
    for shots in (None, 100):
        result = DistributedEstimator(shots=shots, seed=1).run([(circuit, observables)]).result()[0]
        expected = StatevectorEstimator().run([(circuit, observables)]).result()[0].data.evs
        np.testing.assert_array_equal(result.data.evs, expected)
        np.testing.assert_array_equal(result.data.stds, [0.0, 0.0])


def test_observable_of_wrong_width(small):
    with pytest.raises(ObservableError):
        DistributedEstimator(partition_labels=small.partition_labels).run(
            [(small.circuit, SparsePauliOp("ZZZ"), np.zeros(12))]
        )


def test_partition_wider_than_limit(small):
    with pytest.raises(CutPlanError, match="partition 'A' has 2 qubits, more than max_subcircuit_qubits=1"):
        DistributedEstimator(partition_labels=small.partition_labels, max_subcircuit_qubits=1).run(
            [(small.circuit, small.observable, np.zeros(12))]
        )


def test_too_many_subexperiments():
    model = cut_qnn(6, cuts=3, layers=3)
    with pytest.raises(CutPlanError, match="needs 128 subexperiments, more than max_subexperiments=100"):
        DistributedEstimator(partition_labels=model.partition_labels, max_subexperiments=100).run(
            [(model.circuit, model.observable, np.zeros(model.circuit.num_parameters))]
        )


@pytest.mark.parametrize("shots", [0, -5, 1.5, True])
def test_bad_shots(shots):
    with pytest.raises(ExecutionConfigError, match="shots must be a positive integer"):
        DistributedEstimator(shots=shots)


def test_bad_device():
    with pytest.raises(ExecutionConfigError, match="device must be one of"):
        DistributedEstimator(device="TPU")


@pytest.mark.parametrize("values", [np.zeros(5), np.zeros((3, 11))])
def test_parameter_values_of_wrong_shape(small, values):
    with pytest.raises(ParameterShapeError, match="last axis must equal the circuit's 12 parameters"):
        DistributedEstimator(partition_labels=small.partition_labels).run([(small.circuit, small.observable, values)])


def test_missing_parameter_values(small):
    with pytest.raises(ParameterShapeError, match="no parameter_values"):
        DistributedEstimator(partition_labels=small.partition_labels).run([(small.circuit, small.observable)])


def test_circuit_with_measurements():
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.measure([0, 1], [0, 1])
    with pytest.raises(CutPlanError, match="measurements"):
        DistributedEstimator().run([(qc, SparsePauliOp("ZZ"))])


def test_bad_pub_in_a_list_fails_before_any_simulation(small):
    estimator = DistributedEstimator(partition_labels=small.partition_labels)
    good = (small.circuit, small.observable, np.zeros(12))
    with pytest.raises(ParameterShapeError):
        estimator.run([good, (small.circuit, small.observable, np.zeros(3))])
    assert estimator.num_queries == 0


@pytest.mark.parametrize("coherent", [True, False])
def test_rows_equal_on_a_partition_run_once_for_it(coherent):
    """Parameter-shift rows of a weight in partition A need no new runs of partition B."""
    model = cut_qnn(4, cuts=1, layers=1)
    estimator = DistributedEstimator(partition_labels=model.partition_labels, coherent=coherent)
    base = np.random.default_rng(9).uniform(-1, 1, model.circuit.num_parameters)
    column = list(model.circuit.parameters).index(model.weights[0])  # acts on qubit 0, partition A
    rows = np.repeat(base[None], 3, axis=0)
    rows[1, column] += np.pi / 2
    rows[2, column] -= np.pi / 2
    result = estimator.run([(model.circuit, model.observable, rows)]).result()[0]
    np.testing.assert_allclose(result.data.evs, exact_values(model.circuit, model.observable, rows), atol=EXACT_ATOL)
    plan = estimator.program((model.circuit, model.observable, rows)).plan
    executed = sum(r.n_experiments for r in estimator.recorder.rows if r.phase == "execute")
    a, b = (1, 1) if coherent else (p.num_subexperiments for p in plan.partitions)  # experiments per row
    assert executed == 3 * a + 1 * b


def test_empty_parameter_array(small):
    """No rows: empty values (as Qiskit's estimators give), and no query is spent."""
    estimator = DistributedEstimator(partition_labels=small.partition_labels)
    result = estimator.run([(small.circuit, small.observable, np.zeros((0, 12)))]).result()[0]
    assert result.data.evs.shape == (0,) and result.data.stds.shape == (0,)
    assert estimator.num_queries == 0


def test_custom_gates_are_unrolled_and_keyed_by_their_definition():
    """Two circuits that differ only inside a custom gate must not share a cut plan."""

    def with_block(flip: bool) -> QuantumCircuit:
        inner = QuantumCircuit(2, name="blk")
        inner.h(0)
        inner.cx(0, 1)
        if flip:
            inner.x(1)
        qc = QuantumCircuit(4)
        qc.append(inner.to_gate(), [0, 1])
        qc.rzx(0.4, 2, 3)  # outside the simulator basis too
        qc.cx(1, 2)
        return qc

    observable = SparsePauliOp(["ZZZZ", "IXZI"], [1.0, 0.5])
    estimator = DistributedEstimator(partition_labels="AABB")
    programs = []
    for flip in (False, True):
        qc = with_block(flip)
        value = estimator.run([(qc, observable)]).result()[0].data.evs
        assert value == pytest.approx(exact_values(qc, observable), abs=EXACT_ATOL)
        programs.append(estimator.program((qc, observable)))
    assert programs[0] is not programs[1]
    assert all(estimator.program((with_block(flip), observable)) is programs[flip] for flip in (False, True))


def test_reset_hidden_in_initialize_is_simulated_exactly():
    """``initialize`` unrolls into a reset and a state preparation: the reset is deferred onto an
    ancilla, so the value is exact (Qiskit's DensityMatrix as the reference)."""
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.initialize([0, 1], [0])
    qc.cx(0, 1)
    value = DistributedEstimator(partition_labels="AB").run([(qc, SparsePauliOp("ZZ"))]).result()[0].data.evs
    assert value == pytest.approx(DensityMatrix(qc).expectation_value(SparsePauliOp("ZZ")).real, abs=EXACT_ATOL)
    assert value == pytest.approx(1.0, abs=EXACT_ATOL)


def test_program_shows_the_plan_it_runs_without_simulating():
    """``estimator.program(pub)`` builds (and caches) the plan without a query; its repr says what
    will run, per partition."""
    model = cut_qnn(8, cuts=3)
    estimator = DistributedEstimator(partition_labels=model.partition_labels)
    pub = (model.circuit, model.observable, np.zeros(model.circuit.num_parameters))
    program = estimator.program(pub)
    assert estimator.num_queries == 0 and estimator.program(pub) is program  # cached, not rebuilt
    assert repr(program) == (
        "<Program: 3 cuts, gamma 27, 2 partitions, 128 subexperiments in 2 simulator circuits, 1 Pauli term, "
        "exact mode; "
        "A: qubits 0, 1, 2, 3 + 6 control qubits, 3 cuts, 64 subexperiments in one coherent circuit; "
        "B: qubits 4, 5, 6, 7 + 6 control qubits, 3 cuts, 64 subexperiments in one coherent circuit>"
    )
    enumerated = DistributedEstimator(partition_labels=model.partition_labels, coherent=False)
    assert repr(enumerated.program((model.circuit, model.observable, np.zeros(model.circuit.num_parameters)))) == (
        "<Program: 3 cuts, gamma 27, 2 partitions, 128 subexperiments in 2 simulator circuits, 1 Pauli term, "
        "exact mode; "
        "A: qubits 0, 1, 2, 3 + 3 ancillas, 3 cuts, 64 subexperiments; "
        "B: qubits 4, 5, 6, 7 + 3 ancillas, 3 cuts, 64 subexperiments>"
    )
    sampled = DistributedEstimator(partition_labels=model.partition_labels, shots=100)
    assert repr(sampled.program(pub)) == (  # one statevector per row serves each half's setting
        "<Program: 3 cuts, gamma 27, 2 partitions, 128 subexperiments in 2 simulator circuits, 1 Pauli term, "
        "sampled mode, "
        "2 measurement settings; A: qubits 0, 1, 2, 3 + 6 control qubits, 3 cuts, 64 subexperiments in one "
        "coherent circuit; B: qubits 4, 5, 6, 7 + 6 control qubits, 3 cuts, 64 subexperiments in one coherent circuit>"
    )


def test_wide_coherent_circuits_go_to_aer_in_calls_of_bounded_size(monkeypatch):
    """Coherent experiments return whole statevectors: a call holds at most CALL_BYTES of them."""
    from hpcqnn.execution import engine, simulator

    model = cut_qnn(8, cuts=3)  # two coherent circuits of 4 + 6 qubits
    monkeypatch.setattr(engine, "CALL_BYTES", 3 * 16 * 2**10)  # three statevectors per call
    calls = []
    execute = simulator.AerRunner.run
    monkeypatch.setattr(simulator.AerRunner, "run", lambda self, program, rows, tiles, *rest: calls.append(
        sum(t.stop - t.start for t in tiles)) or execute(self, program, rows, tiles, *rest))
    rows = np.random.default_rng(2).uniform(-np.pi, np.pi, (7, model.circuit.num_parameters))
    pub = (model.circuit, model.observable, rows)
    result = DistributedEstimator(partition_labels=model.partition_labels).run([pub])
    np.testing.assert_allclose(
        result.result()[0].data.evs, exact_values(model.circuit, model.observable, rows), atol=1e-10
    )
    assert max(calls) == 3 and sum(calls) == 2 * 7
