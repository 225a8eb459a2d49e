"""Optimisers and the training state they update (Adam on parameter-shift gradients, SPSA).

``TrainState`` is everything needed to continue a run exactly — parameters, optimiser moments,
the random generator, the epoch's permutation and position, the estimator's query counter and
the last epoch's test probabilities — and saves itself atomically as the run's checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpcqnn.training.model import QNNClassifier, bce_loss, readout


@dataclass
class TrainState:
    """Everything needed to continue a run exactly."""

    theta: np.ndarray
    rng: np.random.Generator
    initial_theta: np.ndarray
    adam_m: np.ndarray  # Adam's moment estimates (zero until its first step; SPSA leaves them)
    adam_v: np.ndarray
    epoch: int = 0
    step: int = 0
    permutation: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    adam_t: int = 0
    queries: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    test_probabilities: np.ndarray | None = None  # of the last finished epoch's evaluation

    @classmethod
    def start(cls, theta: np.ndarray, rng: np.random.Generator) -> TrainState:
        """The state before the first step, at parameters ``theta``."""
        return cls(
            theta=theta, rng=rng, initial_theta=theta.copy(), adam_m=np.zeros_like(theta), adam_v=np.zeros_like(theta)
        )

    def save(self, path: Path) -> None:
        meta = {
            "epoch": self.epoch, "step": self.step, "adam_t": self.adam_t, "queries": self.queries,
            "seconds": self.seconds, "history": self.history, "rng": self.rng.bit_generator.state,
        }
        arrays: dict[str, Any] = {
            "theta": self.theta,
            "initial_theta": self.initial_theta,
            "permutation": self.permutation,
            "adam_m": self.adam_m,
            "adam_v": self.adam_v,
        }
        if self.test_probabilities is not None:
            arrays["test_probabilities"] = self.test_probabilities
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())  # on disk before it replaces the previous checkpoint
        os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact

    @classmethod
    def load(cls, path: Path) -> TrainState:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            rng = np.random.default_rng()
            rng.bit_generator.state = meta["rng"]
            return cls(
                theta=data["theta"],
                rng=rng,
                initial_theta=data["initial_theta"],
                epoch=meta["epoch"],
                step=meta["step"],
                permutation=data["permutation"],
                adam_m=data["adam_m"],
                adam_v=data["adam_v"],
                adam_t=meta["adam_t"],
                queries=meta["queries"],
                seconds=meta["seconds"],
                history=meta["history"],
                test_probabilities=data["test_probabilities"] if "test_probabilities" in data.files else None,
            )


def adam_step(state: TrainState, grad: np.ndarray, lr: float, b1: float = 0.9, b2: float = 0.999) -> None:
    state.adam_t += 1
    state.adam_m = b1 * state.adam_m + (1 - b1) * grad
    state.adam_v = b2 * state.adam_v + (1 - b2) * grad**2
    m_hat = state.adam_m / (1 - b1**state.adam_t)
    v_hat = state.adam_v / (1 - b2**state.adam_t)
    state.theta = state.theta - lr * m_hat / (np.sqrt(v_hat) + 1e-8)


def spsa_step(model: QNNClassifier, state: TrainState, angles, y, lr: float, c: float) -> float:
    """Simultaneous-perturbation step: both perturbed losses from one query."""
    delta = state.rng.choice([-1.0, 1.0], size=state.theta.shape)
    plus, minus = state.theta + c * delta, state.theta - c * delta
    weights = np.concatenate([np.repeat(plus[None, :-2], len(y), 0), np.repeat(minus[None, :-2], len(y), 0)])
    f = model.expectations(np.concatenate([angles, angles]), weights)
    loss_plus = bce_loss(readout(f[: len(y)], plus), y)
    loss_minus = bce_loss(readout(f[len(y) :], minus), y)
    state.theta = state.theta - lr * (loss_plus - loss_minus) / (2 * c) * delta
    return 0.5 * (loss_plus + loss_minus)
