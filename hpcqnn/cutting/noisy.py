"""Subexperiments as a device runs them, for noisy simulators and samplers.

Under noise the coherent circuits and the switchable templates are not the circuits a device
would run: their control registers and gadgets would pick up gate noise of their own. A noisy
program therefore runs every (partition, subexperiment, measurement setting) as its own concrete
circuit, each QPD channel written out as the device gates it is (``measure`` into a ``qpd``
register for a QPD measurement, ``reset`` for a reset), the setting's basis rotations and
measurements into an ``obs`` register, transpiled for the device (``noise.Noise.transpile``; one
layout per partition). These ``device_circuits`` go to a ``SamplerV2`` as they are.

For Aer's density-matrix method the mid-circuit measurements are then deferred through
noiseless CX gates onto one parity ancilla (``noise.DEFERRED_MEASURE_LABEL``; the
reconstruction needs only the parity of a subexperiment's QPD outcomes), each followed by a
noiseless channel that dephases the measured qubit and flips the parity on a misread, and the
circuit saves the outcome distribution of its
measured qubits (low bits) and the parity (high bit): exactly the distribution of the device
circuit's measured bits and QPD parity before the final readout error, which the readout
applies per bit from each measured qubit's confusion matrix. Exact mode takes expectation
values from it, sampled mode draws shots from it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Instruction
from qiskit.circuit.library import CXGate, UnitaryGate
from qiskit.quantum_info import Kraus
from qiskit_addon_cutting.qpd.instructions import SingleQubitQPDGate
from qiskit_aer.library import SaveProbabilities

from hpcqnn.cutting.partition import cut_id
from hpcqnn.errors import ExecutionConfigError
from hpcqnn.noise import DEFERRED_MEASURE_LABEL, Noise
from hpcqnn.options import MAX_DENSITY_QUBITS
from hpcqnn.text import size

if TYPE_CHECKING:
    from hpcqnn.cutting.plan import CutPlan, PartitionPlan
    from hpcqnn.cutting.program import Setting

_DEFERRED_CX = CXGate().to_matrix()


@dataclass(frozen=True, eq=False)
class NoisyCircuits:
    """What a noisy program adds to its circuits (plain data: it is broadcast to every rank).

    Program circuit ``c`` is subexperiment ``subexperiment_of[c]`` of its partition measured in
    one setting; it saves (or a sampler counts) the distribution of ``confusions[c].shape[0]``
    bits, the last ``ancillas[c]`` of them QPD outcomes (the parity ancilla, or a sampler's QPD
    bits), each read through ``confusions[c][i]`` [true bit, read bit]. ``device_circuits[c]``
    is the transpiled circuit with its real measurements; ``layouts[p]`` the device qubits of
    partition ``p``'s qubits."""

    description: str
    noise_model: Any  # None: the sampler's device supplies the noise
    sampler: str | None
    subexperiment_of: np.ndarray
    confusions: tuple[np.ndarray, ...]
    ancillas: tuple[int, ...]
    device_circuits: tuple[QuantumCircuit, ...]
    layouts: tuple[tuple[int, ...], ...]


def noisy_circuits(
    plan: CutPlan, settings: list[Setting], noise: Noise
) -> tuple[list[QuantumCircuit], list[int], list[int], NoisyCircuits]:
    """Per partition, per subexperiment, per setting of that partition: the simulator circuit
    (measurements deferred), with its partition and setting; and the ``NoisyCircuits``."""
    simulated: list[QuantumCircuit] = []
    partition_of: list[int] = []
    setting_of: list[int] = []
    device: list[QuantumCircuit] = []
    subexperiment_of: list[int] = []
    confusions: list[np.ndarray] = []
    ancillas: list[int] = []
    layouts: list[tuple[int, ...]] = []
    for p, part in enumerate(plan.partitions):
        width = part.subcircuit.num_qubits
        if noise.width is not None and width > noise.width:
            raise ExecutionConfigError(
                f"partition {part.label!r} has {width} qubits, more than the {noise.width} of "
                f"{noise.backend.name}: cut into smaller pieces (partition_labels or max_subcircuit_qubits)"
            )
        mine = [k for k, s in enumerate(settings) if s.partition == p]
        # without a device the pieces keep the circuit's qubit numbers, which a noise model's
        # per-qubit errors refer to
        placement = part.qubits if noise.backend is None else None
        written = [
            (s, k, device_circuit(part, plan, combo, settings[k], placement))
            for s, combo in enumerate(itertools.product(*(range(n) for n in part.basis_shape)))
            for k in mine
        ]
        if placement is None:  # a device: the transpiler lays out the first, the others follow
            first = noise.transpile([written[0][2]], None)[0]
            layout = tuple(first.layout.initial_index_layout()[:width])
            transpiled = [first] + noise.transpile([c for _, _, c in written[1:]], layout)
        else:
            layout = tuple(placement)
            transpiled = noise.transpile([c for _, _, c in written], None)
        layouts.append(layout)
        for (s, k, _), circuit in zip(written, transpiled):
            deferred, read = defer_measurements(circuit, noise)
            measures = sum(len(r) for r in circuit.cregs if r.name == "qpd")
            if noise.sampler is None:
                _check_density_matrix(part.label, deferred)
            else:  # a sampler's device reads every bit itself, QPD measurements included
                read = np.broadcast_to(np.eye(2), (len(settings[k].measured) + measures, 2, 2))
            simulated.append(deferred)
            device.append(circuit)
            partition_of.append(p)
            setting_of.append(k)
            subexperiment_of.append(s)
            confusions.append(read)
            ancillas.append(measures if noise.sampler is not None else int(measures > 0))
    noise.check_used(device)
    extra = NoisyCircuits(
        description=noise.description,
        noise_model=noise.noise_model,
        sampler=noise.sampler,
        subexperiment_of=np.array(subexperiment_of, dtype=np.int64),
        confusions=tuple(confusions),
        ancillas=tuple(ancillas),
        device_circuits=tuple(device),
        layouts=tuple(layouts),
    )
    return simulated, partition_of, setting_of, extra


def _check_density_matrix(label, circuit: QuantumCircuit) -> None:
    """Refuse a circuit whose density matrix (on the qubits it uses) exceeds MAX_DENSITY_QUBITS."""
    active = {q for inst in circuit.data for q in inst.qubits}
    if len(active) > MAX_DENSITY_QUBITS:
        raise ExecutionConfigError(
            f"partition {label!r}: a noisy subexperiment acts on {len(active)} qubits (its own, the deferred QPD "
            f"measurements' and any routing qubits), more than the {MAX_DENSITY_QUBITS} whose density matrix "
            f"({size(16 * 4**MAX_DENSITY_QUBITS)}) hpcqnn simulates: cut into smaller pieces, or run sampled on a "
            "sampler (sampler=, e.g. Aer's SamplerV2, which simulates noise shot by shot)"
        )


def device_circuit(
    part: PartitionPlan, plan: CutPlan, combo: tuple[int, ...], setting: Setting,
    placement: Sequence[int] | None = None,
) -> QuantumCircuit:
    """Subexperiment ``combo`` (a channel per cut of ``part``, in ``cut_ids`` order) of the
    partition as a device runs it, measured in ``setting``: QPD measurements into register
    ``qpd`` (left out without any), the setting's qubits into ``obs`` (bit ``i``:
    ``setting.measured[i]``). ``placement``: the circuit qubit of each of the partition's (None:
    its own numbering, 0 to its width)."""
    sub = part.subcircuit
    channel = {c: plan.cut_sides[c][side].basis[combo[i]] for i, (c, side) in enumerate(zip(part.cut_ids, part.sides))}
    measures = sum(op.name == "qpd_measure" for ops in channel.values() for op in ops)
    qpd = ClassicalRegister(measures, "qpd")
    obs = ClassicalRegister(len(setting.measured), "obs")
    registers = [qpd, obs] if measures else [obs]  # samplers refuse empty registers
    where = list(placement) if placement is not None else list(range(sub.num_qubits))
    circuit = QuantumCircuit(QuantumRegister(max(where) + 1, "q"), *registers, name=f"{part.label}_sub")
    bit = 0
    for inst in sub.data:
        op = inst.operation
        qubits = [where[sub.find_bit(q).index] for q in inst.qubits]
        if op.name == "barrier":
            continue
        if not isinstance(op, SingleQubitQPDGate):
            circuit.append(op, qubits)
            continue
        for local in channel[cut_id(op)]:
            if local.name == "qpd_measure":
                circuit.measure(qubits[0], qpd[bit])
                bit += 1
            elif local.name == "reset":
                circuit.reset(qubits[0])
            else:
                circuit.append(local, qubits)
    for q, gate in setting.rotations():
        circuit.append(gate, [where[q]])
    for i, q in enumerate(setting.measured):
        circuit.measure(where[q], obs[i])
    return circuit


def defer_measurements(circuit: QuantumCircuit, noise: Noise) -> tuple[QuantumCircuit, np.ndarray]:
    """``circuit`` (transpiled, registers ``qpd`` and ``obs``) with its ``qpd`` measurements
    deferred onto one parity ancilla and its ``obs`` measurements replaced by saving the
    distribution of the measured qubits (low bits, in ``obs`` order) and the parity (high bit,
    where there are QPD measurements); also the confusion matrix [true, read] of each saved bit.

    The reconstruction needs only the parity of a subexperiment's QPD outcomes, so each one is a
    noiseless CX onto the same ancilla (one extra qubit, not one per measurement: a density
    matrix grows 4x per qubit), then a noiseless channel that dephases the measured qubit (the
    ancilla records only the parity, so it cannot collapse the qubit as a measurement does) and
    flips the parity with the probability of misreading the qubit's value. The noise model's
    quantum error of ``measure`` on the qubit, if any, comes first, as a measurement has it."""
    registers = {reg.name: reg for reg in circuit.cregs}
    measures = len(registers["qpd"]) if "qpd" in registers else 0
    obs = registers["obs"]
    width = circuit.num_qubits
    parity = width
    deferred = QuantumCircuit(width + (measures > 0), global_phase=circuit.global_phase, name=circuit.name)
    final: dict[int, int] = {}
    for inst in circuit.data:
        op = inst.operation
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        if op.name == "barrier":
            continue
        if op.name != "measure":
            deferred.append(op, qubits)
            continue
        error = noise.measure_error(qubits[0])
        if error is not None:
            deferred.append(error, [qubits[0]])
        register, index = circuit.find_bit(inst.clbits[0]).registers[0]
        if register.name == "obs":
            final[index] = qubits[0]
            continue
        deferred.append(UnitaryGate(_DEFERRED_CX, label=DEFERRED_MEASURE_LABEL), [qubits[0], parity])
        deferred.append(_measured(noise.readout_matrix(qubits[0])), [qubits[0], parity])
    kept = [final[i] for i in range(len(obs))] + ([parity] if measures else [])
    deferred.append(SaveProbabilities(len(kept), label="p"), kept)
    confusions = [noise.readout_matrix(q) for q in kept[: len(obs)]] + [np.eye(2)] * (measures > 0)
    return deferred, np.array(confusions).reshape(-1, 2, 2)


def _measured(misread: np.ndarray) -> Instruction:
    """The channel on (measured qubit, parity ancilla) of a measurement whose outcome went into
    the parity: Kraus operators ``|m><m| (x) X**f`` weighted by the probability of reading
    ``m`` as ``m ^ f`` (``misread[m, m ^ f]``): the qubit dephased, the parity flipped on a
    misread."""
    projectors = [np.diag([1.0, 0.0]), np.diag([0.0, 1.0])]
    flips = [np.eye(2), np.array([[0.0, 1.0], [1.0, 0.0]])]
    operators = [
        np.sqrt(misread[m, m ^ f]) * np.kron(flips[f], projectors[m])
        for m in range(2) for f in range(2) if misread[m, m ^ f] > 0
    ]
    return Kraus(operators).to_instruction()


def read_through(probabilities: np.ndarray, confusions: np.ndarray) -> np.ndarray:
    """Outcome distributions [..., 2**bits] as read by a device whose bit ``i`` is read through
    ``confusions[i]`` [true bit, read bit] (independent readout errors); identity matrices are
    skipped."""
    bits = len(confusions)
    lead = probabilities.shape[:-1]
    state = probabilities.reshape(-1, *([2] * bits))  # axis bits - i holds bit i
    for i, matrix in enumerate(confusions):
        if np.array_equal(matrix, np.eye(2)):
            continue
        axis = bits - i
        state = np.moveaxis(np.tensordot(state, matrix, axes=([axis], [0])), -1, axis)
    return state.reshape(*lead, -1)
