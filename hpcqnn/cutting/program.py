"""What each subexperiment measures, and how raw simulator outputs become Pauli estimates.

Each program circuit is one partition's subexperiment template plus save instructions, and is
run for every experiment ``e = s * n + r``: subexperiment ``s`` with the ``r``-th of the ``n``
distinct parameter rows that partition needs (``QueryRows``).
Exact mode saves one expectation value per distinct local Pauli (times the Z of every deferred
QPD measurement). Sampled mode saves the outcome distribution of each qubit-wise commuting group
(grouped as qiskit-addon-cutting groups them) and draws shots from it per experiment, seeded per
(query, circuit, experiment block) so results do not depend on how the experiments are split
into tiles.

Shots: a query's budget is ``shots`` times the measurement settings of one parameter row (every
subexperiment of every circuit). ``"uniform"`` gives each setting ``shots``; ``"proportional"``
splits the same budget in proportion to each subexperiment's |QPD coefficient| weight ``w``
(``subexperiment_weights``), the typical size of the reconstruction's sensitivity to its
estimate: the variance ``sum w**2 sigma**2 / n`` at a fixed total is smallest with ``n``
proportional to ``w sigma``, and ``sigma`` (at most 1) is not known before measuring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from qiskit import QuantumCircuit
from qiskit.quantum_info import Pauli, PauliList
from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection
from qiskit_aer.library import SaveExpectationValue, SaveProbabilities

from hpcqnn.cutting.plan import CutPlan
from hpcqnn.errors import ExecutionConfigError
from hpcqnn.options import SAMPLE_BLOCK, SHOT_ALLOCATIONS



@dataclass(frozen=True)
class Group:
    """One measurement setting of a partition in sampled mode."""

    paulis: np.ndarray  # local Pauli indices measured by this setting
    signs: np.ndarray  # [outcomes of the measured qubits, len(paulis)] of +-1
    weights: np.ndarray  # 1 / number of settings that measure each Pauli (estimates are averaged)


@dataclass(frozen=True, repr=False)
class Program:
    """The simulator circuits one plan runs per query: one per partition (exact mode) or per
    (partition, measurement setting) (sampled mode). Its repr summarises the plan."""

    plan: CutPlan
    sampled: bool
    circuits: tuple[QuantumCircuit, ...]
    partition_of: np.ndarray
    group_of: np.ndarray
    groups: tuple[tuple[Group, ...], ...]
    shot_weights: tuple[np.ndarray, ...] = ()  # sampled mode: per circuit, [subexperiments]
    _allocations: dict = field(default_factory=dict, compare=False, repr=False)

    def __repr__(self) -> str:
        plan = self.plan
        parts = [
            f"{p.label}: qubits {', '.join(map(str, p.qubits))} + {p.template.num_qubits - len(p.qubits)} ancillas, "
            f"{len(p.cut_ids)} cuts, {p.num_subexperiments} subexperiments"
            for p in plan.partitions
        ]
        mode = "sampled mode" if self.sampled else "exact mode"
        return (
            f"<Program: {plan.num_cuts} cuts, {len(plan.partitions)} partitions, {plan.num_subexperiments} "
            f"subexperiments in {len(self.circuits)} simulator circuits, {len(plan.paulis)} Pauli "
            f"term{'s' * (len(plan.paulis) != 1)}, {mode}; "
            + "; ".join(parts) + ">"
        )

    def group(self, circuit: int) -> Group:
        """The measurement setting sampled-mode circuit ``circuit`` measures."""
        return self.groups[self.partition_of[circuit]][self.group_of[circuit]]

    def experiments(self, circuit: int, rows: QueryRows) -> int:
        """How many (subexperiment, row) experiments circuit ``circuit`` runs for a query."""
        p = self.partition_of[circuit]
        return self.plan.partitions[p].num_subexperiments * len(rows.unique[p])

    def subexperiment_shots(self, shots: int) -> tuple[np.ndarray, ...]:
        """Shots of every (circuit, subexperiment) for a budget of ``shots`` per setting."""
        if shots not in self._allocations:
            sizes = [len(w) for w in self.shot_weights]
            split = allocate_shots(np.concatenate(self.shot_weights), shots * sum(sizes))
            self._allocations[shots] = tuple(np.split(split, np.cumsum(sizes)[:-1]))
        return self._allocations[shots]

    def experiment_shots(self, circuit: int, start: int, stop: int, rows: QueryRows, shots: int) -> np.ndarray:
        """Shots of experiments ``start ... stop`` of ``circuit`` (experiment = subexperiment x row)."""
        unique = len(rows.unique[self.partition_of[circuit]])
        return self.subexperiment_shots(shots)[circuit][np.arange(start, stop) // unique]


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


def build_program(plan: CutPlan, sampled: bool, shot_allocation: str = "proportional") -> Program:
    """Attach the save instructions of the mode (exact or sampled) to every template."""
    if shot_allocation not in SHOT_ALLOCATIONS:
        raise ExecutionConfigError(f"shot_allocation must be one of {SHOT_ALLOCATIONS}, got {shot_allocation!r}")
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
        shot_weights=_shot_weights(plan, partition_of, shot_allocation) if sampled else (),
    )


def _shot_weights(plan: CutPlan, partition_of: list[int], allocation: str) -> tuple[np.ndarray, ...]:
    """Per circuit, the weight of each subexperiment in the split of a query's shots."""
    weights = subexperiment_weights(plan)
    if allocation == "uniform":
        weights = [np.ones_like(w) for w in weights]
    return tuple(weights[p] for p in partition_of)


def subexperiment_weights(plan: CutPlan) -> list[np.ndarray]:
    """Per partition, how strongly each subexperiment's estimate can move the result.

    The result is ``sum prod_c K_c[a_c, b_c] prod_p E_p`` over every cut's channel pair.
    Subexperiment ``s`` picks channel ``s_c`` on this partition's side of each cut it touches, so
    with the other partitions' estimates of unit size and random sign, its sensitivity has
    root-mean-square ``prod_c ||K_c[s_c, :]||_2`` (row, or column on side 1): the |QPD
    coefficient| of its term when it takes part in one term (no basis reduction), their
    root-sum-square when it stands for several. A cut the partition does not touch contributes
    ``||K_c||_F`` to all of its subexperiments alike, hence the normalisation by it.
    """
    weights = []
    for part in plan.partitions:
        w = np.ones(())
        for c, side in zip(part.cut_ids, part.sides):
            norms = np.sqrt(np.square(plan.cut_kernels[c]).sum(axis=1 - side))
            w = np.multiply.outer(w, norms / np.linalg.norm(norms))
        weights.append(w.reshape(-1))
    return weights


def allocate_shots(weights: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` shots in proportion to ``weights`` (largest remainders), at least one
    shot to every positive weight."""
    weights = np.asarray(weights, dtype=float)
    positive = weights > 0
    if total < positive.sum():
        raise ExecutionConfigError(f"{total} shots cannot give each of {positive.sum()} settings one shot")
    share = total * weights / weights.sum()
    shots = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - shots), kind="stable")
    shots[order[: total - shots.sum()]] += 1
    while np.any(positive & (shots == 0)):  # starved settings take a shot from the richest
        shots[np.argmax(shots)] -= 1
        shots[np.argmax(positive & (shots == 0))] += 1
    return shots


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

    def __init__(self, program: Program, rows: QueryRows):
        plan = program.plan
        runs = [part.num_subexperiments * len(u) for part, u in zip(plan.partitions, rows.unique)]
        shapes = [(n, len(part.paulis)) for n, part in zip(runs, plan.partitions)]
        if program.sampled:
            for i, p in enumerate(program.partition_of):
                k = len(program.group(i).paulis)
                shapes.append((runs[p], k, k))
        sizes = [int(np.prod(shape)) for shape in shapes]
        self.flat = np.zeros(sum(sizes))
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
    program: Program, circuit: int, start: int, raw: np.ndarray, shots: np.ndarray | None, seed: int | None, query: int
) -> np.ndarray:
    """Sampled mode: counts drawn from a tile's outcome probabilities (the measurement itself,
    so it belongs to execution), ``shots[e]`` for its experiment ``e``. Exact mode: the
    expectation values unchanged."""
    if not program.sampled:
        return raw
    return sample_counts(raw, shots, seed, query, circuit, offset=start)


def accumulate_tile(
    program: Program, buffers: QueryBuffers, circuit: int, start: int, data: np.ndarray, shots: np.ndarray | None
) -> None:
    """Store one tile's results (experiments ``start ...``) as estimates in ``buffers``.

    ``data`` is what ``draw_shots`` returned: expectation values (exact) or counts (sampled, with
    ``shots[e]`` shots in experiment ``e``), from which the Paulis' means and covariances are
    taken with the ancilla parity folded in.
    """
    p = program.partition_of[circuit]
    rows = slice(start, start + len(data))
    if not program.sampled:
        buffers.estimates[p][rows] = data
        return
    group = program.group(circuit)
    signed, total = fold_ancillas(data, group.signs.shape[0])
    n = np.maximum(shots, 1)[:, None]  # an unweighted setting gets no shots and estimates 0
    means = signed @ group.signs / n
    second = np.einsum("eb,bk,bl->ekl", total, group.signs, group.signs) / n[:, :, None]
    buffers.estimates[p][rows, group.paulis] += means * group.weights
    covariance = (second - means[:, :, None] * means[:, None, :]) / np.maximum(n - 1, 1)[:, :, None]
    buffers.covariances[circuit][rows] = covariance


def sample_counts(
    probabilities: np.ndarray, shots: int | np.ndarray, seed: int | None, query: int, circuit: int, offset: int
) -> np.ndarray:
    """Multinomial counts per experiment (``shots`` each, or ``shots[e]``), one random stream per
    block of SAMPLE_BLOCK experiments.

    ``offset`` is the index of the first experiment in ``probabilities`` (a multiple of the block).
    """
    if offset % SAMPLE_BLOCK:
        raise ValueError(f"offset {offset} is not a multiple of SAMPLE_BLOCK={SAMPLE_BLOCK}")
    probabilities = np.clip(probabilities, 0.0, None)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    counts = np.empty(probabilities.shape, dtype=np.int64)
    shots = np.broadcast_to(shots, len(probabilities))
    entropy = None if seed is None else [seed]
    for start in range(0, len(probabilities), SAMPLE_BLOCK):
        block = slice(start, start + SAMPLE_BLOCK)
        key = [query, circuit, (offset + start) // SAMPLE_BLOCK]
        rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))
        counts[block] = rng.multinomial(shots[block], probabilities[block])
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
        group = program.group(i)
        d = sensitivities[p][:, :, group.paulis, :] * group.weights[None, None, :, None]
        unique = len(buffers.rows.unique[p])
        cov = covariance.reshape(d.shape[0], unique, *covariance.shape[1:])[:, buffers.rows.inverse[p]]
        variance = variance + np.einsum("srko,srkl,srlo->ro", d, cov, d)
    return variance
