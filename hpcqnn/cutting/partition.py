"""Partitioning: check and unroll a circuit, mark its cuts and label every qubit's partition.

Gates between differently labelled qubits are cut; without labels, ``find_cuts`` of
qiskit-addon-cutting chooses cuts for a width limit, and wire cuts (``CutWire`` markers or
``Move`` gates) split the circuit where they stand.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import ControlFlowOp
from qiskit.circuit.library import RZZGate
from qiskit.quantum_info import PauliList
from qiskit.transpiler import Target
from qiskit_addon_cutting import cut_wires, expand_observables
from qiskit_addon_cutting.instructions import CutWire, Move
from qiskit_addon_cutting.qpd import QPDBasis, TwoQubitQPDGate
from qiskit_addon_cutting.qpd.instructions import SingleQubitQPDGate

from hpcqnn.cutting.consolidate import consolidate
from hpcqnn.cutting.trainable import PLACEHOLDER_ANGLE, TRAINABLE_CUT_GATES, canonical_rzz, has_unbound
from hpcqnn.errors import CutPlanError, ObservableError

#: Gates the simulator runs as they are (all known to Aer); anything else is unrolled into these.
SIMULATOR_BASIS = (
    "id", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "sxdg",
    "rx", "ry", "rz", "p", "u", "cx", "cy", "cz", "swap", "ecr",
    "rxx", "ryy", "rzz", "rzx", "crx", "cry", "crz", "cp", "barrier",
)

#: Parameter-free two-qubit gates outside SIMULATOR_BASIS that qiskit-addon-cutting cuts as one
#: gate: unrolling keeps them, so that one spanning two partitions costs one cut; inside a
#: partition they are lowered into SIMULATOR_BASIS afterwards (``_lower``).
CUTTABLE_GATES = ("ch", "cs", "csdg", "csx", "dcx", "iswap")

#: Instructions that are not gates but have an exact meaning here: a delay is the identity
#: (dropped), a reset is simulated as a SWAP with a fresh qubit (``coherent.defer_resets``).
NON_GATES = ("delay", "reset")


#: Wire-cut instructions of qiskit-addon-cutting, kept through unrolling: a ``cut_wire`` marker
#: becomes a ``move`` onto a new qubit (``cut_wires``), and every ``move`` is cut.
WIRE_CUT_OPS = {"cut_wire": CutWire(), "move": Move()}


@dataclass(frozen=True)
class Partitioned:
    """A circuit ready for ``partition_problem``: cuts marked, wire cuts expanded (``paulis`` on
    the widened register with it), and the partition label of every qubit."""

    circuit: QuantumCircuit
    paulis: PauliList
    labels: list[Hashable]


def partition(
    circuit: QuantumCircuit,
    paulis: PauliList,
    partition_labels: Sequence[Hashable] | str | None = None,
    max_subcircuit_qubits: int | None = None,
    seed: int | None = None,
    wire_cuts: bool = False,
    consolidate_runs: bool = True,
) -> Partitioned:
    """Check ``circuit`` and choose its partitions (see ``plan.build_cut_plan`` for the rules)."""
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
    _check_circuit(circuit)  # again: unrolling can reveal measurements inside custom instructions
    circuit = _quantum_only(circuit)

    find = partition_labels is None and max_subcircuit_qubits is not None
    found_angles: list = []  # angles of the trainable gates find_cuts cut, in circuit order
    if find and max_subcircuit_qubits is not None and circuit.num_qubits > max_subcircuit_qubits:
        circuit, found_angles = _find_cuts(circuit, max_subcircuit_qubits, seed, wire_cuts)
    if circuit.get_instructions("cut_wire"):
        expanded = cut_wires(circuit)
        paulis = PauliList(expand_observables(paulis, circuit, expanded))
        circuit = expanded
    labels: list[Hashable]
    if partition_labels is not None:
        labels = list(partition_labels)
        _check_hashable(labels)
        if len(labels) != circuit.num_qubits:
            raise CutPlanError(
                f"partition_labels has {len(labels)} labels, the circuit has {circuit.num_qubits} "
                "qubits (each CutWire adds one): give one label per qubit"
            )
        _check_cut_gates(circuit, labels)
    elif find or any(_is_wire_cut(inst.operation) for inst in circuit.data):
        labels = list(_components(circuit))
    else:
        labels = [0] * circuit.num_qubits
    _check_wire_cuts_cross(circuit, labels)
    _check_widths(labels, max_subcircuit_qubits)
    _check_memory(labels)
    circuit = _unmark_trainable(circuit, found_angles)
    if consolidate_runs:
        circuit = consolidate(circuit, labels)
    circuit = _canonical_trainable_cuts(circuit, labels)
    return Partitioned(_lower(circuit, labels), paulis, labels)


def _check_circuit(circuit: QuantumCircuit) -> None:
    """Refuse what has no expectation value to estimate: measurements (the estimator measures the
    observables itself; Qiskit's StatevectorEstimator refuses them too) and classical control flow.
    Classical bits alone, resets and delays are fine."""
    for index, inst in enumerate(circuit.data):
        op = inst.operation
        if op.name == "measure":
            raise CutPlanError(
                f"the circuit has a measurement (instruction {index}, qubit "
                f"{circuit.find_bit(inst.qubits[0]).index}); the estimator measures the observables "
                "itself: give the circuit without measurements (circuit.remove_final_measurements() "
                "drops final ones)"
            )
        if isinstance(op, ControlFlowOp) or inst.clbits:
            raise CutPlanError(
                f"the circuit has {op.name!r} (instruction {index}), which uses classical bits; "
                "hpcqnn estimates circuits without measurements or classical control flow"
            )


def _quantum_only(circuit: QuantumCircuit) -> QuantumCircuit:
    """The circuit without classical bits and delays (identities), its qubits renumbered 0..n-1."""
    if not circuit.num_clbits and not circuit.get_instructions("delay"):
        return circuit
    out = QuantumCircuit(circuit.num_qubits, global_phase=circuit.global_phase)
    for inst in circuit.data:
        if inst.operation.name != "delay":
            out.append(inst.operation, [circuit.find_bit(q).index for q in inst.qubits], copy=False)
    return out


def _unroll(circuit: QuantumCircuit) -> QuantumCircuit:
    """The circuit in SIMULATOR_BASIS gates (custom gates and library blocks unrolled), wire-cut
    instructions and gates already marked for cutting kept as they are."""
    kept = (*SIMULATOR_BASIS, *CUTTABLE_GATES, *NON_GATES)
    if all(i.operation.name in kept or _is_cut_mark(i.operation) for i in circuit.data):
        return circuit
    marked = {i.operation.name: i.operation for i in circuit.data if isinstance(i.operation, TwoQubitQPDGate)}
    target = Target.from_configuration(  # "measure" passes through so that _check_circuit names it
        basis_gates=[name for name in kept if name != "barrier"] + ["measure", *WIRE_CUT_OPS, *marked],
        custom_name_mapping={**WIRE_CUT_OPS, **marked},
    )
    return transpile(circuit, target=target, optimization_level=0)


def _lower(circuit: QuantumCircuit, labels: Sequence[Hashable]) -> QuantumCircuit:
    """``circuit`` with every gate that stays inside a partition and is not in SIMULATOR_BASIS
    (the CUTTABLE_GATES kept for cutting) unrolled into SIMULATOR_BASIS: the simulator does not
    know them all (Aer has no ``ch``). Gates spanning partitions are left to be cut."""
    def simulated(op) -> bool:
        return op.name in SIMULATOR_BASIS or op.name in NON_GATES or _is_cut_mark(op)

    to_lower = {index for index, inst in enumerate(circuit.data) if not simulated(inst.operation)}
    if to_lower:  # most circuits have none: no need to find the crossing gates
        to_lower -= {index for index, _, _ in _crossing_gates(circuit, labels)}
    if not to_lower:
        return circuit
    basis = [name for name in SIMULATOR_BASIS if name != "barrier"]
    out = circuit.copy_empty_like()
    for index, inst in enumerate(circuit.data):
        if index not in to_lower:
            out.append(inst)
            continue
        piece = QuantumCircuit(inst.operation.num_qubits)
        piece.append(inst.operation, piece.qubits)
        out.compose(transpile(piece, basis_gates=basis, optimization_level=0), inst.qubits, inplace=True)
    return out


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
        if _is_trainable(op):
            continue  # cut as an RZZ of its angle (``trainable``)
        if has_unbound(op):
            raise CutPlanError(
                f"{where} spans partitions and has unbound parameters {list(op.params)}; cut gates with "
                f"unbound angles must be one of {', '.join(TRAINABLE_CUT_GATES)}, others parameter-free "
                "(CX, CZ, ...) or with bound angles"
            )
        try:
            QPDBasis.from_instruction(op)
        except Exception as exc:  # the addon raises several types for unsupported gates
            raise CutPlanError(f"{where} spans partitions and cannot be cut: {exc}") from exc


def _is_trainable(op) -> bool:
    return op.name in TRAINABLE_CUT_GATES and has_unbound(op)


#: Label of a trainable gate find_cuts chose to cut, until the partition labels are known.
_TRAINABLE_MARK = "cut_trainable"


def _find_cuts(
    circuit: QuantumCircuit, max_qubits: int, seed: int | None, wire_cuts: bool
) -> tuple[QuantumCircuit, list]:
    """The circuit with the cuts ``find_cuts`` chose marked (gates wrapped, ``CutWire`` inserted),
    and the angles of the trainable gates among them, in circuit order.

    ``find_cuts`` needs bound angles: each trainable gate goes in as its RZZ (``canonical_rzz``)
    at a placeholder angle; the ones it leaves come back with their angle, the ones it cuts are
    marked ``_TRAINABLE_MARK`` (``_unmark_trainable`` restores them).
    """
    from qiskit_addon_cutting import DeviceConstraints, OptimizationParameters, find_cuts

    circuit = _canonical_trainable_cuts(circuit, None)
    angles = {i: inst.operation.params[0] for i, inst in enumerate(circuit.data) if _is_trainable(inst.operation)}
    bound = circuit.copy_empty_like()
    for i, inst in enumerate(circuit.data):
        bound.append(inst.replace(operation=RZZGate(PLACEHOLDER_ANGLE)) if i in angles else inst)
    options = OptimizationParameters(seed=seed if seed is not None else 111, gate_lo=True, wire_lo=wire_cuts)
    try:
        cut_circuit, _ = find_cuts(bound, options, DeviceConstraints(qubits_per_subcircuit=max_qubits))
    except Exception as exc:
        what = "gate or wire cuts" if wire_cuts else "gate cuts (wire_cuts=True also tries wire cuts)"
        raise CutPlanError(f"find_cuts found no {what} into {max_qubits}-qubit pieces: {exc}") from exc
    restored, cut_angles = cut_circuit.copy_empty_like(), []
    originals = iter(enumerate(circuit.data))
    for inst in cut_circuit.data:
        if inst.operation.name == "cut_wire":  # inserted; every other instruction is the input's, in order
            restored.append(inst)
            continue
        i, original = next(originals)
        if i not in angles:
            restored.append(inst)
        elif isinstance(inst.operation, TwoQubitQPDGate):
            restored.append(inst.replace(operation=TwoQubitQPDGate(inst.operation.basis, label=_TRAINABLE_MARK)))
            cut_angles.append(angles[i])
        else:
            restored.append(inst.replace(operation=original.operation))
    return restored, cut_angles


def _unmark_trainable(circuit: QuantumCircuit, angles: list) -> QuantumCircuit:
    """The trainable gates ``_find_cuts`` marked back as RZZ gates of their ``angles``."""
    if not angles:
        return circuit
    out, remaining = circuit.copy_empty_like(), iter(angles)
    for inst in circuit.data:
        marked = isinstance(inst.operation, TwoQubitQPDGate) and inst.operation.label == _TRAINABLE_MARK
        out.append(inst.replace(operation=RZZGate(next(remaining))) if marked else inst)
    return out


def _canonical_trainable_cuts(circuit: QuantumCircuit, labels: Sequence[Hashable] | None) -> QuantumCircuit:
    """Every gate of the trainable families (bound or not) spanning partitions as single-qubit
    gates around one RZZ (``trainable.canonical_rzz``): the RZZ is the cut. Without ``labels``
    (before ``find_cuts``), every unbound one."""
    crossing = {
        index for index, inst in enumerate(circuit.data)
        if (_is_trainable(inst.operation) if labels is None else inst.operation.name in TRAINABLE_CUT_GATES)
        and (labels is None or len({labels[circuit.find_bit(q).index] for q in inst.qubits}) > 1)
    }
    if not crossing or all(circuit.data[i].operation.name == "rzz" for i in crossing):
        return circuit
    out = circuit.copy_empty_like()
    for index, inst in enumerate(circuit.data):
        if index in crossing:
            out.compose(canonical_rzz(inst.operation.name, inst.operation.params[0]), inst.qubits, inplace=True)
        else:
            out.append(inst)
    return out


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


def _check_hashable(labels: list) -> None:
    for i, lab in enumerate(labels):
        try:
            hash(lab)
        except TypeError:
            raise CutPlanError(
                f"partition_labels[{i}] is {lab!r}, which cannot name a partition (not hashable): "
                "give one string or integer per qubit, e.g. 'AABB' or [0, 0, 1, 1]"
            ) from None


def _check_memory(labels: Sequence[Hashable]) -> None:
    """Refuse, before any rank allocates, a partition whose statevector alone (complex128, 16
    bytes per amplitude; ancillas add more) exceeds this host's available memory: Aer would
    fail mid-query ("Cannot allocate memory") or take all of it."""
    widest, width = Counter(labels).most_common(1)[0]
    needed, available = 16 * 2**width, available_memory()
    if needed > available:
        gib = 2**30
        raise CutPlanError(
            f"partition {widest!r} has {width} qubits: its statevector alone needs {needed / gib:,.1f} GiB "
            f"per rank, and this host has {available / gib:,.1f} GiB available; cut the circuit into "
            "narrower partitions (partition_labels or max_subcircuit_qubits)"
        )


def available_memory() -> int:
    """Bytes of memory available to new allocations on this host (Linux ``MemAvailable``, else
    the physical memory)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def qpd_sides(subcircuit: QuantumCircuit) -> dict[int, int]:
    """Map cut id -> which side (qubit_id of the QPD basis maps) this subcircuit holds."""
    return {
        cut_id(inst.operation): inst.operation.qubit_id
        for inst in subcircuit.data
        if isinstance(inst.operation, SingleQubitQPDGate)
    }


def cut_id(placeholder: SingleQubitQPDGate) -> int:
    """The cut a QPD placeholder belongs to (partition_problem labels it ``cut_<gate>_<id>``)."""
    return int(placeholder.label.rsplit("_", 1)[1])
