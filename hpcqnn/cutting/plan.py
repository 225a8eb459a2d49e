"""Cut plans: partition a circuit once and enumerate each partition's distinct subexperiments.

A plan depends only on the circuit's structure and the Pauli terms to estimate, never on
parameter values, so it is built once and every later query only binds parameters. Stages:
``partition`` (labels, cuts marked), qiskit-addon-cutting's ``partition_problem``, ``basis``
(each cut side's local channels) and ``template`` (one parameterised circuit per partition).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterExpression
from qiskit.circuit.library import RZZGate
from qiskit.quantum_info import PauliList
from qiskit_addon_cutting import partition_problem
from qiskit_addon_cutting.qpd import QPDBasis, TwoQubitQPDGate

from hpcqnn.cutting.basis import CutSide, cut_side
from hpcqnn.cutting.coherent import CoherentPartition, coherent_partition, defer_resets
from hpcqnn.cutting.partition import partition, qpd_sides
from hpcqnn.cutting.template import build_template, channel_location
from hpcqnn.cutting.trainable import MAX_GAMMA, PLACEHOLDER_ANGLE, CutAngle, cut_angle, has_unbound, rzz_coefficient_map
from hpcqnn.errors import CutPlanError

DEFAULT_MAX_SUBEXPERIMENTS = 100_000


MAX_CUTS = 25  # two einsum indices per cut (reconstruct.py)


@dataclass(frozen=True, eq=False)
class PartitionPlan:
    """One partition's share of a cut plan.

    Subexperiment ``s`` is ``template`` with ``term_parameters`` bound to ``term_values[s]``;
    subexperiments enumerate, in C order, one basis channel per cut in ``cut_ids`` (``basis_shape``
    of them each), this partition holding side ``sides[k]`` of cut ``cut_ids[k]``.
    ``term_pauli[j]`` is the local Pauli that global term ``j`` restricts to; ``measured_ancillas``
    carry the deferred QPD measurements. ``coherent`` gives the same estimates (and outcome
    distributions) from one simulation per parameter row (``coherent.CoherentPartition``).
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
    subcircuit: QuantumCircuit  # partition_problem's, QPD placeholders and resets as they are (``noisy``)
    coherent: CoherentPartition | None = None  # all subexperiments in one circuit (None: too wide, or not asked for)

    @property
    def num_subexperiments(self) -> int:
        return len(self.term_values)


@dataclass(frozen=True, eq=False)
class CutPlan:
    """Everything about a cut circuit that does not change between queries (plain data: what
    execution works out from it lives in ``execution.compiled``).

    ``cut_kernels[c][a, b] = sum_t coeff_c[t] * expansion_side0[t, a] * expansion_side1[t, b]``
    couples basis channel ``a`` on side 0 of cut ``c`` with ``b`` on side 1. A trainable cut
    (an RZZ whose angle depends on the parameters) has no fixed kernel (None): ``cut_angles[c]``
    gives it per parameter row (``trainable.CutAngle``).
    """

    parameters: tuple[Parameter, ...]
    paulis: PauliList
    cut_kernels: tuple[np.ndarray | None, ...]
    cut_sides: tuple[tuple[CutSide, CutSide], ...]
    partitions: tuple[PartitionPlan, ...]
    cut_angles: tuple[CutAngle | None, ...]
    cut_gammas: tuple[float, ...]  # each fixed cut's sampling overhead; trainable: MAX_GAMMA, the most

    @property
    def num_cuts(self) -> int:
        return len(self.cut_kernels)

    @property
    def gamma(self) -> float:
        """The sampling overhead of the plan's cuts, the product of each cut's sum of |QPD
        coefficients|; a trainable cut counts at its most (MAX_GAMMA), see ``gammas``."""
        return float(np.prod(self.cut_gammas))

    def gammas(self, params: np.ndarray) -> np.ndarray:
        """The sampling overhead of every parameter row [rows]: trainable cuts at their angles."""
        gammas = np.ones(len(params))
        for gamma, angle in zip(self.cut_gammas, self.cut_angles):
            gammas *= gamma if angle is None else angle.gammas(params)
        return gammas

    @property
    def trainable(self) -> bool:
        """Whether a cut's kernel depends on the parameter rows."""
        return any(angle is not None for angle in self.cut_angles)

    @property
    def fixed_kernels(self) -> list[np.ndarray]:
        """Every cut's kernel, of a plan without trainable cuts."""
        if self.trainable:
            raise ValueError("a plan with trainable cuts has kernels per parameter row: use kernels(params)")
        return [kernel for kernel in self.cut_kernels if kernel is not None]

    def kernels(self, params: np.ndarray) -> list[np.ndarray]:
        """Every cut's kernel for parameter rows ``params`` [rows, parameters]: the fixed one
        [side-0 channels, side-1 channels], or a trainable cut's [rows, ...]."""
        out = []
        for kernel, angle in zip(self.cut_kernels, self.cut_angles):
            if angle is not None:
                out.append(angle.kernel(params))
            else:
                assert kernel is not None, "a cut without an angle has a fixed kernel"
                out.append(kernel)
        return out

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
    coherent: bool = True,
    consolidate: bool = True,
    max_gamma: float | None = None,
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
    duplicates). ``coherent`` also builds each partition's coherent form (``build_program``
    decides where it runs). ``consolidate`` cuts runs of gates on one pair of qubits once where
    that is cheaper (``consolidate``). A plan whose sampling overhead (``CutPlan.gamma``)
    exceeds ``max_gamma`` is refused.
    """
    parts = partition(circuit, paulis, partition_labels, max_subcircuit_qubits, seed, wire_cuts, consolidate)
    circuit, paulis, labels = parts.circuit, parts.paulis, parts.labels
    column = {p: i for i, p in enumerate(circuit.parameters)}
    marked, angles = _mark_trainable_cuts(circuit, labels)
    problem = partition_problem(marked, labels, None)
    bases: list[QPDBasis] = list(problem.bases)
    if len(bases) > MAX_CUTS:
        raise CutPlanError(f"this partition needs {len(bases)} cuts; hpcqnn reconstructs at most {MAX_CUTS}")
    gammas = tuple(MAX_GAMMA if c in angles else float(b.kappa) for c, b in enumerate(bases))
    if max_gamma is not None and np.prod(gammas) > max_gamma:
        each = ", ".join(f"{g:.3g}" + (" (trainable, at most)" if c in angles else "") for c, g in enumerate(gammas))
        raise CutPlanError(
            f"this cut's sampling overhead gamma = {np.prod(gammas):.4g} (the product over its {len(gammas)} "
            f"cuts: {each}) exceeds max_gamma={max_gamma:g}: cut fewer gates, or raise max_gamma"
        )
    qubits_of = {lab: tuple(i for i, x in enumerate(labels) if x == lab) for lab in problem.subcircuits}
    sides = {lab: qpd_sides(sub) for lab, sub in problem.subcircuits.items()}
    cut_sides = tuple((cut_side(b, 0, minimal_basis), cut_side(b, 1, minimal_basis)) for b in bases)

    needed = sum(
        int(np.prod([len(cut_sides[c][k].basis) for c, k in sides[lab].items()]))
        for lab in problem.subcircuits
    )
    if needed > max_subexperiments:
        raise CutPlanError(
            f"this cut needs {needed} subexperiments, more than max_subexperiments="
            f"{max_subexperiments}: cut fewer gates, or raise max_subexperiments"
        )

    partitions = tuple(
        _plan_partition(lab, sub, qubits_of[lab], cut_sides, sides[lab], paulis, column, coherent)
        for lab, sub in problem.subcircuits.items()
    )

    def kernel(coefficients: np.ndarray, side0: CutSide, side1: CutSide) -> np.ndarray:
        return side0.expansion.T @ (coefficients[:, None] * side1.expansion)

    cut_angles: list[CutAngle | None] = [None] * len(bases)
    if angles:
        functions = rzz_coefficient_map()
        for c, expression in angles.items():
            terms = np.array([kernel(f, *cut_sides[c]) for f in functions.T])
            cut_angles[c] = cut_angle(expression, column, terms, functions)
    kernels = tuple(
        None if c in angles else kernel(np.asarray(b.coeffs, dtype=float), side0, side1)
        for c, (b, (side0, side1)) in enumerate(zip(bases, cut_sides))
    )
    return CutPlan(
        parameters=tuple(circuit.parameters),
        paulis=paulis,
        cut_kernels=kernels,
        cut_sides=cut_sides,
        partitions=partitions,
        cut_angles=tuple(cut_angles),
        cut_gammas=gammas,
    )


def _mark_trainable_cuts(
    circuit: QuantumCircuit, labels: Sequence[Hashable]
) -> tuple[QuantumCircuit, dict[int, ParameterExpression]]:
    """``circuit`` with every trainable cut (an RZZ spanning partitions whose angle has
    parameters, ``partition``'s canonical form) marked for cutting at a placeholder angle, and
    the angle of each, by cut id: partition_problem numbers cuts in circuit order."""
    angles: dict[int, ParameterExpression] = {}
    marked = circuit.copy_empty_like()
    cut = 0
    for inst in circuit.data:
        op = inst.operation
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        crossing = op.name != "barrier" and len({labels[q] for q in qubits}) > 1
        if crossing and op.name == "rzz" and has_unbound(op):
            angles[cut] = op.params[0]
            placeholder = QPDBasis.from_instruction(RZZGate(PLACEHOLDER_ANGLE))
            inst = inst.replace(operation=TwoQubitQPDGate(placeholder, label="cut_rzz"))
        cut += crossing or isinstance(op, TwoQubitQPDGate)
        marked.append(inst)
    return (marked, angles) if angles else (circuit, angles)


def _plan_partition(
    label: Hashable,
    subcircuit: QuantumCircuit,
    qubits: tuple[int, ...],
    cut_sides: tuple[tuple[CutSide, CutSide], ...],
    sides: dict[int, int],
    paulis: PauliList,
    column: dict[Parameter, int],
    coherent: bool,
) -> PartitionPlan:
    cut_ids = tuple(sorted(sides))
    mine = [cut_sides[c][sides[c]] for c in cut_ids]
    locations = {c: channel_location(side.basis) for c, side in zip(cut_ids, mine)}
    width = subcircuit.num_qubits
    original, subcircuit = subcircuit, defer_resets(subcircuit)  # once, for both builders
    template, term_parameters, measured, appearance = build_template(subcircuit, locations)

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
    merged = coherent_partition(subcircuit, width, dict(zip(cut_ids, mine))) if coherent else None
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
        subcircuit=original,
        coherent=merged,
    )
