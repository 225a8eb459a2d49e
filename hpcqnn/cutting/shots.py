"""Shots: how a query's budget is split over subexperiments, and how counts are drawn.

A query's budget is ``shots`` times the measurement settings of one parameter row (every
subexperiment of every circuit). ``"uniform"`` gives each setting ``shots``; ``"proportional"``
splits the same budget in proportion to each subexperiment's |QPD coefficient| weight ``w``
(``subexperiment_weights``), the typical size of the reconstruction's sensitivity to its
estimate: the variance ``sum w**2 sigma**2 / n`` at a fixed total is smallest with ``n``
proportional to ``w sigma``, and ``sigma`` (at most 1) is not known before measuring.
Counts are drawn from the exact outcome distributions, one random stream per (seed, stream,
measurement setting, block), where a query's stream is its place in the estimator's ``run``: a
block is SAMPLE_BLOCK experiments (subexperiment x row) of an enumerated template, or
SAMPLE_BLOCK rows (every subexperiment) of a coherent circuit, and tiles start at multiples of
it, so results do not depend on how experiments are split into tiles or ranks. Every query row
draws its own shots, repeated rows included (``execution.query.query_rows``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpcqnn.cutting.plan import CutPlan
from hpcqnn.errors import ExecutionConfigError
from hpcqnn.options import SAMPLE_BLOCK


def shot_weights(
    plan: CutPlan, partition_of: Sequence[int], allocation: str, kernels: list[np.ndarray] | None = None
) -> tuple[np.ndarray, ...]:
    """Per measurement setting (of partition ``partition_of[k]``), the weight of each
    subexperiment in the split of a query's shots: [subexperiments], or, proportional with
    trainable cuts, [subexperiments, rows] of the rows whose ``kernels`` are given."""
    if allocation == "uniform":
        weights = [np.ones(part.num_subexperiments) for part in plan.partitions]
    else:
        weights = subexperiment_weights(plan, kernels)
    return tuple(weights[p] for p in partition_of)


def subexperiment_weights(plan: CutPlan, kernels: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Per partition, how strongly each subexperiment's estimate can move the result:
    [subexperiments], or [subexperiments, rows] where trainable cuts make it depend on the
    parameter rows (``kernels``: the rows' ``CutPlan.kernels``).

    The result is ``sum prod_c K_c[a_c, b_c] prod_p E_p`` over every cut's channel pair.
    Subexperiment ``s`` picks channel ``s_c`` on this partition's side of each cut it touches, so
    with the other partitions' estimates of unit size and random sign, its sensitivity has
    root-mean-square ``prod_c ||K_c[s_c, :]||_2`` (row, or column on side 1): the |QPD
    coefficient| of its term when it takes part in one term (no basis reduction), their
    root-sum-square when it stands for several. A cut the partition does not touch contributes
    ``||K_c||_F`` to all of its subexperiments alike, hence the normalisation by it.
    """
    if kernels is None:
        if plan.trainable:
            raise ValueError("a plan with trainable cuts weighs its subexperiments per row: give the rows' kernels")
        kernels = plan.fixed_kernels
    weights = []
    for part in plan.partitions:
        w = np.ones((1, 1))  # [rows (or 1), subexperiments so far]
        for c, side in zip(part.cut_ids, part.sides):
            kernel = kernels[c] if kernels[c].ndim == 3 else kernels[c][None]
            norms = np.sqrt(np.square(kernel).sum(axis=2 - side))  # [rows (or 1), this side's channels]
            norms = norms / np.linalg.norm(norms, axis=1, keepdims=True)
            w = (w[:, :, None] * norms[:, None, :]).reshape(max(len(w), len(norms)), -1)
        weights.append(w.T if len(w) > 1 or plan.trainable else w[0])
    return weights


def allocate_shots(weights: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` shots in proportion to ``weights`` (largest remainders), at least one
    shot to every positive weight; weights [items, rows] are split per row (column)."""
    weights = np.asarray(weights, dtype=float)
    if weights.ndim == 2:
        return np.stack([allocate_shots(column, total) for column in weights.T], axis=1)
    positive = weights > 0
    if total < positive.sum():
        raise ExecutionConfigError(f"{total} shots cannot give each of {positive.sum()} settings one shot")
    share = total * weights / weights.sum()
    shots = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - shots), kind="stable")
    shots[order[: total - shots.sum()]] += 1
    while np.any(positive & (shots == 0)):  # starved settings take a shot from the richest
        shots[np.argmax(shots)] -= 1
        shots[np.argmax(positive & (shots == 0))] += 1
    return shots


def draw_counts(
    probabilities: np.ndarray, shots: np.ndarray, seed: int | None, stream: int, setting: int, block: int
) -> np.ndarray:
    """Multinomial counts [..., outcomes] of one block in one vectorised call: ``shots``
    (broadcast to ``probabilities.shape[:-1]``) from each distribution, clipped and normalised
    (they are computed in floating point), from the block's own random stream."""
    probabilities = np.clip(probabilities, 0.0, None)
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    entropy = None if seed is None else [seed]
    rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=[stream, setting, block]))
    return rng.multinomial(np.broadcast_to(shots, probabilities.shape[:-1]), probabilities)


def sample_counts(
    probabilities: np.ndarray, shots: int | np.ndarray, seed: int | None, stream: int, setting: int, offset: int
) -> np.ndarray:
    """Counts per experiment of an enumerated template (``shots`` each, or ``shots[e]``), one
    random stream per block of SAMPLE_BLOCK experiments.

    ``offset`` is the index of the first experiment in ``probabilities`` (a multiple of the block).
    """
    if offset % SAMPLE_BLOCK:
        raise ValueError(f"offset {offset} is not a multiple of SAMPLE_BLOCK={SAMPLE_BLOCK}")
    shots = np.broadcast_to(shots, len(probabilities))
    counts = np.empty(probabilities.shape, dtype=np.int64)
    for start in range(0, len(probabilities), SAMPLE_BLOCK):
        block = slice(start, start + SAMPLE_BLOCK)
        key = (offset + start) // SAMPLE_BLOCK
        counts[block] = draw_counts(probabilities[block], shots[block], seed, stream, setting, key)
    return counts


def moment_matrix(signs: np.ndarray, ancillas: int) -> np.ndarray:
    """Counts [experiments, outcomes] times this give each Pauli's summed signed outcomes and
    each pair's summed products, side by side: outcome ``a * B + b`` (deferred QPD ancillas ``a``
    in the high bits, measured qubits ``b``; a coherent readout has one sign bit) signs Pauli
    ``k`` by ``parity(a) * signs[b, k]``, so it is [outcomes, K + K * K] (the ancilla sign
    squares away in the products)."""
    parity = 1.0 - 2.0 * (popcount(np.arange(2**ancillas)) & 1)
    pairs = (signs[:, :, None] * signs[:, None, :]).reshape(len(signs), -1)
    return np.hstack([np.kron(parity[:, None], signs), np.kron(np.ones((2**ancillas, 1)), pairs)])


def popcount(values: np.ndarray) -> np.ndarray:
    return np.bitwise_count(values.astype(np.uint64)).astype(np.int64)
