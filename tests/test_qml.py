"""hpcqnn as the estimator of qiskit-machine-learning's EstimatorQNN (forward and gradients)."""

from __future__ import annotations

import numpy as np
from qiskit.primitives import StatevectorEstimator
from qiskit_machine_learning.gradients import ParamShiftEstimatorGradient
from qiskit_machine_learning.neural_networks import EstimatorQNN

from hpcqnn import DistributedEstimator
from hpcqnn.training.circuits import cut_qnn
from tolerances import EXACT_ATOL


def make_qnn(estimator) -> EstimatorQNN:
    model = cut_qnn(4, cuts=2, layers=2)
    return EstimatorQNN(
        circuit=model.circuit,
        observables=model.observable,
        input_params=list(model.inputs),
        weight_params=list(model.weights),
        estimator=estimator,
        gradient=ParamShiftEstimatorGradient(estimator),
        input_gradients=True,
        default_precision=0.0,  # StatevectorEstimator adds noise at any precision > 0
    )


def test_estimator_qnn_forward_and_backward_match_statevector():
    rng = np.random.default_rng(7)
    cut = make_qnn(DistributedEstimator(partition_labels="AABB"))
    reference = make_qnn(StatevectorEstimator())
    inputs = rng.uniform(-1, 1, (3, cut.num_inputs))
    weights = rng.uniform(-np.pi, np.pi, cut.num_weights)

    np.testing.assert_allclose(cut.forward(inputs, weights), reference.forward(inputs, weights), atol=EXACT_ATOL)
    cut_in, cut_w = cut.backward(inputs, weights)
    ref_in, ref_w = reference.backward(inputs, weights)
    np.testing.assert_allclose(cut_w, ref_w, atol=EXACT_ATOL)
    np.testing.assert_allclose(cut_in, ref_in, atol=EXACT_ATOL)
