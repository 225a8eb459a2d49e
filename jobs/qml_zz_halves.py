"""qiskit-machine-learning's ZZ feature map + RealAmplitudes, cut into two halves, trained with
EstimatorQNN and NeuralNetworkClassifier on hpcqnn's DistributedEstimator.

    python jobs/qml_zz_halves.py [--iterations 60] [--shots N]

The feature map's CX . P(2(pi - x_i)(pi - x_j)) . CX between the halves is cut once, as a
trainable RZZ (gamma <= 3, not 9 for two CX cuts); the ansatz's CX between the halves is a
second and third cut. Iris setosa vs versicolor, 4 features scaled to [0, 1/2].
"""

from __future__ import annotations

import argparse

import numpy as np
from qiskit.circuit.library import real_amplitudes, zz_feature_map
from qiskit.quantum_info import SparsePauliOp
from qiskit_machine_learning.algorithms import NeuralNetworkClassifier
from qiskit_machine_learning.neural_networks import EstimatorQNN
from qiskit_machine_learning.optimizers import COBYLA
from sklearn.datasets import load_iris

from hpcqnn import DistributedEstimator


def build(shots: int | None, seed: int = 7) -> tuple[EstimatorQNN, DistributedEstimator]:
    features = zz_feature_map(4, reps=1, entanglement="linear")
    ansatz = real_amplitudes(4, reps=2, entanglement="linear")
    estimator = DistributedEstimator(partition_labels="AABB", shots=shots, seed=seed)
    qnn = EstimatorQNN(
        circuit=features.compose(ansatz),
        observables=SparsePauliOp("ZZZZ"),
        input_params=list(features.parameters),
        weight_params=list(ansatz.parameters),
        estimator=estimator,
        default_precision=0.0 if shots is None else 1 / np.sqrt(shots),  # else EstimatorQNN asks for 4096 shots
    )
    return qnn, estimator


def data() -> tuple[np.ndarray, np.ndarray]:
    iris = load_iris()
    keep = iris.target < 2
    x = iris.data[keep]
    x = 0.5 * (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))
    return x, 2 * iris.target[keep] - 1  # labels +-1 for the <ZZZZ> readout


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=60, help="COBYLA iterations (default 60)")
    parser.add_argument("--shots", type=int, help="shots per setting (default: exact values)")
    args = parser.parse_args(argv)
    qnn, estimator = build(args.shots)
    x, y = data()
    classifier = NeuralNetworkClassifier(
        qnn, optimizer=COBYLA(maxiter=args.iterations), initial_point=np.full(qnn.num_weights, 0.1)
    )
    classifier.fit(x, y)
    accuracy = float(classifier.score(x, y))
    program = estimator.program((qnn.circuit, SparsePauliOp("ZZZZ"), np.zeros(qnn.circuit.num_parameters)))
    print(program)
    print(f"training accuracy {accuracy:.3f} after {args.iterations} iterations, {estimator.num_queries} queries")
    return accuracy


if __name__ == "__main__":
    main()
