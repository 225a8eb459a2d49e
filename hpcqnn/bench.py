"""Per-query phase timings of hpcqnn beside the addon's own pipeline, in one run.

For each cut count the benchmark times ``queries`` estimator queries of the two-half QNN
(``hpcqnn.circuits.cut_qnn``) in exact and sampled mode, and ``reference_queries`` queries of the
naive pipeline (partition, generate, sample, reconstruct redone every query). Every query draws
fresh random parameters from one seeded stream, so all pipelines see the same rows.
"""

from __future__ import annotations

import platform
import time

import numpy as np

from . import __version__
from .circuits import cut_qnn
from .estimator import DistributedEstimator
from .timing import PHASES

BENCH_PHASES = PHASES[:4]  # partition, generate, execute, reconstruct


def _summary(per_query: list[dict[str, float]], extra: dict) -> dict:
    totals = [sum(q.values()) for q in per_query]
    mean = {ph: float(np.mean([q.get(ph, 0.0) for q in per_query])) for ph in BENCH_PHASES}
    total = float(np.mean(totals))
    return {
        "queries": len(per_query),
        "phase_seconds_mean": mean,
        "query_seconds_mean": total,
        "query_seconds_median": float(np.median(totals)),
        "reconstruct_share": mean["reconstruct"] / total if total else 0.0,
        "setup_share": (mean["partition"] + mean["generate"]) / total if total else 0.0,
        **extra,
    }


def bench_hpcqnn(model, rows: np.ndarray, shots: int | None, seed: int, device: str) -> dict:
    """Time one estimator over every row block in ``rows`` ([queries, rows, parameters])."""
    estimator = DistributedEstimator(partition_labels=model.partition_labels, shots=shots, seed=seed, device=device)
    per_query = []
    for q, block in enumerate(rows):
        result = estimator.run([(model.circuit, model.observable, block)]).result()[0]
        per_query.append(estimator.recorder.seconds(q))
    meta = result.metadata
    return _summary(
        per_query,
        {
            "pipeline": "hpcqnn " + ("exact" if shots is None else "sampled"),
            "shots": shots,
            "subexperiments": meta["num_subexperiments"],
            "circuits": meta["num_circuits"],
            "device": meta["device"],
            "last_value": float(np.ravel(result.data.evs)[-1]),
        },
    )


def bench_reference(model, rows: np.ndarray, shots: int, seed: int) -> dict:
    """Time the addon pipeline, one parameter row per query (it handles one at a time)."""
    from .reference import reference_query

    per_query, value = [], None
    for block in rows:
        for row in block:
            value, phases = reference_query(
                model.circuit, model.partition_labels, model.observable, row, shots, seed
            )
            per_query.append(phases)
    return _summary(per_query, {"pipeline": "addon reference", "shots": shots, "last_value": value})


def run_bench(
    qubits: int = 8,
    cuts: list[int] = (1, 2, 3),
    shots: int = 10_000,
    queries: int = 20,
    rows: int = 1,
    layers: int = 3,
    reference_queries: int = 1,
    seed: int = 1234,
    device: str = "auto",
    progress=print,
) -> dict:
    """Benchmark every cut count; returns a JSON-ready report."""
    report = {
        "hpcqnn_version": __version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"node": platform.node(), "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "settings": {"qubits": qubits, "cuts": list(cuts), "shots": shots, "queries": queries, "rows": rows, "layers": layers, "reference_queries": reference_queries, "seed": seed},
        "results": [],
    }
    for c in cuts:
        model = cut_qnn(qubits, c, layers=max(layers, c))
        stream = np.random.default_rng(seed + c)
        params = stream.uniform(-np.pi, np.pi, (queries, rows, model.circuit.num_parameters))
        entries = [
            bench_hpcqnn(model, params, None, seed, device),
            bench_hpcqnn(model, params, shots, seed, device),
        ]
        if reference_queries:
            entries.append(bench_reference(model, params[:reference_queries, :1], shots, seed))
        for entry in entries:
            entry["cuts"] = c
            progress(_row(entry))
        reference = entries[-1] if reference_queries else None
        for entry in entries[:2]:
            if reference:
                per_row = entry["query_seconds_mean"] / rows
                entry["speedup_vs_reference"] = reference["query_seconds_mean"] / per_row
        report["results"].extend(entries)
    return report


HEADER = (
    f"{'cuts':>4}  {'pipeline':<16} {'partition':>10} {'generate':>10} {'execute':>10} "
    f"{'reconstruct':>11} {'query s':>9} {'recon %':>8} {'setup %':>8}"
)


def _row(entry: dict) -> str:
    m = entry["phase_seconds_mean"]
    return (
        f"{entry['cuts']:>4}  {entry['pipeline']:<16} {m['partition']:>10.4f} {m['generate']:>10.4f} "
        f"{m['execute']:>10.4f} {m['reconstruct']:>11.5f} {entry['query_seconds_mean']:>9.4f} "
        f"{100 * entry['reconstruct_share']:>7.2f}% {100 * entry['setup_share']:>7.2f}%"
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
