"""``hpcqnn bench-noise-width``: a mirrored QNN cut and uncut under one device's noise as the
width grows.

The model is ``cut_qnn(width, cuts, layers=2 * cuts, identity_blocks=True)`` at its identity
initialisation with zero inputs: every layer is undone by its mirror, so the ideal value of the
global parity <Z...Z> is 1 and what a noisy estimate keeps of it measures the noise. Cut: two
pieces of width / 2 qubits, each transpiled for the device and laid out on it by itself, exact
noisy values (density matrices). Uncut: the whole circuit on the device, exact where its density
matrix fits (``options.MAX_DENSITY_QUBITS``), else sampled on Aer's SamplerV2 simulating the
device's noise shot by shot (``hpcqnn.samplers:aer_fake_device``), with its standard error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from hpcqnn.training.circuits import cut_qnn


def mirrored_row(qnn, seed: int) -> np.ndarray:
    """The parameter row of the identity: zero inputs, ``identity_blocks`` weights."""
    weights = qnn.initial_weights(np.random.default_rng(seed), "identity_blocks")
    values = {**dict.fromkeys(qnn.inputs, 0.0), **dict(zip(qnn.weights, weights))}
    return np.array([values[p] for p in qnn.circuit.parameters])


def measure(
    widths: Sequence[int] = (4, 6, 8, 10, 12, 14, 16),
    backend: str = "FakeKolkataV2",
    cuts: int = 1,
    shots: int = 4000,
    seed: int = 1234,
    progress: Callable[[str], None] = print,
) -> list[dict]:
    """One entry per width: the cut and uncut values of <Z...Z> (ideal 1), how each was
    computed, and the seconds each took (plan and transpilation included)."""
    from hpcqnn.errors import ExecutionConfigError
    from hpcqnn.estimator import DistributedEstimator

    os.environ["HPCQNN_BACKEND"] = backend  # the sampler factory's device
    progress(f"mirrored QNN, ideal <Z...Z> = 1, on {backend}'s noise; cut: 2 pieces, {cuts} cut(s)")
    progress(f"{'qubits':>6} {'cut':>8} {'s':>6} {'uncut':>8} {'+-':>6} {'method':<26} {'s':>6}")
    results = []
    for width in widths:
        qnn = cut_qnn(width, cuts, layers=2 * cuts, rotations="ry", identity_blocks=True)
        pub = (qnn.circuit, qnn.observable, mirrored_row(qnn, seed))
        ideal = float(DistributedEstimator(qnn.partition_labels).run([pub]).result()[0].data.evs)
        start = time.perf_counter()
        cut = DistributedEstimator(qnn.partition_labels, backend=backend, device="CPU")
        cut_value = float(cut.run([pub]).result()[0].data.evs)
        cut_seconds = time.perf_counter() - start
        start = time.perf_counter()
        try:
            uncut = DistributedEstimator(backend=backend, device="CPU")
            result = uncut.run([pub]).result()[0]
            method = "exact (density matrix)"
        except ExecutionConfigError:  # too wide for a density matrix
            uncut = DistributedEstimator(
                backend=backend, sampler="hpcqnn.samplers:aer_fake_device", shots=shots, seed=seed, device="CPU"
            )
            result = uncut.run([pub]).result()[0]
            method = f"sampled, {shots} shots (trajectories)"
        entry = {
            "qubits": width, "backend": backend, "cuts": cuts, "ideal": ideal, "cut": cut_value,
            "cut_seconds": cut_seconds, "uncut": float(result.data.evs), "uncut_std": float(result.data.stds),
            "uncut_method": method, "uncut_seconds": time.perf_counter() - start,
        }
        results.append(entry)
        progress(
            f"{width:>6} {cut_value:>8.4f} {cut_seconds:>6.1f} {entry['uncut']:>8.4f} {entry['uncut_std']:>6.3f} "
            f"{method:<26} {entry['uncut_seconds']:>6.1f}"
        )
    return results
