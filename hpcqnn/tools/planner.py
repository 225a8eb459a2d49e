"""``hpcqnn plan``: a run's cut plan, memory per rank and predicted query and epoch times, before it runs.

The plan is the one training builds (``build_qnn``, the estimator options of ``estimator_options``)
for its query shape: a batch of ``training.batch_size`` examples with every parameter-shift row, as
``QNNClassifier.expectations_with_gradient`` binds them. The times come from measuring: a few such
queries run in this process, their timing rows calibrate the replay model of ``analysis.replay``
(``calibrate_costs``), which then replays one query at each rank count (``predict``).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcqnn.cutting.program import Program
from hpcqnn.errors import HpcqnnError
from hpcqnn.execution.compiled import compile_program
from hpcqnn.execution.engine import call_pieces
from hpcqnn.execution.query import Query, QueryBuffers
from hpcqnn.execution.tiles import Tile
from hpcqnn.options import CALL_EXPERIMENTS, SAMPLE_BLOCK
from hpcqnn.run.config import Config
from hpcqnn.run.timing import PhaseRow
from hpcqnn.text import count, size

if TYPE_CHECKING:
    from analysis.replay import Costs, TileCost, Workload
    from hpcqnn.estimator import DistributedEstimator
    from hpcqnn.training.circuits import CutQNN

#: Options of ``estimator_options`` that ``DistributedEstimator`` itself takes (the others are MPI's).
ESTIMATOR_KEYS = ("partition_labels", "shots", "shot_allocation", "seed", "device", "noise_model", "backend", "sampler")
#: Times each query shape is timed: the training batch, and one example of it (the two sizes tell
#: the fixed cost of a simulator call from the cost per experiment).
TIMED_QUERIES = 3
MODEL_NAME = "analysis.replay (discrete-event replay of one query)"


@dataclass(frozen=True)
class PartitionSummary:
    """One partition of the plan: its circuit qubits, how it runs and how wide that is."""

    label: str
    qubits: tuple[int, ...]
    cuts: int
    subexperiments: int
    coherent: bool  # all its subexperiments in one simulation per row
    simulated_qubits: int  # the widest circuit it runs: qubits plus control/fresh qubits or QPD ancillas
    extra: str  # what the qubits beyond its own are


@dataclass(frozen=True)
class PlanSummary:
    """The cut plan a program runs (``Program``), as ``hpcqnn plan`` prints it."""

    qubits: int
    cuts: int
    trainable_cuts: int
    gamma: float
    subexperiments: int
    simulator_circuits: int
    pauli_terms: int
    mode: str
    measurement_settings: int | None  # sampled mode only
    partitions: tuple[PartitionSummary, ...]


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one rank holds for a query at its peak (an estimate: see ``memory_estimate``)."""

    widest_qubits: int
    statevector_bytes: int
    call_experiments: int
    call_output_bytes: int
    buffer_bytes: int
    param_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.statevector_bytes + self.call_output_bytes + self.buffer_bytes + self.param_bytes


@dataclass(frozen=True)
class Measurement:
    """What the timed queries of this host gave (seconds)."""

    rows: int
    experiments: int
    query_seconds: float  # median wall of a full-batch query, one process
    threads: int
    device: str


@dataclass(frozen=True)
class Prediction:
    """The modelled time of one training query and one epoch at ``ranks`` ranks."""

    ranks: int
    query_seconds: float
    epoch_seconds: float


def summarize_program(program: Program) -> PlanSummary:
    """The cut plan of ``program``: cuts, gamma, partitions and how each runs."""
    plan = program.plan
    partitions = []
    for p, part in enumerate(plan.partitions):
        circuits = np.flatnonzero(program.partition_of == p)
        coherent, extra = program.added_qubits(p)
        partitions.append(PartitionSummary(
            label=str(part.label), qubits=tuple(int(q) for q in part.qubits), cuts=len(part.cut_ids),
            subexperiments=part.num_subexperiments, coherent=coherent,
            simulated_qubits=max(program.circuits[i].num_qubits for i in circuits), extra=extra,
        ))
    trainable = sum(angle is not None for angle in plan.cut_angles)
    return PlanSummary(
        qubits=sum(len(part.qubits) for part in plan.partitions), cuts=plan.num_cuts, trainable_cuts=trainable,
        gamma=plan.gamma, subexperiments=plan.num_subexperiments, simulator_circuits=len(program.circuits),
        pauli_terms=len(plan.paulis), mode="sampled" if program.sampled else "exact",
        measurement_settings=len(program.settings) if program.sampled else None, partitions=tuple(partitions),
    )


def training_query(program: Program, params: np.ndarray) -> Query:
    """The query ``program`` runs on the parameter rows ``params`` (compiled without a simulator)."""
    return Query(0, compile_program(program), params)


def memory_estimate(query: Query) -> MemoryEstimate:
    """Peak bytes of one rank for ``query``, estimated as: one complex128 statevector of the widest
    simulator circuit (Aer's state; Aer running several experiments in parallel holds one each),
    plus the outputs of the largest Aer call of the query run on one rank (``engine.call_pieces``:
    up to CALL_EXPERIMENTS experiments and CALL_BYTES of outputs; a coherent circuit returns its
    whole statevector per row; a rank's share of more ranks packs no larger calls), plus the query
    buffer every rank fills (``QueryBuffers``, reduced in place) and the parameter rows. Not
    counted: the interpreter, Qiskit and Aer themselves, compiled circuits, and sampled mode's
    outcome distributions of a block of rows."""
    readouts = query.compiled.readouts
    tiles = [Tile(c, 0, query.experiments(c)) for c in range(len(readouts))]
    calls = [[(piece.stop - piece.start, readouts[piece.circuit].output_bytes) for piece in call]
             for call in call_pieces(query, tiles)]
    largest = max(calls, key=lambda call: sum(n * nbytes for n, nbytes in call))
    widest = max(circuit.num_qubits for circuit in query.program.circuits)
    return MemoryEstimate(
        widest_qubits=widest, statevector_bytes=16 * 2**widest, call_experiments=sum(n for n, _ in largest),
        call_output_bytes=sum(n * nbytes for n, nbytes in largest),
        buffer_bytes=int(QueryBuffers(query.compiled, query.rows).flat.nbytes), param_bytes=int(query.params.nbytes),
    )


def workload(query: Query) -> Workload:
    """The replay model's view of ``query``: its experiments over its circuits and the bytes that move."""
    from analysis.replay import Workload

    circuits = len(query.program.circuits)
    return Workload(
        experiments=sum(query.experiments(c) for c in range(circuits)), rows=query.rows.count,
        param_bytes=int(query.params.nbytes), buffer_bytes=int(QueryBuffers(query.compiled, query.rows).flat.nbytes),
        align=SAMPLE_BLOCK if query.program.sampled else 1, circuits=circuits,
    )


def fit_execute(samples: list[tuple[list[float], float]]) -> TileCost:
    """The replay's cost of Aer calls, ``call + experiment x m`` seconds for a call of ``m``
    experiments, through ``samples``: (the sizes of one query shape's calls, the seconds of its
    execute row), by relative least squares (exact through two shapes). The call sizes are
    the replay's own (``simulation.call_sizes``, what ``tiles.pack`` makes of the query's tiles),
    so the fit and the replay count the same calls. Where the samples cannot tell a fixed cost
    (one shape, shapes with as many experiments per call, or a negative fit under noise) it is 0,
    and the largest shape sets the rest."""
    from analysis.replay import TileCost

    counts = np.array([len(sizes) for sizes, _ in samples], dtype=float)
    experiments = np.array([sum(sizes) for sizes, _ in samples], dtype=float)
    seconds = np.array([s for _, s in samples], dtype=float)
    (call, per), *_ = np.linalg.lstsq(
        np.column_stack([counts / seconds, experiments / seconds]), np.ones(len(samples)), rcond=None
    )
    if np.linalg.matrix_rank(np.column_stack([counts, experiments])) < 2 or call < 0 or per <= 0:
        largest = int(np.argmax(experiments))
        call, per = 0.0, float(seconds[largest] / experiments[largest])
    return TileCost(float(call), float(per), batch=CALL_EXPERIMENTS)


def calibrate_costs(rows: list[PhaseRow], walls: dict[int, float], shapes: dict[int, Query]) -> Costs:
    """Replay costs from the timing rows of queries run in one process: ``walls`` gives each
    timed query's wall seconds, ``shapes`` the query each ran, the first shape the one to predict.
    Each shape is represented by its query of median wall (one real query, so its parts add up to
    a measured wall on a host whose load varies): their ``execute`` rows calibrate the Aer calls
    (``fit_execute``), their ``accumulate`` rows the local reconstruction per experiment
    (``fit_tile_cost``); the predicted shape's gives rank 0's contraction per parameter row and the
    untimed rest of its wall as overhead (both have fixed parts a smaller query would inflate).
    Costs are seconds of this process: a modelled rank computes as fast as it did. One process
    cannot measure MPI's start lag and barrier sync: they are 0."""
    import pandas as pd

    from analysis.replay import Costs
    from analysis.replay.calibration import fit_tile_cost
    from analysis.replay.simulation import call_sizes

    def seconds(query: int, phase: str) -> float:
        return sum(r.t_end - r.t_start for r in rows if r.query == query and (r.phase == phase or phase == "all"))

    representative = {}  # query number -> its shape, the query of median wall of each shape
    for shape in {id(query): query for query in shapes.values()}.values():
        numbers = sorted((q for q in walls if shapes[q] is shape), key=walls.__getitem__)
        representative[numbers[len(numbers) // 2]] = shape
    execute = [(call_sizes(workload(shape).counts(), CALL_EXPERIMENTS), seconds(q, "execute"))
               for q, shape in representative.items()]
    local = [r for r in rows if r.query in representative and r.phase == "accumulate"]
    reconstruct, _ = fit_tile_cost(pd.Series([r.n_experiments for r in local], dtype=float),
                                   pd.Series([r.t_end - r.t_start for r in local], dtype=float))
    predicted = next(q for q, shape in representative.items() if shape is next(iter(shapes.values())))
    return Costs(
        execute=fit_execute(execute), reconstruct=reconstruct,
        contraction_row=seconds(predicted, "contract") / shapes[predicted].rows.count, start_lag=0.0, sync=0.0,
        overhead=max(walls[predicted] - seconds(predicted, "all"), 0.0), capacity=1.0,
    )


def training_rows(qnn: CutQNN, angles: np.ndarray, seed: int, init: str) -> np.ndarray:
    """The parameter rows of a training query on ``angles`` (a batch of examples' input angles) at
    the run's initial weights, exactly as ``QNNClassifier.expectations_with_gradient`` binds them."""
    from hpcqnn.training.model import QNNClassifier

    captured: list[np.ndarray] = []

    class Capture:
        """An estimator that keeps the rows it is asked about and answers zeros."""

        def run(self, pubs):
            (_, _, rows), = pubs
            captured.append(rows)
            return _Answer(np.zeros(len(rows)))

    model = QNNClassifier(qnn, Capture(), init=init)
    weights = model.initial_theta(np.random.default_rng(seed))[:-2]
    model.expectations_with_gradient(angles, weights)
    return captured[0]


@dataclass(frozen=True)
class _Answer:
    """The ``.result()[0].data.evs`` chain of an estimator job, holding ``evs``."""

    evs: np.ndarray

    def result(self) -> list[Any]:
        return [self]

    @property
    def data(self) -> _Answer:
        return self


def measure(estimator: DistributedEstimator, qnn: CutQNN, shapes: list[Query],
            repeats: int = TIMED_QUERIES) -> tuple[list[PhaseRow], dict[int, float], dict[int, Query]]:
    """Run each of ``shapes`` (queries of ``qnn``'s plan) ``repeats`` times, in turn, after one
    untimed query of the first that builds and compiles the plan; the timing rows, each timed
    query's wall seconds and the shape each ran."""
    def run(query: Query) -> None:
        estimator.run([(qnn.circuit, qnn.observable, query.params)]).result()

    run(shapes[0])
    walls: dict[int, float] = {}
    ran: dict[int, Query] = {}
    for query in shapes * repeats:
        number = estimator.num_queries
        start = time.perf_counter()
        run(query)
        walls[number], ran[number] = time.perf_counter() - start, query
    return list(estimator.recorder.rows), walls, ran


def predict(query: Query, costs: Costs, ranks: list[int], queries_per_epoch: int, config: Config) -> list[Prediction]:
    """The replayed wall of one query at each of ``ranks`` (one process's speed per rank, the
    configured schedule, root_computes and straggler, on the replay's HPC interconnect
    ``CLUSTER``), and of an epoch of ``queries_per_epoch`` such queries."""
    from analysis.replay import CLUSTER, Scenario, simulate

    ex = config.execution
    load = workload(query)
    out = []
    for p in ranks:
        slowed = tuple(r for r in ex.straggler_ranks if r < p)
        scenario = Scenario(
            ranks=p, schedule=ex.schedule, root_computes=ex.root_computes, straggler_ranks=slowed,
            probability=ex.straggler_probability, slowdown=ex.straggler_slowdown, delay=ex.straggler_delay,
        )
        wall = simulate(load, costs, CLUSTER, scenario).wall
        out.append(Prediction(p, wall, wall * queries_per_epoch))
    return out


def plan_report(config: Config, ranks: list[int], queries: int = TIMED_QUERIES) -> dict:
    """Everything ``hpcqnn plan`` prints, as plain data: plan, memory, measurement, predictions."""
    try:
        import analysis.replay  # noqa: F401 - the prediction needs it: fail before measuring
    except ImportError as exc:
        raise HpcqnnError(
            f"hpcqnn plan predicts times with analysis.replay, which needs pandas ({exc}): "
            "pip install 'hpcqnn[analysis]'"
        ) from None
    from threadpoolctl import threadpool_limits

    from hpcqnn.estimator import DistributedEstimator
    from hpcqnn.training.loop import build_qnn, estimator_options, load_data

    qnn = build_qnn(config)
    data = load_data(config)
    options = estimator_options(config, qnn)
    threads = options["threads"] or len(os.sched_getaffinity(0))
    batch = config.training.batch_size
    angles = data.angles(data.x_train)
    full = training_rows(qnn, angles[:batch], config.run.seed, config.model.init)
    single = training_rows(qnn, angles[:1], config.run.seed, config.model.init)
    with threadpool_limits(limits=threads, user_api="blas"):  # as mpi_estimator limits each rank
        estimator = DistributedEstimator(**{k: options[k] for k in ESTIMATOR_KEYS if k in options}, threads=threads)
        program = estimator.program((qnn.circuit, qnn.observable, full))
        query = training_query(program, full)
        rows, walls, shapes = measure(estimator, qnn, [query, training_query(program, single)], queries)
    per_epoch = -(-len(data.y_train) // batch)
    memory = memory_estimate(query)
    measured = statistics.median(wall for number, wall in walls.items() if shapes[number] is query)
    costs = calibrate_costs(rows, walls, shapes)
    predictions = predict(query, costs, ranks, per_epoch, config)
    return {
        "config": config.run.name,
        "plan": asdict(summarize_program(program)),
        "program": repr(program),
        "memory": {**asdict(memory), "total_bytes": memory.total_bytes},
        "training": {"examples": len(data.y_train), "batch_size": batch, "queries_per_epoch": per_epoch},
        "measurement": asdict(Measurement(
            rows=len(full), experiments=workload(query).experiments, query_seconds=measured, threads=threads,
            device=estimator.device,
        )),
        "model": MODEL_NAME,
        "schedule": config.execution.schedule,
        "network": _network(),
        "predictions": [asdict(p) for p in predictions],
    }


def _network() -> str:
    """The interconnect the prediction replays (``analysis.replay.CLUSTER``), in words."""
    from analysis.replay import CLUSTER

    return f"{CLUSTER.latency * 1e6:g} us, {CLUSTER.bandwidth / 1e9:g} GB/s"


def format_report(report: dict) -> str:
    """The text ``hpcqnn plan`` prints for ``plan_report``'s ``report``."""
    plan, memory, training = report["plan"], report["memory"], report["training"]
    measured = report["measurement"]
    trainable = f" ({plan['trainable_cuts']} trainable)" if plan["trainable_cuts"] else ""
    gamma = f"{'at most ' if plan['trainable_cuts'] else ''}{plan['gamma']:.4g}"
    lines = [
        f"hpcqnn plan: {report['config']} ({plan['qubits']} qubits, {plan['mode']} mode)",
        f"cuts: {plan['cuts']}{trainable}; sampling overhead gamma {gamma}; "
        f"{plan['subexperiments']} subexperiments in {plan['simulator_circuits']} simulator circuits; "
        f"{plan['pauli_terms']} Pauli terms"
        + (f"; {plan['measurement_settings']} measurement settings" if plan["measurement_settings"] is not None
           else ""),
        "partitions:",
    ]
    for part in plan["partitions"]:
        how = "coherent" if part["coherent"] else "enumerated"
        lines.append(
            f"  {part['label']}: qubits {_qubit_ranges(part['qubits'])} ({len(part['qubits'])}), "
            f"{count(part['cuts'], 'cut')}, {count(part['subexperiments'], 'subexperiment')}, "
            f"{how}, {part['simulated_qubits']} simulated qubits ({len(part['qubits'])} + {part['extra']})"
        )
    lines += [
        f"memory per rank (estimate): {size(memory['total_bytes'])} = statevector of the widest circuit "
        f"({memory['widest_qubits']} qubits) {size(memory['statevector_bytes'])} + outputs of the largest Aer call "
        f"({memory['call_experiments']} experiments) {size(memory['call_output_bytes'])} + query buffer "
        f"{size(memory['buffer_bytes'])} + parameter rows {size(memory['param_bytes'])}; "
        "not counted: Python, Qiskit and Aer themselves, compiled circuits"
        + (", sampled mode's outcome distributions per block of rows" if plan["mode"] == "sampled" else ""),
        f"training query: {training['batch_size']} examples x all parameter-shift rows = {measured['rows']} rows, "
        f"{measured['experiments']} experiments; {training['examples']} training examples -> "
        f"{training['queries_per_epoch']} queries per epoch (end-of-epoch evaluation not counted)",
        f"measured on this host ({os.uname().nodename}): {measured['query_seconds']:.3g} s per training query, "
        f"1 process, {measured['threads']} Aer thread{'s' * (measured['threads'] != 1)}, {measured['device']}",
        f"predicted by {report['model']}, calibrated on this host; each rank as fast as the measuring process, "
        f"{report['schedule']} schedule, MPI start lag and sync not measured (0), HPC interconnect "
        f"{report['network']}:",
        f"  {'ranks':>5}  {'query (s)':>10}  {'epoch (s)':>10}",
    ]
    lines += [f"  {p['ranks']:>5}  {p['query_seconds']:>10.4g}  {p['epoch_seconds']:>10.4g}"
              for p in report["predictions"]]
    return "\n".join(lines)


def _qubit_ranges(qubits: list[int] | tuple[int, ...]) -> str:
    """``0-7`` for a contiguous run, else the list."""
    if list(qubits) == list(range(qubits[0], qubits[-1] + 1)) and len(qubits) > 2:
        return f"{qubits[0]}-{qubits[-1]}"
    return ", ".join(map(str, qubits))
