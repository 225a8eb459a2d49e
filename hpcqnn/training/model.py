"""QNN binary classifier on the cut QNN circuit, with batched parameter-shift gradients.

``p(y=1 | x) = sigmoid(scale * <O>(angles(x), w) + bias)``: features enter as RY angles, ``w``
are the ansatz weights, ``O`` the readout observable (Z on every qubit) and ``scale``, ``bias``
two classical parameters trained with the weights. Every gradient (with respect to the weights
or to the input angles) is ONE estimator query: the unshifted rows and both parameter-shift rows
(+-pi/2) of every parameter of every example, bound together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hpcqnn.training.circuits import CutQNN

if TYPE_CHECKING:
    from qiskit.primitives import BaseEstimatorV2

SHIFT = np.pi / 2


def query_seed(run_seed: int, query: int) -> int:
    """The shot seed of a run's query number ``query``: independent shots for every query, the
    same ones when a resumed run redoes it."""
    return int(np.random.SeedSequence([run_seed, query]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def readout(f: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``p(y=1) = sigmoid(scale * f + bias)`` from expectations ``f`` and ``theta``'s last two
    entries (scale, bias)."""
    return sigmoid(theta[-2] * f + theta[-1])


def bce_loss(p: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy."""
    eps = 1e-12
    return float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))


@dataclass
class QNNClassifier:
    """A cut QNN evaluated through an estimator (serial or MPI).

    ``theta`` packs [ansatz weights..., scale, bias]. With a ``seed``, every query of an hpcqnn
    estimator is seeded from it and the estimator's query number (``query_seed``), so that each
    draws its own shots (a seeded estimator repeats its shots on every run).
    """

    qnn: CutQNN
    estimator: BaseEstimatorV2
    seed: int | None = None
    init: str = "uniform"  # CutQNN.initial_weights

    def __post_init__(self):
        order = {p: i for i, p in enumerate(self.qnn.circuit.parameters)}
        self.input_columns = np.array([order[p] for p in self.qnn.inputs])
        self.weight_columns = np.array([order[p] for p in self.qnn.weights])

    @property
    def num_weights(self) -> int:
        return len(self.weight_columns)

    @property
    def num_parameters(self) -> int:
        return self.num_weights + 2

    def initial_theta(self, rng: np.random.Generator) -> np.ndarray:
        return np.concatenate([self.qnn.initial_weights(rng, self.init), [1.0, 0.0]])

    def _rows(self, angles: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Circuit parameter rows: the features' input angles (``CutQNN.encode``) and weights."""
        rows = np.empty((len(angles), self.qnn.circuit.num_parameters))
        rows[:, self.input_columns] = self.qnn.encode(angles)
        rows[:, self.weight_columns] = weights
        return rows

    def _evaluate(self, rows: np.ndarray) -> np.ndarray:
        if self.seed is not None:
            self.estimator.seed = query_seed(self.seed, self.estimator.num_queries)
        pub = (self.qnn.circuit, self.qnn.observable, rows)
        return np.asarray(self.estimator.run([pub]).result()[0].data.evs, dtype=float)

    def expectations(self, angles: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """<O> for every example (``weights`` shared [K] or per example [N, K]), one query."""
        return self._evaluate(self._rows(angles, weights))

    def expectations_with_gradient(
        self, angles: np.ndarray, weights: np.ndarray, wrt: str = "weights"
    ) -> tuple[np.ndarray, np.ndarray]:
        """<O> [examples] and its parameter-shift gradient [examples, parameters] with respect
        to the weights or the input features (through the encoding's angles: chain rule), from
        one query. Exact where each circuit parameter drives one rotation gate."""
        columns = {"weights": self.weight_columns, "inputs": self.input_columns}[wrt]
        base = self._rows(angles, weights)
        n, k = len(angles), len(columns)
        rows = np.repeat(base[:, None, :], 1 + 2 * k, axis=1)  # [examples, 1 + 2k, parameters]
        shifts = np.arange(k)
        rows[:, 1 + shifts, columns] += SHIFT
        rows[:, 1 + k + shifts, columns] -= SHIFT
        values = self._evaluate(rows.reshape(n * (1 + 2 * k), -1)).reshape(n, 1 + 2 * k)
        gradient = 0.5 * (values[:, 1 : 1 + k] - values[:, 1 + k :])
        if wrt == "inputs" and self.qnn.encoding != "angle":  # angle encoding: the jacobian is the identity
            gradient = np.einsum("ni,nif->nf", gradient, self.qnn.encode_jacobian(angles))
        return values[:, 0], gradient

    def probabilities(self, angles: np.ndarray, theta: np.ndarray) -> np.ndarray:
        return readout(self.expectations(angles, theta[:-2]), theta)

    def loss_and_gradient(self, angles: np.ndarray, y: np.ndarray, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean BCE over the batch and its gradient with respect to ``theta``."""
        scale = theta[-2]
        f, df = self.expectations_with_gradient(angles, theta[:-2], "weights")
        p = readout(f, theta)
        residual = (p - y) / len(y)  # d loss / d logit
        grad = np.concatenate([(residual * scale) @ df, [residual @ f, residual.sum()]])
        return bce_loss(p, y), grad

    def input_gradient(self, angles: np.ndarray, y: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-example probability and d loss / d angle [examples, features] (for FGSM)."""
        scale = theta[-2]
        f, df = self.expectations_with_gradient(angles, theta[:-2], "inputs")
        p = readout(f, theta)
        return p, ((p - y) * scale)[:, None] * df
