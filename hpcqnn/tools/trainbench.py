"""``hpcqnn bench-trainable``: a QNN whose entanglers across the cut are trainable RZZ gates, one
query of many rows, against the same model with the angles bound (before trainable cuts, the
only way to cut it: one plan per distinct set of angles).

Pipelines, each timed per query of ``rows`` parameter rows (every row its own RZZ weights):

- ``trainable``: one plan, per-row kernels (``cutting.trainable``);
- ``bound per row``: each row's angles bound into the circuit, a plan and a 1-row query per row
  (what a training step cost before);
- ``bound, shared``: every row of every query with one set of angles bound, one plan (the
  fixed-cut floor: what the per-row kernels cost on top).

Exact values are compared with ``StatevectorEstimator``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from hpcqnn.training.circuits import cut_qnn

PIPELINES = ("trainable", "bound per row", "bound, shared")


def measure(
    qubits: int = 8,
    cuts: int = 3,
    rows: int = 64,
    queries: int = 3,
    modes: Sequence[str] = ("exact", "sampled"),
    shots: int = 1000,
    seed: int = 1234,
    progress: Callable[[str], None] = print,
) -> list[dict]:
    """One entry per (mode, pipeline): median seconds per query and, exact, the largest
    difference from StatevectorEstimator."""
    from qiskit.primitives import StatevectorEstimator

    from hpcqnn.estimator import DistributedEstimator

    qnn = cut_qnn(qubits, cuts, layers=max(cuts, 1), entangler="rzz")
    circuit, observable = qnn.circuit, qnn.observable
    order = {p: i for i, p in enumerate(circuit.parameters)}
    entanglers = [order[p] for p in qnn.weights[len(qnn.weights) - cuts :]]  # the RZZ weights come last
    rng = np.random.default_rng(seed)
    blocks = [rng.uniform(-np.pi, np.pi, (rows, circuit.num_parameters)) for _ in range(queries + 1)]
    exact = [StatevectorEstimator().run([(circuit, observable, block)]).result()[0].data.evs for block in blocks]

    def bound(row: np.ndarray):
        """The circuit with ``row``'s RZZ angles bound."""
        return circuit.assign_parameters({circuit.parameters[c]: row[c] for c in entanglers})

    def trainable(estimator, block: np.ndarray) -> np.ndarray:
        return estimator.run([(circuit, observable, block)]).result()[0].data.evs

    def per_row(estimator, block: np.ndarray) -> np.ndarray:
        rest = np.delete(block, entanglers, axis=1)
        return np.array([estimator.run([(bound(row), observable, free)]).result()[0].data.evs
                         for row, free in zip(block, rest)])

    fixed = bound(blocks[0][0])

    def shared(estimator, block: np.ndarray) -> np.ndarray:
        return estimator.run([(fixed, observable, np.delete(block, entanglers, axis=1))]).result()[0].data.evs

    progress(f"{'mode':<8} {'pipeline':<14} {'plans':>6} {'ms/query':>10} {'vs trainable':>13} {'max |dv|':>10}")
    results = []
    for mode in modes:
        mode_shots = shots if mode == "sampled" else None
        timings: dict[str, float] = {}
        for name, pipeline in zip(PIPELINES, (trainable, per_row, shared)):
            estimator = DistributedEstimator(qnn.partition_labels, shots=mode_shots, seed=seed, device="CPU", threads=1)
            pipeline(estimator, blocks[0])  # warm-up (the trainable and shared plans are built here)
            seconds, difference = [], 0.0
            for block, reference in zip(blocks[1:], exact[1:]):
                start = time.perf_counter()
                values = pipeline(estimator, block)
                seconds.append(time.perf_counter() - start)
                difference = max(difference, float(np.max(np.abs(values - reference))))
            timings[name] = statistics.median(seconds)
            compared = mode == "exact" and name != "bound, shared"  # shared rows are another circuit
            entry = {
                "mode": mode, "pipeline": name, "plans": len(estimator._programs), "rows": rows,
                "seconds_per_query": timings[name], "ratio_to_trainable": timings[name] / timings["trainable"],
                "max_abs_difference": difference if compared else None,
            }
            results.append(entry)
            shown = f"{difference:.1e}" if compared else "-"
            progress(
                f"{mode:<8} {name:<14} {entry['plans']:>6} {1e3 * timings[name]:>10.1f} "
                f"{entry['ratio_to_trainable']:>12.2f}x {shown:>10}"
            )
    return results
