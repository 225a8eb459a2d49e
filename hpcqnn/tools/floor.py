"""How close cut execution comes to the uncut simulation's floor, side by side in one run.

For each width, cut count and row count, ``queries`` queries of the QNN (``cut_qnn``, two halves)
with the same random parameter rows go through five pipelines in turn:

- ``cut``: hpcqnn in exact mode, cut (coherent subexperiments, the default);
- ``cut enumerated``: the same with ``coherent=False`` (one Aer experiment per subexperiment and
  row, hpcqnn's execution before coherent circuits);
- ``uncut``: hpcqnn with cutting off (one partition);
- ``aer``: Qiskit Aer's ``EstimatorV2`` on the uncut circuit, precision 0 (exact) — the floor;
- ``statevector``: Qiskit's ``StatevectorEstimator`` on the uncut circuit.

Reported: the median seconds per query (the first query of each pipeline, which builds plans
and compiles, is not timed), its ratio to ``aer``, and the largest difference of any pipeline's
values from ``statevector``'s. Every pipeline runs with ``threads`` Aer threads; one process.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from hpcqnn.tools.bench import bench_models

PIPELINES = ("cut", "cut enumerated", "uncut", "aer", "statevector")


def _pipelines(model, threads: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    from qiskit.primitives import StatevectorEstimator
    from qiskit_aer.primitives import EstimatorV2

    from hpcqnn.estimator import DistributedEstimator

    def run_with(estimator) -> Callable[[np.ndarray], np.ndarray]:
        return lambda rows: np.asarray(estimator.run([(model.circuit, model.observable, rows)]).result()[0].data.evs)

    def hpcqnn(**options) -> Callable[[np.ndarray], np.ndarray]:
        return run_with(DistributedEstimator(device="CPU", threads=threads, **options))

    aer = EstimatorV2(options={"default_precision": 0.0, "backend_options": {"max_parallel_threads": threads}})
    return {
        "cut": hpcqnn(partition_labels=model.partition_labels),
        "cut enumerated": hpcqnn(partition_labels=model.partition_labels, coherent=False),
        "uncut": hpcqnn(),
        "aer": run_with(aer),
        "statevector": run_with(StatevectorEstimator()),
    }


def measure(
    qubits: Sequence[int] = (4, 8, 12),
    cuts: Sequence[int] = (1, 2, 3),
    rows: Sequence[int] = (1, 64),
    queries: int = 5,
    threads: int = 1,
    seed: int = 1234,
    progress: Callable[[str], None] = print,
) -> list[dict]:
    """One entry per (qubits, cuts, rows): median seconds per query of every pipeline, ratios to
    ``aer``, and the largest value difference from ``statevector``."""
    results = []
    for setting, model in bench_models(qubits, cuts, None, layers=3):  # each cut follows its own layer
        n, c = setting["qubits"], setting["cuts"]
        pipelines = _pipelines(model, threads)
        for count in rows:
            stream = np.random.default_rng([seed, n, c, count])
            blocks = stream.uniform(-np.pi, np.pi, (queries + 1, count, model.circuit.num_parameters))
            seconds: dict[str, list[float]] = {name: [] for name in PIPELINES}
            values: dict[str, list[np.ndarray]] = {name: [] for name in PIPELINES}
            for k, block in enumerate(blocks):
                for name in PIPELINES:  # in turn, so a busy moment of the host hits them alike
                    start = time.perf_counter()
                    out = pipelines[name](block)
                    if k:
                        seconds[name].append(time.perf_counter() - start)
                    values[name].append(out)
            reference = np.concatenate(values["statevector"])
            entry: dict = {"qubits": n, "cuts": c, "rows": count, "queries": queries, "threads": threads}
            for name in PIPELINES:
                entry[f"{name} s"] = statistics.median(seconds[name])
            for name in PIPELINES:
                entry[f"{name} / aer"] = entry[f"{name} s"] / entry["aer s"]
            entry["max |difference|"] = max(
                float(np.max(np.abs(np.concatenate(values[name]) - reference))) for name in PIPELINES
            )
            results.append(entry)
            progress(format_row(entry))
    return results


HEADER = (
    f"{'qubits':>6} {'cuts':>4} {'rows':>4} "
    + " ".join(f"{name + ' ms':>19}" for name in PIPELINES)
    + f" {'cut/aer':>8} {'enum/aer':>8} {'uncut/aer':>9} {'max|diff|':>9}"
)


def format_row(entry: dict) -> str:
    return (
        f"{entry['qubits']:>6} {entry['cuts']:>4} {entry['rows']:>4} "
        + " ".join(f"{1e3 * entry[name + ' s']:>19.2f}" for name in PIPELINES)
        + f" {entry['cut / aer']:>8.2f} {entry['cut enumerated / aer']:>8.2f} {entry['uncut / aer']:>9.2f}"
        + f" {entry['max |difference|']:>9.1e}"
    )
