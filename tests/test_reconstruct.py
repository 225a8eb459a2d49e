"""Reconstruction alone, without a simulator: the per-plan contraction against a brute-force sum
over every joint choice of basis channels, its sensitivities against the change of the value
when one estimate moves (the value is linear in each), the sampled-mode delta-method variance
against one assembled from those exact derivatives entry by entry, and exact-mode rows and
terms read from the right runs and Paulis. Problems: QNN halves and chains, cuts with mixed
sides, several settings of different sizes, an uncut plan and two pieces without a cut."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparsePauliOp

from hpcqnn import DistributedEstimator
from hpcqnn.cutting.plan import build_cut_plan
from hpcqnn.cutting.program import build_program
from hpcqnn.execution import reconstruct
from hpcqnn.execution.compiled import compile_program
from hpcqnn.execution.engine import finish_query
from hpcqnn.execution.query import Query, QueryBuffers
from hpcqnn.execution.reconstruct import Contraction
from hpcqnn.training.circuits import cut_qnn
from tolerances import EXACT_ATOL, ROUNDING_TOL

#: Six terms: several measurement settings per partition, of 1 and 2 Paulis, some Paulis
#: measured by two settings (averaged), and terms sharing a local Pauli.
MANY_TERMS = SparsePauliOp(["ZXYZ", "ZZZZ", "XXXX", "IIIY", "YIII", "XXZZ"], [0.3, -0.7, 0.5, 0.2, 1.1, -0.4])


def _mixed_sides(crossing: bool = True) -> QuantumCircuit:
    """Four qubits; with ``crossing``, CX gates 0-1, 2-1, 1-2, so labels AABB cut two gates whose
    control sides lie in different partitions."""
    theta = ParameterVector("t", 8)
    qc = QuantumCircuit(4)
    for q in range(4):
        qc.ry(theta[q], q)
    qc.cx(0, 1)
    qc.cx(3, 2)
    if crossing:
        qc.cx(2, 1)
        qc.cx(1, 2)
    for q in range(4):
        qc.rx(theta[4 + q], q)
    return qc


def _qnn(qubits: int, cuts: int, pieces: int):
    qnn = cut_qnn(qubits, cuts, layers=max(cuts, 2), pieces=pieces)
    return qnn.circuit, qnn.observable, qnn.partition_labels


PROBLEMS = {
    "two halves, 1 cut": lambda: _qnn(6, 1, 2),
    "two halves, 3 cuts": lambda: _qnn(8, 3, 2),
    "chain of 3": lambda: _qnn(6, 1, 3),
    "chain of 4": lambda: _qnn(8, 1, 4),
    "mixed sides AABB, 6 terms": lambda: (_mixed_sides(), MANY_TERMS, "AABB"),
    "mixed sides BBAA, 6 terms": lambda: (_mixed_sides(), MANY_TERMS, "BBAA"),
    "uncut, 6 terms": lambda: (_mixed_sides(), MANY_TERMS, "AAAA"),
    "two pieces without a cut": lambda: (_mixed_sides(crossing=False), MANY_TERMS, "AABB"),
    "one setting of 2 Paulis per half": lambda: (_mixed_sides(), SparsePauliOp(["ZIZI", "IZIZ"], [0.6, -1.3]), "AABB"),
}
SAMPLED = ["two halves, 1 cut", "chain of 3", "mixed sides AABB, 6 terms", "mixed sides BBAA, 6 terms",
           "uncut, 6 terms", "two pieces without a cut", "one setting of 2 Paulis per half"]


def _plan(name: str):
    circuit, observable, labels = PROBLEMS[name]()
    return build_cut_plan(circuit, observable.paulis, partition_labels=labels)


def _brute_force(plan, terms: list[np.ndarray]) -> np.ndarray:
    """sum over every cut's channel pair of prod_c K_c[a_c, b_c] * prod_p E_p[its channels]."""
    channels = [list(itertools.product(range(k.shape[0]), range(k.shape[1]))) for k in plan.cut_kernels]
    total = np.zeros(terms[0].shape[1:])
    for choice in itertools.product(*channels):
        coefficient = np.prod([k[a, b] for k, (a, b) in zip(plan.cut_kernels, choice)])
        product = np.ones_like(total)
        for part, values in zip(plan.partitions, terms):
            index = tuple(choice[c][side] for c, side in zip(part.cut_ids, part.sides))
            product = product * values[np.ravel_multi_index(index, part.basis_shape) if index else 0]
        total += coefficient * product
    return total


def _contraction(plan, pair: bool, monkeypatch) -> Contraction:
    if not pair:
        monkeypatch.setattr(reconstruct, "PAIR_LIMIT", 0)
    return Contraction(plan)


def _random_terms(plan, rows: int, rng) -> list[np.ndarray]:
    return [rng.uniform(-1, 1, (p.num_subexperiments, rows, len(plan.paulis))) for p in plan.partitions]


def _cases():
    """(problem, pair): the coupling matrix only where there are two partitions."""
    for name in PROBLEMS:
        yield pytest.param(name, False, id=f"{name}-per-cut")
        if len(_plan(name).partitions) == 2:
            yield pytest.param(name, True, id=f"{name}-coupling-matrix")


@pytest.mark.parametrize(("name", "pair"), list(_cases()))
def test_contraction_equals_the_sum_over_every_channel_choice(name, pair, monkeypatch):
    plan = _plan(name)
    contraction = _contraction(plan, pair, monkeypatch)
    assert len(contraction.steps) == (1 if pair else plan.num_cuts)
    terms = _random_terms(plan, 3, np.random.default_rng(len(name)))
    values = contraction.values(contraction.absorb(contraction.operands(terms)))
    np.testing.assert_allclose(values, _brute_force(plan, terms), rtol=0, atol=ROUNDING_TOL)


@pytest.mark.parametrize(("name", "pair"), list(_cases()))
def test_sensitivities_are_the_values_change_per_estimate(name, pair, monkeypatch):
    plan = _plan(name)
    contraction = _contraction(plan, pair, monkeypatch)
    rng = np.random.default_rng(7)
    terms = _random_terms(plan, 2, rng)
    operands = contraction.operands(terms)
    grads = contraction.sensitivities(operands, contraction.absorb(operands))
    base = _brute_force(plan, terms)
    for p, part in enumerate(plan.partitions):
        assert grads[p].shape == terms[p].shape
        picks = zip(*(rng.integers(0, n, 4) for n in (part.num_subexperiments, 2, len(plan.paulis))))
        for s, r, j in picks:
            moved = [t.copy() for t in terms]
            moved[p][s, r, j] += 1.0  # linear in each estimate: the change is the derivative
            change = _brute_force(plan, moved) - base
            assert change[r, j] == pytest.approx(grads[p][s, r, j], abs=ROUNDING_TOL)
            others = np.ones(change.shape, dtype=bool)
            others[r, j] = False
            np.testing.assert_allclose(change[others], 0.0, atol=ROUNDING_TOL)


@pytest.mark.parametrize("name", SAMPLED)
def test_sampled_variance_is_the_delta_method_over_every_setting(name):
    plan = _plan(name)
    program = build_program(plan, sampled=True)
    if name == "one setting of 2 Paulis per half":  # the settings measure their terms in order
        assert [block.identity for block in compile_program(program).settings.blocks] == [True]
        assert [len(s.paulis) for s in program.settings] == [2, 2]
    rng = np.random.default_rng(3)
    rows, shots = 2, 50
    weights = rng.uniform(-1, 1, (len(plan.paulis), 2))
    compiled = compile_program(program)
    query = Query(0, compiled, rng.uniform(-1, 1, (rows, len(plan.parameters))), shots=shots, seed=1, weights=weights)
    buffers = QueryBuffers(compiled, query.rows)
    allocation = program.subexperiment_shots(shots)
    # summed outcomes of a valid kind: each Pauli's mean in [-1, 1], products from the same shots
    means, products = {}, {}
    for i, setting in enumerate(program.settings):
        k = len(setting.paulis)
        n = np.maximum(allocation[i], 1)[:, None, None]
        outcomes = rng.choice([-1.0, 1.0], (len(allocation[i]), rows, 8, k))  # 8 shots' signs per experiment
        means[i] = outcomes.mean(axis=2)
        products[i] = np.einsum("srnk,srnl->srkl", outcomes, outcomes) / 8
        summed = np.concatenate([means[i], products[i].reshape(*means[i].shape[:2], -1)], axis=-1) * n
        buffers.setting_sums[i][:] = summed
    values, variance = finish_query(query, buffers)

    def evaluate(shift_setting=None, at=None) -> np.ndarray:
        terms = [np.zeros((p.num_subexperiments, rows, len(plan.paulis))) for p in plan.partitions]
        for i, setting in enumerate(program.settings):
            m = means[i].copy()
            if i == shift_setting:
                m[at] += 1.0
            term_pauli = plan.partitions[setting.partition].term_pauli
            for k, pauli in enumerate(setting.paulis):
                terms[setting.partition][:, :, term_pauli == pauli] += (setting.weights[k] * m[:, :, k])[..., None]
        return _brute_force(plan, terms) @ weights

    np.testing.assert_allclose(values, evaluate(), rtol=0, atol=ROUNDING_TOL)
    expected = np.zeros_like(values)
    base = evaluate()
    for i, setting in enumerate(program.settings):
        k = len(setting.paulis)
        for s in range(len(allocation[i])):
            for r in range(rows):
                d = np.array([(evaluate(i, (s, r, a)) - base)[r] for a in range(k)])  # [K, observables]
                covariance = products[i][s, r] - np.outer(means[i][s, r], means[i][s, r])
                expected[r] += np.einsum("ko,kl,lo->o", d, covariance, d) / max(allocation[i][s] - 1, 1)
    np.testing.assert_allclose(variance, expected, rtol=1e-9, atol=ROUNDING_TOL)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_exact_values_read_each_terms_pauli_from_the_run_of_an_equal_row(name):
    """Exact mode with repeated rows: each query row reads the estimates of the distinct row its
    partition's parameters equal, each term the Pauli it restricts to."""
    plan = _plan(name)
    program = build_program(plan, sampled=False)
    rng = np.random.default_rng(5)
    params = rng.uniform(-1, 1, (3, len(plan.parameters)))[[0, 1, 0, 2, 1]]
    weights = rng.uniform(-1, 1, (len(plan.paulis), 2))
    compiled = compile_program(program)
    query = Query(0, compiled, params, weights=weights)
    buffers = QueryBuffers(compiled, query.rows)
    buffers.flat[:] = rng.uniform(-1, 1, buffers.flat.shape)
    values, variance = finish_query(query, buffers)
    terms = []
    for p, part in enumerate(plan.partitions):
        columns, unique = part.parameter_columns, query.rows.unique[p]
        estimates = np.zeros((part.num_subexperiments, len(params), len(plan.paulis)))
        for r, row in enumerate(params):
            (run,) = [u for u, known in enumerate(unique) if np.array_equal(known[columns], row[columns])]
            for j in range(len(plan.paulis)):
                estimates[:, r, j] = buffers.by_row[p][:, run, part.term_pauli[j]]
        terms.append(estimates)
    assert variance is None
    np.testing.assert_allclose(values, _brute_force(plan, terms) @ weights, rtol=0, atol=ROUNDING_TOL)


def test_sums_of_local_terms_contract_combined_terms():
    """Observables whose terms each act on one partition (means of single-qubit Z, per-piece
    parities, constants) contract 1 + partitions combined terms per observable: the values equal
    StatevectorEstimator's, with several observables sharing terms."""
    qnn = cut_qnn(9, cuts=1, layers=2, pieces=3, readout="mean_z")
    observables = [
        qnn.observable,
        SparsePauliOp(["IIIIIIIXZ", "IIIYIIIII", "ZZZIIIIII", "IIIIIIIII"], [0.5, -0.7, 0.3, 0.25]),
        SparsePauliOp(["IIIIIIIIZ", "IIIIZIIII"], [1.0, 2.0]),
    ]
    estimator = DistributedEstimator(qnn.partition_labels, device="CPU")
    params = np.random.default_rng(9).uniform(-np.pi, np.pi, (4, qnn.circuit.num_parameters))
    compiled = estimator._prepare((qnn.circuit, observables, params[:, None, :]), None, {}).compiled
    assert compiled.contraction.local_terms
    evs = estimator.run([(qnn.circuit, observables, params[:, None, :])]).result()[0].data.evs
    expected = StatevectorEstimator().run([(qnn.circuit, observables, params[:, None, :])]).result()[0].data.evs
    np.testing.assert_allclose(evs, expected, rtol=0, atol=EXACT_ATOL)
