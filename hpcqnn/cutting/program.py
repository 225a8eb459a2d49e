"""What each subexperiment measures: the simulator circuits a plan runs per query.

A program is plain data, broadcast once to every rank; each rank compiles it for its simulator
and array module (``execution.compiled``). Its circuits are, per partition:

- the coherent circuit (``coherent.CoherentPartition``) saving its statevector: every
  subexperiment in one experiment per parameter row. Exact mode reads the Pauli estimates out of
  it, sampled mode the outcome distribution of every measurement setting of the partition;
- otherwise (a partition too wide for it, or ``coherent=False``) the enumerated template, run for
  every experiment ``e = s * n + r`` (subexperiment ``s`` with the ``r``-th of the ``n``
  parameter rows), saving one expectation value per distinct local Pauli times the Z of every
  deferred QPD measurement (exact mode), or, per measurement setting, the outcome distribution
  of its qubits and of the QPD ancillas (sampled mode).

Exact mode runs uncut partitions as templates (Aer's own expectation values); sampled mode runs
every partition coherently where it can, since one statevector serves all its settings.
Settings are the qubit-wise commuting groups qiskit-addon-cutting forms; shots are drawn from
the distributions (``shots``).

A noisy program (``build_program(..., noise=...)``) runs, in either mode, every (subexperiment,
setting) of every partition as a concrete device circuit instead (``cutting.noisy``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Gate
from qiskit.circuit.library import HGate, SXGate
from qiskit.quantum_info import Pauli, PauliList
from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection
from qiskit_aer.library import SaveExpectationValue, SaveProbabilities

from hpcqnn.cutting.coherent import CoherentPartition
from hpcqnn.cutting.noisy import NoisyCircuits, noisy_circuits
from hpcqnn.cutting.plan import CutPlan
from hpcqnn.cutting.shots import allocate_shots, popcount, shot_weights
from hpcqnn.errors import ExecutionConfigError
from hpcqnn.noise import Noise
from hpcqnn.options import MAX_DISTRIBUTION_BYTES, SAMPLE_BLOCK, SHOT_ALLOCATIONS
from hpcqnn.text import count, size

#: Label of the statevector a coherent circuit saves.
STATE_LABEL = "psi"


@dataclass(frozen=True, eq=False)
class Setting:
    """One measurement setting of a partition in sampled mode: rotate ``measured`` qubits into
    ``basis`` (X: H, Y: SX), measure them (outcome bit ``i`` is qubit ``measured[i]``)."""

    partition: int
    paulis: np.ndarray  # local Pauli indices measured by this setting
    signs: np.ndarray  # [outcomes of the measured qubits, len(paulis)] of +-1
    weights: np.ndarray  # 1 / number of settings that measure each Pauli (estimates are averaged)
    measured: tuple[int, ...]
    basis: Pauli

    def rotations(self) -> list[tuple[int, Gate]]:
        """The gate turning each measured qubit's Pauli into Z (X: H, Y: SX), where one is needed."""
        gates = []
        for q in self.measured:
            if self.basis.x[q]:
                gates.append((q, SXGate() if self.basis.z[q] else HGate()))
        return gates


@dataclass(frozen=True, eq=False)
class Program:
    """The simulator circuits one plan runs per query, in exact or sampled mode. Its repr
    summarises the plan.

    ``coherent_circuits[i]``: circuit ``i`` is its partition's coherent circuit. In sampled mode
    ``settings`` lists every measurement setting and ``settings_of[i]`` those circuit ``i``
    measures (all of its partition's for a coherent circuit, one for a template); shots are
    split over the settings' subexperiments by ``shot_allocation`` (``subexperiment_shots``).
    A noisy program has settings in both modes, one circuit per (subexperiment, setting), and
    ``noisy``."""

    plan: CutPlan
    sampled: bool
    circuits: tuple[QuantumCircuit, ...]
    partition_of: np.ndarray
    coherent_circuits: tuple[bool, ...]
    settings: tuple[Setting, ...] = ()
    settings_of: tuple[tuple[int, ...], ...] = ()
    shot_allocation: str = "proportional"
    noisy: NoisyCircuits | None = None

    def __repr__(self) -> str:
        plan = self.plan
        parts = []
        for p, part in enumerate(plan.partitions):
            runs_coherent, extra = self.added_qubits(p)
            where = " in one coherent circuit" if runs_coherent else ""
            parts.append(
                f"{part.label}: qubits {', '.join(map(str, part.qubits))} + {extra}, "
                f"{count(len(part.cut_ids), 'cut')}, {count(part.num_subexperiments, 'subexperiment')}{where}"
            )
        mode = f"sampled mode, {count(len(self.settings), 'measurement setting')}" if self.sampled else "exact mode"
        if self.noisy is not None:
            mode += f", noisy: {self.noisy.description}"
        trainable = sum(angle is not None for angle in plan.cut_angles)
        cuts = count(plan.num_cuts, "cut") + (f" ({trainable} trainable)" if trainable else "")
        gamma = f"gamma {'at most ' if trainable else ''}{plan.gamma:.4g}"
        return (
            f"<Program: {cuts}, {gamma}, {count(len(plan.partitions), 'partition')}, "
            f"{count(plan.num_subexperiments, 'subexperiment')} in "
            f"{count(len(self.circuits), 'simulator circuit')}, {count(len(plan.paulis), 'Pauli term')}, {mode}; "
            + "; ".join(parts) + ">"
        )

    def added_qubits(self, partition: int) -> tuple[bool, str]:
        """Whether ``partition`` runs coherently, and the qubits its circuits add to its own, in
        words (control and fresh qubits of a coherent circuit, or a template's QPD ancillas)."""
        part = self.plan.partitions[partition]
        if self.noisy is not None:
            mine = [a for a, q in zip(self.noisy.ancillas, self.partition_of) if q == partition]
            what = "QPD bit" if self.noisy.sampler is not None else "parity ancilla"
            return False, count(max(mine), what) + (" at most" if min(mine) < max(mine) else "")
        runs_coherent = any(self.coherent_circuits[i] for i in np.flatnonzero(self.partition_of == partition))
        form = part.coherent if runs_coherent else None
        if form is None:
            return False, count(part.template.num_qubits - len(part.qubits), "ancilla")
        extra = count(form.num_qubits - form.system, "control qubit")
        if form.system > form.width:
            extra += ", " + count(form.system - form.width, "fresh qubit")
        return True, extra

    def coherent(self, circuit: int) -> CoherentPartition | None:
        """The coherent form circuit ``circuit`` runs (one experiment per row), if it runs one."""
        return self.plan.partitions[self.partition_of[circuit]].coherent if self.coherent_circuits[circuit] else None

    def experiments_per_row(self, circuit: int) -> int:
        """Experiments circuit ``circuit`` runs per parameter row: 1 (coherent) or its
        partition's subexperiments."""
        if self.coherent_circuits[circuit] or self.noisy is not None:
            return 1
        return self.plan.partitions[self.partition_of[circuit]].num_subexperiments

    @property
    def shots_per_row(self) -> bool:
        """Whether the split of the shots depends on the parameter row: proportional
        allocation with trainable cuts, whose |QPD coefficients| move with the angles."""
        return self.sampled and self.shot_allocation == "proportional" and self.plan.trainable

    def shot_weights(self, kernels: list[np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
        """Per setting, the weight of each of its subexperiments in the split of the shots:
        [subexperiments], or, if ``shots_per_row``, [subexperiments, rows] of the rows whose
        ``CutPlan.kernels`` are ``kernels``."""
        partitions = [s.partition for s in self.settings]
        return shot_weights(self.plan, partitions, self.shot_allocation, kernels if self.shots_per_row else None)

    def subexperiment_shots(self, shots: int, kernels: list[np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
        """Shots of every (setting, subexperiment) for a budget of ``shots`` per setting and
        row: [subexperiments], or, if ``shots_per_row``, [subexperiments, rows] of the rows
        whose kernels are given (each row's budget split by its own weights)."""
        weights = self.shot_weights(kernels)
        sizes = [len(w) for w in weights]
        if self.shots_per_row:
            rows = max(w.shape[1] for w in weights)  # partitions away from trainable cuts: one column
            weights = tuple(np.broadcast_to(w, (len(w), rows)) for w in weights)
        split = allocate_shots(np.concatenate(weights), shots * sum(sizes))
        return tuple(np.split(split, np.cumsum(sizes)[:-1]))


def build_program(
    plan: CutPlan, sampled: bool, shot_allocation: str = "proportional", noise: Noise | None = None
) -> Program:
    """The circuits of the mode (exact or sampled): coherent circuits where the plan has them
    (exact mode: for cut partitions), templates with the mode's save instructions elsewhere;
    with ``noise``, every subexperiment and setting as a device circuit (``cutting.noisy``).

    A sampled program whose outcome distributions for one block of SAMPLE_BLOCK rows would need
    more than MAX_DISTRIBUTION_BYTES is refused (``ExecutionConfigError``), before anything runs;
    a partition whose coherent statevectors for such a block would need more runs its templates.
    """
    if shot_allocation not in SHOT_ALLOCATIONS:
        raise ExecutionConfigError(f"shot_allocation must be one of {SHOT_ALLOCATIONS}, got {shot_allocation!r}")
    if noise is not None:
        every = [s for p, part in enumerate(plan.partitions) for s in _measurement_settings(p, part.paulis)]
        simulated, partitions, setting_of, noisy = noisy_circuits(plan, every, noise)
        return Program(
            plan=plan,
            sampled=sampled,
            circuits=tuple(simulated),
            partition_of=np.array(partitions, dtype=np.int64),
            coherent_circuits=(False,) * len(simulated),
            settings=tuple(every),
            settings_of=tuple((k,) for k in setting_of),
            shot_allocation=shot_allocation,
            noisy=noisy,
        )
    circuits: list[QuantumCircuit] = []
    partition_of: list[int] = []
    coherent_circuits: list[bool] = []
    settings: list[Setting] = []
    settings_of: list[tuple[int, ...]] = []
    for p, part in enumerate(plan.partitions):
        mine = _measurement_settings(p, part.paulis) if sampled else []
        first = len(settings)
        settings += mine
        coherent = part.coherent if sampled or part.cut_ids else None
        block_states = 0 if coherent is None else SAMPLE_BLOCK * 16 * 2**coherent.num_qubits
        if sampled and block_states > MAX_DISTRIBUTION_BYTES:
            coherent = None  # sampled mode reads a block of rows' statevectors at once: too wide for that
        if sampled:
            _check_distribution_memory(part, mine, coherent is not None)
        if coherent is not None:
            circuit = coherent.circuit.copy()
            circuit.save_statevector(label=STATE_LABEL)
            circuits.append(circuit)
            settings_of.append(tuple(range(first, len(settings))))
        elif not sampled:
            circuits.append(_with_expectations(part.template, part.paulis, part.measured_ancillas))
        else:
            for k, setting in enumerate(mine, start=first):
                circuits.append(_with_probabilities(part.template, setting, part.measured_ancillas))
                settings_of.append((k,))
        coherent_circuits += [coherent is not None] * (len(circuits) - len(partition_of))
        partition_of += [p] * (len(circuits) - len(partition_of))
    return Program(
        plan=plan,
        sampled=sampled,
        circuits=tuple(circuits),
        partition_of=np.array(partition_of, dtype=np.int64),
        coherent_circuits=tuple(coherent_circuits),
        settings=tuple(settings),
        settings_of=tuple(settings_of) if sampled else (),
        shot_allocation=shot_allocation,
    )


def _check_distribution_memory(part, settings: list[Setting], coherent: bool) -> None:
    """Refuse a partition whose outcome distributions for one block of SAMPLE_BLOCK rows would
    exceed MAX_DISTRIBUTION_BYTES (the counts are drawn a block at a time: a coherent circuit's
    for all its settings at once, a template's for its one setting)."""
    signs = 1 if coherent else len(part.measured_ancillas)  # a coherent readout keeps only the sign
    sizes = [8 * SAMPLE_BLOCK * part.num_subexperiments * 2 ** (len(s.measured) + signs) for s in settings]
    needed = sum(sizes) if coherent else max(sizes)
    if needed > MAX_DISTRIBUTION_BYTES:
        widest = max(settings, key=lambda s: len(s.measured))
        qubits = f"{len(widest.measured)} qubit{'s' * (len(widest.measured) != 1)}"
        raise ExecutionConfigError(
            f"sampled mode: partition {part.label!r} measures up to {qubits} at once in {len(settings)} "
            f"setting{'s' * (len(settings) != 1)} ({part.num_subexperiments} subexperiments), so its outcome "
            f"distributions would need {size(needed)} per block of {SAMPLE_BLOCK} rows, more than the "
            f"bound of {size(MAX_DISTRIBUTION_BYTES)}; use Pauli terms on fewer qubits of one "
            "partition, smaller partitions, or exact mode (shots=None)"
        )


def padded_pauli(local: Pauli, width: int, ancillas: tuple[int, ...] = ()) -> Pauli:
    """``local`` on the first of ``width`` qubits, times Z on each of ``ancillas``."""
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
            SaveExpectationValue(padded_pauli(local, circuit.num_qubits, ancillas), label=f"e{j}"),
            everything,
        )
    return circuit


def _measurement_settings(partition: int, paulis: PauliList) -> list[Setting]:
    """Qubit-wise commuting groups, formed exactly as qiskit-addon-cutting forms them."""
    collection = ObservableCollection(paulis)
    index = {p: i for i, p in enumerate(paulis)}
    uses = np.zeros(len(paulis))
    for pauli, entries in collection.lookup.items():
        uses[index[pauli]] = len(entries)
    settings = []
    for cog in collection.groups:
        measured = tuple(cog.pauli_indices) or (0,)  # an all-identity group still samples a qubit
        members = np.array([index[p] for p in cog.commuting_observables], dtype=np.int64)
        masks = np.array(cog.pauli_bitmasks, dtype=np.int64)
        outcomes = np.arange(2 ** len(measured), dtype=np.int64)
        signs = 1.0 - 2.0 * (popcount(outcomes[:, None] & masks[None, :]) & 1)
        settings.append(Setting(partition, members, signs, 1.0 / uses[members], measured, cog.general_observable))
    return settings


def _with_probabilities(template: QuantumCircuit, setting: Setting, ancillas: tuple[int, ...]) -> QuantumCircuit:
    """Rotate each measured qubit into its Pauli's eigenbasis, then save the outcome
    distribution of the measured qubits (low bits) and the deferred QPD ancillas (high bits)."""
    circuit = template.copy()
    for q, gate in setting.rotations():
        circuit.append(gate, [q])
    qubits = list(setting.measured) + list(ancillas)
    circuit.append(SaveProbabilities(len(qubits), label="p"), qubits)
    return circuit
