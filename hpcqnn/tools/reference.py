"""Reference pipeline built only from qiskit-addon-cutting's own functions, for benchmarks.

Every query is handled as a naive user would: bind the parameters, partition the bound circuit,
generate all subexperiments exactly (``num_samples=np.inf``), sample them with Aer's SamplerV2 and
reconstruct, with nothing cached between queries. Each phase is timed separately.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence

import numpy as np
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp
from qiskit_addon_cutting import (
    generate_cutting_experiments,
    partition_problem,
    reconstruct_expectation_values,
)
from qiskit_aer.primitives import SamplerV2


def reference_query(
    circuit: QuantumCircuit,
    partition_labels: str | Sequence[Hashable],
    observable: SparsePauliOp,
    parameter_values: np.ndarray,
    shots: int,
    seed: int | None = None,
) -> tuple[float, dict[str, float]]:
    """One expectation value of `observable` for one parameter row, and seconds per phase
    {"partition", "generate", "execute", "reconstruct"}.

    ``parameter_values`` follows the order of ``circuit.parameters``; ``shots`` are taken per
    subexperiment. Partition labels that are all equal (no cut gates) are supported.
    """
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    bound = circuit.assign_parameters(np.asarray(parameter_values, dtype=float))
    problem = partition_problem(
        circuit=bound, partition_labels=partition_labels, observables=observable.paulis
    )
    seconds["partition"] = time.perf_counter() - start

    start = time.perf_counter()
    subexperiments, coefficients = generate_cutting_experiments(
        circuits=problem.subcircuits, observables=problem.subobservables, num_samples=np.inf
    )
    seconds["generate"] = time.perf_counter() - start

    start = time.perf_counter()
    # Aer derives each circuit's seed from the sampler's seed and the circuit's position in the
    # run, so one shared seed would give the i-th subexperiment of every partition the same
    # random stream and correlate the factors multiplied in reconstruction.
    # No transpilation: cutting only adds h/s/sdg/z gates and measurements, which Aer runs.
    seeds = _partition_seeds(seed, len(subexperiments))
    results = {}
    for (label, experiments), label_seed in zip(subexperiments.items(), seeds):
        sampler = SamplerV2(default_shots=shots, seed=label_seed)
        results[label] = sampler.run(experiments, shots=shots).result()
    seconds["execute"] = time.perf_counter() - start

    start = time.perf_counter()
    term_values = reconstruct_expectation_values(results, coefficients, problem.subobservables)
    value = float(np.dot(np.real(observable.coeffs), term_values))
    seconds["reconstruct"] = time.perf_counter() - start

    return value, seconds


def _partition_seeds(seed: int | None, count: int) -> list[int | None]:
    if seed is None:
        return [None] * count
    return [int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(count)]
