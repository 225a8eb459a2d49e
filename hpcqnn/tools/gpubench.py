"""CPU against GPU in one run: subexperiment execution and reconstruction, side by side.

``python -m hpcqnn.tools.gpubench [--queries 5] [--rows 8] [--large-qubits 24] [--large-pieces 2]``

Two cases: the paper's 8-qubit, 3-cut query and a larger one (``--large-qubits`` in 2 or 3
pieces). Execution: exact-mode estimator queries in this process on the CPU (Aer + NumPy) and
on the GPU (Aer GPU + CuPy), same parameter rows, after one untimed warm-up query each (plan
building, CUDA start-up); per-query medians of the execute phase and the whole query, their
ratio, and the largest difference between the two devices' values. Reconstruction: the
rank-0 step (``engine.finish_query``: estimates to the device, contraction, values back) on
synthetic estimates with NumPy and with CuPy, for several row counts. Without a usable GPU the
CPU side runs and the report says why the GPU side was skipped; where CuPy sees a GPU but Aer
cannot use it, the reconstruction comparison still runs on that GPU. MPI scaling on GPUs is
``hpcqnn bench --device GPU`` under mpiexec/srun.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
from qiskit.quantum_info import PauliList

from hpcqnn.cutting.plan import build_cut_plan
from hpcqnn.cutting.program import Program, build_program
from hpcqnn.errors import HpcqnnError
from hpcqnn.estimator import DistributedEstimator
from hpcqnn.execution import devices
from hpcqnn.execution.compiled import compile_program
from hpcqnn.execution.devices import GPUProbe, Placement, array_module, gpu_for_rank, place
from hpcqnn.execution.engine import LocalEngine, finish_query
from hpcqnn.execution.query import Query, QueryBuffers
from hpcqnn.execution.simulator import AerRunner
from hpcqnn.run import launcher
from hpcqnn.run.runinfo import provenance, write_report
from hpcqnn.tools.gpucheck import cupy_error
from hpcqnn.training.circuits import CutQNN, cut_qnn


@dataclass(frozen=True)
class Case:
    name: str
    qnn: CutQNN
    labels: str


def cases(large_qubits: int, large_pieces: int) -> list[Case]:
    """The 8-qubit 3-cut query, and ``large_qubits`` in 2 pieces (2 cuts across the halves) or
    3 pieces (thirds: one CX of the ladder crosses each boundary, 2 cuts)."""
    small = cut_qnn(8, 3)
    if large_pieces == 2:
        large = cut_qnn(large_qubits, 2)
        labels = large.partition_labels
    else:
        large = cut_qnn(large_qubits, 1, layers=1)
        labels = "".join("ABC"[3 * q // large_qubits] for q in range(large_qubits))
    return [
        Case("8q 3 cuts", small, small.partition_labels),
        Case(f"{large_qubits}q {large_pieces} pieces", large, labels),
    ]


def time_queries(estimator: DistributedEstimator, case: Case, params: np.ndarray) -> dict:
    """Median seconds per query (whole, execute, reconstruct) over ``params[1:]``; ``params[0]``
    is the warm-up. Also every query's values, for comparing devices."""
    walls, phases, values = [], [], []
    for k, block in enumerate(params):
        start = time.perf_counter()
        result = estimator.run([(case.qnn.circuit, case.qnn.observable, block)]).result()[0]
        if k:
            walls.append(time.perf_counter() - start)
            phases.append(result.metadata["phases"])
        values.append(np.asarray(result.data.evs))
    return {
        "query_s": statistics.median(walls),
        "execute_s": statistics.median(p.get("execute", 0.0) for p in phases),
        "reconstruct_s": statistics.median(p.get("reconstruct", 0.0) for p in phases),
        "subexperiments": result.metadata["num_subexperiments"],
        "num_cuts": result.metadata["num_cuts"],
        "partitions": result.metadata["num_partitions"],
        "values": np.stack(values),
    }


def exact_program(case: Case) -> Program:
    """The case's cut plan and exact-mode program, as the estimator builds them."""
    plan = build_cut_plan(case.qnn.circuit, PauliList(case.qnn.observable.paulis), partition_labels=case.labels)
    return build_program(plan, sampled=False)


def time_reconstruction(
    program: Program, rows: int, xp: ModuleType, repeats: int, seed: int
) -> tuple[float, np.ndarray]:
    """Median seconds of ``finish_query`` with ``xp`` on synthetic estimates (after one warm-up), and its values."""
    plan = program.plan
    rng = np.random.default_rng(seed)
    params = rng.uniform(-np.pi, np.pi, (rows, len(plan.parameters)))
    compiled = compile_program(program)
    query = Query(0, compiled, params, weights=np.ones((len(plan.paulis), 1)))
    buffers = QueryBuffers(compiled, query.rows)
    buffers.flat[:] = rng.uniform(-1.0, 1.0, buffers.flat.shape)
    values, _ = finish_query(query, buffers, xp)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        finish_query(query, buffers, xp)  # ends with a copy to the host: synchronised
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), values


def reconstruction_placement(
    placement: Placement, probe: GPUProbe, local_rank: int
) -> tuple[Placement | None, str | None]:
    """Where the CuPy side of the reconstruction comparison runs, or why it cannot: it needs
    only CuPy, so it also runs on a GPU that Aer's build cannot use."""
    if placement.gpu is not None:
        return placement, None
    if not probe.cuda_devices:
        return None, probe.problem
    gpu = gpu_for_rank(local_rank, probe.cuda_devices)
    problem = cupy_error(gpu)
    return (None, problem) if problem else (Placement(gpu), None)


def ratio(cpu: float, gpu: float | None) -> float | None:
    return None if gpu is None or gpu <= 0 else cpu / gpu


def run(
    queries: int = 5,
    rows: int = 8,
    large_qubits: int = 24,
    large_pieces: int = 2,
    reconstruction_rows: tuple[int, ...] = (64, 1024, 16384),
    repeats: int = 5,
    threads: int = 0,
    seed: int = 1234,
    aer_options: dict[str, object] | None = None,
) -> dict:
    """The JSON-ready report: ``gpu`` is the GPU Aer ran on (None when none did, ``gpu_skipped``
    says why); ``cupy_gpu`` the GPU of the CuPy reconstruction (None: ``cupy_skipped`` says why)."""
    AerRunner("CPU", threads, aer_options)  # unknown option names fail here, before any timing
    local_rank = launcher.local_rank()
    probe = devices.probe_gpus()
    placement = place("auto", local_rank, probe)
    gpu = placement.gpu is not None
    cupy_placement, cupy_skipped = reconstruction_placement(placement, probe, local_rank)
    report = {
        **provenance(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "gpu": placement.label if gpu else None,
        "gpu_skipped": placement.note or None,
        "cupy_gpu": None if cupy_placement is None else cupy_placement.label,
        "cupy_skipped": cupy_skipped,
        "settings": {
            "queries": queries, "rows": rows, "large_qubits": large_qubits, "large_pieces": large_pieces,
            "reconstruction_rows": list(reconstruction_rows), "repeats": repeats, "threads": threads,
            "seed": seed, "aer_options": aer_options or {},
        },
        "execution": [],
        "reconstruction": [],
    }
    sides = [("CPU", Placement())] + ([("GPU", placement)] if gpu else [])
    for case in cases(large_qubits, large_pieces):
        params = np.random.default_rng(seed).uniform(
            -np.pi, np.pi, (queries + 1, rows, case.qnn.circuit.num_parameters)
        )
        timed: dict[str, dict] = {}
        for name, where in sides:
            engine = LocalEngine(
                AerRunner(where, threads, aer_options if where.gpu is not None else None), array_module(where)
            )
            timed[name] = time_queries(DistributedEstimator(partition_labels=case.labels, engine=engine), case, params)
        cpu, on_gpu = timed["CPU"], timed.get("GPU")
        report["execution"].append({
            "case": case.name, "qubits": case.qnn.num_qubits, "partitions": cpu["partitions"],
            "cuts": cpu["num_cuts"], "subexperiments": cpu["subexperiments"], "rows": rows,
            **{f"cpu_{k}": cpu[k] for k in ("query_s", "execute_s", "reconstruct_s")},
            **{f"gpu_{k}": on_gpu and on_gpu[k] for k in ("query_s", "execute_s", "reconstruct_s")},
            "execute_cpu_over_gpu": ratio(cpu["execute_s"], None if on_gpu is None else on_gpu["execute_s"]),
            "query_cpu_over_gpu": ratio(cpu["query_s"], None if on_gpu is None else on_gpu["query_s"]),
            "max_abs_difference": on_gpu and float(np.abs(on_gpu["values"] - cpu["values"]).max()),
        })
        program = exact_program(case)
        for count in reconstruction_rows:
            numpy_s, numpy_values = time_reconstruction(program, count, np, repeats, seed)
            cupy_s = difference = None
            if cupy_placement is not None:
                cupy_s, cupy_values = time_reconstruction(program, count, array_module(cupy_placement), repeats, seed)
                difference = float(np.abs(cupy_values - numpy_values).max())
            report["reconstruction"].append({
                "case": case.name, "rows": count, "numpy_s": numpy_s, "cupy_s": cupy_s,
                "numpy_over_cupy": ratio(numpy_s, cupy_s), "max_abs_difference": difference,
            })
    return report


def _cell(value: float | None, spec: str, width: int) -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"


def format_report(report: dict) -> str:
    lines = [
        f"GPU (Aer): {report['gpu'] or 'none'}; GPU (CuPy): {report['cupy_gpu'] or 'none'}",
        "",
        f"execution: exact mode, {report['settings']['queries']} queries of {report['settings']['rows']} rows, "
        "median seconds per query (execute = Aer, query = everything)",
        f"{'case':<18} {'parts':>5} {'cuts':>4} {'subexp':>6} {'CPU exec':>10} {'GPU exec':>10} {'CPU/GPU':>8} "
        f"{'CPU query':>10} {'GPU query':>10} {'CPU/GPU':>8} {'max|GPU-CPU|':>13}",
    ]
    for e in report["execution"]:
        lines.append(
            f"{e['case']:<18} {e['partitions']:>5} {e['cuts']:>4} {e['subexperiments']:>6} "
            f"{_cell(e['cpu_execute_s'], '.4f', 10)} {_cell(e['gpu_execute_s'], '.4f', 10)} "
            f"{_cell(e['execute_cpu_over_gpu'], '.2f', 8)} {_cell(e['cpu_query_s'], '.4f', 10)} "
            f"{_cell(e['gpu_query_s'], '.4f', 10)} {_cell(e['query_cpu_over_gpu'], '.2f', 8)} "
            f"{_cell(e['max_abs_difference'], '.1e', 13)}"
        )
    lines += [
        "",
        "reconstruction: engine.finish_query (to device, contraction, back), "
        f"median of {report['settings']['repeats']}",
        f"{'case':<18} {'rows':>7} {'NumPy s':>10} {'CuPy s':>10} {'NumPy/CuPy':>10} {'max|CuPy-NumPy|':>16}",
    ]
    for r in report["reconstruction"]:
        lines.append(
            f"{r['case']:<18} {r['rows']:>7} {_cell(r['numpy_s'], '.5f', 10)} {_cell(r['cupy_s'], '.5f', 10)} "
            f"{_cell(r['numpy_over_cupy'], '.2f', 10)} {_cell(r['max_abs_difference'], '.1e', 16)}"
        )
    if report["gpu_skipped"] and report["cupy_skipped"]:
        reasons = dict.fromkeys((report["gpu_skipped"], report["cupy_skipped"]))  # one reason said once
        lines += ["", f"GPU side skipped: {'; '.join(reasons)}. Only the CPU side ran."]
    elif report["gpu_skipped"]:
        lines += [
            "",
            f"GPU execution skipped: {report['gpu_skipped']}. Reconstruction ran with CuPy on {report['cupy_gpu']}.",
        ]
    return "\n".join(lines)


def _positive_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 64,1024; got {text!r}")
    return values


def _aer_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. cuStateVec_enable=true), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpcqnn.tools.gpubench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=5, help="timed queries per case and device (default 5)")
    parser.add_argument("--rows", type=int, default=8, help="parameter rows per query (default 8)")
    parser.add_argument("--large-qubits", type=int, default=24, choices=range(16, 25), metavar="16..24",
                        help="width of the larger case (default 24)")
    parser.add_argument(
        "--large-pieces", type=int, default=2, choices=(2, 3), help="pieces of the larger case (default 2)"
    )
    parser.add_argument("--reconstruction-rows", type=_positive_list, default=(64, 1024, 16384),
                        help="row counts of the reconstruction comparison (default 64,1024,16384)")
    parser.add_argument("--repeats", type=int, default=5, help="timed reconstructions per setting (default 5)")
    parser.add_argument("--threads", type=int, default=0, help="Aer CPU threads (default 0: all cores)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--aer-option", type=_aer_option, action="append", default=[], metavar="KEY=VALUE",
                        help="extra Aer option for the GPU runs, e.g. cuStateVec_enable=true (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    for name in ("queries", "rows", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    try:
        report = run(
            args.queries, args.rows, args.large_qubits, args.large_pieces, args.reconstruction_rows,
            args.repeats, args.threads, args.seed, dict(args.aer_option),
        )
    except HpcqnnError as exc:
        print(f"hpcqnn.tools.gpubench: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
