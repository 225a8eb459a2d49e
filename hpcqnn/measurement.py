"""What each subexperiment measures, and how raw simulator outputs become Pauli estimates.

Each program circuit is one partition's subexperiment template plus save instructions, and is
run for every experiment ``e = s * n + r``: subexperiment ``s`` with the ``r``-th of the ``n``
distinct parameter rows that partition needs (``QueryRows``).
Exact mode saves one expectation value per distinct local Pauli (times the Z of every deferred
QPD measurement). Sampled mode saves the outcome distribution of each qubit-wise commuting group
(grouped as qiskit-addon-cutting groups them) and draws ``shots`` outcomes from it per
experiment, seeded per (query, circuit, experiment block) so results do not depend on how the
experiments are split into tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit
from qiskit.quantum_info import Pauli, PauliList
from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection
from qiskit_aer.library import SaveExpectationValue, SaveProbabilities

from .cutplan import CutPlan

#: Experiments sampled from one seed; tiles start at multiples of it so any split draws the same shots.
SAMPLE_BLOCK = 64


@dataclass(frozen=True)
class Group:
    """One measurement setting of a partition in sampled mode."""

    paulis: np.ndarray  # local Pauli indices measured by this setting
    signs: np.ndarray  # [outcomes of the measured qubits, len(paulis)] of +-1
    weights: np.ndarray  # 1 / number of settings that measure each Pauli (estimates are averaged)


@dataclass(frozen=True)
class Program:
    """The simulator circuits one plan runs per query: one per partition (exact mode) or per
    (partition, measurement setting) (sampled mode)."""

    plan: CutPlan
    sampled: bool
    circuits: tuple[QuantumCircuit, ...]
    partition_of: np.ndarray
    group_of: np.ndarray
    groups: tuple[tuple[Group, ...], ...]

    def experiments(self, circuit: int, rows: QueryRows) -> int:
        """How many (subexperiment, row) experiments circuit ``circuit`` runs for a query."""
        p = self.partition_of[circuit]
        return self.plan.partitions[p].num_subexperiments * len(rows.unique[p])


@dataclass(frozen=True)
class QueryRows:
    """The distinct parameter rows each partition needs for a query.

    Rows that agree on a partition's parameters give it identical subexperiments: a
    parameter-shift row of a weight in partition A needs no new run of partition B. Partition
    ``p`` runs ``unique[p]`` (full-width representative rows); query row ``r`` reads its result
    from ``unique[p][inverse[p][r]]``.
    """

    count: int
    unique: list[np.ndarray]
    inverse: list[np.ndarray]


def query_rows(plan: CutPlan, params: np.ndarray) -> QueryRows:
    """Deduplicate ``params`` [rows, circuit parameters] per partition (deterministic)."""
    unique, inverse = [], []
    for part in plan.partitions:
        if len(part.parameter_columns) == 0 or len(params) == 1:
            first, inv = np.zeros(1, dtype=np.int64), np.zeros(len(params), dtype=np.int64)
        else:
            _, first, inv = np.unique(
                params[:, part.parameter_columns], axis=0, return_index=True, return_inverse=True
            )
        unique.append(params[first])
        inverse.append(inv.reshape(-1))
    return QueryRows(len(params), unique, inverse)


def build_program(plan: CutPlan, sampled: bool) -> Program:
    """Attach the save instructions of the mode (exact or sampled) to every template."""
    circuits, partition_of, group_of, all_groups = [], [], [], []
    for p, part in enumerate(plan.partitions):
        groups = _measurement_groups(part.paulis) if sampled else []
        all_groups.append(tuple(group for group, _, _ in groups))
        if not sampled:
            circuits.append(_with_expectations(part.template, part.paulis, part.measured_ancillas))
            group_of.append(-1)
        for g, (_, measured, basis) in enumerate(groups):
            circuits.append(_with_probabilities(part.template, measured, basis, part.measured_ancillas))
            group_of.append(g)
        partition_of.extend([p] * (len(circuits) - len(partition_of)))
    return Program(
        plan=plan,
        sampled=sampled,
        circuits=tuple(circuits),
        partition_of=np.array(partition_of, dtype=np.int64),
        group_of=np.array(group_of, dtype=np.int64),
        groups=tuple(all_groups),
    )


def _ancilla_pauli(local: Pauli, width: int, ancillas: tuple[int, ...]) -> Pauli:
    z = np.zeros(width, dtype=bool)
    x = np.zeros(width, dtype=bool)
    z[: local.num_qubits] = local.z
    x[: local.num_qubits] = local.x
    z[list(ancillas)] = True
    return Pauli((z, x))


def _with_expectations(template: QuantumCircuit, paulis: PauliList, ancillas) -> QuantumCircuit:
    circuit = template.copy()
    everything = list(range(circuit.num_qubits))
    for j, local in enumerate(paulis):
        circuit.append(
            SaveExpectationValue(_ancilla_pauli(local, circuit.num_qubits, ancillas), label=f"e{j}"),
            everything,
        )
    return circuit


def _measurement_groups(paulis: PauliList) -> list[tuple[Group, list[int], Pauli]]:
    """Qubit-wise commuting groups, formed exactly as qiskit-addon-cutting forms them."""
    collection = ObservableCollection(paulis)
    index = {p: i for i, p in enumerate(paulis)}
    uses = np.zeros(len(paulis))
    for pauli, entries in collection.lookup.items():
        uses[index[pauli]] = len(entries)
    groups = []
    for cog in collection.groups:
        measured = list(cog.pauli_indices) or [0]  # an all-identity group still samples a qubit
        members = np.array([index[p] for p in cog.commuting_observables], dtype=np.int64)
        masks = np.array(cog.pauli_bitmasks, dtype=np.int64)
        outcomes = np.arange(2 ** len(measured), dtype=np.int64)
        signs = 1.0 - 2.0 * (_popcount(outcomes[:, None] & masks[None, :]) & 1)
        groups.append((Group(members, signs, 1.0 / uses[members]), measured, cog.general_observable))
    return groups


def _with_probabilities(
    template: QuantumCircuit, measured: list[int], basis: Pauli, ancillas: tuple[int, ...]
) -> QuantumCircuit:
    """Rotate each measured qubit into its Pauli's eigenbasis, then save the outcome
    distribution of the measured qubits (low bits) and the deferred QPD ancillas (high bits)."""
    circuit = template.copy()
    for q in measured:
        if basis.x[q] and basis.z[q]:
            circuit.sx(q)
        elif basis.x[q]:
            circuit.h(q)
    qubits = list(measured) + list(ancillas)
    circuit.append(SaveProbabilities(len(qubits), label="p"), qubits)
    return circuit


def _popcount(values: np.ndarray) -> np.ndarray:
    return np.bitwise_count(values.astype(np.uint64)).astype(np.int64)


class QueryBuffers:
    """Everything a query's tiles contribute, in one flat float64 array.

    ``estimates[p]`` is [subexperiments * rows, local Paulis] (experiment-major); in sampled
    mode ``covariances[i]`` is circuit ``i``'s [experiments, K, K] covariance of the means of the
    K Paulis its setting measures. Each experiment is written by exactly one tile, so buffers
    filled on different ranks combine by summation (zeros elsewhere) into the serial result.
    """

    def __init__(self, program: Program, rows: QueryRows, flat: np.ndarray | None = None):
        plan = program.plan
        runs = [part.num_subexperiments * len(u) for part, u in zip(plan.partitions, rows.unique)]
        shapes = [(n, len(part.paulis)) for n, part in zip(runs, plan.partitions)]
        if program.sampled:
            for i, p in enumerate(program.partition_of):
                k = len(program.groups[p][program.group_of[i]].paulis)
                shapes.append((runs[p], k, k))
        sizes = [int(np.prod(shape)) for shape in shapes]
        self.flat = np.zeros(sum(sizes)) if flat is None else flat
        if self.flat.shape != (sum(sizes),):
            raise ValueError(f"buffer of {self.flat.shape} does not fit a query needing {sum(sizes)} values")
        views, offset = [], 0
        for shape, size in zip(shapes, sizes):
            views.append(self.flat[offset : offset + size].reshape(shape))
            offset += size
        self.rows = rows
        self.estimates = views[: len(plan.partitions)]
        self.covariances = views[len(plan.partitions) :] if program.sampled else None

    def partition_estimates(self, program: Program) -> list[np.ndarray]:
        """Estimates shaped [subexperiments, query rows, local Paulis], as reconstruction wants."""
        return [
            e.reshape(part.num_subexperiments, len(u), -1)[:, inv]
            for e, part, u, inv in zip(self.estimates, program.plan.partitions, self.rows.unique, self.rows.inverse)
        ]


def draw_shots(
    program: Program, circuit: int, start: int, raw: np.ndarray, shots: int | None, seed: int | None, query: int
) -> np.ndarray:
    """Sampled mode: counts drawn from a tile's outcome probabilities (the measurement itself,
    so it belongs to execution). Exact mode: the expectation values unchanged."""
    if not program.sampled:
        return raw
    return sample_counts(raw, shots, seed, query, circuit, offset=start)


def accumulate_tile(
    program: Program, buffers: QueryBuffers, circuit: int, start: int, data: np.ndarray, shots: int | None
) -> None:
    """Store one tile's results (experiments ``start ...``) as estimates in ``buffers``.

    ``data`` is what ``draw_shots`` returned: expectation values (exact) or counts (sampled),
    from which the Paulis' means and covariances are taken with the ancilla parity folded in.
    """
    p = program.partition_of[circuit]
    rows = slice(start, start + len(data))
    if not program.sampled:
        buffers.estimates[p][rows] = data
        return
    group = program.groups[p][program.group_of[circuit]]
    signed, total = fold_ancillas(data, group.signs.shape[0])
    means = signed @ group.signs / shots
    second = np.einsum("eb,bk,bl->ekl", total, group.signs, group.signs) / shots
    buffers.estimates[p][rows, group.paulis] += means * group.weights
    covariance = (second - means[:, :, None] * means[:, None, :]) / max(shots - 1, 1)
    buffers.covariances[circuit][rows] = covariance


def sample_counts(
    probabilities: np.ndarray, shots: int, seed: int | None, query: int, circuit: int, offset: int
) -> np.ndarray:
    """Multinomial counts per experiment, one random stream per block of SAMPLE_BLOCK experiments.

    ``offset`` is the index of the first experiment in ``probabilities`` (a multiple of the block).
    """
    if offset % SAMPLE_BLOCK:
        raise ValueError(f"offset {offset} is not a multiple of SAMPLE_BLOCK={SAMPLE_BLOCK}")
    probabilities = np.clip(probabilities, 0.0, None)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    counts = np.empty(probabilities.shape, dtype=np.int64)
    entropy = None if seed is None else [seed]
    for start in range(0, len(probabilities), SAMPLE_BLOCK):
        block = slice(start, start + SAMPLE_BLOCK)
        key = [query, circuit, (offset + start) // SAMPLE_BLOCK]
        rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))
        counts[block] = rng.multinomial(shots, probabilities[block])
    return counts


def fold_ancillas(counts: np.ndarray, num_outcomes: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum counts over ancilla outcomes: signed by their parity, and plain."""
    rows = counts.shape[0]
    by_ancilla = counts.reshape(rows, -1, num_outcomes)
    parity = 1.0 - 2.0 * (_popcount(np.arange(by_ancilla.shape[1])) & 1)
    return np.einsum("rab,a->rb", by_ancilla, parity), by_ancilla.sum(axis=1).astype(float)


def sampled_variance(
    program: Program, buffers: QueryBuffers, sensitivities: list[np.ndarray]
) -> np.ndarray:
    """Delta-method variance of each reconstructed value, shaped [rows, observables].

    ``sensitivities[p][s, r, j, o]`` is d value[r, o] / d estimate[p][s, r, j]. Experiments are
    independent; the Paulis of one setting share shots, hence the covariance matrices.
    """
    variance = 0.0
    for i, covariance in enumerate(buffers.covariances):
        p = program.partition_of[i]
        group = program.groups[p][program.group_of[i]]
        d = sensitivities[p][:, :, group.paulis, :] * group.weights[None, None, :, None]
        unique = len(buffers.rows.unique[p])
        cov = covariance.reshape(d.shape[0], unique, *covariance.shape[1:])[:, buffers.rows.inverse[p]]
        variance = variance + np.einsum("srko,srkl,srlo->ro", d, cov, d)
    return variance
