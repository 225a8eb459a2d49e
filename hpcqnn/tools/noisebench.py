"""``hpcqnn bench-noise``: what noise costs per query, per method, on one cut QNN.

Pipelines, each timed per query of ``rows`` parameter rows after a warm-up query (which builds
the plan: for noise, transpiling every subexperiment once), side by side with the noiseless
query of the same mode:

- exact: noiseless (coherent statevectors), depolarizing and a fake device's noise (Aer's
  density-matrix method, readout errors applied to the exact distributions);
- sampled: the same three (shots drawn from those distributions), and the fake device on a
  sampler (``hpcqnn.samplers:aer_fake_device``: Aer's SamplerV2 simulating the noise shot by
  shot, mid-circuit measurements included, as the device would run the circuits).

Each line also gives the mean value over the rows, to show how far the noise moves it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from hpcqnn.training.circuits import cut_qnn

DEVICE = "FakeManilaV2"


def measure(
    qubits: int = 4,
    cuts: int = 3,
    rows: int = 16,
    queries: int = 3,
    modes: Sequence[str] = ("exact", "sampled"),
    shots: int = 1000,
    p1: float = 0.001,
    p2: float = 0.01,
    readout: float = 0.02,
    seed: int = 1234,
    progress: Callable[[str], None] = print,
) -> list[dict]:
    """One entry per (mode, noise): median seconds per query, its ratio to the noiseless query
    of the same mode, and the mean value over the rows."""
    from hpcqnn.estimator import DistributedEstimator
    from hpcqnn.noise import depolarizing_model

    qnn = cut_qnn(qubits, cuts, layers=max(cuts, 1), rotations="ry")
    rng = np.random.default_rng(seed)
    blocks = [rng.uniform(-np.pi, np.pi, (rows, qnn.circuit.num_parameters)) for _ in range(queries + 1)]
    depolarizing = f"depolarizing p1={p1:g} p2={p2:g} readout={readout:g}"
    noises: list[tuple[str, str, dict]] = [
        ("none", "statevector", {}),
        (depolarizing, "density matrix", {"noise_model": depolarizing_model(p1, p2, readout)}),
        (DEVICE, "density matrix", {"backend": DEVICE}),
    ]
    progress(
        f"{qubits} qubits, {cuts} cuts, {rows} rows per query, {queries} timed queries each (median)\n"
        f"{'mode':<8} {'noise':<38} {'method':<26} {'ms/query':>10} {'vs noiseless':>13} {'mean value':>11}"
    )
    results = []
    for mode in modes:
        mode_shots = shots if mode == "sampled" else None
        runs = noises + ([(DEVICE, "sampler (trajectories)", {"backend": DEVICE,
                                                             "sampler": "hpcqnn.samplers:aer_fake_device"})]
                         if mode == "sampled" else [])
        noiseless = None
        for name, method, options in runs:
            estimator = DistributedEstimator(
                qnn.partition_labels, shots=mode_shots, seed=seed, device="CPU", threads=1, **options
            )
            start = time.perf_counter()
            estimator.run([(qnn.circuit, qnn.observable, blocks[0])]).result()
            first = time.perf_counter() - start
            seconds, means = [], []
            for block in blocks[1:]:
                start = time.perf_counter()
                values = estimator.run([(qnn.circuit, qnn.observable, block)]).result()[0].data.evs
                seconds.append(time.perf_counter() - start)
                means.append(float(np.mean(values)))
            median = statistics.median(seconds)
            noiseless = noiseless or median
            entry = {
                "mode": mode, "noise": name, "method": method, "rows": rows, "seconds_first_query": first,
                "seconds_per_query": median, "ratio_to_noiseless": median / noiseless,
                "mean_value": float(np.mean(means)),
            }
            results.append(entry)
            progress(
                f"{mode:<8} {name:<38} {method:<26} {1e3 * median:>10.1f} {entry['ratio_to_noiseless']:>12.1f}x "
                f"{entry['mean_value']:>11.4f}"
            )
    return results
