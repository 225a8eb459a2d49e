"""``hpcqnn plan``: a run's cut plan, memory per rank and predicted query and epoch times, before it runs.

The plan is the one training builds (``build_qnn``, the estimator options of ``estimator_options``)
for its query shape: a batch of ``training.batch_size`` examples with every parameter-shift row, as
``QNNClassifier.expectations_with_gradient`` binds them. The times come from measuring: a few such
queries run in this process, and their timing rows, as the tables of a 1-rank run
(``timed_tables``), calibrate the replay model of ``analysis.replay`` exactly as
``python -m analysis.report`` calibrates it on run directories (``calibrate_costs``); the model
then replays one query at each rank count (``predict``). A query's time is its critical path
from the timing rows (first phase start to last phase end over all ranks), as the report and
``results.json`` define it.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcqnn.cutting.program import Program
from hpcqnn.errors import HpcqnnError
from hpcqnn.execution.compiled import compile_program
from hpcqnn.execution.engine import call_pieces
from hpcqnn.execution.query import Query, QueryBuffers
from hpcqnn.execution.tiles import Tile
from hpcqnn.options import SAMPLE_BLOCK
from hpcqnn.run.config import Config
from hpcqnn.run.timing import PhaseRow
from hpcqnn.text import count, size

if TYPE_CHECKING:
    from analysis.load import RunTables
    from analysis.replay import Costs, Workload
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
    query_seconds: float  # median critical path of a full-batch query from its phases (first start to last end)
    call_seconds: float  # median wall of estimator.run for it (the critical path plus pub handling before it)
    threads: int
    rank_cores: int  # cores its Aer calls used (its threads if the widest circuit reaches Aer's parallel threshold)
    device: str


@dataclass(frozen=True)
class Prediction:
    """The modelled time of one training query and one epoch at ``ranks`` ranks."""

    ranks: int
    query_seconds: float  # its critical path (as the timing rows measure it)
    call_seconds: float  # the estimator.run call: the critical path plus rank 0's pub handling before it
    epoch_seconds: float  # queries per epoch x call_seconds


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


def recorded_plan(config: Config, estimator: Any = None) -> dict:
    """The cut plan a run of ``config`` runs (``summarize_program``, as ``hpcqnn plan`` prints it),
    for its ``results.json``: the program of the run's ``estimator`` (cached there: nothing built
    again), or without one built by a serial estimator with the run's options (on the CPU: the
    plan does not depend on the device); nothing simulated, no MPI."""
    from hpcqnn.estimator import DistributedEstimator
    from hpcqnn.training.loop import build_qnn, estimator_options

    qnn = build_qnn(config)
    if estimator is None:
        options = {**estimator_options(config, qnn), "device": "CPU"}
        estimator = DistributedEstimator(**{k: options[k] for k in ESTIMATOR_KEYS if k in options}, threads=1)
    rows = np.zeros((1, qnn.circuit.num_parameters))
    return asdict(summarize_program(estimator.program((qnn.circuit, qnn.observable, rows))))


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


#: The label of the run ``hpcqnn plan`` times, in the replay's tables.
TIMED_RUN = "hpcqnn plan"


def timed_tables(rows: list[PhaseRow], config: Config, program: Program, threads: int, device: str) -> RunTables:
    """The queries this process timed as the tables of one 1-rank run (``analysis.load.tables_of``),
    with the cut plan ``hpcqnn train`` records: the replay calibrates on them as on a run directory."""
    from analysis.load import RunEntry, row_array, tables_of
    from hpcqnn.run.config import config_dict

    attributes = {"rank": 0, "size": 1, "hostname": os.uname().nodename, "device": device, "schedule": "static",
                  "threads": threads}
    result = {"config": config_dict(config), "plan": asdict(summarize_program(program))}
    return tables_of([RunEntry(TIMED_RUN, Path(TIMED_RUN), {0: row_array(rows)}, {0: attributes}, result)])


def representatives(walls: dict[int, float], shapes: dict[int, Query]) -> set[int]:
    """The query of median wall of each shape (``measure``): the replay calibrates on these
    alone, one real query per shape, so that on a host whose load varies the parts it sums add up
    to a measured wall (medians of the parts of three queries need not)."""
    kept = set()
    for shape in {id(query): query for query in shapes.values()}.values():
        numbers = sorted((q for q in walls if shapes[q] is shape), key=walls.__getitem__)
        kept.add(numbers[len(numbers) // 2])
    return kept


def calibrate_costs(tables: RunTables) -> Costs:
    """Replay costs from the queries of ``timed_tables``, calibrated as ``python -m analysis.report``
    calibrates on run directories (``analysis.replay.calibrate``): execute rows of both shapes give
    the Aer calls' fixed and per-experiment costs, accumulate rows the local reconstruction, the
    training-shaped (typical) queries rank 0's contraction per row and the untimed rest of a query.
    Costs are seconds of this process: a modelled rank computes as fast as it did. One process
    cannot measure MPI's start lag and barrier sync: they are 0."""
    from analysis.replay import CLUSTER, calibrate

    threads = float(tables.runs["threads"].iloc[0])
    return calibrate(tables, [TIMED_RUN], threads, CLUSTER)


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


def predict(query: Query, costs: Costs, ranks: list[int], queries_per_epoch: int, config: Config,
            rank_cores: int = 1, before: float = 0.0) -> list[Prediction]:
    """The replayed critical path of one query at each of ``ranks`` (one process's speed per
    rank, each with ``rank_cores`` cores as calibrated (``analysis.replay.calibration.rank_cores``),
    the configured schedule, root_computes and straggler, on the replay's HPC interconnect
    ``CLUSTER``); its ``estimator.run`` call, ``before`` seconds longer (rank 0's pub checks and
    handling before the broadcast, which no timing row covers and no rank count shortens); and
    an epoch of ``queries_per_epoch`` such calls."""
    from analysis.replay import CLUSTER, Scenario, simulate

    ex = config.execution
    load = workload(query)
    out = []
    for p in ranks:
        slowed = tuple(r for r in ex.straggler_ranks if r < p)
        scenario = Scenario(
            ranks=p, schedule=ex.schedule, rank_cores=rank_cores, root_computes=ex.root_computes,
            straggler_ranks=slowed,
            probability=ex.straggler_probability, slowdown=ex.straggler_slowdown, delay=ex.straggler_delay,
        )
        wall = simulate(load, costs, CLUSTER, scenario).wall
        out.append(Prediction(p, wall, wall + before, (wall + before) * queries_per_epoch))
    return out


def plan_report(config: Config, ranks: list[int], queries: int = TIMED_QUERIES) -> dict:
    """Everything ``hpcqnn plan`` prints, as plain data: plan, memory, measurement, predictions."""
    try:
        from analysis.metrics import run_summary
        from analysis.replay.calibration import rank_cores
    except ImportError as exc:  # the prediction needs it: fail before measuring
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
    kept = representatives(walls, shapes)
    tables = timed_tables([r for r in rows if r.query in kept], config, program, threads, estimator.device)
    costs = calibrate_costs(tables)
    cores = rank_cores(tables.runs.iloc[0])
    summary = run_summary(tables.runs, tables.phases).iloc[0]
    called = statistics.median(wall for number, wall in walls.items() if shapes[number] is query)
    # the representative query's call (the median one) around its critical path
    predictions = predict(query, costs, ranks, per_epoch, config, cores, max(called - float(summary["wall"]), 0.0))
    return {
        "config": config.run.name,
        "plan": asdict(summarize_program(program)),
        "program": repr(program),
        "memory": {**asdict(memory), "total_bytes": memory.total_bytes},
        "training": {"examples": len(data.y_train), "batch_size": batch, "queries_per_epoch": per_epoch},
        "measurement": asdict(Measurement(
            rows=len(full), experiments=workload(query).experiments, query_seconds=float(summary["wall"]),
            call_seconds=called, threads=threads, rank_cores=cores, device=estimator.device,
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
        f"measured on this host ({os.uname().nodename}): {measured['query_seconds']:.3g} s per training query "
        f"(critical path from its timing rows; estimator.run {measured['call_seconds']:.3g} s), 1 process, "
        f"{measured['threads']} Aer thread{'s' * (measured['threads'] != 1)} ({count(measured['rank_cores'], 'core')} "
        f"used by its widest circuit), {measured['device']}",
        f"predicted by {report['model']}, calibrated on this host; each rank as fast as the measuring process, "
        f"{report['schedule']} schedule, MPI start lag and sync not measured (0), HPC interconnect "
        f"{report['network']}; query = critical path, estimator.run = it plus the measured pub handling before "
        "it, epoch = queries per epoch x estimator.run:",
        f"  {'ranks':>5}  {'query (s)':>10}  {'estimator.run (s)':>17}  {'epoch (s)':>10}",
    ]
    lines += [f"  {p['ranks']:>5}  {p['query_seconds']:>10.4g}  {p['call_seconds']:>17.4g}  {p['epoch_seconds']:>10.4g}"
              for p in report["predictions"]]
    return "\n".join(lines)


def _qubit_ranges(qubits: list[int] | tuple[int, ...]) -> str:
    """``0-7`` for a contiguous run, else the list."""
    if list(qubits) == list(range(qubits[0], qubits[-1] + 1)) and len(qubits) > 2:
        return f"{qubits[0]}-{qubits[-1]}"
    return ", ".join(map(str, qubits))
