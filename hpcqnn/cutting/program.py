"""What each subexperiment measures: the simulator circuits a plan runs per query.

Each program circuit is one partition's subexperiment template plus save instructions, and is
run for every experiment ``e = s * n + r``: subexperiment ``s`` with the ``r``-th of the ``n``
parameter rows that partition runs (the distinct ones in exact mode, all in sampled mode:
``execution.query.QueryRows``).
Exact mode saves one expectation value per distinct local Pauli (times the Z of every deferred
QPD measurement). Sampled mode saves the outcome distribution of each qubit-wise commuting group
(grouped as qiskit-addon-cutting groups them); shots are drawn from it (``shots``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from qiskit import QuantumCircuit
from qiskit.quantum_info import Pauli, PauliList
from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection
from qiskit_aer.library import SaveExpectationValue, SaveProbabilities

from hpcqnn.cutting.coherent import CoherentPartition
from hpcqnn.cutting.plan import CutPlan
from hpcqnn.cutting.shots import allocate_shots, moment_matrix, popcount, shot_weights
from hpcqnn.errors import ExecutionConfigError
from hpcqnn.options import SHOT_ALLOCATIONS

if TYPE_CHECKING:
    from hpcqnn.execution.query import QueryRows

#: Label of the statevector a coherent circuit saves.
STATE_LABEL = "psi"


@dataclass(frozen=True)
class Group:
    """One measurement setting of a partition in sampled mode."""

    paulis: np.ndarray  # local Pauli indices measured by this setting
    signs: np.ndarray  # [outcomes of the measured qubits, len(paulis)] of +-1
    weights: np.ndarray  # 1 / number of settings that measure each Pauli (estimates are averaged)


@dataclass(frozen=True, repr=False)
class Program:
    """The simulator circuits one plan runs per query: one per partition (exact mode) or per
    (partition, measurement setting) (sampled mode). Its repr summarises the plan.

    In exact mode a cut partition's circuit is its coherent form where it has one
    (``coherent(circuit)``: every subexperiment in one statevector per row, read out in NumPy)
    and the enumerated template otherwise."""

    plan: CutPlan
    sampled: bool
    circuits: tuple[QuantumCircuit, ...]
    partition_of: np.ndarray
    group_of: np.ndarray
    groups: tuple[tuple[Group, ...], ...]
    shot_weights: tuple[np.ndarray, ...] = ()  # sampled mode: per circuit, [subexperiments]
    # what is worked out from the program once (shot allocations, moment matrices, execution's
    # reconstruction factors), kept per process
    derived: dict = field(default_factory=dict, compare=False, repr=False)

    def __getstate__(self) -> dict:
        """Pickled (MPI broadcasts it) without ``derived``: caches, possibly holding GPU arrays."""
        return {**self.__dict__, "derived": {}}

    def __repr__(self) -> str:
        plan = self.plan
        parts = []
        for p in plan.partitions:
            coherent = None if self.sampled else p.coherent
            extra = (
                f"{coherent.num_qubits - len(p.qubits)} control qubits" if coherent
                else f"{p.template.num_qubits - len(p.qubits)} ancillas"
            )
            parts.append(
                f"{p.label}: qubits {', '.join(map(str, p.qubits))} + {extra}, {len(p.cut_ids)} cuts, "
                f"{p.num_subexperiments} subexperiments" + (" in one coherent circuit" if coherent else "")
            )
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

    def coherent(self, circuit: int) -> CoherentPartition | None:
        """The readout of circuit ``circuit`` if it is a coherent circuit (one experiment per row)."""
        return None if self.sampled else self.plan.partitions[self.partition_of[circuit]].coherent

    def experiments(self, circuit: int, rows: QueryRows) -> int:
        """How many experiments circuit ``circuit`` runs for a query: (subexperiment, row) pairs,
        or rows for a coherent circuit."""
        p = self.partition_of[circuit]
        per_row = 1 if self.coherent(circuit) else self.plan.partitions[p].num_subexperiments
        return per_row * len(rows.unique[p])

    def moments(self, circuit: int) -> np.ndarray:
        """Sampled mode: ``shots.moment_matrix`` of circuit ``circuit``'s setting (cached)."""
        key = ("moments", circuit)
        if key not in self.derived:
            ancillas = len(self.plan.partitions[self.partition_of[circuit]].measured_ancillas)
            self.derived[key] = moment_matrix(self.group(circuit).signs, ancillas)
        return self.derived[key]

    def subexperiment_shots(self, shots: int) -> tuple[np.ndarray, ...]:
        """Shots of every (circuit, subexperiment) for a budget of ``shots`` per setting."""
        key = ("shots", shots)
        if key not in self.derived:
            sizes = [len(w) for w in self.shot_weights]
            split = allocate_shots(np.concatenate(self.shot_weights), shots * sum(sizes))
            self.derived[key] = tuple(np.split(split, np.cumsum(sizes)[:-1]))
        return self.derived[key]

    def experiment_shots(self, circuit: int, start: int, stop: int, rows: QueryRows, shots: int) -> np.ndarray:
        """Shots of experiments ``start ... stop`` of ``circuit`` (experiment = subexperiment x row)."""
        unique = len(rows.unique[self.partition_of[circuit]])
        return self.subexperiment_shots(shots)[circuit][np.arange(start, stop) // unique]


def build_program(plan: CutPlan, sampled: bool, shot_allocation: str = "proportional") -> Program:
    """Attach the save instructions of the mode (exact or sampled) to every template; in exact
    mode, to a partition's coherent circuit where the plan has one."""
    if shot_allocation not in SHOT_ALLOCATIONS:
        raise ExecutionConfigError(f"shot_allocation must be one of {SHOT_ALLOCATIONS}, got {shot_allocation!r}")
    circuits: list[QuantumCircuit] = []
    partition_of: list[int] = []
    group_of: list[int] = []
    all_groups: list[tuple] = []
    for p, part in enumerate(plan.partitions):
        groups = _measurement_groups(part.paulis) if sampled else []
        all_groups.append(tuple(group for group, _, _ in groups))
        if not sampled:
            if part.coherent is not None:
                circuit = part.coherent.circuit.copy()
                circuit.save_statevector(label=STATE_LABEL)
                circuits.append(circuit)
            else:
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
        shot_weights=shot_weights(plan, partition_of, shot_allocation) if sampled else (),
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
        signs = 1.0 - 2.0 * (popcount(outcomes[:, None] & masks[None, :]) & 1)
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
