"""Readouts: how one program circuit's simulator outputs become a query's buffer contents.

Every program circuit has exactly one ``Readout`` (``readout_for``), built once per rank when the
program is compiled (``execution.compiled``). The simulator asks it what to take from Aer's
results (``outputs``) and how large one experiment's output is; a tile's outputs then go through
``measure`` (in the execute phase: estimates, or counts drawn from outcome distributions) and
``accumulate`` (into the query's buffers). Five kinds:

- ``CoherentEstimates`` (exact, coherent circuit): every subexperiment's Pauli estimates from one
  statevector per row (``cutting.coherent``);
- ``TemplateEstimates`` (exact, enumerated template): Aer's expectation values as they are;
- ``CoherentCounts`` (sampled, coherent circuit): every measurement setting's outcome
  distribution ``(D_b +- M_b) / 2`` from one statevector per row, counts of its sign patterns
  drawn per block of rows;
- ``TemplateCounts`` (sampled, enumerated template of one setting): counts drawn from Aer's
  probabilities per block of experiments;
- ``NoisyOutcomes`` (either mode, a noisy program's circuit of one subexperiment and setting,
  ``cutting.noisy``): its bits' distribution read through their confusion matrices, as
  estimates (exact) or counts drawn from it (sampled).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from qiskit.quantum_info import PauliList

from hpcqnn.cutting.coherent import CoherentPartition
from hpcqnn.cutting.noisy import read_through
from hpcqnn.cutting.program import STATE_LABEL, Program, Setting, padded_pauli
from hpcqnn.cutting.shots import draw_counts, moment_matrix, sample_counts
from hpcqnn.execution.reconstruct import along
from hpcqnn.options import CALL_BYTES, SAMPLE_BLOCK

if TYPE_CHECKING:
    from hpcqnn.execution.query import Query, QueryBuffers

class Readout(Protocol):
    """What a program circuit's outputs mean."""

    @property
    def output_bytes(self) -> int:
        """Bytes Aer hands back per experiment (sizes the simulator's calls)."""

    def outputs(self, results: list[dict]) -> np.ndarray:
        """[experiments, outputs] out of Aer's per-experiment result dicts."""

    def measure(self, query: Query, start: int, raw: np.ndarray) -> Any:
        """What a tile starting at experiment ``start`` contributes, from its outputs ``raw``."""

    def accumulate(self, buffers: QueryBuffers, start: int, data: Any) -> None:
        """Store ``measure``'s result in the query's ``buffers``."""


def readout_for(program: Program, circuit: int) -> Readout:
    """The readout of program circuit ``circuit``."""
    p = int(program.partition_of[circuit])
    part = program.plan.partitions[p]
    if program.noisy is not None:
        (k,) = program.settings_of[circuit]
        noisy = program.noisy
        return NoisyOutcomes(
            p, k, program.settings[k], int(noisy.subexperiment_of[circuit]), noisy.confusions[circuit],
            noisy.ancillas[circuit], program.sampled, counted=noisy.sampler is not None,
        )
    coherent = program.coherent(circuit)
    if coherent is not None:
        if program.sampled:
            return CoherentCounts(coherent, [(k, program.settings[k]) for k in program.settings_of[circuit]])
        return CoherentEstimates(p, coherent, part.paulis)
    if program.sampled:
        (k,) = program.settings_of[circuit]
        return TemplateCounts(k, program.settings[k], len(part.measured_ancillas))
    return TemplateEstimates(p, len(part.paulis))


def _statevectors(results: list[dict]) -> np.ndarray:
    return np.array([r["data"][STATE_LABEL] for r in results], dtype=complex)


class _Branches:
    """A coherent circuit's statevectors [rows, 2**num_qubits] turned into readout-vector
    combinations [rows, k_last, ..., k_first, 2**system] (``cutting.coherent``), and values on
    those back into subexperiments: ``channels`` weighs readout vectors into basis channels."""

    def __init__(self, coherent: CoherentPartition, keep: list[np.ndarray]):
        self.coherent = coherent
        self.keep = keep  # per cut (register order), the readout vectors used
        self.output_bytes = 16 * 2**coherent.num_qubits
        self.scale = float(np.prod([cut.branches for cut in coherent.cuts]))
        reversed_cuts = coherent.cuts[::-1]  # the most significant control register comes first
        axis_of = {cut.cut: axis for axis, cut in enumerate(reversed_cuts, start=1)}
        self.order = [axis_of[c] for c in coherent.cut_ids]
        self.combined_size = int(np.prod([len(k) for k in keep])) * 2**coherent.system

    def combine(self, states: np.ndarray) -> np.ndarray:
        coherent, rows = self.coherent, states.shape[0]
        reversed_cuts = coherent.cuts[::-1]
        psi = states.reshape(rows, *(2 ** len(c.controls) for c in reversed_cuts), 2**coherent.system)
        for axis, cut in enumerate(reversed_cuts, start=1):
            vectors = cut.vectors[self.keep[len(coherent.cuts) - axis]]
            psi = along(vectors, psi[(slice(None),) * axis + (slice(0, cut.branches),)], axis)
        return psi

    def channels(self, values: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        """``values`` [rows, k_last, ..., k_first, outputs] -> [subexperiments, rows, outputs],
        ``weights[i]`` [channels, used readout vectors] of cut ``i`` (register order)."""
        for axis, w in enumerate(weights[::-1], start=1):
            values = along(w, values, axis)
        values = np.transpose(values, [*self.order, 0, values.ndim - 1])
        return (self.scale * values).reshape(-1, values.shape[-2], values.shape[-1])


class CoherentEstimates(_Branches):
    """Exact mode, coherent circuit: each subexperiment's Pauli estimates [subexperiments, rows, Paulis]."""

    def __init__(self, partition: int, coherent: CoherentPartition, paulis: PauliList):
        keep = [np.flatnonzero(np.any(cut.signed != 0, axis=0)) for cut in coherent.cuts]
        super().__init__(coherent, keep)
        self.partition = partition
        self.weights = [cut.signed[:, k] for cut, k in zip(coherent.cuts, keep)]
        self.paulis = len(paulis)
        system = coherent.system
        padded = [padded_pauli(pauli, system) for pauli in paulis]
        self.z_only = np.array([j for j, pauli in enumerate(padded) if not pauli.x.any()], dtype=np.int64)
        masks = np.array([sum(1 << q for q in range(system) if padded[j].z[q]) for j in self.z_only], dtype=np.int64)
        basis = np.arange(2**system, dtype=np.int64)
        parity = np.bitwise_count((basis[:, None] & masks[None, :]).astype(np.uint64)) & 1
        self.z_signs = 1.0 - 2.0 * parity  # [2**system, Z-only Paulis]
        self.flips = []  # (P psi)[l] = phase[l] psi[perm[l]] for the Paulis with X or Y
        for j, pauli in enumerate(padded):
            if pauli.x.any():
                matrix = pauli.to_matrix(sparse=True).tocsr()
                self.flips.append((j, matrix.indices.astype(np.int64), matrix.data))

    def outputs(self, results: list[dict]) -> np.ndarray:
        return _statevectors(results)

    def measure(self, query: Query, start: int, raw: np.ndarray) -> np.ndarray:
        psi = self.combine(raw)
        values = np.empty((*psi.shape[:-1], self.paulis))
        if len(self.z_only):
            values[..., self.z_only] = (psi.real**2 + psi.imag**2) @ self.z_signs
        for j, permutation, phases in self.flips:
            values[..., j] = np.real(np.sum(psi.conj() * (phases * psi[..., permutation]), axis=-1))
        return self.channels(values, self.weights)

    def accumulate(self, buffers: QueryBuffers, start: int, data: np.ndarray) -> None:
        buffers.by_row[self.partition][:, start : start + data.shape[1]] = data


@dataclass
class TemplateEstimates:
    """Exact mode, enumerated template: Aer's expectation values [experiments, Paulis]."""

    partition: int
    paulis: int

    @property
    def output_bytes(self) -> int:
        return 8 * self.paulis

    def outputs(self, results: list[dict]) -> np.ndarray:
        labels = [f"e{j}" for j in range(self.paulis)]
        return np.array([[r["data"][label] for label in labels] for r in results], dtype=float)

    def measure(self, query: Query, start: int, raw: np.ndarray) -> np.ndarray:
        return raw

    def accumulate(self, buffers: QueryBuffers, start: int, data: np.ndarray) -> None:
        buffers.by_experiment[self.partition][start : start + len(data)] = data


class TemplateCounts:
    """Sampled mode, the enumerated template of setting ``index``: counts drawn from Aer's
    probabilities per block of SAMPLE_BLOCK experiments (subexperiment x row)."""

    def __init__(self, index: int, setting: Setting, ancillas: int):
        self.index = index
        self.output_bytes = 8 * 2 ** (len(setting.measured) + ancillas)
        self.moments = moment_matrix(setting.signs, ancillas)

    def outputs(self, results: list[dict]) -> np.ndarray:
        return np.array([r["data"]["p"] for r in results], dtype=float)

    def measure(self, query: Query, start: int, raw: np.ndarray) -> np.ndarray:
        assert query.shots, "a sampled query has shots"
        rows = len(query.rows.unique[query.program.settings[self.index].partition])
        allocation = query.allocation[self.index]
        experiments = np.arange(start, start + len(raw))  # subexperiment * rows + row
        per_row = allocation.ndim == 2
        shots = allocation[experiments // rows, experiments % rows] if per_row else allocation[experiments // rows]
        return sample_counts(raw, shots, query.seed, query.stream, self.index, offset=start)

    def accumulate(self, buffers: QueryBuffers, start: int, data: np.ndarray) -> None:
        flat = buffers.setting_sums[self.index].reshape(-1, self.moments.shape[1])
        np.matmul(data, self.moments, out=flat[start : start + len(data)])


class NoisyOutcomes:
    """A noisy program's circuit of ``subexperiment`` measured in setting ``index``
    (``cutting.noisy``): the distribution of its measured bits and deferred QPD measurements
    read through ``confusions``; exact mode takes the setting's weighted Pauli estimates from
    it [rows, K], sampled mode draws counts per block of SAMPLE_BLOCK rows (``counted``: a
    sampler's device measured them, the outputs are its counts)."""

    def __init__(
        self, partition: int, index: int, setting: Setting, subexperiment: int, confusions: np.ndarray,
        ancillas: int, sampled: bool, counted: bool = False,
    ):
        self.partition, self.index, self.subexperiment = partition, index, subexperiment
        self.paulis = setting.paulis
        self.confusions = confusions
        self.sampled = sampled
        self.counted = counted
        self.output_bytes = 8 * 2 ** len(confusions)
        self.moments = moment_matrix(setting.signs, ancillas)
        self.weighted_signs = self.moments[:, : len(setting.paulis)] * setting.weights

    def outputs(self, results: list[dict]) -> np.ndarray:
        return np.array([r["data"]["p"] for r in results], dtype=float)

    def measure(self, query: Query, start: int, raw: np.ndarray) -> np.ndarray:
        if self.counted:  # a sampler's counts, read by its device
            return raw
        read = read_through(raw, self.confusions)
        if not self.sampled:
            return read @ self.weighted_signs
        assert query.shots, "a sampled query has shots"
        allocation = query.allocation[self.index][self.subexperiment]
        shots = allocation[start : start + len(raw)] if allocation.ndim else allocation
        rows = len(query.rows.unique[self.partition])
        blocks = -(-rows // SAMPLE_BLOCK)  # each subexperiment's rows draw from blocks of their own
        offset = self.subexperiment * blocks * SAMPLE_BLOCK + start
        return sample_counts(read, shots, query.seed, query.stream, self.index, offset=offset)

    def accumulate(self, buffers: QueryBuffers, start: int, data: np.ndarray) -> None:
        rows = slice(start, start + len(data))
        if self.sampled:
            np.matmul(data, self.moments, out=buffers.setting_sums[self.index][self.subexperiment, rows])
        else:
            buffers.by_row[self.partition][self.subexperiment, rows][:, self.paulis] += data


class CoherentCounts(_Branches):
    """Sampled mode, coherent circuit: for every setting of the partition, the outcome
    distribution ``p(b, +-) = (D_b +- M_b) / 2`` of each subexperiment and row, and counts drawn
    from it per block of SAMPLE_BLOCK rows (each block's distributions are computed, drawn from
    and dropped before the next).

    The counts are those of the setting's sign patterns: outcomes that sign every Pauli the
    setting measures alike are one category, since the estimates and their variances depend on
    the shots through those signs alone. Each setting's Paulis then have exactly the joint
    distribution the bitstrings would give them, at a fraction of the draws (a single Pauli:
    one binomial per subexperiment and row, not one per outcome)."""

    def __init__(self, coherent: CoherentPartition, settings: list[tuple[int, Setting]]):
        super().__init__(coherent, [np.arange(len(cut.vectors)) for cut in coherent.cuts])
        self.settings = settings
        self.signed = [cut.signed for cut in coherent.cuts]
        self.unsigned = [cut.unsigned for cut in coherent.cuts]
        self.classes = [_sign_classes(setting.signs) for _, setting in settings]
        # rows combined at once: SAMPLE_BLOCK, or fewer where their branch combinations are large
        self.chunk = max(1, min(SAMPLE_BLOCK, CALL_BYTES // (16 * self.combined_size)))

    def outputs(self, results: list[dict]) -> np.ndarray:
        return _statevectors(results)

    def distributions(self, states: np.ndarray) -> list[np.ndarray]:
        """Per setting, the outcome distributions [subexperiments, rows, 2 * outcomes] of
        statevectors [rows, 2**num_qubits] (outcome ``b`` with sign + first, then with sign -)."""
        out: list[list[np.ndarray]] = [[] for _ in self.settings]
        for first in range(0, len(states), self.chunk):
            psi = self.combine(states[first : first + self.chunk])
            for found, (_, setting) in zip(out, self.settings):
                projected = _probabilities(psi, self.coherent.system, setting)
                unsigned = self.channels(projected, self.unsigned)
                signed = self.channels(projected, self.signed)
                found.append(np.concatenate([unsigned + signed, unsigned - signed], axis=-1) / 2)
        return [np.concatenate(found, axis=1) for found in out]

    def measure(self, query: Query, start: int, raw: np.ndarray) -> list[np.ndarray]:
        """Per setting, the counts of its sign patterns [subexperiments, rows, patterns]."""
        if start % SAMPLE_BLOCK:
            raise ValueError(f"tile start {start} is not a multiple of SAMPLE_BLOCK={SAMPLE_BLOCK}")
        allocation = query.allocation
        subexperiments = len(allocation[self.settings[0][0]])
        # float64: the moments matmul in accumulate then runs in BLAS, not a casting loop (exact to 2**53 shots)
        counts = [np.empty((subexperiments, len(raw), len(m))) for _, m in self.classes]
        for first in range(0, len(raw), SAMPLE_BLOCK):
            block = slice(first, first + SAMPLE_BLOCK)
            found = self.distributions(raw[block])
            rows = slice(start + first, start + first + len(found[0][0]))  # the block's query rows
            for (k, _), (grouping, _), drawn, distributions in zip(self.settings, self.classes, counts, found):
                shots = allocation[k][:, None] if allocation[k].ndim == 1 else allocation[k][:, rows]
                drawn[:, block] = draw_counts(
                    grouping(distributions), shots, query.seed, query.stream, k, (start + first) // SAMPLE_BLOCK
                )
        return counts

    def accumulate(self, buffers: QueryBuffers, start: int, data: list[np.ndarray]) -> None:
        for (k, _), (_, moments), counts in zip(self.settings, self.classes, data):
            out = buffers.setting_sums[k][:, start : start + counts.shape[1]]
            if out.flags.c_contiguous:  # the tile holds every row: one 2-D product, not one per subexperiment
                np.matmul(counts.reshape(-1, counts.shape[-1]), moments, out=out.reshape(-1, out.shape[-1]))
            else:
                np.matmul(counts, moments, out=out)


def _sign_classes(signs: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
    """The sign patterns of a setting whose Paulis sign measured outcome ``b`` by ``signs[b]``
    (and all by the QPD sign bit, high): a function summing distributions [..., 2 * outcomes]
    into their patterns [..., patterns], and ``moment_matrix`` of the patterns."""
    signed = moment_matrix(signs, 1)[:, : signs.shape[1]]  # [2 * outcomes, K], sign bit high
    patterns, category = np.unique(signed, axis=0, return_inverse=True)
    category = category.reshape(-1)
    order = np.argsort(category, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(category[order]) != 0])

    def grouping(distributions: np.ndarray) -> np.ndarray:
        return np.add.reduceat(distributions[..., order], starts, axis=-1)

    return grouping, moment_matrix(patterns, 0)


def _probabilities(psi: np.ndarray, system: int, setting: Setting) -> np.ndarray:
    """Outcome distributions [..., 2**len(measured)] of ``setting`` on states [..., 2**system]:
    each measured qubit rotated into its Pauli's eigenbasis (``Setting.rotations``, as the
    template does), the others traced out; outcome bit ``i`` is qubit ``measured[i]``."""
    lead = psi.shape[:-1]
    state = psi.reshape(-1, *([2] * system))  # axis system - q holds qubit q
    for q, gate in setting.rotations():
        axis = system - q
        state = np.moveaxis(np.tensordot(gate.to_matrix(), state, axes=([1], [axis])), 0, axis)
    probability = state.real**2 + state.imag**2
    kept = [system - q for q in reversed(setting.measured)]
    rest = [a for a in range(1, system + 1) if a not in kept]
    probability = np.transpose(probability, [0, *kept, *rest]).reshape(probability.shape[0], 2 ** len(kept), -1)
    return probability.sum(axis=-1).reshape(*lead, -1)
