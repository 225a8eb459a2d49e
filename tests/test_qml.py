"""hpcqnn as the estimator of qiskit-machine-learning's EstimatorQNN (forward and gradients)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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


def load_example():
    spec = importlib.util.spec_from_file_location("qml_zz_halves", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLE = Path(__file__).parents[1] / "jobs" / "qml_zz_halves.py"


def test_zz_feature_map_example_matches_statevector_and_trains():
    """The README's example: zz_feature_map + real_amplitudes cut into halves (the feature map's
    CX . P . CX as one trainable RZZ cut) gives StatevectorEstimator's forward pass and
    parameter-shift gradients, and NeuralNetworkClassifier trains it (exact mode)."""
    example = load_example()
    qnn, estimator = example.build(shots=None)
    plan = estimator.program((qnn.circuit, qnn.observables[0], np.zeros(qnn.circuit.num_parameters))).plan
    assert sum(angle is not None for angle in plan.cut_angles) == 1 and plan.num_cuts == 3
    reference = EstimatorQNN(
        circuit=qnn.circuit, observables=qnn.observables, input_params=qnn.input_params,
        weight_params=qnn.weight_params, estimator=StatevectorEstimator(), input_gradients=True, default_precision=0.0,
    )
    x, _ = example.data()
    weights = np.random.default_rng(1).uniform(-np.pi, np.pi, qnn.num_weights)
    np.testing.assert_allclose(qnn.forward(x[:5], weights), reference.forward(x[:5], weights), atol=EXACT_ATOL)
    qnn.input_gradients = True
    for ours, theirs in zip(qnn.backward(x[:3], weights), reference.backward(x[:3], weights)):
        np.testing.assert_allclose(ours, theirs, atol=1e-9)
    assert example.main(["--iterations", "60"]) >= 0.9
