"""Sampled mode: statistics against exact statevector values, reproducibility, and the counts
hpcqnn draws pushed through qiskit-addon-cutting's own reconstruction."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.primitives import BitArray, DataBin, PrimitiveResult, PubResult, SamplerPubResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.quantum_info import PauliList, SparsePauliOp
from qiskit_addon_cutting import (
    generate_cutting_experiments,
    partition_problem,
    reconstruct_expectation_values,
)
from qiskit_addon_cutting.qpd import generate_qpd_weights
from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection

from hpcqnn import DistributedEstimator, ExecutionConfigError, cli
from hpcqnn.cutting.plan import build_cut_plan
from hpcqnn.cutting.program import Program, build_program
from hpcqnn.cutting.shots import allocate_shots, popcount, sample_counts, subexperiment_weights
from hpcqnn.execution.compiled import compile_program
from hpcqnn.execution.query import Query, QueryRows, query_rows
from hpcqnn.execution.simulator import AerRunner
from hpcqnn.execution.tiles import Tile, split_chunks
from hpcqnn.options import SAMPLE_BLOCK
from hpcqnn.tools.shotbench import CUT_GATES
from statevector import exact_values
from tolerances import PROPAGATED_ATOL, ROUNDING_TOL

Cut = tuple[str, int, int]  # (gate name, qubit, qubit) of a gate between partitions

#: (partition labels, cut gates): 2 and 3 partitions, CX and CZ cuts, interleaved labels.
CASES: list[tuple[str, list[Cut]]] = [
    ("AABB", [("cx", 1, 2), ("cz", 3, 0)]),
    ("ABAB", [("cz", 0, 1), ("cx", 2, 1)]),
    ("AABBC", [("cx", 1, 2), ("cz", 4, 3)]),
    ("AABBCC", [("cx", 1, 2), ("cz", 3, 4), ("cx", 5, 0)]),
]


def random_circuit(labels: str, cuts: Sequence[Cut], seed: int, layers: int = 2) -> QuantumCircuit:
    """Layers of parameterised rotations and CX/CZ inside partitions; cut ``i`` ends layer ``i``."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    layers = max(layers, len(cuts))
    theta = ParameterVector("t", n * layers)
    qc = QuantumCircuit(n)
    for layer in range(layers):
        for q in range(n):
            t = theta[layer * n + q]
            angle = t if rng.random() < 0.7 else 2 * t - 0.3
            getattr(qc, rng.choice(["rx", "ry", "rz"]) if layer else "ry")(angle, q)
        for a in range(n):
            for b in range(a + 1, n):
                if labels[a] == labels[b] and rng.random() < 0.7:
                    getattr(qc, rng.choice(["cx", "cz"]))(*rng.permutation([a, b]))
        if layer < len(cuts):
            gate, a, b = cuts[layer]
            getattr(qc, gate)(a, b)
    return qc


def random_observables(num_qubits: int, seed: int) -> list[SparsePauliOp]:
    """Two random real combinations of Pauli strings, and Z_0 plus a constant."""
    rng = np.random.default_rng(seed)
    observables = []
    for _ in range(2):
        labels = set()
        while len(labels) < 3:
            label = "".join(rng.choice(list("IXYZ"), num_qubits))
            if label.strip("I"):
                labels.add(label)
        observables.append(SparsePauliOp(sorted(labels), rng.uniform(-1.5, 1.5, 3)))
    constant = SparsePauliOp.from_sparse_list([("Z", [0], 0.9), ("", [], 0.25)], num_qubits)
    return observables + [constant]


def run_sampled(
    estimator: DistributedEstimator,
    circuit: QuantumCircuit,
    observables: Sequence[SparsePauliOp],
    params: np.ndarray,
) -> PubResult:
    """One pub whose result table is [rows, observables]."""
    return estimator.run([(circuit, observables, params[:, None, :])]).result()[0]


def sampled_estimator(
    labels: str | None,
    shots: int | None,
    seed: int | None,
    minimal_basis: bool = True,
    allocation: str = "proportional",
    coherent: bool = True,
) -> DistributedEstimator:
    return DistributedEstimator(
        partition_labels=labels, shots=shots, seed=seed, device="CPU", minimal_basis=minimal_basis,
        shot_allocation=allocation, coherent=coherent,
    )


def case_problem(index: int) -> tuple[str, QuantumCircuit, list[SparsePauliOp], np.ndarray]:
    labels, cuts = CASES[index]
    circuit = random_circuit(labels, cuts, seed=10 + index)
    params = np.random.default_rng(20 + index).uniform(-np.pi, np.pi, (3, circuit.num_parameters))
    return labels, circuit, random_observables(len(labels), seed=30 + index), params


def estimator_program(
    circuit: QuantumCircuit,
    observable: SparsePauliOp,
    params: np.ndarray,
    labels: str,
    minimal_basis: bool = True,
    allocation: str = "proportional",
    coherent: bool = True,
) -> tuple[Program, np.ndarray]:
    """The sampled program the estimator builds, and the coefficient of each of its Pauli terms.

    Terms are taken in the order the estimator sees them (ObservablesArray may reorder them).
    """
    terms = EstimatorPub.coerce((circuit, observable, params)).observables.ravel().tolist()[0]
    plan = build_cut_plan(circuit, PauliList(list(terms)), labels, minimal_basis=minimal_basis, coherent=coherent)
    return build_program(plan, sampled=True, shot_allocation=allocation), np.array(list(terms.values())).real


# -- 1. sampled values against exact ones ---------------------------------------------------


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_sampled_values_within_errors_of_exact(index: int) -> None:
    """evs lie within 5 reported stds of the statevector value; stds scale as 1/sqrt(shots)."""
    labels, circuit, observables, params = case_problem(index)
    exact = exact_values(circuit, observables, params[:, None, :])
    few = run_sampled(sampled_estimator(labels, 2000, seed=1), circuit, observables, params)
    many = run_sampled(sampled_estimator(labels, 32000, seed=2), circuit, observables, params)
    assert few.metadata["num_partitions"] == len(set(labels))
    assert few.metadata["num_cuts"] == len(CASES[index][1])
    for result in (few, many):
        assert result.data.evs.shape == exact.shape
        assert np.all(result.data.stds > 0)
        assert np.all(np.abs(result.data.evs - exact) <= 5 * result.data.stds), (
            (result.data.evs - exact) / result.data.stds
        )
    ratio = few.data.stds / many.data.stds
    assert np.all((ratio > 2.5) & (ratio < 6.5)), ratio


@pytest.mark.parametrize("coherent", [True, False], ids=["coherent", "enumerated"])
def test_reported_stds_match_spread_over_queries(coherent: bool) -> None:
    """Queries under 24 seeds scatter about the exact value by about the reported std."""
    labels, circuit, observables, params = case_problem(2)
    exact = exact_values(circuit, observables, params[:, None, :])
    estimator = sampled_estimator(labels, 500, seed=5, coherent=coherent)
    results = []
    for seed in range(24):
        estimator.seed = seed
        results.append(run_sampled(estimator, circuit, observables, params))
    evs = np.array([r.data.evs for r in results])
    stds = np.array([r.data.stds for r in results]).mean(axis=0)
    spread = evs.std(axis=0, ddof=1)
    assert np.all((spread / stds > 0.55) & (spread / stds < 1.6)), spread / stds
    assert np.all(np.abs(evs.mean(axis=0) - exact) <= 5 * stds / np.sqrt(len(evs)))


@pytest.mark.parametrize("coherent", [True, False], ids=["coherent", "enumerated"])
def test_estimates_over_many_seeds_converge_to_the_exact_value(coherent: bool) -> None:
    """Over 60 seeds, each estimate's z-score (error / reported std) has mean 0 and spread 1,
    and the mean estimate converges to the statevector value (the z-score of the mean)."""
    labels, circuit, observables, params = case_problem(3)  # three partitions, CX and CZ cuts
    exact = exact_values(circuit, observables, params[:, None, :])
    results = [
        run_sampled(sampled_estimator(labels, 300, seed=seed, coherent=coherent), circuit, observables, params)
        for seed in range(60)
    ]
    evs = np.array([r.data.evs for r in results])
    stds = np.array([r.data.stds for r in results])
    z = (evs - exact) / stds
    assert abs(z.mean()) < 0.25, z.mean()  # 540 z-scores: their mean has spread ~0.05-0.1
    assert 0.8 < z.std() < 1.25, z.std()
    mean_z = (evs.mean(axis=0) - exact) / (stds.mean(axis=0) / np.sqrt(len(evs)))
    assert np.all(np.abs(mean_z) < 4.5), mean_z


def test_distributions_over_the_memory_bound_are_refused_before_anything_runs(monkeypatch) -> None:
    """A sampled program whose outcome distributions exceed MAX_DISTRIBUTION_BYTES per block of
    rows is an ExecutionConfigError naming the partition and the bound; nothing is simulated."""
    labels, circuit, observables, params = case_problem(0)
    monkeypatch.setattr("hpcqnn.cutting.program.MAX_DISTRIBUTION_BYTES", 96 * 2**10)
    estimator = sampled_estimator(labels, 100, seed=1)
    message = r"partition 'A' measures up to 2 qubits at once in 4 settings .* per block of 64 rows, .* bound of 96 KiB"
    with pytest.raises(ExecutionConfigError, match=message):
        run_sampled(estimator, circuit, observables, params)
    assert estimator.num_queries == 0 and "execute" not in estimator.recorder.seconds(0)
    run_sampled(sampled_estimator(labels, 100, seed=1), circuit, [SparsePauliOp("IIIZ")], params)  # one setting fits


@pytest.mark.parametrize("labels", [None, "AAAB"])
def test_stds_of_correlated_paulis_in_one_setting(labels: str | None) -> None:
    """Z0 + Z1 + Z2 on cos(t/2)|000> + sin(t/2)|111>: one setting measures all three Paulis,
    each shot yields 3z with z = +-1, so the std is exactly 3 sin(t) / sqrt(shots)."""
    theta = ParameterVector("t", 1)
    qc = QuantumCircuit(4)
    qc.ry(theta[0], 0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.h(3)
    observable = SparsePauliOp(["IIIZ", "IIZI", "IZII"])
    params = np.array([[0.4], [1.3], [2.5]])
    shots = 20000
    result = sampled_estimator(labels, shots, seed=8).run([(qc, observable, params)]).result()[0]
    expected = 3 * np.abs(np.sin(params[:, 0])) / np.sqrt(shots)
    np.testing.assert_allclose(result.data.stds, expected, rtol=0.05)
    assert np.all(np.abs(result.data.evs - 3 * np.cos(params[:, 0])) <= 5 * expected)


# -- 2. reproducibility ---------------------------------------------------------------------


def test_same_seed_reproduces_and_other_seed_differs() -> None:
    """Fresh estimators with one seed agree; so do later runs of one seeded estimator (as
    Qiskit's seeded estimators); another seed differs. Within a run, a second query (another
    program) draws from its own streams."""
    labels, circuit, observables, params = case_problem(0)
    first, again, other = (sampled_estimator(labels, 2000, seed) for seed in (7, 7, 8))
    a, b, c = (run_sampled(e, circuit, observables, params) for e in (first, again, other))
    np.testing.assert_array_equal(a.data.evs, b.data.evs)
    np.testing.assert_array_equal(a.data.stds, b.data.stds)
    assert np.all(a.data.evs != c.data.evs)
    a2 = run_sampled(first, circuit, observables, params)
    np.testing.assert_array_equal(a2.data.evs, a.data.evs)
    # uncut too, and a run of two queries: the second query's draws are not the first's
    uncut = sampled_estimator(None, 2000, 7)
    pubs = [(circuit, observables, params[:, None, :]), (circuit, SparsePauliOp("ZIII"), params)]
    runs = [[r.data.evs for r in uncut.run(pubs).result()] for _ in range(2)]
    for x, y in zip(*runs):
        np.testing.assert_array_equal(x, y)
    alone = uncut.run(pubs[1:]).result()[0].data.evs  # the same pub as a run's first query
    assert not np.array_equal(alone, runs[0][1])


def test_sample_counts_do_not_depend_on_block_split() -> None:
    """Counts drawn in tiles of SAMPLE_BLOCK experiments equal those drawn all at once."""
    probabilities = np.random.default_rng(0).dirichlet(np.ones(8), size=2 * SAMPLE_BLOCK + 10)
    full = sample_counts(probabilities, 100, 3, 4, 5, offset=0)
    assert np.all(full.sum(axis=1) == 100)
    starts = range(0, len(probabilities), SAMPLE_BLOCK)
    split = [sample_counts(probabilities[s : s + SAMPLE_BLOCK], 100, 3, 4, 5, s) for s in starts]
    np.testing.assert_array_equal(np.concatenate(split), full)
    assert not np.array_equal(sample_counts(probabilities, 100, 3, 4, 6, offset=0), full)
    with pytest.raises(ValueError):
        sample_counts(probabilities, 100, 3, 4, 5, offset=1)


@pytest.mark.parametrize("coherent", [True, False], ids=["coherent", "enumerated"])
def test_counts_do_not_depend_on_tile_split(coherent: bool) -> None:
    """Aligned tiles of a program, simulated and sampled separately, draw the same shots."""
    labels, circuit, observables, _ = case_problem(3)
    params = np.random.default_rng(5).uniform(-np.pi, np.pi, (2 * SAMPLE_BLOCK + 3, circuit.num_parameters))
    program, _ = estimator_program(circuit, observables[0], params, labels, coherent=coherent)
    assert all(program.coherent_circuits) == coherent
    runner = AerRunner("CPU")
    compiled = compile_program(program, runner)
    query = Query(2, compiled, params, shots=300, seed=9)
    sizes = [query.experiments(i) for i in range(len(program.circuits))]
    whole = [Tile(i, 0, n) for i, n in enumerate(sizes)]
    split = split_chunks(sizes, SAMPLE_BLOCK, SAMPLE_BLOCK)
    assert len(split) > len(whole)

    def measured(tiles: list[Tile]) -> list:
        outputs = runner.run(compiled, query.rows, tiles)
        return [compiled.readouts[t.circuit].measure(query, t.start, raw) for t, raw in zip(tiles, outputs)]

    expected = measured(whole)
    for tile, drawn in zip(split, measured(split)):
        if coherent:  # per setting [subexperiments, rows, sign patterns]
            for part, full in zip(drawn, expected[tile.circuit]):
                np.testing.assert_array_equal(part, full[:, tile.start : tile.stop])
        else:
            np.testing.assert_array_equal(drawn, expected[tile.circuit][tile.start : tile.stop])


@pytest.mark.parametrize("mode", ["exact", "sampled"])
def test_calls_under_the_output_bound_give_the_same_results(mode: str, monkeypatch) -> None:
    """With CALL_BYTES tiny, a query's tiles run in many aligned pieces and calls (bounded
    simulator outputs); values, stds and every drawn shot stay the same."""
    from hpcqnn.execution import engine

    labels, circuit, observables, _ = case_problem(1)
    params = np.random.default_rng(3).uniform(-np.pi, np.pi, (2 * SAMPLE_BLOCK + 5, circuit.num_parameters))
    shots = 200 if mode == "sampled" else None
    whole = run_sampled(sampled_estimator(labels, shots, seed=4), circuit, observables, params)
    monkeypatch.setattr(engine, "CALL_BYTES", 4096)
    estimator = sampled_estimator(labels, shots, seed=4)
    pieces = run_sampled(estimator, circuit, observables, params)
    (compiled,) = estimator._programs.values()
    query = Query(0, compiled, params, shots)
    tiles = [Tile(i, 0, query.experiments(i)) for i in range(len(compiled.program.circuits))]
    calls = engine.call_pieces(query, tiles)
    assert len(calls) > len(tiles)
    align = SAMPLE_BLOCK if shots else 1
    assert all(piece.start % align == 0 for call in calls for piece in call)
    np.testing.assert_array_equal(pieces.data.evs, whole.data.evs)
    np.testing.assert_array_equal(pieces.data.stds, whole.data.stds)


def setting_distributions(
    circuit: QuantumCircuit, observable: SparsePauliOp, params: np.ndarray, labels: str, coherent: bool
) -> dict[int, np.ndarray]:
    """Per measurement setting, the outcome distributions [subexperiments, rows, 2 * outcomes]
    (sign + first): read from the coherent statevectors, or Aer's probabilities of the templates
    with the QPD ancillas reduced to their parity."""
    program, _ = estimator_program(circuit, observable, params, labels, coherent=coherent)
    assert all(program.coherent_circuits) == coherent
    runner = AerRunner("CPU")
    compiled = compile_program(program, runner)
    rows = query_rows(program.plan, params, sampled=True)
    tiles = [Tile(i, 0, Query(0, compiled, params).experiments(i)) for i in range(len(program.circuits))]
    found = {}
    for tile, raw in zip(tiles, runner.run(compiled, rows, tiles)):
        readout = compiled.readouts[tile.circuit]
        if coherent:
            for (k, _), distributions in zip(readout.settings, readout.distributions(raw)):
                found[k] = distributions
            continue
        (k,) = program.settings_of[tile.circuit]
        part = program.plan.partitions[program.settings[k].partition]
        outcomes = 2 ** len(program.settings[k].measured)
        by_ancillas = raw.reshape(part.num_subexperiments, len(params), -1, outcomes)
        parity = popcount(np.arange(by_ancillas.shape[2])) & 1
        found[k] = np.concatenate([by_ancillas[:, :, parity == p].sum(axis=2) for p in (0, 1)], axis=-1)
    assert sorted(found) == list(range(len(program.settings)))
    return found


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_coherent_distributions_are_the_enumerated_ones(index: int) -> None:
    """The outcome distribution of every (setting, subexperiment, row) computed from one
    statevector per row equals Aer's probabilities of the enumerated subexperiment circuit,
    its QPD ancillas reduced to their parity (the sign), to rounding."""
    labels, circuit, observables, params = case_problem(index)
    coherent, enumerated = (setting_distributions(circuit, observables[0], params, labels, c) for c in (True, False))
    for k, distributions in coherent.items():
        np.testing.assert_allclose(distributions, enumerated[k], rtol=0, atol=ROUNDING_TOL)


# -- 3. the same counts through qiskit-addon-cutting ----------------------------------------


def addon_problem() -> tuple[str, QuantumCircuit, SparsePauliOp, np.ndarray]:
    """Two partitions, a CX and a CZ cut, three Pauli terms (one the identity on partition B)."""
    theta = ParameterVector("t", 8)
    qc = QuantumCircuit(4)
    for q in range(4):
        qc.ry(theta[q], q)
    qc.cx(0, 1)
    qc.cz(2, 3)
    qc.cx(1, 2)
    for q in range(4):
        qc.rx(theta[4 + q], q)
    qc.cz(2, 1)
    qc.ry(theta[0] - theta[5], 3)
    observable = SparsePauliOp(["XZYZ", "IIYX", "IYZI"], [0.7, -0.4, 1.1])
    params = np.random.default_rng(5).uniform(-np.pi, np.pi, (2, 8))
    return "AABB", qc, observable, params


def bit_arrays(counts: np.ndarray, num_obs_bits: int) -> DataBin:
    """Shots of one row, split into the addon's observable and QPD registers (the high bits)."""
    num_qpd_bits = (len(counts) >> num_obs_bits).bit_length() - 1
    outcomes = np.repeat(np.arange(len(counts)), counts)
    obs = outcomes & ((1 << num_obs_bits) - 1)
    qpd = outcomes >> num_obs_bits
    return DataBin(
        observable_measurements=BitArray.from_samples(obs.tolist(), num_obs_bits),
        qpd_measurements=BitArray.from_samples(qpd.tolist(), max(num_qpd_bits, 1)),
    )


def addon_results(
    program: Program,
    counts: list[np.ndarray],
    row: int,
    rows: QueryRows,
    joint_terms: list[tuple[int, ...]],
    subobservables: dict[str, PauliList],
) -> dict[str, PrimitiveResult]:
    """Sampler-style results for one parameter row, ordered as generate_cutting_experiments
    orders subexperiments: per joint QPD term, per commuting group (``counts[k]``: setting ``k``'s)."""
    results = {}
    for p, part in enumerate(program.plan.partitions):
        by_content = {
            frozenset(part.paulis[setting.paulis].to_labels()): k
            for k, setting in enumerate(program.settings)
            if setting.partition == p
        }
        pubs = []
        for terms in joint_terms:
            # without basis reduction each QPD term expands to exactly one simulated channel
            channels = [
                int(np.argmax(program.plan.cut_sides[c][k].expansion[terms[c]]))
                for c, k in zip(part.cut_ids, part.sides)
            ]
            s = int(np.ravel_multi_index(channels, part.basis_shape)) if channels else 0
            for cog in ObservableCollection(subobservables[part.label]).groups:
                content = frozenset(str(o) for o in cog.commuting_observables)
                assert content in by_content, f"addon group {set(content)} is not an hpcqnn group"
                experiment = s * len(rows.unique[p]) + rows.inverse[p][row]
                shots = counts[by_content[content]][experiment]
                pubs.append(SamplerPubResult(bit_arrays(shots, max(len(cog.pauli_indices), 1))))
        results[part.label] = PrimitiveResult(pubs)
    return results


@pytest.mark.parametrize("allocation", ["uniform", "proportional"])
def test_addon_reconstructs_hpcqnn_values_from_the_same_counts(allocation: str) -> None:
    """Counts redrawn as the estimator draws them, reconstructed by the addon, give hpcqnn's evs
    (without basis reduction, hpcqnn simulates exactly the addon's distinct subexperiments; the
    enumerated templates draw whole bitstrings, as the addon needs them)."""
    labels, circuit, observable, params = addon_problem()
    shots, seed = 200, 11
    estimator = sampled_estimator(labels, shots, seed, minimal_basis=False, allocation=allocation, coherent=False)
    evs = estimator.run([(circuit, observable, params)]).result()[0].data.evs

    program, term_coefficients = estimator_program(
        circuit, observable, params, labels, minimal_basis=False, allocation=allocation, coherent=False
    )
    paulis = program.plan.paulis
    assert sum(s.partition == 0 for s in program.settings) > 1 or sum(s.partition == 1 for s in program.settings) > 1
    assert program.settings_of == tuple((k,) for k in range(len(program.settings)))  # circuit k measures setting k
    rows = query_rows(program.plan, params, sampled=True)
    runner = AerRunner("CPU")
    compiled = compile_program(program, runner)
    tiles = [Tile(i, 0, Query(0, compiled, params).experiments(i)) for i in range(len(program.circuits))]
    outputs = runner.run(compiled, rows, tiles)
    allocation_shots = program.subexperiment_shots(shots)
    counts = [
        sample_counts(out, allocation_shots[k][np.arange(len(out)) // len(params)], seed, 0, k, offset=0)
        for k, out in enumerate(outputs)
    ]
    per_experiment = np.unique(np.concatenate([c.sum(axis=1) for c in counts]))
    assert (len(per_experiment) > 1) == (allocation == "proportional"), per_experiment

    problem = partition_problem(circuit, labels, paulis)
    _, coefficients = generate_cutting_experiments(
        problem.subcircuits, problem.subobservables, np.inf
    )
    weights = generate_qpd_weights(problem.bases, num_samples=np.inf)
    joint_terms = [m for m, _ in sorted(weights.items(), key=lambda x: x[1][0], reverse=True)]
    assert len(joint_terms) == len(coefficients) == np.prod([len(b.coeffs) for b in problem.bases])
    for terms, (coefficient, _) in zip(joint_terms, coefficients):
        assert coefficient == pytest.approx(np.prod([b.coeffs[t] for b, t in zip(problem.bases, terms)]))

    for row in range(len(params)):
        results = addon_results(program, counts, row, rows, joint_terms, problem.subobservables)
        values = reconstruct_expectation_values(results, coefficients, problem.subobservables)
        expected = float(np.dot(values, term_coefficients))
        assert evs[row] == pytest.approx(expected, abs=PROPAGATED_ATOL)


def test_measurement_groups_are_the_addons() -> None:
    """hpcqnn measures the same commuting groups, in the same order, as the addon would."""
    qc = QuantumCircuit(4)
    qc.h(range(4))
    qc.cx(1, 2)
    paulis = PauliList(["ZZYY", "ZZXX", "ZZII"])  # partition A sees YY, XX, II
    program = build_program(build_cut_plan(qc, paulis, "AABB"), sampled=True)
    subobservables = partition_problem(qc, "AABB", paulis).subobservables
    for p, part in enumerate(program.plan.partitions):
        ours = [sorted(part.paulis[s.paulis].to_labels()) for s in program.settings if s.partition == p]
        addon = ObservableCollection(subobservables[part.label]).groups
        assert ours == [sorted(str(o) for o in cog.commuting_observables) for cog in addon]


# -- 4. one parameter row, parameter-free circuits -----------------------------------------


def test_single_parameter_row() -> None:
    """A 1-D parameter vector gives one row of values, shaped by the observables."""
    labels, circuit, observables, params = case_problem(3)
    row = params[1]
    result = sampled_estimator(labels, 4000, seed=3).run([(circuit, observables, row)]).result()[0]
    exact = exact_values(circuit, observables, row)
    assert result.data.evs.shape == (len(observables),)
    assert np.all(result.data.stds > 0)
    assert np.all(np.abs(result.data.evs - exact) <= 5 * result.data.stds)


def fixed_circuit() -> QuantumCircuit:
    qc = QuantumCircuit(4)
    qc.h(range(4))
    qc.t(0)
    qc.ry(0.3, 1)
    qc.cx(1, 2)
    qc.rx(0.7, 2)
    qc.cz(3, 0)
    qc.s(3)
    return qc


def half_parameterised() -> QuantumCircuit:
    """Parameters only in partition A (one expression), none in B."""
    theta = ParameterVector("t", 2)
    qc = QuantumCircuit(4)
    qc.h(range(4))
    qc.ry(theta[0], 0)
    qc.rx(theta[1], 1)
    qc.cx(1, 2)
    qc.ry(0.4, 3)
    qc.cz(2, 3)
    qc.rz(theta[0] + theta[1], 0)
    return qc


def test_parameter_free_circuit() -> None:
    """No parameter values at all, or several empty rows (identical rows draw independent shots)."""
    circuit = fixed_circuit()
    observable = SparsePauliOp(["XZYZ", "ZIIX", "IYZI"], [0.7, -0.4, 1.1])
    exact = exact_values(circuit, observable)
    pubs = [(circuit, observable), (circuit, observable, np.zeros((3, 0)))]
    single, repeated = sampled_estimator("AABB", 4000, seed=4).run(pubs).result()
    assert single.data.evs.shape == () and repeated.data.evs.shape == (3,)
    for result in (single, repeated):
        assert np.all(result.data.stds > 0)
        assert np.all(np.abs(result.data.evs - exact) <= 5 * result.data.stds)
    assert len(set(repeated.data.evs.tolist()) | {float(single.data.evs)}) == 4  # each row its own draw


def test_partly_parameter_free_circuit() -> None:
    """One partition parameterised, the other not."""
    circuit = half_parameterised()
    observable = SparsePauliOp(["XZYZ", "ZIIX", "IYZI"], [0.7, -0.4, 1.1])
    params = np.array([[0.3, 1.2], [2.0, -0.5], [0.1, 0.1]])
    estimator = sampled_estimator("AABB", 4000, seed=6)
    result = estimator.run([(circuit, observable, params)]).result()[0]
    exact = exact_values(circuit, observable, params)
    assert np.all(result.data.stds > 0)
    assert np.all(np.abs(result.data.evs - exact) <= 5 * result.data.stds)


# -- shot allocation ------------------------------------------------------------------------


def test_allocate_shots_splits_the_budget_in_proportion() -> None:
    shots = allocate_shots(np.array([1.0, 2.0, 3.0, 0.001, 0.0]), 600)
    assert shots.sum() == 600
    assert shots[4] == 0 and shots[3] == 1  # a positive weight always gets a shot
    np.testing.assert_allclose(shots[:3], [100, 200, 300], atol=1)
    assert np.array_equal(allocate_shots(np.ones(7), 70), np.full(7, 10))
    with pytest.raises(ExecutionConfigError, match="3 shots cannot give each of 4 settings one shot"):
        allocate_shots(np.ones(4), 3)


def small_angle_problem() -> tuple[str, QuantumCircuit, list[SparsePauliOp], np.ndarray]:
    """Three partitions joined by an RZZ(0.3) and a CP(0.5) cut, whose QPD terms have very
    unequal coefficients (the identity-like terms dominate)."""
    labels = "AABBCC"
    circuit = random_circuit(labels, [], seed=3)
    circuit.rzz(0.3, 1, 2)
    circuit.cp(0.5, 3, 4)
    circuit.compose(random_circuit(labels, [], seed=4).assign_parameters(np.full(12, 0.7)), inplace=True)
    params = np.random.default_rng(5).uniform(-np.pi, np.pi, (4, circuit.num_parameters))
    return labels, circuit, random_observables(6, seed=6), params


@pytest.mark.parametrize("minimal_basis", [True, False])
def test_subexperiment_weights_are_rms_sensitivities(minimal_basis: bool) -> None:
    """Brute force over every channel pair of every cut: a subexperiment's root-mean-square
    sensitivity (other estimates of unit size, random sign) is its weight, up to one constant."""
    labels, circuit, observables, params = small_angle_problem()
    plan = build_cut_plan(circuit, PauliList(["ZZZZZZ"]), labels, minimal_basis=minimal_basis)
    weights = subexperiment_weights(plan)
    pairs = [list(itertools.product(range(len(k)), range(len(k.T)))) for k in plan.cut_kernels]
    ratios = []
    for part, w in zip(plan.partitions, weights):
        squares = np.zeros(part.basis_shape)
        for choice in itertools.product(*pairs):  # (a_c, b_c) for every cut c
            product = np.prod([k[a, b] ** 2 for k, (a, b) in zip(plan.cut_kernels, choice)])
            mine = tuple(choice[c][side] for c, side in zip(part.cut_ids, part.sides))
            squares[mine] += product
        ratios.append(w / np.sqrt(squares.reshape(-1)))
    ratios = np.concatenate(ratios)
    np.testing.assert_allclose(ratios, ratios[0], rtol=ROUNDING_TOL)
    assert np.ptp(np.concatenate(weights)) > 0.1  # unequal coefficients give unequal weights


def test_proportional_allocation_beats_uniform_at_equal_total_shots() -> None:
    """Same budget (checked), same circuits: weighting shots by |coefficient| shrinks both the
    reported stds and the actual error over repeated queries on the small-angle cuts."""
    labels, circuit, observables, params = small_angle_problem()
    exact = exact_values(circuit, observables, params[:, None, :])
    errors, stds, budgets = {}, {}, {}
    for allocation in ("uniform", "proportional"):
        estimator = sampled_estimator(labels, 400, seed=8, allocation=allocation)
        results = []
        for seed in range(12):
            estimator.seed = seed
            results.append(run_sampled(estimator, circuit, observables, params))
        errors[allocation] = np.sqrt(np.mean([np.square(r.data.evs - exact) for r in results]))
        stds[allocation] = np.mean([r.data.stds for r in results])
        program = estimator.program((circuit, observables, params[:, None, :]))
        budgets[allocation] = sum(int(n.sum()) for n in program.subexperiment_shots(400))
    assert budgets["uniform"] == budgets["proportional"] == 400 * sum(len(w) for w in program.shot_weights())
    assert stds["proportional"] < 0.8 * stds["uniform"], stds
    assert errors["proportional"] < 0.8 * errors["uniform"], errors


def test_bench_shots_spends_equal_budgets(tmp_path) -> None:
    """``hpcqnn bench-shots`` covers every cut gate and the 40-qubit chain, both allocations
    spending the same shots per row."""
    path = tmp_path / "shots.json"
    args = [
        "bench-shots",
        "--qubits",
        "4",
        "--cuts",
        "1",
        "--shots",
        "50",
        "--rows",
        "2",
        "--repeats",
        "2",
        "--json",
        str(path),
    ]
    assert cli.main(args) == 0
    results = json.loads(path.read_text())
    assert len(results) == len(CUT_GATES) + 1
    for entry in results:
        assert (
            entry["uniform_total_shots_per_row"] == entry["proportional_total_shots_per_row"] == 50 * entry["settings"]
        )
        assert entry["uniform_rmse"] > 0 and entry["proportional_rmse"] > 0


@pytest.mark.parametrize(
    "observable",
    [SparsePauliOp(["ZZZZ"]), SparsePauliOp(["ZZZZ", "IZIZ"], [0.8, -0.5])],
    ids=["one Pauli per half", "two Paulis per half"],
)
def test_stacked_halves_give_the_general_contraction(observable: SparsePauliOp) -> None:
    """Two halves measuring their own terms reconstruct both sensitivities in one stacked matmul;
    values and stds equal the general contraction's on the same draws."""
    circuit = random_circuit("AABB", [("cx", 1, 2), ("cz", 3, 0)], seed=7)
    params = np.random.default_rng(8).uniform(-np.pi, np.pi, (5, circuit.num_parameters))
    estimator = sampled_estimator("AABB", 500, seed=9)
    stacked = estimator.run([(circuit, observable, params)]).result()[0]
    (compiled,) = estimator._programs.values()
    assert compiled.settings is not None and compiled.settings.stacked
    assert compiled.contraction.coupling is not None
    compiled.contraction.coupling = None  # the general path
    estimator.num_queries = 0  # the same draws
    general = estimator.run([(circuit, observable, params)]).result()[0]
    np.testing.assert_allclose(stacked.data.evs, general.data.evs, rtol=0, atol=ROUNDING_TOL)
    np.testing.assert_allclose(stacked.data.stds, general.data.stds, rtol=ROUNDING_TOL, atol=ROUNDING_TOL)
