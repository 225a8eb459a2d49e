"""Coherent subexperiments: every channel of every cut of a partition in ONE simulation per row.

A signed QPD measurement is ``M(rho) = P0 rho P0 - P1 rho P1 = (Z rho + rho Z) / 2``, so every
local channel of a gate cut (unitaries around signed measurements) is a sum of terms
``c A rho B^dagger`` with ``A`` and ``B`` taken from a few distinct unitaries ``V_0 .. V_{n-1}``
(3 for a CX/CZ cut: S^dagger, S, I on the control side). Per cut a small control register in
uniform superposition selects ``V_k`` (one ``unitary`` gadget applies
``sum_k |k><k| (x) V_k``), so one statevector holds every branch ``psi_k`` at once, and with
``R_P[b, a] = <psi_b| P |psi_a>``::

    estimate[channel, P] = n * Re sum_{b, a} T[channel, b, a] R_P[b, a]

(``n``: the product of the registers' used states, undoing the superposition's amplitudes).
``T[channel]`` is Hermitian, so it is diagonalised once per plan and the readout is a rotation
of each control axis into its eigenvectors followed by weighted squared norms. No
deferred-measurement ancilla is needed, and a partition with ``m`` cuts runs one experiment of
``w + 2m`` qubits per row instead of ``4**m`` experiments of ``w + m`` qubits. Resets (wire
cuts, or resets in the circuit itself) are not sums of such terms: partitions with them keep the
enumerated template.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Gate
from qiskit.circuit.library import UnitaryGate
from qiskit.quantum_info import PauliList
from qiskit_addon_cutting.qpd.instructions import SingleQubitQPDGate

from hpcqnn.cutting.basis import CutSide
from hpcqnn.cutting.partition import cut_id
from hpcqnn.options import COHERENT_MAX_QUBITS

_Z = np.diag([1.0, -1.0]).astype(complex)
_TOLERANCE = 1e-10


@dataclass(frozen=True)
class CoherentCut:
    """One cut location: its control qubits and how its axis of the state is read out.

    ``vectors[i]`` combines the ``n`` branches into readout vector ``i``; ``weights[ch, i]`` is
    readout vector ``i``'s weight in basis channel ``ch`` of this cut side."""

    cut: int
    qubit: int
    controls: tuple[int, ...]
    branches: int
    vectors: np.ndarray  # [readout vectors, branches]
    weights: np.ndarray  # [basis channels, readout vectors]


@dataclass(frozen=True, repr=False)
class CoherentPartition:
    """A partition's coherent circuit (system qubits first, then each cut's controls) and the
    readout that turns its statevector into the template's estimates [subexperiments, rows, Paulis]."""

    circuit: QuantumCircuit
    width: int
    cuts: tuple[CoherentCut, ...]  # in control-register order (the first holds the lowest control bits)
    cut_ids: tuple[int, ...]  # the partition's cuts in subexperiment order
    z_masks: np.ndarray  # [Paulis] bit mask of the Z-only Paulis' qubits (-1: the Pauli has X or Y)
    flips: tuple[tuple[int, np.ndarray, np.ndarray], ...]  # (Pauli, permutation, phases) of the others

    @property
    def num_qubits(self) -> int:
        return self.circuit.num_qubits

    @cached_property
    def _z_signs(self) -> tuple[np.ndarray, np.ndarray]:
        """The Z-only Paulis and their eigenvalue on every basis state [2**width, those Paulis],
        computed once, not per tile."""
        z_only = np.flatnonzero(self.z_masks >= 0)
        local = np.arange(2**self.width, dtype=np.int64)
        parity = np.bitwise_count((local[:, None] & self.z_masks[None, z_only]).astype(np.uint64)) & 1
        return z_only, 1.0 - 2.0 * parity

    def estimates(self, states: np.ndarray) -> np.ndarray:
        """Statevectors [rows, 2**num_qubits] -> estimates [subexperiments, rows, Paulis]."""
        rows = states.shape[0]
        reversed_cuts = self.cuts[::-1]  # the most significant control register comes first
        psi = states.reshape(rows, *(2 ** len(c.controls) for c in reversed_cuts), 2**self.width)
        for axis, cut in enumerate(reversed_cuts, start=1):
            used = psi[(slice(None),) * axis + (slice(0, cut.branches),)]
            psi = np.moveaxis(np.matmul(cut.vectors, np.moveaxis(used, axis, -2)), -2, axis)
        values = np.empty((*psi.shape[:-1], len(self.z_masks)))
        z_only, signs = self._z_signs
        if len(z_only):
            values[..., z_only] = (psi.real**2 + psi.imag**2) @ signs
        for j, permutation, phases in self.flips:
            values[..., j] = np.real(np.sum(psi.conj() * (phases * psi[..., permutation]), axis=-1))
        for axis, cut in enumerate(reversed_cuts, start=1):
            values = np.moveaxis(np.tensordot(cut.weights, values, axes=([1], [axis])), 0, axis)
        axis_of = {cut.cut: axis for axis, cut in enumerate(reversed_cuts, start=1)}
        values = np.transpose(values, [axis_of[c] for c in self.cut_ids] + [0, values.ndim - 1])
        scale = float(np.prod([cut.branches for cut in self.cuts]))
        return (scale * values).reshape(-1, rows, len(self.z_masks))


def coherent_partition(
    subcircuit: QuantumCircuit, cut_sides: dict[int, CutSide], paulis: PauliList
) -> CoherentPartition | None:
    """The coherent form of a partition (``cut_sides[c]``: its side of cut ``c``, in
    subexperiment order), or None when
    a channel holds a reset (wire cuts) or the subcircuit does, which no sum of unitary branches
    expresses (a reset in the coherent circuit would make Aer sample one outcome per shot), or
    when it would be wider than ``COHERENT_MAX_QUBITS``."""
    if any(inst.operation.name == "reset" for inst in subcircuit.data):
        return None
    width = subcircuit.num_qubits
    branches = {}
    for c, side in cut_sides.items():
        found = _branches(side.basis)
        if found is None:
            return None
        branches[c] = found
    sizes = {c: max(1, math.ceil(math.log2(len(unitaries)))) for c, (unitaries, _) in branches.items()}
    if width + sum(sizes.values()) > COHERENT_MAX_QUBITS:
        return None
    circuit = QuantumCircuit(width + sum(sizes.values()), name="coherent_subexperiments")
    cuts, next_control = {}, width
    for inst in subcircuit.data:
        op = inst.operation
        qubits = [subcircuit.find_bit(q).index for q in inst.qubits]
        if op.name == "barrier":
            continue
        if not isinstance(op, SingleQubitQPDGate):
            circuit.append(op, qubits)
            continue
        c = cut_id(op)
        unitaries, transfer = branches[c]
        controls = tuple(range(next_control, next_control + sizes[c]))
        next_control += sizes[c]
        circuit.append(UnitaryGate(_selector(unitaries, len(controls)), check_input=False), [qubits[0], *controls])
        vectors, weights = _eigen_readout(transfer)
        cuts[c] = CoherentCut(c, qubits[0], controls, len(unitaries), vectors, weights)
    z_masks, flips = _pauli_readout(paulis, width)
    # cuts take control registers in circuit order, which is the order of ``cuts``
    return CoherentPartition(circuit, width, tuple(cuts.values()), tuple(cut_sides), z_masks, flips)


def _channel_terms(ops) -> list[tuple[float, np.ndarray, np.ndarray]] | None:
    """``[(c, A, B)]`` with channel(rho) = sum c A rho B^dagger; None if an op is not a gate or
    a signed measurement."""
    terms = [(1.0, np.eye(2, dtype=complex), np.eye(2, dtype=complex))]
    for op in ops:
        if op.name == "qpd_measure":
            terms = [t for c, a, b in terms for t in ((c / 2, _Z @ a, b), (c / 2, a, _Z @ b))]
        elif isinstance(op, Gate) and op.name != "reset":
            u = op.to_matrix()
            terms = [(c, u @ a, u @ b) for c, a, b in terms]
        else:
            return None
    return terms


def _without_phase(u: np.ndarray) -> tuple[np.ndarray, complex]:
    """``u`` with its first nonzero entry made real positive, and the phase taken off."""
    flat = u.ravel()
    first = flat[np.flatnonzero(np.abs(flat) > _TOLERANCE)[0]]
    phase = first / abs(first)
    return u / phase, phase


def _branches(channels: list[list]) -> tuple[np.ndarray, np.ndarray] | None:
    """Distinct unitaries ``V`` [n, 2, 2] of a cut side's channels and ``T`` [channels, n, n]
    with channel ``ch`` = sum_{b, a} T[ch, b, a] V_a rho V_b^dagger; None if one has a reset."""
    unitaries: list[np.ndarray] = []

    def index(u: np.ndarray) -> tuple[int, complex]:
        canonical, phase = _without_phase(u)
        for i, known in enumerate(unitaries):
            if np.allclose(known, canonical, atol=_TOLERANCE):
                return i, phase
        unitaries.append(canonical)
        return len(unitaries) - 1, phase

    entries = []  # (channel, b, a, coefficient): A = phase_a V_a, B = phase_b V_b
    for channel, ops in enumerate(channels):
        terms = _channel_terms(ops)
        if terms is None:
            return None
        for c, a, b in terms:
            (ia, pa), (ib, pb) = index(a), index(b)
            entries.append((channel, ib, ia, c * pa * np.conj(pb)))
    transfer = np.zeros((len(channels), len(unitaries), len(unitaries)), dtype=complex)
    for channel, row, column, value in entries:
        transfer[channel, row, column] += value
    return np.array(unitaries), transfer


def _selector(unitaries: np.ndarray, controls: int) -> np.ndarray:
    """The gadget on (cut qubit, controls): prepare the controls in uniform superposition over
    the ``n`` used states, then apply ``sum_k |k><k| (x) V_k`` (identity on unused states)."""
    states = 2**controls
    select = np.zeros((2 * states, 2 * states), dtype=complex)
    for k in range(states):
        select[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = unitaries[k] if k < len(unitaries) else np.eye(2)
    return select @ np.kron(_uniform_preparation(len(unitaries), states), np.eye(2))


def _uniform_preparation(used: int, states: int) -> np.ndarray:
    """A unitary on ``states`` basis states whose first column is uniform over the first ``used``."""
    target = np.eye(states, dtype=complex)
    target[:, 0] = 0.0
    target[:used, 0] = 1.0 / math.sqrt(used)
    q, r = np.linalg.qr(target)
    return q * np.sign(r[0, 0].real)


def _eigen_readout(transfer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``vectors`` [k, n] and ``weights`` [channels, k] with
    sum_{b,a} T[ch, b, a] <psi_b|O|psi_a> = sum_i weights[ch, i] <phi_i|O|phi_i>,
    ``phi_i = sum_a vectors[i, a] psi_a`` (each T[ch] is Hermitian: a Hermiticity-preserving map)."""
    vectors: list[np.ndarray] = []
    found: list[tuple[int, int, float]] = []
    for channel, matrix in enumerate(transfer):
        if not np.allclose(matrix, matrix.conj().T, atol=_TOLERANCE):
            raise ValueError("internal: a QPD channel's branch transfer matrix is not Hermitian")
        values, columns = np.linalg.eigh(matrix)
        for value, column in zip(values, columns.T):
            if abs(value) < _TOLERANCE:
                continue
            column = _without_phase(column)[0]
            match = next((i for i, v in enumerate(vectors) if np.allclose(v, column, atol=_TOLERANCE)), None)
            if match is None:
                vectors.append(column)
                match = len(vectors) - 1
            found.append((channel, match, float(value)))
    weights = np.zeros((len(transfer), len(vectors)))
    for channel, i, value in found:
        weights[channel, i] += value
    return np.array(vectors).conj(), weights


def _pauli_readout(paulis: PauliList, width: int) -> tuple[np.ndarray, tuple[tuple[int, np.ndarray, np.ndarray], ...]]:
    """Z masks of the Z-only Paulis (-1 for the others) and, for the others, P|l> = phase[l] |perm[l]>
    as (index, perm, phase) with <psi|P|psi> = sum_l conj(psi[l]) phase[l] psi[perm[l]]."""
    masks = np.full(len(paulis), -1, dtype=np.int64)
    flips = []
    for j, pauli in enumerate(paulis):
        if not pauli.x.any():
            masks[j] = int(sum(1 << q for q in range(width) if pauli.z[q]))
            continue
        matrix = pauli.to_matrix(sparse=True).tocsr()
        flips.append((j, matrix.indices.astype(np.int64), matrix.data))
    return masks, tuple(flips)
