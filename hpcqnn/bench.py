"""Per-query phase timings of hpcqnn beside the addon's own pipeline, in one run.

For each cut count the benchmark times ``queries`` estimator queries of the two-half QNN
(``hpcqnn.circuits.cut_qnn``) in exact and/or sampled mode, on every rank of the MPI world
(one rank when started alone), and ``reference_queries`` queries of the naive addon pipeline
(partition, generate, sample, reconstruct redone every query) on rank 0. Every query draws
fresh random parameters from one seeded stream, so all pipelines see the same rows. With
``out``, each (cuts, mode) setting is a run directory with per-rank HDF5 timing logs.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from . import __version__
from .circuits import cut_qnn
from .slurm import slurm_info
from .timing import PHASES


def _summary(per_query: list[dict[str, float]], walls: list[float], extra: dict) -> dict:
    mean = {ph: float(np.mean([q.get(ph, 0.0) for q in per_query])) for ph in PHASES}
    total = float(np.mean(walls))
    return {
        "queries": len(per_query),
        "phase_seconds_mean": mean,
        "query_seconds_mean": total,
        "query_seconds_median": float(np.median(walls)),
        "reconstruct_share": mean["reconstruct"] / total if total else 0.0,
        "setup_share": (mean["partition"] + mean["generate"]) / total if total else 0.0,
        "reduce_wait_share": (mean["reduce"] + mean["wait"]) / total if total else 0.0,
        **extra,
    }


def bench_hpcqnn(estimator, model, rows: np.ndarray) -> dict:
    """Time ``estimator`` over every row block in ``rows`` ([queries, rows, parameters])."""
    per_query, walls = [], []
    for block in rows:
        start = time.perf_counter()
        result = estimator.run([(model.circuit, model.observable, block)]).result()[0]
        walls.append(time.perf_counter() - start)
        per_query.append(estimator.recorder.seconds(result.metadata["query"]))
    meta = result.metadata
    return _summary(
        per_query,
        walls,
        {
            "pipeline": "hpcqnn " + ("exact" if estimator.shots is None else "sampled"),
            "shots": estimator.shots,
            "subexperiments": meta["num_subexperiments"],
            "circuits": meta["num_circuits"],
            "device": meta["device"],
            "last_value": float(np.ravel(result.data.evs)[-1]),
        },
    )


def bench_reference(model, rows: np.ndarray, shots: int, seed: int) -> dict:
    """Time the addon pipeline, one parameter row per query (it handles one at a time)."""
    from .reference import reference_query

    per_query, walls, value = [], [], None
    for block in rows:
        for row in block:
            start = time.perf_counter()
            value, phases = reference_query(model.circuit, model.partition_labels, model.observable, row, shots, seed)
            walls.append(time.perf_counter() - start)
            per_query.append(phases)
    return _summary(per_query, walls, {"pipeline": "addon reference", "shots": shots, "last_value": value})


def run_bench(
    qubits: int = 8,
    cuts: list[int] = (1, 2, 3),
    shots: int = 10_000,
    queries: int = 20,
    rows: int = 1,
    layers: int = 3,
    modes: tuple[str, ...] = ("exact", "sampled"),
    reference_queries: int = 1,
    seed: int = 1234,
    device: str = "auto",
    schedule: str = "static",
    straggler=None,
    out: Path | None = None,
    progress=print,
) -> dict | None:
    """Benchmark every cut count; a JSON-ready report on rank 0, ``None`` on other ranks."""
    from .distributed import mpi_estimator

    settings = {
        "qubits": qubits, "cuts": list(cuts), "shots": shots, "queries": queries, "rows": rows,
        "layers": layers, "modes": list(modes), "reference_queries": reference_queries, "seed": seed,
        "schedule": schedule, "straggler": None if straggler is None else straggler.__dict__,
    }
    report = {
        "hpcqnn_version": __version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"node": platform.node(), "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "settings": settings,
        "results": [],
    }
    is_root = True
    for c in cuts:
        model = cut_qnn(qubits, c, layers=max(layers, c))
        stream = np.random.default_rng(seed + c)
        params = stream.uniform(-np.pi, np.pi, (queries, rows, model.circuit.num_parameters))
        entries = []
        for mode in modes:
            run_dir = None if out is None else Path(out) / f"cuts{c}-{mode}"
            with mpi_estimator(
                partition_labels=model.partition_labels, shots=None if mode == "exact" else shots,
                seed=seed, device=device, schedule=schedule, straggler=straggler,
                timing_dir=run_dir, config_text=json.dumps({**settings, "cuts": c, "mode": mode}),
            ) as estimator:
                if estimator is None:
                    is_root = False
                    continue
                entry = bench_hpcqnn(estimator, model, params)
                entry.update(cuts=c, ranks=estimator.engine.size)
                entries.append(entry)
                progress(_row(entry))
                if run_dir is not None:
                    (run_dir / "results.json").write_text(
                        json.dumps({**entry, "settings": settings, "hpcqnn_version": __version__, "slurm": slurm_info()}, indent=2)
                    )
        if is_root and reference_queries:
            reference = bench_reference(model, params[:reference_queries, :1], shots, seed)
            reference.update(cuts=c, ranks=1)
            progress(_row(reference))
            for entry in entries:
                entry["speedup_vs_reference"] = reference["query_seconds_mean"] / (entry["query_seconds_mean"] / rows)
            entries.append(reference)
        report["results"].extend(entries)
    return report if is_root else None


HEADER = (
    f"{'cuts':>4} {'ranks':>5}  {'pipeline':<16} {'partition':>9} {'generate':>9} {'execute':>9} "
    f"{'reconstr.':>9} {'reduce+wait':>11} {'query s':>9} {'recon %':>8} {'setup %':>8}"
)


def _row(entry: dict) -> str:
    m = entry["phase_seconds_mean"]
    return (
        f"{entry['cuts']:>4} {entry['ranks']:>5}  {entry['pipeline']:<16} {m['partition']:>9.4f} {m['generate']:>9.4f} "
        f"{m['execute']:>9.4f} {m['reconstruct']:>9.5f} {m['reduce'] + m['wait']:>11.5f} "
        f"{entry['query_seconds_mean']:>9.4f} {100 * entry['reconstruct_share']:>7.2f}% {100 * entry['setup_share']:>7.2f}%"
    )


def format_report(report: dict) -> str:
    """The side-by-side table with speed-ups against the reference."""
    lines = [HEADER] + [_row(e) for e in report["results"]]
    speedups = [e for e in report["results"] if "speedup_vs_reference" in e]
    if speedups:
        lines.append("")
        lines.append("speed-up per parameter row vs the addon reference at the same shots:")
        for e in speedups:
            lines.append(f"  cuts={e['cuts']} {e['pipeline']:<16} {e['speedup_vs_reference']:>10.1f}x")
    return "\n".join(lines)
