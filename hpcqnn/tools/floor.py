"""How close cut execution comes to the uncut simulation's floor, side by side in one run.

For each width, cut count and row count, ``queries`` queries of the QNN (``cut_qnn``, two halves)
with the same random parameter rows go through the pipelines of each mode in turn.

Exact mode (``EXACT``):

- ``cut``: hpcqnn in exact mode, cut (coherent subexperiments, the default);
- ``cut enumerated``: the same with ``coherent=False`` (one Aer experiment per subexperiment and
  row, hpcqnn's execution before coherent circuits);
- ``uncut``: hpcqnn with cutting off (one partition);
- ``aer``: Qiskit Aer's ``EstimatorV2`` on the uncut circuit, precision 0 (exact) — the floor;
- ``statevector``: Qiskit's ``StatevectorEstimator`` on the uncut circuit.

Sampled mode (``SAMPLED``, ``shots`` per measurement setting and row):

- ``sampled``: hpcqnn cut, shots drawn from the coherent statevector (the default);
- ``sampled enumerated``: the same with ``coherent=False`` (one Aer experiment per setting,
  subexperiment and row, hpcqnn's sampling before coherent sampling);
- ``aer sampler``: Qiskit Aer's ``SamplerV2`` on the uncut circuit, ``shots`` per measurement
  setting and row, expectation values from its counts — the shot floor;
- ``cut``: hpcqnn's exact cut query again, what the sampled ones are compared with.

Reported: the median seconds per query (the first query of each pipeline, which builds plans
and compiles, is not timed), ratios (to ``aer`` in exact mode, to the exact ``cut`` query in
sampled mode), and the largest difference of any pipeline's values from ``statevector``'s
(sampled: the largest ``|value - exact| / std`` hpcqnn reported). Every pipeline runs with
``threads`` Aer threads; one process.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from hpcqnn.cutting.shots import popcount
from hpcqnn.tools.bench import bench_models

EXACT = ("cut", "cut enumerated", "uncut", "aer", "statevector")
SAMPLED = ("sampled", "sampled enumerated", "aer sampler", "cut")
PIPELINES = {"exact": EXACT, "sampled": SAMPLED}
Pipeline = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def _pipelines(model, threads: int, shots: int, seed: int) -> dict[str, Pipeline]:
    from qiskit.primitives import StatevectorEstimator
    from qiskit_aer.primitives import EstimatorV2

    from hpcqnn.estimator import DistributedEstimator

    def run_with(estimator) -> Pipeline:
        def run(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            data = estimator.run([(model.circuit, model.observable, rows)]).result()[0].data
            return np.asarray(data.evs), np.asarray(data.stds)

        return run

    def hpcqnn(**options) -> Pipeline:
        return run_with(DistributedEstimator(device="CPU", threads=threads, **options))

    aer = EstimatorV2(options={"default_precision": 0.0, "backend_options": {"max_parallel_threads": threads}})
    cut = model.partition_labels
    return {
        "cut": hpcqnn(partition_labels=cut),
        "cut enumerated": hpcqnn(partition_labels=cut, coherent=False),
        "uncut": hpcqnn(),
        "aer": run_with(aer),
        "statevector": run_with(StatevectorEstimator()),
        "sampled": hpcqnn(partition_labels=cut, shots=shots, seed=seed),
        "sampled enumerated": hpcqnn(partition_labels=cut, shots=shots, seed=seed, coherent=False),
        "aer sampler": _aer_sampler(model, threads, shots, seed),
    }


def _aer_sampler(model, threads: int, shots: int, seed: int) -> Pipeline:
    """Aer's SamplerV2 on the uncut circuit: per qubit-wise commuting group of the observable, the
    circuit rotated into the group's basis and measured, ``shots`` per row; values from the counts."""
    from qiskit_aer.primitives import SamplerV2

    sampler = SamplerV2(default_shots=shots, seed=seed, options={"backend_options": {"max_parallel_threads": threads}})
    groups = []
    for group in model.observable.group_commuting(qubit_wise=True):
        circuit = model.circuit.copy()
        basis = np.logical_or.reduce(group.paulis.x), np.logical_or.reduce(group.paulis.z)
        for q, (x, z) in enumerate(zip(*basis)):
            if x and z:
                circuit.sdg(q)
            if x:
                circuit.h(q)
        circuit.measure_all()
        masks = [int(sum(1 << q for q in range(len(basis[0])) if p.x[q] or p.z[q])) for p in group.paulis]
        groups.append((circuit, np.array(masks), np.real(group.coeffs)))

    def run(rows: np.ndarray) -> tuple[np.ndarray, None]:
        values = np.zeros(len(rows))
        results = sampler.run([(circuit, rows) for circuit, _, _ in groups]).result()
        for (_, masks, coeffs), result in zip(groups, results):
            for r, counts in enumerate(result.data.meas.get_int_counts(loc) for loc in range(len(rows))):
                outcomes = np.array(list(counts.keys()))
                frequency = np.array(list(counts.values())) / shots
                parity = popcount(outcomes[:, None] & masks[None, :]) & 1
                values[r] += frequency @ (1.0 - 2.0 * parity) @ coeffs
        return values, None

    return run


def measure(
    qubits: Sequence[int] = (4, 8, 12),
    cuts: Sequence[int] = (1, 2, 3),
    rows: Sequence[int] = (1, 64),
    queries: int = 5,
    threads: int = 1,
    seed: int = 1234,
    progress: Callable[[str], None] = print,
    modes: Sequence[str] = ("exact",),
    shots: int = 1000,
) -> list[dict]:
    """One entry per (qubits, cuts, rows, mode): median seconds per query of every pipeline of
    the mode, their ratios, and how far the values are from ``statevector``'s. Each table's
    header goes to ``progress`` before its first row."""
    unknown = [m for m in modes if m not in PIPELINES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; choose from {list(PIPELINES)}")
    results: list[dict] = []
    for mode, (setting, model) in itertools.product(modes, bench_models(qubits, cuts, None, layers=3)):
        n, c = setting["qubits"], setting["cuts"]  # each cut follows its own layer
        names = PIPELINES[mode]
        pipelines = _pipelines(model, threads, shots, seed)
        for count in rows:
            stream = np.random.default_rng([seed, n, c, count])
            blocks = stream.uniform(-np.pi, np.pi, (queries + 1, count, model.circuit.num_parameters))
            seconds, values = _timed(pipelines, names, blocks)
            # the exact values: the timed statevector pipeline's where it ran (exact mode)
            exact = values["statevector"] if "statevector" in names else [pipelines["statevector"](b) for b in blocks]
            reference = np.concatenate([v for v, _ in exact])
            entry: dict = {"mode": mode, "qubits": n, "cuts": c, "rows": count, "queries": queries}
            entry.update({"threads": threads, "shots": shots if mode == "sampled" else None})
            base = "aer" if mode == "exact" else "cut"
            for name in names:
                entry[f"{name} s"] = statistics.median(seconds[name])
            for name in names:
                entry[f"{name} / {base}"] = entry[f"{name} s"] / entry[f"{base} s"]
            if mode == "exact":
                entry["max |difference|"] = max(
                    float(np.max(np.abs(np.concatenate([v for v, _ in values[name]]) - reference)))
                    for name in names
                )
            else:
                entry["max |z|"] = max(_largest_z(values[name], reference) for name in SAMPLED[:2])
            if not results or results[-1]["mode"] != mode:
                progress(HEADERS[mode])
            results.append(entry)
            progress(format_row(entry))
    return results


def _timed(pipelines: dict[str, Pipeline], names: Sequence[str], blocks: np.ndarray) -> tuple[dict, dict]:
    """Seconds (but the first) and outputs of every query of every pipeline, taken in turn so
    that a busy moment of the host hits them alike."""
    seconds: dict[str, list[float]] = {name: [] for name in names}
    values: dict[str, list] = {name: [] for name in names}
    for k, block in enumerate(blocks):
        for name in names:
            start = time.perf_counter()
            out = pipelines[name](block)
            if k:
                seconds[name].append(time.perf_counter() - start)
            values[name].append(out)
    return seconds, values


def _largest_z(outputs: list, reference: np.ndarray) -> float:
    values = np.concatenate([v for v, _ in outputs])
    stds = np.concatenate([s for _, s in outputs])
    spread = stds > 0  # a value with no shot noise (e.g. a constant observable) has no z-score
    return float(np.max(np.abs(values - reference)[spread] / stds[spread], initial=0.0))


HEADERS = {
    "exact": (
        f"{'qubits':>6} {'cuts':>4} {'rows':>4} "
        + " ".join(f"{name + ' ms':>19}" for name in EXACT)
        + f" {'cut/aer':>8} {'enum/aer':>8} {'uncut/aer':>9} {'max|diff|':>9}"
    ),
    "sampled": (
        f"{'qubits':>6} {'cuts':>4} {'rows':>4} {'shots':>5} "
        + " ".join(f"{name + ' ms':>22}" for name in SAMPLED)
        + f" {'sampled/cut':>11} {'enum/cut':>8} {'sampler/cut':>11} {'max|z|':>6}"
    ),
}


def format_row(entry: dict) -> str:
    head = f"{entry['qubits']:>6} {entry['cuts']:>4} {entry['rows']:>4} "
    if entry["mode"] == "exact":
        return (
            head
            + " ".join(f"{1e3 * entry[name + ' s']:>19.2f}" for name in EXACT)
            + f" {entry['cut / aer']:>8.2f} {entry['cut enumerated / aer']:>8.2f} {entry['uncut / aer']:>9.2f}"
            + f" {entry['max |difference|']:>9.1e}"
        )
    return (
        head
        + f"{entry['shots']:>5} "
        + " ".join(f"{1e3 * entry[name + ' s']:>22.2f}" for name in SAMPLED)
        + f" {entry['sampled / cut']:>11.2f} {entry['sampled enumerated / cut']:>8.2f}"
        + f" {entry['aer sampler / cut']:>11.2f} {entry['max |z|']:>6.2f}"
    )
