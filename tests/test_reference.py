"""The addon-only reference pipeline agrees with the exact statevector value."""

from __future__ import annotations

import math

import numpy as np
from qiskit.circuit.library import CXGate
from qiskit_addon_cutting.qpd import QPDBasis

from hpcqnn.tools.reference import reference_query
from hpcqnn.training.circuits import cut_qnn
from statevector import exact_values


def _standard_error_bound(cuts: int, partitions: int, shots: int) -> float:
    """Upper bound on the standard error of a reconstructed single-Pauli expectation value.

    Each of the cut terms multiplies ``partitions`` independent shot means of +-1 outcomes, each
    with variance <= 1/shots, so the product's variance is <= (1 + 1/shots)**partitions - 1;
    the terms are independent and weighted by QPD coefficients whose squares sum to
    sum(c**2)**cuts.
    """
    coeff_square_sum = float(np.sum(np.square(QPDBasis.from_instruction(CXGate()).coeffs)))
    product_variance = (1 + 1 / shots) ** partitions - 1
    return math.sqrt(coeff_square_sum**cuts * product_variance)


def test_reference_query_matches_statevector() -> None:
    cuts, shots = 1, 20_000
    qnn = cut_qnn(num_qubits=4, cuts=cuts, layers=2)
    values = np.random.default_rng(7).uniform(-np.pi, np.pi, qnn.circuit.num_parameters)
    exact = exact_values(qnn.circuit, qnn.observable, values)

    value, seconds = reference_query(
        qnn.circuit, qnn.partition_labels, qnn.observable, values, shots=shots, seed=11
    )

    assert abs(value - exact) <= 5 * _standard_error_bound(cuts, partitions=2, shots=shots)
    assert set(seconds) == {"partition", "generate", "execute", "reconstruct"}
    assert all(isinstance(s, float) and s >= 0.0 for s in seconds.values())


def test_reference_query_uncut() -> None:
    shots = 20_000
    qnn = cut_qnn(num_qubits=4, cuts=0, layers=2)
    values = np.random.default_rng(8).uniform(-np.pi, np.pi, qnn.circuit.num_parameters)
    exact = exact_values(qnn.circuit, qnn.observable, values)

    value, _ = reference_query(
        qnn.circuit, "A" * qnn.num_qubits, qnn.observable, values, shots=shots, seed=12
    )

    assert abs(value - exact) <= 5 / math.sqrt(shots)
