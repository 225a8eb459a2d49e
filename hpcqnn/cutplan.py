"""Cut plans: partition a circuit once and enumerate each partition's distinct subexperiments.

A plan depends only on the circuit's structure and the Pauli terms to estimate, never on
parameter values, so it is built once and every later query only binds parameters.

Exact subexperiments use the deferred-measurement principle: a QPD measurement has no classical
feed-forward, so it becomes a CX onto a fresh ancilla whose Z joins the measured Pauli, and a
reset becomes a SWAP with a fresh ancilla that is never measured.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import Gate, Parameter
from qiskit.quantum_info import PauliList
from qiskit_addon_cutting import partition_problem
from qiskit_addon_cutting.qpd import QPDBasis, TwoQubitQPDGate
from qiskit_addon_cutting.qpd.instructions import SingleQubitQPDGate

from .errors import CutPlanError, ObservableError

#: Gates kept as they are; anything else is unrolled into these before cutting.
SIMULATOR_BASIS = (
    "id", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "sxdg",
    "rx", "ry", "rz", "p", "u", "cx", "cy", "cz", "ch", "swap", "ecr",
    "rxx", "ryy", "rzz", "crx", "cry", "crz", "cp", "barrier",
)

DEFAULT_MAX_SUBEXPERIMENTS = 100_000


@dataclass(frozen=True)
class PartitionPlan:
    """One partition's share of a cut plan.

    ``term_index[t_1, ..., t_m]`` is the distinct subexperiment used when the cuts in
    ``cut_ids`` take QPD terms ``t_1 ... t_m``; ``term_pauli[j]`` is the local Pauli that global
    term ``j`` restricts to.
    """

    label: Hashable
    qubits: tuple[int, ...]
    cut_ids: tuple[int, ...]
    term_index: np.ndarray
    subexperiments: tuple[QuantumCircuit, ...]
    measured_ancillas: tuple[tuple[int, ...], ...]
    paulis: PauliList
    term_pauli: np.ndarray

    @property
    def num_subexperiments(self) -> int:
        return len(self.subexperiments)


@dataclass(frozen=True)
class CutPlan:
    """Everything about a cut circuit that does not change between queries."""

    num_qubits: int
    parameters: tuple[Parameter, ...]
    paulis: PauliList
    cut_coefficients: tuple[np.ndarray, ...]
    partitions: tuple[PartitionPlan, ...]

    @property
    def num_cuts(self) -> int:
        return len(self.cut_coefficients)

    @property
    def num_subexperiments(self) -> int:
        return sum(p.num_subexperiments for p in self.partitions)

    @property
    def num_joint_terms(self) -> int:
        return int(np.prod([len(c) for c in self.cut_coefficients], dtype=np.int64))


def build_cut_plan(
    circuit: QuantumCircuit,
    paulis: PauliList,
    partition_labels: Sequence[Hashable] | str | None = None,
    max_subcircuit_qubits: int | None = None,
    max_subexperiments: int = DEFAULT_MAX_SUBEXPERIMENTS,
    seed: int | None = None,
) -> CutPlan:
    """Partition ``circuit`` and enumerate the distinct subexperiments of every partition.

    With neither ``partition_labels`` nor ``max_subcircuit_qubits`` the circuit is not cut (one
    partition, the uncut baseline). With ``max_subcircuit_qubits`` alone, gate cuts are found with
    qiskit-addon-cutting's ``find_cuts``; given together, the width is checked against the labels.
    """
    _check_circuit(circuit)
    if len(paulis) == 0 or paulis.num_qubits != circuit.num_qubits:
        raise ObservableError(
            f"observables act on {paulis.num_qubits} qubits, the circuit has {circuit.num_qubits}"
        )
    if max_subcircuit_qubits is not None and max_subcircuit_qubits < 1:
        raise CutPlanError(f"max_subcircuit_qubits must be >= 1, got {max_subcircuit_qubits}")
    circuit = _unroll(circuit)

    if partition_labels is None and max_subcircuit_qubits is not None:
        circuit, labels = _find_gate_cuts(circuit, max_subcircuit_qubits, seed)
    elif partition_labels is None:
        labels = ["A"] * circuit.num_qubits
    else:
        labels = list(partition_labels)
        if len(labels) != circuit.num_qubits:
            raise CutPlanError(
                f"partition_labels has {len(labels)} labels, the circuit has "
                f"{circuit.num_qubits} qubits: give one label per qubit"
            )
        _check_cut_gates(circuit, labels)
    _check_widths(labels, max_subcircuit_qubits)

    problem = partition_problem(circuit, labels, None)
    bases: list[QPDBasis] = list(problem.bases)
    qubits_of = {lab: tuple(i for i, x in enumerate(labels) if x == lab) for lab in problem.subcircuits}
    sides = {lab: _qpd_sides(sub) for lab, sub in problem.subcircuits.items()}

    needed = sum(_count_distinct(bases, sides[lab]) for lab in problem.subcircuits)
    if needed > max_subexperiments:
        raise CutPlanError(
            f"this cut needs {needed} subexperiments, more than max_subexperiments="
            f"{max_subexperiments}: cut fewer gates, or raise max_subexperiments"
        )

    partitions = tuple(
        _plan_partition(lab, sub, qubits_of[lab], bases, sides[lab], paulis)
        for lab, sub in problem.subcircuits.items()
    )
    return CutPlan(
        num_qubits=circuit.num_qubits,
        parameters=tuple(circuit.parameters),
        paulis=paulis,
        cut_coefficients=tuple(np.asarray(b.coeffs, dtype=float) for b in bases),
        partitions=partitions,
    )


def _check_circuit(circuit: QuantumCircuit) -> None:
    if circuit.num_clbits or any(i.operation.name in ("measure", "reset") for i in circuit.data):
        raise CutPlanError(
            "the circuit has measurements, resets or classical bits; give the unitary circuit, "
            "the estimator measures the observables itself"
        )


def _unroll(circuit: QuantumCircuit) -> QuantumCircuit:
    if all(i.operation.name in SIMULATOR_BASIS for i in circuit.data):
        return circuit
    return transpile(circuit, basis_gates=list(SIMULATOR_BASIS), optimization_level=0)


def _crossing_gates(circuit: QuantumCircuit, labels: Sequence[Hashable]):
    for index, inst in enumerate(circuit.data):
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        if inst.operation.name != "barrier" and len({labels[q] for q in qubits}) > 1:
            yield index, inst, qubits


def _check_cut_gates(circuit: QuantumCircuit, labels: Sequence[Hashable]) -> None:
    for index, inst, qubits in _crossing_gates(circuit, labels):
        op = inst.operation
        where = f"gate {op.name} on qubits {qubits} (instruction {index})"
        if len(qubits) != 2:
            raise CutPlanError(f"{where} spans partitions but only two-qubit gates can be cut")
        if getattr(op, "is_parameterized", lambda: False)():
            raise CutPlanError(
                f"{where} spans partitions and has unbound parameters {list(op.params)}; "
                "cut gates must be parameter-free (CX, CZ, ...) or have bound angles"
            )
        try:
            QPDBasis.from_instruction(op)
        except Exception as exc:  # the addon raises several types for unsupported gates
            raise CutPlanError(f"{where} spans partitions and cannot be cut: {exc}") from exc


def _find_gate_cuts(
    circuit: QuantumCircuit, max_qubits: int, seed: int | None
) -> tuple[QuantumCircuit, list[int]]:
    if circuit.num_qubits <= max_qubits:
        return circuit, [0] * circuit.num_qubits
    from qiskit_addon_cutting import DeviceConstraints, OptimizationParameters, find_cuts

    options = OptimizationParameters(seed=seed if seed is not None else 111, gate_lo=True, wire_lo=False)
    try:
        cut_circuit, _ = find_cuts(circuit, options, DeviceConstraints(qubits_per_subcircuit=max_qubits))
    except Exception as exc:
        raise CutPlanError(f"find_cuts found no gate cuts into {max_qubits}-qubit pieces: {exc}") from exc
    return cut_circuit, _components(cut_circuit)


def _components(circuit: QuantumCircuit) -> list[int]:
    """Connected qubit components, ignoring the gates marked for cutting."""
    parent = list(range(circuit.num_qubits))

    def root(q: int) -> int:
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    for inst in circuit.data:
        if isinstance(inst.operation, TwoQubitQPDGate) or inst.operation.name == "barrier":
            continue
        qs = [root(circuit.find_bit(q).index) for q in inst.qubits]
        for q in qs[1:]:
            parent[q] = qs[0]
    roots = [root(q) for q in range(circuit.num_qubits)]
    order = {r: i for i, r in enumerate(dict.fromkeys(roots))}
    return [order[r] for r in roots]


def _check_widths(labels: Sequence[Hashable], max_qubits: int | None) -> None:
    if max_qubits is None:
        return
    for lab in dict.fromkeys(labels):
        width = sum(1 for x in labels if x == lab)
        if width > max_qubits:
            raise CutPlanError(
                f"partition {lab!r} has {width} qubits, more than max_subcircuit_qubits={max_qubits}"
            )


def _qpd_sides(subcircuit: QuantumCircuit) -> dict[int, int]:
    """Map cut id -> which side (qubit_id of the QPD basis maps) this subcircuit holds."""
    return {
        int(inst.operation.label.rsplit("_", 1)[1]): inst.operation.qubit_id
        for inst in subcircuit.data
        if isinstance(inst.operation, SingleQubitQPDGate)
    }


def _local_op_key(ops) -> tuple:
    return tuple((op.name, tuple(float(x) for x in op.params)) for op in ops)


def _count_distinct(bases: Sequence[QPDBasis], sides: dict[int, int]) -> int:
    return int(
        np.prod([len({_local_op_key(m[side]) for m in bases[c].maps}) for c, side in sides.items()])
    )


def _plan_partition(
    label: Hashable,
    subcircuit: QuantumCircuit,
    qubits: tuple[int, ...],
    bases: Sequence[QPDBasis],
    sides: dict[int, int],
    paulis: PauliList,
) -> PartitionPlan:
    cut_ids = tuple(sorted(sides))
    shape = tuple(len(bases[c].maps) for c in cut_ids)
    term_index = np.empty(shape, dtype=np.int64)
    distinct: dict[tuple, int] = {}
    circuits: list[QuantumCircuit] = []
    ancillas: list[tuple[int, ...]] = []
    for terms in itertools.product(*(range(n) for n in shape)):
        local_ops = {c: bases[c].maps[t][sides[c]] for c, t in zip(cut_ids, terms)}
        key = tuple(_local_op_key(local_ops[c]) for c in cut_ids)
        if key not in distinct:
            distinct[key] = len(circuits)
            circuit, measured = _deferred_subexperiment(subcircuit, local_ops)
            circuits.append(circuit)
            ancillas.append(measured)
        term_index[terms] = distinct[key]

    local = PauliList.from_symplectic(paulis.z[:, qubits], paulis.x[:, qubits])
    packed = np.concatenate([local.z, local.x], axis=1)
    _, first, term_pauli = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    return PartitionPlan(
        label=label,
        qubits=qubits,
        cut_ids=cut_ids,
        term_index=term_index,
        subexperiments=tuple(circuits),
        measured_ancillas=tuple(ancillas),
        paulis=local[first],
        term_pauli=term_pauli.reshape(-1),
    )


def _deferred_subexperiment(
    subcircuit: QuantumCircuit, local_ops: dict[int, Sequence]
) -> tuple[QuantumCircuit, tuple[int, ...]]:
    """Replace each QPD placeholder by its local ops; defer measurements and resets to ancillas."""
    width = subcircuit.num_qubits
    body: list[tuple] = []
    measured: list[int] = []
    extra = 0
    for inst in subcircuit.data:
        op = inst.operation
        q = [subcircuit.find_bit(b).index for b in inst.qubits]
        if op.name == "barrier":
            continue
        if not isinstance(op, SingleQubitQPDGate):
            body.append((op, q))
            continue
        cut = int(op.label.rsplit("_", 1)[1])
        for local in local_ops[cut]:
            if local.name == "qpd_measure":
                ancilla = width + extra
                extra += 1
                measured.append(ancilla)
                body.append(("cx", [q[0], ancilla]))
            elif local.name == "reset":
                ancilla = width + extra
                extra += 1
                body.append(("swap", [q[0], ancilla]))
            elif not isinstance(local, Gate):
                raise CutPlanError(f"QPD term uses {local.name!r}, which hpcqnn cannot defer")
            else:
                body.append((local, q))
    circuit = QuantumCircuit(width + extra)
    for op, q in body:
        if op == "cx":
            circuit.cx(*q)
        elif op == "swap":
            circuit.swap(*q)
        else:
            circuit.append(op, q)
    return circuit, tuple(measured)

