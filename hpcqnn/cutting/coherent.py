"""Coherent subexperiments: every channel of every cut of a partition in ONE simulation per row.

A signed QPD measurement is ``M(rho) = P0 rho P0 - P1 rho P1 = (Z rho + rho Z) / 2`` and its
unsigned twin (the outcome forgotten) ``D(rho) = (rho + Z rho Z) / 2``, so every local channel
of a cut (unitaries around measurements, and resets as SWAPs onto a fresh qubit nobody reads) is
a sum of terms ``c A rho B^dagger`` with ``A`` and ``B`` taken from a few distinct unitaries
``V_0 .. V_{n-1}`` (3 for the control side of a CX cut). Per cut a small control register in
uniform superposition selects ``V_k`` (one ``unitary`` gadget applies ``sum_k |k><k| (x) V_k``),
so one statevector holds every branch ``psi_k`` at once, and with ``R_O[b, a] = <psi_b| O |psi_a>``::

    value[channel, O] = n * Re sum_{b, a} T[channel, b, a] R_O[b, a]

(``n``: the product of the registers' used states, undoing the superposition's amplitudes). Each
``T[channel]`` is Hermitian, so it is diagonalised once per plan: a readout rotates each control
axis into the eigenvectors and takes weighted squared norms (``execution.readout``). With the
signed ``T`` and a Pauli ``O`` this is exact mode's estimate; with a projector ``O = Pi_b`` the
signed and unsigned ``T`` give ``M_b`` and ``D_b``, and the shot outcome (b, sign) has probability
``(D_b +- M_b) / 2`` (sampled mode). This module builds the circuit and the readout data; the
readout maths runs at execution time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Gate
from qiskit.circuit.library import UnitaryGate
from qiskit_addon_cutting.qpd.instructions import SingleQubitQPDGate

from hpcqnn.cutting.basis import CutSide
from hpcqnn.cutting.partition import cut_id
from hpcqnn.options import COHERENT_MAX_QUBITS

_Z = np.diag([1.0, -1.0]).astype(complex)
_TOLERANCE = 1e-10


@dataclass(frozen=True, eq=False)
class CoherentCut:
    """One cut location: its control qubits and how its axis of the state is read out.

    ``vectors[i]`` combines the ``branches`` branches into readout vector ``i``;
    ``signed[ch, i]`` is readout vector ``i``'s weight in basis channel ``ch`` of this cut side
    (QPD measurements signed), ``unsigned[ch, i]`` the same with their outcomes forgotten."""

    cut: int
    controls: tuple[int, ...]
    branches: int
    vectors: np.ndarray  # [readout vectors, branches]
    signed: np.ndarray  # [basis channels, readout vectors]
    unsigned: np.ndarray  # [basis channels, readout vectors]


@dataclass(frozen=True, eq=False)
class CoherentPartition:
    """A partition's coherent circuit: its ``width`` own qubits first (observables act on them),
    then fresh qubits that resets swap onto (never read; ``system`` qubits so far), then each
    cut's control register."""

    circuit: QuantumCircuit
    width: int
    system: int
    cuts: tuple[CoherentCut, ...]  # in control-register order (the first holds the lowest control bits)
    cut_ids: tuple[int, ...]  # the partition's cuts in subexperiment order

    @property
    def num_qubits(self) -> int:
        return self.circuit.num_qubits


def defer_resets(subcircuit: QuantumCircuit) -> QuantumCircuit:
    """``subcircuit`` with every reset replaced by a SWAP onto a fresh qubit appended to the
    register (the old state leaves on a qubit nobody reads), so expectation values stay exact
    and every simulation is one statevector (Aer would sample a reset shot by shot)."""
    resets = sum(1 for inst in subcircuit.data if inst.operation.name == "reset")
    if not resets:
        return subcircuit
    deferred = QuantumCircuit(subcircuit.num_qubits + resets, name=subcircuit.name)
    fresh = subcircuit.num_qubits
    for inst in subcircuit.data:
        qubits = [subcircuit.find_bit(q).index for q in inst.qubits]
        if inst.operation.name == "reset":
            deferred.swap(qubits[0], fresh)
            fresh += 1
        else:
            deferred.append(inst.operation, qubits)
    return deferred


def coherent_partition(
    subcircuit: QuantumCircuit, width: int, cut_sides: dict[int, CutSide]
) -> CoherentPartition | None:
    """The coherent form of a partition whose resets are already deferred (``defer_resets``:
    its first ``width`` qubits are the partition's), ``cut_sides[c]`` being its side of cut
    ``c`` in subexperiment order; None when it would be wider than ``COHERENT_MAX_QUBITS``."""
    if any(inst.operation.name == "reset" for inst in subcircuit.data):
        raise ValueError("internal: coherent_partition needs its resets deferred (defer_resets)")
    branches = {c: _branches(side.basis) for c, side in cut_sides.items()}
    fresh = {c: int(math.log2(len(unitaries[0]))) - 1 for c, (unitaries, _, _) in branches.items()}
    sizes = {c: max(1, math.ceil(math.log2(len(unitaries)))) for c, (unitaries, _, _) in branches.items()}
    system = subcircuit.num_qubits + sum(fresh.values())
    if system + sum(sizes.values()) > COHERENT_MAX_QUBITS:
        return None
    circuit = QuantumCircuit(system + sum(sizes.values()), name="coherent_subexperiments")
    cuts, next_fresh, next_control = {}, subcircuit.num_qubits, system
    for inst in subcircuit.data:
        op = inst.operation
        qubits = [subcircuit.find_bit(q).index for q in inst.qubits]
        if op.name == "barrier":
            continue
        if not isinstance(op, SingleQubitQPDGate):
            circuit.append(op, qubits)
            continue
        c = cut_id(op)
        unitaries, signed, unsigned = branches[c]
        fresh_qubits = list(range(next_fresh, next_fresh + fresh[c]))
        controls = tuple(range(next_control, next_control + sizes[c]))
        next_fresh += fresh[c]
        next_control += sizes[c]
        gadget = UnitaryGate(_selector(unitaries, len(controls)), check_input=False)
        circuit.append(gadget, [qubits[0], *fresh_qubits, *controls])
        vectors, weights = _eigen_readout(np.concatenate([signed, unsigned]))
        cuts[c] = CoherentCut(c, controls, len(unitaries), vectors, weights[: len(signed)], weights[len(signed) :])
    # cuts take control registers in circuit order, which is the order of ``cuts``
    return CoherentPartition(circuit, width, system, tuple(cuts.values()), tuple(cut_sides))


def _channel_terms(ops, signed: bool, fresh: int) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """``[(c, A, B)]`` with channel(rho) = sum c A rho B^dagger on the cut qubit (bit 0) and
    ``fresh`` qubits in |0> (reset ``j`` of the op list swaps onto fresh qubit ``j``);
    ``signed=False`` forgets the outcomes of QPD measurements."""
    dim = 2 ** (fresh + 1)
    identity = np.eye(dim, dtype=complex)
    z = np.kron(np.eye(dim // 2), _Z)
    terms = [(1.0, identity, identity)]
    resets = 0
    for op in ops:
        if op.name == "qpd_measure":
            split = ((z, identity), (identity, z)) if signed else ((identity, identity), (z, z))
            terms = [(c / 2, left @ a, right @ b) for c, a, b in terms for left, right in split]
            continue
        if op.name == "reset":
            u = _swap(0, 1 + resets, dim)
            resets += 1
        elif isinstance(op, Gate):
            u = np.kron(np.eye(dim // 2), op.to_matrix())
        else:
            raise ValueError(f"internal: a QPD channel holds {op.name!r}, which is neither a gate nor a reset")
        terms = [(c, u @ a, u @ b) for c, a, b in terms]
    return terms


def _swap(i: int, j: int, dim: int) -> np.ndarray:
    """The permutation matrix swapping bits ``i`` and ``j`` of a ``dim``-state register."""
    index = np.arange(dim)
    bit_i, bit_j = (index >> i) & 1, (index >> j) & 1
    swapped = index ^ ((bit_i ^ bit_j) << i) ^ ((bit_i ^ bit_j) << j)
    matrix = np.zeros((dim, dim), dtype=complex)
    matrix[swapped, index] = 1.0
    return matrix


def _without_phase(u: np.ndarray) -> tuple[np.ndarray, complex]:
    """``u`` with its first nonzero entry made real positive, and the phase taken off."""
    flat = u.ravel()
    first = flat[np.flatnonzero(np.abs(flat) > _TOLERANCE)[0]]
    phase = first / abs(first)
    return u / phase, phase


def _branches(channels: list[list]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct unitaries ``V`` [n, d, d] of a cut side's channels (on the cut qubit and the
    fresh qubits its resets need) and the transfer matrices ``T`` [channels, n, n] with channel
    ``ch`` = sum_{b, a} T[ch, b, a] V_a rho V_b^dagger: signed and unsigned."""
    fresh = max(sum(op.name == "reset" for op in ops) for ops in channels)
    unitaries: list[np.ndarray] = []

    def index(u: np.ndarray) -> tuple[int, complex]:
        canonical, phase = _without_phase(u)
        for i, known in enumerate(unitaries):
            if np.allclose(known, canonical, atol=_TOLERANCE):
                return i, phase
        unitaries.append(canonical)
        return len(unitaries) - 1, phase

    transfers = []
    for signed in (True, False):
        entries = []  # (channel, b, a, coefficient): A = phase_a V_a, B = phase_b V_b
        for channel, ops in enumerate(channels):
            for c, a, b in _channel_terms(ops, signed, fresh):
                (ia, pa), (ib, pb) = index(a), index(b)
                entries.append((channel, ib, ia, c * pa * np.conj(pb)))
        transfers.append(entries)
    out = []
    for entries in transfers:
        transfer = np.zeros((len(channels), len(unitaries), len(unitaries)), dtype=complex)
        for channel, row, column, value in entries:
            transfer[channel, row, column] += value
        out.append(transfer)
    return np.array(unitaries), out[0], out[1]


def _selector(unitaries: np.ndarray, controls: int) -> np.ndarray:
    """The gadget on (cut qubit, fresh qubits, controls): prepare the controls in uniform
    superposition over the ``n`` used states, then apply ``sum_k |k><k| (x) V_k`` (identity
    on unused states)."""
    states, dim = 2**controls, len(unitaries[0])
    select = np.zeros((dim * states, dim * states), dtype=complex)
    for k in range(states):
        select[dim * k : dim * (k + 1), dim * k : dim * (k + 1)] = unitaries[k] if k < len(unitaries) else np.eye(dim)
    return select @ np.kron(_uniform_preparation(len(unitaries), states), np.eye(dim))


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
