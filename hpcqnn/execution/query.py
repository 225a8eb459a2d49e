"""A query's state on a rank: its distinct parameter rows per partition, the buffer its tiles
fill with Pauli estimates, and the delta-method variances of sampled mode."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hpcqnn.cutting.plan import CutPlan
from hpcqnn.cutting.program import Program
from hpcqnn.cutting.shots import sample_counts


@dataclass(frozen=True)
class Query:
    """One estimator query, built once and handed to the engine: what runs (``program`` with
    parameter rows ``params`` [rows, circuit parameters]) and how it is measured (``shots``:
    None for exact values; ``seed`` of the shot draws). ``weights[j, o]`` is the coefficient of
    global Pauli term ``j`` in observable ``o``; only rank 0 contracts, so workers hold None."""

    number: int
    program: Program
    params: np.ndarray
    shots: int | None = None
    seed: int | None = None
    weights: np.ndarray | None = None

    @cached_property
    def rows(self) -> QueryRows:
        """The rows each partition needs (``query_rows``): distinct ones in exact mode, every
        row in sampled mode (each row draws its own shots)."""
        return query_rows(self.program.plan, self.params, sampled=self.program.sampled)

    def experiments(self, circuit: int) -> int:
        """How many (subexperiment, row) experiments program circuit ``circuit`` runs."""
        return self.program.experiments(circuit, self.rows)

    def experiment_shots(self, circuit: int, start: int, stop: int) -> np.ndarray | None:
        """Shots of experiments ``start ... stop`` of ``circuit``; None in exact mode."""
        if not self.shots:
            return None
        return self.program.experiment_shots(circuit, start, stop, self.rows, self.shots)


@dataclass(frozen=True)
class QueryRows:
    """The parameter rows each partition runs for a query.

    Exact mode: rows that agree on a partition's parameters give it identical subexperiments,
    so a parameter-shift row of a weight in partition A needs no new run of partition B.
    Partition ``p`` runs ``unique[p]`` (full-width representative rows); query row ``r`` reads its
    result from ``unique[p][inverse[p][r]]``.

    Sampled mode: every query row is its own experiment row (``unique[p]`` is all rows, in order),
    so that each row draws independent shots (repeating a row averages shot noise, as with any
    estimator); ``same[p][r]`` is the first row equal to row ``r`` on partition ``p``'s
    parameters, and the simulator computes each distinct outcome distribution once.
    """

    count: int
    unique: list[np.ndarray]
    inverse: list[np.ndarray]
    same: list[np.ndarray] | None = None


def query_rows(plan: CutPlan, params: np.ndarray, sampled: bool = False) -> QueryRows:
    """Deduplicate ``params`` [rows, circuit parameters] per partition (deterministic); in
    sampled mode keep every row and record which ones are equal per partition instead."""
    unique, inverse, same = [], [], []
    for part in plan.partitions:
        if len(part.parameter_columns) == 0 or len(params) == 1:
            first, inv = np.zeros(1, dtype=np.int64), np.zeros(len(params), dtype=np.int64)
        else:
            _, first, inv = np.unique(
                params[:, part.parameter_columns], axis=0, return_index=True, return_inverse=True
            )
        inv = inv.reshape(-1)
        if sampled:
            unique.append(params)
            inverse.append(np.arange(len(params), dtype=np.int64))
            same.append(first[inv].astype(np.int64))
        else:
            unique.append(params[first])
            inverse.append(inv)
    return QueryRows(len(params), unique, inverse, same if sampled else None)


class QueryBuffers:
    """Everything a query's tiles contribute, in one flat float64 array.

    ``estimates[p]`` is [subexperiments * rows, local Paulis] (experiment-major); in sampled
    mode ``covariances[i]`` is circuit ``i``'s [experiments, K, K] covariance of the means of the
    K Paulis its setting measures. Each experiment is written by exactly one tile, so buffers
    filled on different ranks combine by summation (zeros elsewhere) into the serial result.
    """

    def __init__(self, program: Program, rows: QueryRows):
        plan = program.plan
        runs = [part.num_subexperiments * len(u) for part, u in zip(plan.partitions, rows.unique)]
        shapes: list[tuple[int, ...]] = [(n, len(part.paulis)) for n, part in zip(runs, plan.partitions)]
        if program.sampled:
            for i, p in enumerate(program.partition_of):
                k = len(program.group(i).paulis)
                shapes.append((runs[p], k, k))
        sizes = [int(np.prod(shape)) for shape in shapes]
        self.flat = np.zeros(sum(sizes))
        views, offset = [], 0
        for shape, size in zip(shapes, sizes):
            views.append(self.flat[offset : offset + size].reshape(shape))
            offset += size
        self.rows = rows
        self.estimates = views[: len(plan.partitions)]
        self.covariances = views[len(plan.partitions) :] if program.sampled else None

    def partition_estimates(self, program: Program) -> list[np.ndarray]:
        """Estimates shaped [subexperiments, query rows, local Paulis], as reconstruction wants."""
        return [
            e.reshape(part.num_subexperiments, len(u), -1)[:, inv]
            for e, part, u, inv in zip(self.estimates, program.plan.partitions, self.rows.unique, self.rows.inverse)
        ]


def measure(query: Query, circuit: int, start: int, raw: np.ndarray, shots: np.ndarray | None) -> np.ndarray:
    """A tile's measurement (it belongs to execution) from the simulator's raw outputs: every
    subexperiment's expectation values read out of coherent statevectors [subexperiments, rows,
    Paulis]; counts drawn from outcome probabilities (sampled mode), ``shots[e]`` for experiment
    ``e``; or Aer's expectation values as they are."""
    readout = query.program.coherent(circuit)
    if readout is not None:
        return readout.estimates(raw)
    if not query.program.sampled:
        return raw
    assert shots is not None, "a sampled query has shots"
    return sample_counts(raw, shots, query.seed, query.number, circuit, offset=start)


def accumulate_tile(
    program: Program, buffers: QueryBuffers, circuit: int, start: int, data: np.ndarray, shots: np.ndarray | None
) -> None:
    """Store one tile's results (experiments ``start ...``) as estimates in ``buffers``.

    ``data`` is what ``measure`` returned: estimates [subexperiments, rows, Paulis] (a coherent
    circuit, whose experiments are rows), expectation values (exact) or counts (sampled, with
    ``shots[e]`` shots in experiment ``e``), from which the Paulis' means and covariances are
    taken with the ancilla parity folded in.
    """
    p = program.partition_of[circuit]
    if program.coherent(circuit) is not None:
        estimates = buffers.estimates[p]
        by_row = estimates.reshape(-1, len(buffers.rows.unique[p]), estimates.shape[1])
        by_row[:, start : start + data.shape[1]] = data
        return
    rows = slice(start, start + len(data))
    if not program.sampled:
        buffers.estimates[p][rows] = data
        return
    assert shots is not None and buffers.covariances is not None, "a sampled query has shots and covariances"
    group = program.group(circuit)
    first, second_moment = program.moments(circuit)
    n = np.maximum(shots, 1)[:, None]  # an unweighted setting gets no shots and estimates 0
    means = data @ first / n
    second = (data @ second_moment / n).reshape(len(data), len(group.paulis), len(group.paulis))
    buffers.estimates[p][rows, group.paulis] += means * group.weights
    covariance = (second - means[:, :, None] * means[:, None, :]) / np.maximum(n - 1, 1)[:, :, None]
    buffers.covariances[circuit][rows] = covariance


def sampled_variance(
    program: Program, buffers: QueryBuffers, sensitivities: list[np.ndarray]
) -> np.ndarray:
    """Delta-method variance of each reconstructed value, shaped [rows, observables].

    ``sensitivities[p][s, r, j, o]`` is d value[r, o] / d estimate[p][s, r, j]. Experiments are
    independent; the Paulis of one setting share shots, hence the covariance matrices.
    """
    assert buffers.covariances is not None, "sampled mode has covariances"
    variance: np.ndarray | float = 0.0
    for i, covariance in enumerate(buffers.covariances):
        p = program.partition_of[i]
        group = program.group(i)
        d = sensitivities[p][:, :, group.paulis, :] * group.weights[None, None, :, None]
        unique = len(buffers.rows.unique[p])
        cov = covariance.reshape(d.shape[0], unique, *covariance.shape[1:])[:, buffers.rows.inverse[p]]
        variance = variance + np.einsum("srko,srkl,srlo->ro", d, cov, d)
    return np.asarray(variance)
