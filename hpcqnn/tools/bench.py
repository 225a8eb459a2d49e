"""Per-query phase timings of hpcqnn beside the addon's own pipeline, in one run.

For each width and cut count the benchmark times ``queries`` estimator queries of the QNN
(``hpcqnn.training.circuits.cut_qnn``: two halves, or pieces of ``piece_qubits``) in exact and/or sampled
mode, on every rank of the MPI world (one rank when started alone), and ``reference_queries``
queries of the naive addon pipeline (partition, generate, sample, reconstruct redone every query)
on rank 0. Every query draws fresh random parameters from one seeded stream, so all pipelines
see the same rows. Each setting also reports the subexperiments per partition, what the addon
would generate, and every rank's peak memory. With ``out``, each (width, cuts, mode) setting is
a run directory with per-rank HDF5 timing logs.
"""

from __future__ import annotations

import json
import math
import platform
import resource
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpcqnn.errors import ExecutionConfigError
from hpcqnn.options import MODES
from hpcqnn.run.runinfo import provenance, write_json
from hpcqnn.run.timing import PHASES
from hpcqnn.training.circuits import cut_qnn


def _summary(per_query: list[dict[str, float]], walls: list[float], extra: dict) -> dict:
    # per query: the estimator's phases (``reconstruct`` included) or the reference's four.
    # Means cover every query (the first builds the plan); ``steady_*`` the queries after it.
    mean = {ph: float(np.mean([q.get(ph, 0.0) for q in per_query])) for ph in (*PHASES, "reconstruct")}
    total = float(np.mean(walls))
    steady = slice(1 if len(walls) > 1 else 0, None)
    shares = [q.get("reconstruct", 0.0) / wall for q, wall in zip(per_query[steady], walls[steady]) if wall > 0]
    return {
        "queries": len(per_query),
        "phase_seconds_mean": mean,
        "query_seconds_mean": total,
        "query_seconds_median": float(np.median(walls)),
        "reconstruct_share": mean["reconstruct"] / total if total else 0.0,
        "setup_share": (mean["partition"] + mean["generate"]) / total if total else 0.0,
        "reduce_wait_share": (mean["reduce"] + mean["wait"]) / total if total else 0.0,
        "first_query_seconds": walls[0],
        "steady_query_seconds_median": float(np.median(walls[steady])),
        "steady_phase_seconds_median": {
            ph: float(np.median([q.get(ph, 0.0) for q in per_query[steady]])) for ph in (*PHASES, "reconstruct")
        },
        "steady_reconstruct_share_median": float(np.median(shares)) if shares else 0.0,
        **extra,
    }


def bench_hpcqnn(estimator, model, rows: np.ndarray) -> dict:
    """Time ``estimator`` over every row block in ``rows`` ([queries, rows, parameters])."""
    per_query, walls = [], []
    for block in rows:
        start = time.perf_counter()
        result = estimator.run([(model.circuit, model.observable, block)]).result()[0]
        walls.append(time.perf_counter() - start)
        per_query.append(result.metadata["phases"])
    meta = result.metadata
    return _summary(
        per_query,
        walls,
        {
            "pipeline": "hpcqnn " + ("exact" if estimator.shots is None else "sampled"),
            "shots": estimator.shots,
            "subexperiments": meta["num_subexperiments"],
            "subexperiments_per_partition": meta["subexperiments_per_partition"],
            "circuits": meta["num_circuits"],
            "device": meta["device"],
            "last_value": float(np.ravel(result.data.evs)[-1]),
        },
    )


def bench_reference(model, rows: np.ndarray, shots: int, seed: int) -> dict:
    """Time the addon pipeline, one parameter row per query (it handles one at a time)."""
    from hpcqnn.tools.reference import reference_query

    per_query, walls, value = [], [], None
    for block in rows:
        for row in block:
            start = time.perf_counter()
            value, phases = reference_query(model.circuit, model.partition_labels, model.observable, row, shots, seed)
            walls.append(time.perf_counter() - start)
            per_query.append(phases)
    return _summary(per_query, walls, {"pipeline": "addon reference", "shots": shots, "last_value": value})


def addon_subexperiments(model) -> int:
    """How many subexperiments qiskit-addon-cutting generates for one exact query of ``model``:
    every partition runs every joint QPD term for each of its commuting observable groups."""
    from qiskit_addon_cutting import partition_problem
    from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection

    problem = partition_problem(model.circuit, model.partition_labels, model.observable.paulis)
    terms = int(np.prod([len(basis.coeffs) for basis in problem.bases]))
    return terms * sum(len(ObservableCollection(obs).groups) for obs in problem.subobservables.values())


def bench_models(qubits: Sequence[int], cuts: Sequence[int], piece_qubits: int | None, layers: int) -> list:
    """``(setting, model)`` of every (width, cut count), built before any rank starts work; the
    setting names qubits, pieces, cuts and the layers used (at least one per cut)."""
    models = []
    for n in qubits:
        pieces = 2 if piece_qubits is None else max(2, math.ceil(n / piece_qubits))
        for c in cuts:
            setting = {"qubits": n, "pieces": pieces, "cuts": c, "layers": max(layers, c)}
            try:
                models.append((setting, cut_qnn(n, c, layers=setting["layers"], pieces=pieces)))
            except ValueError as exc:
                raise ExecutionConfigError(
                    f"no benchmark QNN of {n} qubits in {pieces} pieces with {c} cuts: {exc}"
                ) from exc
    return models


def peak_memory_mb() -> float:
    """This process's peak resident memory so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_bench(
    qubits: Sequence[int] = (8,),
    cuts: Sequence[int] = (1, 2, 3),
    piece_qubits: int | None = None,
    shots: int = 10_000,
    shot_allocation: str = "proportional",
    queries: int = 20,
    rows: int = 1,
    layers: int = 3,
    modes: tuple[str, ...] = MODES,
    reference_queries: int = 1,
    reference_max_qubits: int = 40,
    seed: int = 1234,
    device: str = "auto",
    schedule: str = "static",
    straggler=None,
    out: Path | None = None,
    progress=print,
) -> dict | None:
    """Benchmark every (width, cut count); a JSON-ready report on rank 0, ``None`` elsewhere.

    The QNN has two halves, or with ``piece_qubits`` as many pieces of that width as it takes,
    with ``cuts`` CX cuts between neighbouring pieces. The addon reference runs for widths up to
    ``reference_max_qubits``.
    """
    from hpcqnn.parallel.session import gather_on_root, mpi_estimator

    settings = {
        "qubits": list(qubits), "cuts": list(cuts), "piece_qubits": piece_qubits, "shots": shots,
        "shot_allocation": shot_allocation, "queries": queries, "rows": rows, "layers": layers,
        "modes": list(modes), "reference_queries": reference_queries,
        "reference_max_qubits": reference_max_qubits, "seed": seed, "schedule": schedule,
        "straggler": None if straggler is None else straggler.__dict__,
    }
    report = {
        **provenance(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "processor": platform.processor() or platform.machine(),
        "settings": settings,
        "results": [],
    }
    is_root = True
    for setting, model in bench_models(qubits, cuts, piece_qubits, layers):
        n, c = setting["qubits"], setting["cuts"]
        stream = np.random.default_rng([seed, n, c])
        params = stream.uniform(-np.pi, np.pi, (queries, rows, model.circuit.num_parameters))
        entries = []
        for mode in modes:
            name = f"cuts{c}-{mode}" if len(qubits) == 1 else f"q{n}-cuts{c}-{mode}"
            run_dir = None if out is None else Path(out) / name
            with mpi_estimator(
                partition_labels=model.partition_labels, shots=None if mode == "exact" else shots,
                shot_allocation=shot_allocation, seed=seed, device=device, schedule=schedule,
                straggler=straggler, timing_dir=run_dir,
                config_text=json.dumps({**settings, **setting, "mode": mode}),
            ) as estimator:
                if estimator is not None:
                    entry = bench_hpcqnn(estimator, model, params)
                    entry.update(setting, ranks=estimator.engine.size)
            peaks = gather_on_root(peak_memory_mb())
            if peaks is None:
                is_root = False
                continue
            entry["peak_memory_mb_per_rank"] = peaks
            entries.append(entry)
            progress(_row(entry))
            if run_dir is not None:
                write_json(
                    run_dir / "results.json",
                    {**entry, "settings": settings, **provenance()},
                )
        if not is_root:
            continue
        addon = addon_subexperiments(model)
        for entry in entries:
            entry["addon_subexperiments"] = addon
        if reference_queries and n <= reference_max_qubits:
            reference = bench_reference(model, params[:reference_queries, :1], shots, seed)
            reference.update(setting, ranks=1, subexperiments=addon)
            progress(_row(reference))
            for entry in entries:
                entry["speedup_vs_reference"] = reference["query_seconds_mean"] / (
                    entry["steady_query_seconds_median"] / rows
                )
            entries.append(reference)
        report["results"].extend(entries)
    return report if is_root else None


HEADER = (
    f"{'qubits':>6} {'cuts':>4} {'ranks':>5}  {'pipeline':<16} {'subexp':>6} {'first s':>8} {'execute':>9} "
    f"{'reconstr.':>9} {'reduce+wait':>11} {'query s':>9} {'recon %':>8} {'peak MiB':>8}"
)
HEADER_NOTE = (
    "first s: the first query (it builds the plan); execute ... recon %: medians over the queries after it"
)


def _row(entry: dict) -> str:
    m = entry["steady_phase_seconds_median"]
    peaks = entry.get("peak_memory_mb_per_rank")  # not measured for the reference (it shares rank 0's process)
    peak = f"{max(peaks):.0f}" if peaks else "-"
    return (
        f"{entry['qubits']:>6} {entry['cuts']:>4} {entry['ranks']:>5}  {entry['pipeline']:<16} "
        f"{entry['subexperiments']:>6} {entry['first_query_seconds']:>8.4f} "
        f"{m['execute']:>9.5f} {m['reconstruct']:>9.6f} {m['reduce'] + m['wait']:>11.6f} "
        f"{entry['steady_query_seconds_median']:>9.5f} "
        f"{100 * entry['steady_reconstruct_share_median']:>7.2f}% {peak:>8}"
    )


def format_speedups(report: dict) -> str:
    """The speed-ups against the reference, after the table the rows printed as they came."""
    speedups = [e for e in report["results"] if "speedup_vs_reference" in e]
    if not speedups:
        return ""
    lines = ["", "speed-up per parameter row vs the addon reference at the same shots (hpcqnn: steady-state median):"]
    for e in speedups:
        lines.append(f"  qubits={e['qubits']} cuts={e['cuts']} {e['pipeline']:<16} {e['speedup_vs_reference']:>10.1f}x")
    return "\n".join(lines)
