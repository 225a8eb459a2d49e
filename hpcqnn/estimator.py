"""DistributedEstimator: a Qiskit EstimatorV2 that cuts, simulates subexperiments, reconstructs.

Cut plans are cached per (circuit structure, Pauli terms, mode): a QNN's circuit structure never
changes during training, so partitioning and subexperiment generation happen once and every
later query only binds parameter values. All pubs of one ``run`` that share a plan are executed
as one batch of parameter rows.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.primitives import BaseEstimatorV2, DataBin, PrimitiveJob, PrimitiveResult, PubResult
from qiskit.primitives.containers.bindings_array import BindingsArray
from qiskit.primitives.containers.estimator_pub import EstimatorPub, EstimatorPubLike
from qiskit.quantum_info import PauliList, SparseObservable, SparsePauliOp

from hpcqnn.cutting.partition import SIMULATOR_BASIS
from hpcqnn.cutting.plan import DEFAULT_MAX_SUBEXPERIMENTS, build_cut_plan
from hpcqnn.cutting.program import Program, build_program
from hpcqnn.errors import CutPlanError, ExecutionConfigError, ObservableError, ParameterShapeError, ParameterValueError
from hpcqnn.execution.compiled import CompiledProgram
from hpcqnn.execution.devices import announce, array_module, place
from hpcqnn.execution.engine import Engine, LocalEngine
from hpcqnn.execution.query import Query
from hpcqnn.execution.simulator import AerRunner
from hpcqnn.noise import noise_for
from hpcqnn.options import SHOT_ALLOCATIONS
from hpcqnn.run import launcher
from hpcqnn.run.timing import PhaseRecorder

_PAULI_LETTERS = frozenset("IXYZ")


@dataclass
class _PreparedPub:
    pub: EstimatorPub
    compiled: CompiledProgram | None  # None: a 0-qubit circuit, nothing to simulate
    params: np.ndarray  # [parameter rows, circuit parameters]
    weights: np.ndarray  # [global Pauli terms, observables]
    shots: int | None
    query: int  # the query that executes it: one per distinct (plan, shots) of a ``run``; -1: no rows


class DistributedEstimator(BaseEstimatorV2):
    """Cut-aware estimator: exact (``shots=None``) or sampled (``shots=N``) expectation values.

    Args:
        partition_labels: one label per qubit; gates between differently labelled qubits are cut.
        max_subcircuit_qubits: find cuts automatically so that no piece is wider than this
            (with ``partition_labels``, only checks the pieces' widths).
        wire_cuts: let the automatic cut finder cut wires as well as gates. Circuits may also
            carry the addon's ``CutWire`` markers or ``Move`` gates; those are always cut.
        shots: ``None`` for exact values; otherwise the shot budget per parameter row is ``shots``
            times the measurement settings (subexperiments x commuting groups). A ``precision``
            given to ``run`` or in a pub overrides it as ``ceil(1 / precision**2)``, and
            ``precision=0`` gives exact values. An exact estimator gives exact values at any
            precision (they meet it) and reports the requested one as ``target_precision``.
        shot_allocation: ``"proportional"`` (default) splits the budget across subexperiments in
            proportion to their |QPD coefficient| weight; ``"uniform"`` gives every setting ``shots``.
        seed: seed of sampled mode (and of automatic cut finding). As with Qiskit's
            ``StatevectorEstimator(seed=...)`` and Aer's seeded ``EstimatorV2``, a seeded
            estimator returns identical values for identical pubs on every ``run``, cut or uncut,
            at any MPI split: the shots of a run's k-th query come from the random streams of
            (seed, k). Every parameter row draws its own shots, repeated rows included. For
            fresh shots, give each run its own seed (the training loop seeds every query from
            the run's seed and the query's number, ``training.model.query_seed``); ``None``
            draws fresh entropy every run.
        device: ``"auto"`` (a GPU when one is usable, else the CPU, said once on stderr),
            ``"CPU"``, ``"GPU"`` (``DeviceUnavailableError`` where none is usable). The GPU is
            picked from the launcher's local rank (``launcher.local_rank``).
        threads: Aer threads (0 = all cores this process may use).
        max_subexperiments: refuse plans that need more subexperiments than this.
        minimal_basis: per cut side, simulate only a linearly independent subset of the local
            QPD channels (4 of the 5 distinct ones of a CX/CZ cut) and expand the rest exactly.
        coherent: run all subexperiments of a partition in one simulation per parameter row (a
            control register per cut selects its channels; the default): exact mode reads every
            subexperiment's estimates from it, sampled mode every measurement setting's outcome
            distribution, and draws the shots from those. ``False`` runs the subexperiments one
            by one (and, sampled, one Aer experiment per setting), for comparison. Same exact
            values, and sampled values of the same distribution, either way.
        consolidate: cut a run of gates on one pair of qubits in different partitions once where
            that lowers the sampling overhead (``cutting.consolidate``: a bound run through its
            KAK decomposition; CX . P(theta) . CX as one trainable RZZ(theta)).
        max_gamma: refuse plans whose sampling overhead (the product over the cuts of each cut's
            sum of |QPD coefficients|; a trainable cut at its most, 3) exceeds this.
        noise_model: a ``qiskit_aer.noise.NoiseModel``: subexperiments are transpiled to its
            basis gates and simulated with it (exact mode: Aer's density-matrix method, readout
            errors applied to the exact distributions, so values without shot noise; sampled
            mode: shots drawn from those distributions). See ``hpcqnn.noise``.
        backend: a ``BackendV2`` or a fake device's name (``"FakeManilaV2"``,
            ``"GenericBackendV2(5)"``): subexperiments are transpiled for it, each partition laid
            out on the device by itself, and simulated with its noise (``NoiseModel.from_backend``)
            unless ``noise_model`` or ``sampler`` is given.
        sampler: ``"package.module:function"`` naming a factory of a ``SamplerV2`` (IBM Runtime,
            a local Aer, another vendor's) that each rank calls once: sampled mode only, the
            subexperiments (transpiled for ``backend`` when given) run on it as they are,
            mid-circuit measurements included. The route to real devices.
        engine: where queries execute; defaults to this process (MPI plugs in here).
    """

    def __init__(
        self,
        partition_labels: Sequence[Hashable] | str | None = None,
        max_subcircuit_qubits: int | None = None,
        wire_cuts: bool = False,
        shots: int | None = None,
        shot_allocation: str = "proportional",
        seed: int | None = None,
        device: str = "auto",
        threads: int = 0,
        max_subexperiments: int = DEFAULT_MAX_SUBEXPERIMENTS,
        minimal_basis: bool = True,
        coherent: bool = True,
        consolidate: bool = True,
        max_gamma: float | None = None,
        noise_model: Any = None,
        backend: Any = None,
        sampler: str | None = None,
        engine: Engine | None = None,
    ):
        _check_shots(shots)
        if sampler is not None and shots is None:
            raise ExecutionConfigError(
                "sampler= runs subexperiments as shots: give shots=N (a sampler has no exact mode)"
            )
        self.noise = noise_for(noise_model, backend, sampler)
        if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ExecutionConfigError(f"seed must be a non-negative integer or None, got {seed!r}")
        if shot_allocation not in SHOT_ALLOCATIONS:
            raise ExecutionConfigError(
                f"shot_allocation must be one of {SHOT_ALLOCATIONS}, got {shot_allocation!r}"
            )
        if not isinstance(threads, (int, np.integer)) or threads < 0:
            raise ExecutionConfigError(f"threads must be an integer >= 0, got {threads!r}")
        if not isinstance(max_subexperiments, (int, np.integer)) or max_subexperiments < 1:
            raise ExecutionConfigError(f"max_subexperiments must be a positive integer, got {max_subexperiments!r}")
        if max_gamma is not None and (
            isinstance(max_gamma, bool) or not isinstance(max_gamma, (int, float, np.integer, np.floating))
            or not max_gamma >= 1
        ):
            raise ExecutionConfigError(f"max_gamma must be a number >= 1 or None, got {max_gamma!r}")
        self.partition_labels = None if partition_labels is None else list(partition_labels)
        self.max_subcircuit_qubits = max_subcircuit_qubits
        self.wire_cuts = bool(wire_cuts)
        self.shots = shots
        self.shot_allocation = shot_allocation
        self.seed = seed
        self.max_subexperiments = max_subexperiments
        self.minimal_basis = minimal_basis
        self.coherent = bool(coherent)
        self.consolidate = bool(consolidate)
        self.max_gamma = max_gamma
        if engine is None:
            placement = place(device, launcher.local_rank())
            if placement.note:
                announce(f"device='auto' falls back to the CPU: {placement.note}")
            engine = LocalEngine(AerRunner(placement, threads), array_module(placement))
        self.engine = engine
        self._programs: dict[Hashable, CompiledProgram] = {}
        self._queries = 0

    @property
    def device(self) -> str:
        """The device simulations really run on ("CPU" or "GPU")."""
        return self.engine.placement.device

    @property
    def recorder(self) -> PhaseRecorder:
        """This process's phase timings (shared with the engine)."""
        return self.engine.recorder

    @property
    def num_queries(self) -> int:
        """Queries run so far; it seeds sampled-mode shots, so a resumed run restores it."""
        return self._queries

    @num_queries.setter
    def num_queries(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ExecutionConfigError(f"num_queries must be an integer >= 0, got {value!r}")
        self._queries = int(value)

    def run(
        self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None
    ) -> PrimitiveJob[PrimitiveResult[PubResult]]:
        """Validate every pub, then execute them; the returned job is already complete."""
        if precision is not None and not precision >= 0:
            raise ExecutionConfigError(f"precision must be >= 0, got {precision}")
        batches: dict[Hashable, int] = {}  # (plan key, shots) -> query number, in run order
        prepared = [self._prepare(pub, precision, batches) for pub in pubs]
        results = self._execute(prepared)
        job = PrimitiveJob(lambda: PrimitiveResult(results, metadata={"version": 2}))
        job._submit()
        return job

    def program(self, pub: EstimatorPubLike) -> Program:
        """The program (cut plan, circuits, shot allocation) ``pub`` runs with; built and cached
        if new, nothing is simulated."""
        compiled = self._prepare(pub, None, {}).compiled
        if compiled is None:
            raise CutPlanError("a circuit without qubits has no program: its values are the observables' constants")
        return compiled.program

    # -- preparation: every check happens here, before anything is simulated -----------------

    def _prepare(
        self, pub_like: EstimatorPubLike, precision: float | None, batches: dict[Hashable, int]
    ) -> _PreparedPub:
        """Check and coerce one pub. A new plan is built here, its timing rows filed under the
        query number ``batches`` gives its batch (as ``_execute`` will run them): in ``run``, the
        query that executes it, unless a later pub fails its checks and nothing runs; from
        ``program``, the next query."""
        _check_parameter_shape(pub_like)
        try:
            pub = EstimatorPub.coerce(pub_like, precision)
        except ValueError as exc:
            raise ObservableError(f"invalid estimator pub: {exc}") from exc
        _check_finite(pub)
        labels, weights = _pauli_terms(pub)
        shots = self._shots_for(pub.precision)
        rows = int(np.prod(pub.parameter_values.shape, dtype=np.int64))
        if pub.circuit.num_qubits == 0:  # as StatevectorEstimator: each observable's constant
            return _PreparedPub(pub, None, np.zeros((rows, 0)), weights, shots, -1)
        sampled = shots is not None
        key = (_structure_key(pub.circuit), tuple(labels), sampled)
        # the query that runs the pub; one without rows is checked and planned like any (a new
        # plan's timing rows go to the next query) but runs in none (-1)
        query = batches.setdefault((key, shots), self._queries + len(batches)) if rows else -1
        if key not in self._programs:
            planned_in = query if rows else self._queries + len(batches)
            self._programs[key] = self._build_program(pub.circuit, PauliList(labels), sampled, planned_in)
        compiled = self._programs[key]
        width = len(compiled.program.plan.parameters)
        if width:
            params = pub.parameter_values.as_array(compiled.program.plan.parameters).reshape(rows, width)
        else:
            params = np.zeros((rows, 0))
        return _PreparedPub(pub, compiled, params, weights, shots, query)

    def _build_program(self, circuit: QuantumCircuit, paulis: PauliList, sampled: bool, query: int) -> CompiledProgram:
        """Plan and program, timed as the partition and generate phases, then compiled by the
        engine (on every rank)."""
        with self.recorder.phase(query, "partition", n_circuits=1):
            plan = build_cut_plan(
                circuit,
                paulis,
                self.partition_labels,
                self.max_subcircuit_qubits,
                self.max_subexperiments,
                self.seed,
                self.minimal_basis and self.noise is None,  # noisy channels are not combinations of each other
                self.wire_cuts,
                coherent=self.coherent and self.noise is None,
                consolidate=self.consolidate,
                max_gamma=self.max_gamma,
            )
        with self.recorder.phase(query, "generate", n_circuits=plan.num_subexperiments):
            program = build_program(plan, sampled, self.shot_allocation, self.noise)
            return self.engine.compile(program)

    def _shots_for(self, precision: float | None) -> int | None:
        """Shots per setting for a pub's precision: None (exact values) for an exact estimator or
        ``precision=0``; ``ceil(1 / precision**2)``; the estimator's ``shots`` without one."""
        if self.shots is None or precision == 0:
            return None
        if precision:
            shots = max(1, math.ceil(1.0 / precision**2))
            if shots != self.shots:  # e.g. EstimatorQNN's default precision 1/64: 4096 shots
                announce(
                    f"precision={precision:g} passed to run() or in a pub overrides shots={self.shots}: "
                    f"{shots} shots per setting (qiskit-machine-learning's EstimatorQNN passes 1/64 unless "
                    "given default_precision)"
                )
            return shots
        return self.shots

    # -- execution: one engine query per distinct (plan, shots) ------------------------------

    def _execute(self, prepared: list[_PreparedPub]) -> list[PubResult]:
        batches: dict[int, list[int]] = {}
        results: list[PubResult | None] = [None] * len(prepared)
        for i, item in enumerate(prepared):
            if item.query < 0:  # no rows (empty values) or no qubits (constants), like the references
                table = np.repeat(item.weights.sum(axis=0)[None], len(item.params), axis=0)
                metadata = {**self._metadata(item, None, len(item.params)), **_pub_metadata(item)}
                results[i] = _pub_result(item.pub, table, None, metadata)
            else:
                batches.setdefault(item.query, []).append(i)
        for stream, (query, indices) in enumerate(batches.items()):
            items = [prepared[i] for i in indices]
            compiled = items[0].compiled
            assert compiled is not None, "pubs without qubits run in no query"
            self._queries = query + 1
            params = np.concatenate([it.params for it in items], axis=0)
            weights = np.concatenate([it.weights for it in items], axis=1)
            evs, variance = self.engine.evaluate(
                Query(query, compiled, params, items[0].shots, self.seed, weights, stream)
            )
            metadata = self._metadata(items[0], query, len(params))
            row, col = 0, 0
            for i, it in zip(indices, items):
                rows, cols = len(it.params), it.weights.shape[1]
                block = (slice(row, row + rows), slice(col, col + cols))
                std = None if variance is None else np.sqrt(variance[block])
                results[i] = _pub_result(it.pub, evs[block], std, {**metadata, **_pub_metadata(it)})
                row, col = row + rows, col + cols
        return results

    def _metadata(self, item: _PreparedPub, query: int | None, rows: int) -> dict:
        program = None if item.compiled is None else item.compiled.program
        partitions = [] if program is None else program.plan.partitions
        return {
            "query": query,
            "phases": {} if query is None else self.recorder.seconds(query),
            "num_cuts": 0 if program is None else program.plan.num_cuts,
            "num_partitions": len(partitions),
            "num_subexperiments": sum(part.num_subexperiments for part in partitions),
            "subexperiments_per_partition": [part.num_subexperiments for part in partitions],
            "num_circuits": 0 if program is None else len(program.circuits),
            "num_rows": rows,
            "shots": item.shots,
            "shot_allocation": None if item.shots is None else self.shot_allocation,
            "device": self.device,
            "noise": None if self.noise is None else self.noise.description,
        }


def _pub_metadata(item: _PreparedPub) -> dict:
    """Per pub: what the reference estimators report (the precision asked for: the pub's or
    ``run``'s; without one, that of the estimator's shots, 0 when exact; the circuit's metadata)
    and ``gamma``, the sampling overhead of its cuts, the most over its rows (trainable cuts at
    their angles)."""
    precision = item.pub.precision
    if precision is None:
        precision = 0.0 if item.shots is None else 1.0 / math.sqrt(item.shots)
    gamma = 1.0
    if item.compiled is not None:  # trainable cuts at the pub's angles; fixed ones are the plan's
        plan = item.compiled.program.plan
        gamma = float(plan.gammas(item.params).max()) if plan.trainable and len(item.params) else plan.gamma
    return {"target_precision": float(precision), "circuit_metadata": item.pub.circuit.metadata, "gamma": gamma}


def _check_shots(shots) -> None:
    if shots is None:
        return
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots <= 0:
        raise ExecutionConfigError(f"shots must be a positive integer or None (exact), got {shots!r}")


def _check_parameter_shape(pub_like) -> None:
    """Name the mismatch between a circuit's parameters and the values given for them."""
    if isinstance(pub_like, EstimatorPub):
        return
    if isinstance(pub_like, QuantumCircuit) or not isinstance(pub_like, (tuple, list)):
        raise ObservableError(
            f"a pub is (circuit, observables[, parameter_values]); got {type(pub_like).__name__}"
        )
    circuit = pub_like[0]
    values = pub_like[2] if len(pub_like) > 2 else None
    needed = circuit.num_parameters
    if values is None or isinstance(values, (BindingsArray, dict)):
        if values is None and needed:
            raise ParameterShapeError(
                f"the circuit has {needed} parameters but no parameter_values were given"
            )
        return
    kind = np.asarray(values).dtype.kind
    if kind not in "biuf":
        raise ParameterValueError(
            f"parameter_values must be real numbers, got an array of dtype {np.asarray(values).dtype} "
            f"({np.ravel(values)[:1].tolist()}...)"
        )
    shape = np.shape(values)
    last = shape[-1] if shape else 1
    if needed and last != needed or not needed and np.size(values):
        raise ParameterShapeError(
            f"parameter_values has shape {shape}; its last axis must equal the circuit's "
            f"{needed} parameters"
        )


def _check_finite(pub: EstimatorPub) -> None:
    """Refuse NaN and infinite parameter values, as the references do, naming the first."""
    for parameters, values in pub.parameter_values.data.items():
        bad = ~np.isfinite(np.asarray(values, dtype=float))
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ParameterValueError(
                f"parameter_values must be finite: {np.asarray(values)[index]} at index {index} "
                f"(parameters {', '.join(parameters)})"
            )


def _pauli_terms(pub: EstimatorPub) -> tuple[list[str], np.ndarray]:
    """Distinct Pauli labels over the pub's observables and the weight of each in each
    observable; a term with projectors (``0 1 + - r l`` of a ``SparseObservable``) expanded
    exactly into Pauli strings by Qiskit (``SparsePauliOp.from_sparse_observable``)."""
    observables = pub.observables.ravel().tolist()  # per observable, {label: coefficient}
    labels: dict[str, int] = {}
    expanded: list[list[tuple[str, float]]] = []
    for obs in observables:
        terms = []
        for label, coeff in obs.items():
            if set(label) <= _PAULI_LETTERS:  # the common case, without Qiskit's conversion (~4x slower)
                terms.append((label, float(np.real(coeff))))
            else:
                paulis = SparsePauliOp.from_sparse_observable(SparseObservable.from_label(label))
                terms += [(p, float(np.real(coeff * c))) for p, c in zip(paulis.paulis.to_labels(), paulis.coeffs)]
        for label, _ in terms:
            labels.setdefault(label, len(labels))
        expanded.append(terms)
    weights = np.zeros((len(labels), len(observables)))
    for o, terms in enumerate(expanded):
        for label, weight in terms:
            weights[labels[label], o] += weight
    return list(labels), weights


def _structure_key(circuit: QuantumCircuit) -> Hashable:
    """Equal for circuits that cut into the same plan: gates, qubits, parameters (exactly, arrays
    included) and, for gates outside the simulator basis, their definitions."""
    index = {q: i for i, q in enumerate(circuit.qubits)}

    def value(param) -> Hashable:
        return param.tobytes() if isinstance(param, np.ndarray) else str(param)

    def instruction(inst) -> Hashable:
        op = inst.operation
        inner = op.definition if op.name not in SIMULATOR_BASIS else None
        return (
            op.name,
            tuple(index[q] for q in inst.qubits),
            tuple(value(p) for p in op.params),
            None if inner is None else _structure_key(inner),
        )

    return circuit.num_qubits, tuple(instruction(inst) for inst in circuit.data)


def _pub_result(pub: EstimatorPub, table: np.ndarray, std: np.ndarray | None, metadata: dict) -> PubResult:
    """Broadcast the [parameter rows, observables] table to the pub's shape."""
    param_index = np.arange(table.shape[0]).reshape(pub.parameter_values.shape)
    obs_index = np.arange(table.shape[1]).reshape(pub.observables.shape)
    rows, cols = np.broadcast_arrays(param_index, obs_index)
    evs = table[rows, cols]
    stds = np.zeros_like(evs) if std is None else std[rows, cols]
    return PubResult(DataBin(evs=evs, stds=stds, shape=evs.shape), metadata=dict(metadata))
