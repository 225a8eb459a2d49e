"""Cut plans: partition a circuit once and enumerate each partition's distinct subexperiments.

A plan depends only on the circuit's structure and the Pauli terms to estimate, never on
parameter values, so it is built once and every later query only binds parameters.

Subexperiments use the deferred-measurement principle: a QPD measurement has no classical
feed-forward, so it becomes a CX onto a fresh ancilla whose Z joins the measured Pauli, and a
reset becomes a SWAP with a fresh ancilla that is never measured.

All distinct subexperiments of a partition share ONE parameterised template: each cut location
becomes U3 segments separated by switchable gadgets (CRX(pi)+P(pi/2) == CX onto the measurement
ancilla, RXX RYY RZZ(pi/2) == SWAP with the reset ancilla; angle 0 switches them off). A
subexperiment is then a row of "term parameter" values, so the simulator runs one template per
partition for all (subexperiment, parameter row) pairs instead of one circuit per subexperiment.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import Gate, Parameter
from qiskit.synthesis import OneQubitEulerDecomposer
from qiskit.quantum_info import PauliList
from qiskit.transpiler import Target
from qiskit_addon_cutting import cut_wires, expand_observables, partition_problem
from qiskit_addon_cutting.instructions import CutWire, Move
from qiskit_addon_cutting.qpd import QPDBasis, TwoQubitQPDGate
from qiskit_addon_cutting.qpd.instructions import SingleQubitQPDGate

from hpcqnn.errors import CutPlanError, ObservableError

#: Gates kept as they are; anything else is unrolled into these before cutting.
SIMULATOR_BASIS = (
    "id", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "sxdg",
    "rx", "ry", "rz", "p", "u", "cx", "cy", "cz", "ch", "swap", "ecr",
    "rxx", "ryy", "rzz", "crx", "cry", "crz", "cp", "barrier",
)

#: Wire-cut instructions of qiskit-addon-cutting, kept through unrolling: a ``cut_wire`` marker
#: becomes a ``move`` onto a new qubit (``cut_wires``), and every ``move`` is cut.
WIRE_CUT_OPS = {"cut_wire": CutWire(), "move": Move()}

DEFAULT_MAX_SUBEXPERIMENTS = 100_000
MAX_CUTS = 25  # two einsum indices per cut (reconstruct.py)


@dataclass(frozen=True)
class PartitionPlan:
    """One partition's share of a cut plan.

    Subexperiment ``s`` is ``template`` with ``term_parameters`` bound to ``term_values[s]``;
    subexperiments enumerate, in C order, one basis channel per cut in ``cut_ids`` (``basis_shape``
    of them each), this partition holding side ``sides[k]`` of cut ``cut_ids[k]``.
    ``term_pauli[j]`` is the local Pauli that global term ``j`` restricts to; ``measured_ancillas``
    carry the deferred QPD measurements.
    """

    label: Hashable
    qubits: tuple[int, ...]
    cut_ids: tuple[int, ...]
    sides: tuple[int, ...]
    basis_shape: tuple[int, ...]
    template: QuantumCircuit
    term_parameters: tuple[Parameter, ...]
    term_values: np.ndarray
    measured_ancillas: tuple[int, ...]
    paulis: PauliList
    term_pauli: np.ndarray
    parameter_columns: np.ndarray  # the circuit parameters (indices in CutPlan.parameters) it uses

    @property
    def num_subexperiments(self) -> int:
        return len(self.term_values)


@dataclass(frozen=True)
class CutSide:
    """The local channels one side of a cut simulates: ``basis`` op lists, and per QPD term ``t``
    its channel as a combination ``expansion[t] @ basis`` (one-hot when nothing is reduced)."""

    basis: list[list]
    expansion: np.ndarray  # [QPD terms, basis channels]


@dataclass(frozen=True)
class CutPlan:
    """Everything about a cut circuit that does not change between queries.

    ``cut_kernels[c][a, b] = sum_t coeff_c[t] * expansion_side0[t, a] * expansion_side1[t, b]``
    couples basis channel ``a`` on side 0 of cut ``c`` with ``b`` on side 1.
    """

    parameters: tuple[Parameter, ...]
    paulis: PauliList
    cut_kernels: tuple[np.ndarray, ...]
    cut_sides: tuple[tuple[CutSide, CutSide], ...]
    partitions: tuple[PartitionPlan, ...]

    @property
    def num_cuts(self) -> int:
        return len(self.cut_kernels)

    @property
    def num_subexperiments(self) -> int:
        return sum(p.num_subexperiments for p in self.partitions)


def build_cut_plan(
    circuit: QuantumCircuit,
    paulis: PauliList,
    partition_labels: Sequence[Hashable] | str | None = None,
    max_subcircuit_qubits: int | None = None,
    max_subexperiments: int = DEFAULT_MAX_SUBEXPERIMENTS,
    seed: int | None = None,
    minimal_basis: bool = True,
    wire_cuts: bool = False,
) -> CutPlan:
    """Partition ``circuit`` and enumerate the subexperiments of every partition.

    With neither ``partition_labels`` nor ``max_subcircuit_qubits`` the circuit is not cut (one
    partition, the uncut baseline) unless it holds wire cuts. With ``max_subcircuit_qubits`` alone,
    cuts are found with qiskit-addon-cutting's ``find_cuts`` (gate cuts, and wire cuts too with
    ``wire_cuts``); given together, the width is checked against the labels.

    Wire cuts are the addon's: ``CutWire`` markers (each becomes a ``Move`` onto a new qubit, so
    ``partition_labels`` then label the qubits of ``cut_wires(circuit)``) or ``Move`` gates placed
    by the user; without labels, the pieces are the qubits the remaining gates connect.
    ``minimal_basis`` simulates, per cut side, only a linearly independent subset of its distinct
    local channels (4 of 5 for CX/CZ, 4 of 6 for a wire cut's preparations) and expands the others
    exactly; ``False`` simulates every distinct channel, as qiskit-addon-cutting does (minus its
    duplicates).
    """
    _check_circuit(circuit)
    if len(paulis) == 0 or paulis.num_qubits != circuit.num_qubits:
        raise ObservableError(
            f"observables act on {paulis.num_qubits} qubits, the circuit has {circuit.num_qubits}"
        )
    if max_subcircuit_qubits is not None and (
        not isinstance(max_subcircuit_qubits, (int, np.integer)) or max_subcircuit_qubits < 1
    ):
        raise CutPlanError(f"max_subcircuit_qubits must be an integer >= 1, got {max_subcircuit_qubits!r}")
    circuit = _unroll(circuit)
    _check_circuit(circuit)  # again: unrolling can reveal resets (e.g. inside initialize)

    find = partition_labels is None and max_subcircuit_qubits is not None
    if find and circuit.num_qubits > max_subcircuit_qubits:
        circuit = _find_cuts(circuit, max_subcircuit_qubits, seed, wire_cuts)
    if circuit.get_instructions("cut_wire"):
        expanded = cut_wires(circuit)
        paulis = PauliList(expand_observables(paulis, circuit, expanded))
        circuit = expanded
    if partition_labels is not None:
        labels = list(partition_labels)
        if len(labels) != circuit.num_qubits:
            raise CutPlanError(
                f"partition_labels has {len(labels)} labels, the circuit has {circuit.num_qubits} "
                "qubits (each CutWire adds one): give one label per qubit"
            )
        _check_cut_gates(circuit, labels)
    elif find or any(_is_wire_cut(inst.operation) for inst in circuit.data):
        labels = _components(circuit)
    else:
        labels = [0] * circuit.num_qubits
    _check_wire_cuts_cross(circuit, labels)
    _check_widths(labels, max_subcircuit_qubits)

    problem = partition_problem(circuit, labels, None)
    bases: list[QPDBasis] = list(problem.bases)
    if len(bases) > MAX_CUTS:
        raise CutPlanError(f"this partition needs {len(bases)} cuts; hpcqnn reconstructs at most {MAX_CUTS}")
    qubits_of = {lab: tuple(i for i, x in enumerate(labels) if x == lab) for lab in problem.subcircuits}
    sides = {lab: _qpd_sides(sub) for lab, sub in problem.subcircuits.items()}
    cut_sides = tuple((_cut_side(b, 0, minimal_basis), _cut_side(b, 1, minimal_basis)) for b in bases)

    needed = sum(
        int(np.prod([len(cut_sides[c][k].basis) for c, k in sides[lab].items()]))
        for lab in problem.subcircuits
    )
    if needed > max_subexperiments:
        raise CutPlanError(
            f"this cut needs {needed} subexperiments, more than max_subexperiments="
            f"{max_subexperiments}: cut fewer gates, or raise max_subexperiments"
        )

    column = {p: i for i, p in enumerate(circuit.parameters)}
    partitions = tuple(
        _plan_partition(lab, sub, qubits_of[lab], cut_sides, sides[lab], paulis, column)
        for lab, sub in problem.subcircuits.items()
    )
    kernels = tuple(
        side0.expansion.T @ (np.asarray(b.coeffs, dtype=float)[:, None] * side1.expansion)
        for b, (side0, side1) in zip(bases, cut_sides)
    )
    return CutPlan(
        parameters=tuple(circuit.parameters),
        paulis=paulis,
        cut_kernels=kernels,
        cut_sides=cut_sides,
        partitions=partitions,
    )


def _check_circuit(circuit: QuantumCircuit) -> None:
    if circuit.num_clbits or any(i.operation.name in ("measure", "reset") for i in circuit.data):
        raise CutPlanError(
            "the circuit has measurements, resets or classical bits; give the unitary circuit, "
            "the estimator measures the observables itself"
        )


def _unroll(circuit: QuantumCircuit) -> QuantumCircuit:
    """The circuit in SIMULATOR_BASIS gates (custom gates and library blocks unrolled), wire-cut
    instructions and gates already marked for cutting kept as they are."""
    if all(i.operation.name in SIMULATOR_BASIS or _is_cut_mark(i.operation) for i in circuit.data):
        return circuit
    marked = {i.operation.name: i.operation for i in circuit.data if isinstance(i.operation, TwoQubitQPDGate)}
    target = Target.from_configuration(  # "reset" passes through so that _check_circuit names it
        basis_gates=[name for name in SIMULATOR_BASIS if name != "barrier"] + ["reset", *WIRE_CUT_OPS, *marked],
        custom_name_mapping={**WIRE_CUT_OPS, **marked},
    )
    return transpile(circuit, target=target, optimization_level=0)


def _is_wire_cut(op) -> bool:
    return op.name in WIRE_CUT_OPS or isinstance(op, TwoQubitQPDGate) and op.label == "cut_move"


def _is_cut_mark(op) -> bool:
    return op.name in WIRE_CUT_OPS or isinstance(op, TwoQubitQPDGate)


def _crossing_gates(circuit: QuantumCircuit, labels: Sequence[Hashable]):
    for index, inst in enumerate(circuit.data):
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        if inst.operation.name != "barrier" and len({labels[q] for q in qubits}) > 1:
            yield index, inst, qubits


def _check_cut_gates(circuit: QuantumCircuit, labels: Sequence[Hashable]) -> None:
    for index, inst, qubits in _crossing_gates(circuit, labels):
        op = inst.operation
        if isinstance(op, TwoQubitQPDGate):  # marked for cutting already (CutWire, find_cuts)
            continue
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


def _find_cuts(circuit: QuantumCircuit, max_qubits: int, seed: int | None, wire_cuts: bool) -> QuantumCircuit:
    """The circuit with the cuts ``find_cuts`` chose marked (gates wrapped, ``CutWire`` inserted)."""
    from qiskit_addon_cutting import DeviceConstraints, OptimizationParameters, find_cuts

    options = OptimizationParameters(seed=seed if seed is not None else 111, gate_lo=True, wire_lo=wire_cuts)
    try:
        cut_circuit, _ = find_cuts(circuit, options, DeviceConstraints(qubits_per_subcircuit=max_qubits))
    except Exception as exc:
        what = "gate or wire cuts" if wire_cuts else "gate cuts (wire_cuts=True also tries wire cuts)"
        raise CutPlanError(
            f"find_cuts found no {what} into {max_qubits}-qubit pieces (gates with unbound "
            f"parameters cannot be cut): {exc}"
        ) from exc
    return cut_circuit


def _components(circuit: QuantumCircuit) -> list[int]:
    """Connected qubit components, ignoring the gates marked for cutting and wire cuts."""
    parent = list(range(circuit.num_qubits))

    def root(q: int) -> int:
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    for inst in circuit.data:
        if _is_cut_mark(inst.operation) or inst.operation.name == "barrier":
            continue
        qs = [root(circuit.find_bit(q).index) for q in inst.qubits]
        for q in qs[1:]:
            parent[q] = qs[0]
    roots = [root(q) for q in range(circuit.num_qubits)]
    order = {r: i for i, r in enumerate(dict.fromkeys(roots))}
    return [order[r] for r in roots]


def _check_wire_cuts_cross(circuit: QuantumCircuit, labels: Sequence[Hashable]) -> None:
    for index, inst in enumerate(circuit.data):
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        if _is_wire_cut(inst.operation) and labels[qubits[0]] == labels[qubits[1]]:
            raise CutPlanError(
                f"the wire cut (Move) on qubits {qubits} (instruction {index}) stays inside partition "
                f"{labels[qubits[0]]!r}; a Move must join two partitions (label its qubits differently)"
            )


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
        _cut_id(inst.operation): inst.operation.qubit_id
        for inst in subcircuit.data
        if isinstance(inst.operation, SingleQubitQPDGate)
    }


def _cut_id(placeholder: SingleQubitQPDGate) -> int:
    """The cut a QPD placeholder belongs to (partition_problem labels it ``cut_<gate>_<id>``)."""
    return int(placeholder.label.rsplit("_", 1)[1])


def _local_op_key(ops) -> tuple:
    return tuple((op.name, tuple(float(x) for x in op.params)) for op in ops)


def _cut_side(basis: QPDBasis, side: int, minimal: bool) -> CutSide:
    """Distinct local op lists of one side of a cut, reduced to a linearly independent basis."""
    keys: dict[tuple, int] = {}
    distinct, term_to_distinct = [], []
    for term in basis.maps:
        key = _local_op_key(term[side])
        if key not in keys:
            keys[key] = len(distinct)
            distinct.append(list(term[side]))
        term_to_distinct.append(keys[key])
    transfer = np.array([_transfer_matrix(ops).ravel() for ops in distinct])  # also validates the ops
    if minimal:
        chosen: list[int] = []
        for d in range(len(distinct)):
            if np.linalg.matrix_rank(transfer[chosen + [d]], tol=1e-9) > len(chosen):
                chosen.append(d)
        coefficients, *_ = np.linalg.lstsq(transfer[chosen].T, transfer.T, rcond=None)
        if not np.allclose(coefficients.T @ transfer[chosen], transfer, atol=1e-12):
            raise CutPlanError("internal: a local QPD channel is not spanned by the chosen basis")
        by_distinct = np.where(np.abs(coefficients.T) < 1e-12, 0.0, coefficients.T)
    else:
        chosen, by_distinct = list(range(len(distinct))), np.eye(len(distinct))
    return CutSide([distinct[d] for d in chosen], by_distinct[term_to_distinct])


_PAULIS = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]])
_PROJECTORS = (np.diag([1.0, 0.0]), np.diag([0.0, 1.0]))


def _transfer_matrix(ops) -> np.ndarray:
    """Pauli transfer matrix of a local op list; a QPD measurement is the signed map
    P0 . P0 - P1 . P1 (its outcome sign joins the estimate), a reset is Tr(.) |0><0|."""

    def apply(op, rho: np.ndarray) -> np.ndarray:
        if op.name == "qpd_measure":
            return _PROJECTORS[0] @ rho @ _PROJECTORS[0] - _PROJECTORS[1] @ rho @ _PROJECTORS[1]
        if op.name == "reset":
            return np.trace(rho) * _PROJECTORS[0]
        if not isinstance(op, Gate):
            raise CutPlanError(f"QPD term uses {op.name!r}, which hpcqnn cannot defer")
        u = op.to_matrix()
        return u @ rho @ u.conj().T

    columns = []
    for pauli in _PAULIS:
        rho = pauli
        for op in ops:
            rho = apply(op, rho)
        columns.append([np.real(np.trace(p @ rho)) / 2 for p in _PAULIS])
    return np.array(columns).T


_MARKERS = ("qpd_measure", "reset")


def _markers(ops) -> list[str]:
    return [op.name for op in ops if op.name in _MARKERS]


def _supersequence(a: list[str], b: list[str]) -> list[str]:
    """Shortest common supersequence of two marker sequences (tiny, so plain DP)."""
    n, m = len(a), len(b)
    best = [[[] for _ in range(m + 1)] for _ in range(n + 1)]
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 or j == 0:
                best[i][j] = a[:i] + b[:j]
            elif a[i - 1] == b[j - 1]:
                best[i][j] = best[i - 1][j - 1] + [a[i - 1]]
            else:
                x, y = best[i - 1][j] + [a[i - 1]], best[i][j - 1] + [b[j - 1]]
                best[i][j] = x if len(x) <= len(y) else y
    return best[n][m]


@dataclass
class _Location:
    """One cut location in a partition's template: U3 segments between switchable gadgets."""

    pattern: list[str]  # gadget kinds in order
    values: np.ndarray  # [channels, parameters of this location]


_EULER = OneQubitEulerDecomposer("U3")


def _location(channels: list[list]) -> _Location:
    """Gadget pattern and parameter rows that realise each of ``channels`` (op lists)."""
    pattern: list[str] = []
    for ops in channels:
        pattern = _supersequence(pattern, _markers(ops))
    rows = []
    for ops in channels:
        segments, on = [np.eye(2, dtype=complex)], []
        slot = 0
        for op in ops:
            if op.name in _MARKERS:
                while pattern[slot] != op.name:  # gadgets this term skips stay off
                    segments.append(np.eye(2, dtype=complex))
                    on.append(False)
                    slot += 1
                segments.append(np.eye(2, dtype=complex))
                on.append(True)
                slot += 1
            else:
                segments[-1] = op.to_matrix() @ segments[-1]
        while slot < len(pattern):
            segments.append(np.eye(2, dtype=complex))
            on.append(False)
            slot += 1
        row = list(_EULER.angles(segments[0]))  # same order as _template creates parameters
        for kind, enabled, u in zip(pattern, on, segments[1:]):
            if kind == "qpd_measure":
                row += [np.pi, np.pi / 2] if enabled else [0.0, 0.0]
            else:
                row.append(np.pi / 2 if enabled else 0.0)
            row += _EULER.angles(u)
        rows.append(row)
    return _Location(pattern, np.array(rows, dtype=float))


def _plan_partition(
    label: Hashable,
    subcircuit: QuantumCircuit,
    qubits: tuple[int, ...],
    cut_sides: tuple[tuple[CutSide, CutSide], ...],
    sides: dict[int, int],
    paulis: PauliList,
    column: dict[Parameter, int],
) -> PartitionPlan:
    cut_ids = tuple(sorted(sides))
    mine = [cut_sides[c][sides[c]] for c in cut_ids]
    locations = {c: _location(side.basis) for c, side in zip(cut_ids, mine)}
    template, term_parameters, measured, appearance = _template(subcircuit, locations)

    shape = tuple(len(side.basis) for side in mine)
    position = {c: i for i, c in enumerate(cut_ids)}
    term_values = np.array(
        [
            np.concatenate([[]] + [locations[c].values[combo[position[c]]] for c in appearance])
            for combo in itertools.product(*(range(n) for n in shape))
        ]
    )

    local = PauliList.from_symplectic(paulis.z[:, qubits], paulis.x[:, qubits])
    packed = np.concatenate([local.z, local.x], axis=1)
    _, first, inverse = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    # first-appearance order, as the addon's PauliList.unique: its grouping depends on the order
    by_appearance = np.argsort(first)
    first, term_pauli = first[by_appearance], np.argsort(by_appearance)[inverse.reshape(-1)]
    return PartitionPlan(
        label=label,
        qubits=qubits,
        cut_ids=cut_ids,
        sides=tuple(sides[c] for c in cut_ids),
        basis_shape=shape,
        template=template,
        term_parameters=term_parameters,
        term_values=term_values,
        measured_ancillas=measured,
        paulis=local[first],
        term_pauli=term_pauli,
        parameter_columns=np.array(sorted(column[p] for p in subcircuit.parameters), dtype=np.int64),
    )


def _template(
    subcircuit: QuantumCircuit, locations: dict[int, _Location]
) -> tuple[QuantumCircuit, tuple[Parameter, ...], tuple[int, ...], list[int]]:
    """The partition's circuit with every QPD placeholder replaced by its parameterised gadget;
    also the measurement ancillas and the cut ids in the order their parameters were made."""
    width = subcircuit.num_qubits
    extra = sum(len(loc.pattern) for loc in locations.values())
    circuit = QuantumCircuit(width + extra, name="subexperiment_template")
    term_parameters: list[Parameter] = []
    measured: list[int] = []
    order: list[int] = []
    ancilla = width

    def new(c: int) -> Parameter:
        parameter = Parameter(f"_hpcqnn_qpd{c}_{len(term_parameters)}")
        term_parameters.append(parameter)
        return parameter

    for inst in subcircuit.data:
        op = inst.operation
        qs = [subcircuit.find_bit(b).index for b in inst.qubits]
        if op.name == "barrier":
            continue
        if not isinstance(op, SingleQubitQPDGate):
            circuit.append(op, qs)
            continue
        c = _cut_id(op)
        order.append(c)
        q = qs[0]
        circuit.u(new(c), new(c), new(c), q)
        for kind in locations[c].pattern:
            if kind == "qpd_measure":
                circuit.crx(new(c), q, ancilla)
                circuit.p(new(c), q)
                measured.append(ancilla)
            else:
                angle = new(c)
                circuit.rxx(angle, q, ancilla)
                circuit.ryy(angle, q, ancilla)
                circuit.rzz(angle, q, ancilla)
            ancilla += 1
            circuit.u(new(c), new(c), new(c), q)
    return circuit, tuple(term_parameters), tuple(measured), order
