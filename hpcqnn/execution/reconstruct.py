"""Reconstruction: one tensor contraction over cut indices, rows and Pauli terms.

For global Pauli term ``j`` and parameter row ``r``::

    value[r, j] = sum_{a, b} prod_c K_c[a_c, b_c] * prod_p E_p[(a or b of the cuts touching p), r, pauli_p(j)]

where ``a_c``/``b_c`` pick the simulated basis channel on each side of cut ``c`` and the kernel
``K_c`` folds in the QPD coefficients (``cutting.plan.CutPlan``). Each partition's operand carries
only the indices of the cuts that touch it, so the joint product of all QPD terms is never
materialised. A ``Contraction`` is worked out once per plan (``execution.compiled``); per query it multiplies the
kernels into the operands (one matmul for two partitions, one per cut otherwise), then
contracts the operands. Every function takes an array module ``xp`` (NumPy or CuPy) and is
free of MPI and simulators.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

import numpy as np

from hpcqnn.cutting.plan import CutPlan
from hpcqnn.cutting.program import Program

_ROW, _TERM = "r", "j"
_LETTERS = [c for c in string.ascii_letters if c not in (_ROW, _TERM)]


def _side_letter(cut: int, side: int) -> str:
    """The einsum index of the basis channel on ``side`` of ``cut``."""
    if 2 * cut + 1 >= len(_LETTERS):
        raise ValueError(f"reconstruction supports at most {len(_LETTERS) // 2} cuts, got cut {cut}")
    return _LETTERS[2 * cut + side]


@dataclass(frozen=True)
class Absorption:
    """Kernel ``kernel[other side, this side]`` multiplied into partition ``into``'s operand on
    axis ``axis``, whose channel index it turns into the other side's. A trainable cut's kernel
    comes per query and row (``CutPlan.kernels``): ``kernel`` is None, and the cut's
    ``[rows, side 0, side 1]`` kernels are applied as they are (``into`` holds side 1) or
    ``transposed``."""

    into: int
    axis: int
    kernel: np.ndarray | None
    cut: int = -1
    transposed: bool = False

    def oriented(self, kernels) -> np.ndarray:
        """This query's per-row kernels [rows, other side, this side] of a trainable cut."""
        kernel = kernels[self.cut]
        return kernel.transpose(0, 2, 1) if self.transposed else kernel


PAIR_LIMIT = 1 << 16  # entries of the one matrix that couples two partitions (4 CX cuts: 256 x 256)


class _DeviceCopies:
    """Host arrays copied to an array module's device once (NumPy: the arrays themselves)."""

    _device: dict[tuple, object]

    def _on(self, xp: ModuleType, key: tuple, array: np.ndarray):
        if xp is np:
            return array
        cached = self._device.get((id(xp), *key))
        if cached is None:
            cached = self._device[(id(xp), *key)] = xp.asarray(array)
        return cached


class Contraction(_DeviceCopies):
    """How a plan's estimates combine, worked out once per plan and rank.

    Two partitions whose coupling matrix ``pair[s0, s1] = prod_c K_c[...]`` has at most
    PAIR_LIMIT entries contract as ``value = sum_s0 E0[s0] * (pair @ E1)[s0]``: one matmul (a
    single BLAS call beats one per cut at every row count measured, 1 to 4000 rows at 3 cuts).
    Otherwise every cut's kernel is absorbed into the operand of the partition with the larger
    index (a ``tensordot``), then one ``einsum`` contracts the operands.
    """

    def __init__(self, plan: CutPlan):
        self.plan = plan
        # two partitions of equal size: [[0, pair], [pair^T, 0]], which takes both operands
        # stacked to both sensitivities in one matmul (``stacked_sensitivities``)
        self.coupling: np.ndarray | None = None
        parts = plan.partitions
        letters = [[_side_letter(c, s) for c, s in zip(part.cut_ids, part.sides)] for part in parts]
        sizes = [part.num_subexperiments for part in parts]
        if len(parts) == 2 and sizes[0] * sizes[1] <= PAIR_LIMIT and not plan.trainable:
            pair = np.ones((1, 1))  # no cuts: independent partitions, the value is a product
            if plan.num_cuts:
                pair = np.einsum(
                    ",".join(_side_letter(c, 0) + _side_letter(c, 1) for c in range(plan.num_cuts))
                    + "->" + "".join(letters[0] + letters[1]),
                    *plan.fixed_kernels,
                ).reshape(sizes[0], sizes[1])
            self.shapes: list[tuple[int, ...]] = [(sizes[0],), (sizes[1],)]
            self.steps: tuple[Absorption, ...] = (Absorption(1, 0, pair),)
            letters = [["s"], ["s"]]
            if sizes[0] == sizes[1]:
                zeros = np.zeros_like(pair)
                self.coupling = np.block([[zeros, pair], [pair.T, zeros]])
        else:
            self.shapes = [part.basis_shape for part in parts]
            self.steps = tuple(self._cut_steps(letters))
        self.flat = all(len(shape) == 1 for shape in self.shapes)  # operands are [subexperiments, rows, terms]
        # the absorptions into each partition, last first: what its sensitivity passes back through
        last_first = list(enumerate(self.steps))[::-1]
        self.back_steps = [[(i, step) for i, step in last_first if step.into == p] for p in range(len(parts))]
        self.specs = ["".join(spec) + _ROW + _TERM for spec in letters]
        self.expression = ",".join(self.specs) + "->" + _ROW + _TERM
        # None: the only other operand has this one's indices, so it is the gradient as it is
        self.gradient_expressions: list[str | None] = []
        for p, spec in enumerate(self.specs):
            others = self.specs[:p] + self.specs[p + 1 :]
            self.gradient_expressions.append(None if others == [spec] else ",".join(others) + "->" + spec)
        self.identity_terms = [bool(np.array_equal(part.term_pauli, np.arange(len(plan.paulis)))) for part in parts]
        # sums of local terms (each term the identity on all partitions but at most one, as a mean
        # of single-qubit Z or of per-piece parities): ``local_operands`` contracts 1 + partitions
        # combined terms per observable instead of every term
        identities = [next((k for k, pauli in enumerate(part.paulis) if not (pauli.x.any() or pauli.z.any())), -1)
                      for part in parts]
        touched = np.array([[part.term_pauli[j] != i for part, i in zip(parts, identities)]
                            for j in range(len(plan.paulis))]).reshape(len(plan.paulis), len(parts))
        self.local_terms = (
            len(parts) > 1 and min(identities) >= 0 and bool(np.all(touched.sum(axis=1) <= 1))
            and len(plan.paulis) > len(parts) + 1
        )
        self.identities = identities
        self.term_partition = np.where(touched.any(axis=1), touched.argmax(axis=1), -1)  # -1: the identity term
        self._device: dict[tuple, object] = {}

    def _cut_steps(self, letters: list[list[str]]) -> list[Absorption]:
        """One absorption per cut; ``letters`` (each partition's channel indices) follow them."""
        holder = {
            (c, side): p for p, part in enumerate(self.plan.partitions) for c, side in zip(part.cut_ids, part.sides)
        }
        steps = []
        for c, kernel in enumerate(self.plan.cut_kernels):
            into_side = 1 if holder[c, 1] > holder[c, 0] else 0
            into = holder[c, into_side]
            axis = letters[into].index(_side_letter(c, into_side))
            letters[into][axis] = _side_letter(c, 1 - into_side)
            if kernel is None:  # trainable: its kernels come with each query
                steps.append(Absorption(into, axis, None, c, transposed=into_side == 0))
            else:
                steps.append(Absorption(into, axis, kernel if into_side == 1 else kernel.T))
        return steps

    def local_operands(self, estimates, weights: np.ndarray, xp: ModuleType = np) -> tuple[list, list, np.ndarray]:
        """Exact mode, a sum of local terms (``local_terms``): per partition its narrow operand
        [subexperiments, rows, 1 + observables] (the identity, then its local terms weighted as
        in each observable), the column of it each combined term reads, and how the combined
        terms' values make the observables [combined terms, observables].

        Combined term 0 is the identity everywhere; term (q, o) is, on partition q, its local
        terms weighted as in observable o, and the identity elsewhere: a sum of local terms is
        the sum over q of those, so it contracts 1 + partitions * observables terms, not all.
        The kernels act on the channels alone, so they are absorbed into the narrow operands
        before the columns are spread over the combined terms (``spread``)."""
        parts, observables = self.plan.partitions, weights.shape[1]
        combine = np.zeros((1 + len(parts) * observables, observables))
        combine[0] = weights[self.term_partition < 0].sum(axis=0)
        combine[1:] = np.tile(np.eye(observables), (len(parts), 1))
        narrow, columns = [], []
        for p, (part, values, identity) in enumerate(zip(parts, estimates, self.identities)):
            values = xp.asarray(values)
            mine = self.term_partition == p
            local = np.zeros((len(part.paulis), observables))  # local Pauli -> weight in each observable
            np.add.at(local, part.term_pauli[mine], weights[mine])
            narrow.append(xp.concatenate([values[:, :, identity : identity + 1], values @ xp.asarray(local)], axis=2))
            reads = np.zeros((len(parts), observables), dtype=np.int64)  # the identity, column 0
            reads[p] = 1 + np.arange(observables)
            columns.append(np.concatenate([[0], reads.reshape(-1)]))
        return narrow, columns, combine

    def spread(self, absorbed, columns, xp: ModuleType = np) -> list:
        """The narrow operands of ``local_operands``, kernels absorbed, over the combined terms."""
        return [operand[..., xp.asarray(reads)] for operand, reads in zip(absorbed, columns)]

    def pauli_terms(self, estimates, xp: ModuleType = np) -> list:
        """Exact mode: per partition its estimates [subexperiments, rows, local Paulis] as
        [subexperiments, rows, global terms] (each term reads the Pauli it restricts to)."""
        out = []
        for p, (part, values, identity) in enumerate(zip(self.plan.partitions, estimates, self.identity_terms)):
            values = xp.asarray(values)
            out.append(values if identity else values[:, :, self._on(xp, ("terms", p), part.term_pauli)])
        return out

    def operands(self, terms) -> list:
        """Per partition its term estimates [subexperiments, rows, terms] shaped as the
        contraction indexes them: [channels..., rows, terms]."""
        if self.flat:
            return list(terms)
        return [values.reshape(*shape, *values.shape[1:]) for shape, values in zip(self.shapes, terms)]

    def _matrix(self, i: int, kernels, xp: ModuleType):
        """Step ``i``'s kernel [other side, this side], or a trainable cut's [rows, ...]."""
        step = self.steps[i]
        return xp.asarray(step.oriented(kernels)) if step.kernel is None else self._on(xp, ("kernel", i), step.kernel)

    def absorb(self, operands, xp: ModuleType = np, kernels=None) -> list:
        """The operands with every cut's kernel multiplied in (``Absorption``); ``kernels`` are
        the query's ``CutPlan.kernels`` where the plan has trainable cuts."""
        out = list(operands)
        for i, step in enumerate(self.steps):
            out[step.into] = _apply(self._matrix(i, kernels, xp), out[step.into], step.axis, xp)
        return out

    def values(self, absorbed, xp: ModuleType = np):
        """Value of every global Pauli term for every row, shape [rows, terms]."""
        if len(absorbed) == 1 and not self.steps:  # uncut: the estimates are the values
            return absorbed[0].reshape(absorbed[0].shape[-2:])
        if len(absorbed) == 2 and self.gradient_expressions[0] is None:  # two operands with the same indices
            first, second = absorbed
            product = first * second
            return (product if self.flat else product.reshape(-1, *first.shape[-2:])).sum(axis=0)
        return _contract(xp, self.expression, absorbed)

    def sensitivities(self, operands, absorbed, xp: ModuleType = np, kernels=None) -> list:
        """d value[r, j] / d operand_p[s, r, j] for every partition, shape [subexperiments, rows,
        terms] (``kernels`` as for ``absorb``)."""
        grads = []
        for p, part in enumerate(self.plan.partitions):
            others = absorbed[:p] + absorbed[p + 1 :]
            if not others:  # a single uncut partition: the value is the estimate itself
                grad = xp.ones(operands[p].shape)
            else:
                expression = self.gradient_expressions[p]
                grad = others[0] if expression is None else _contract(xp, expression, others)
            for i, step in self.back_steps[p]:
                grad = _apply(self._matrix(i, kernels, xp).swapaxes(-1, -2), grad, step.axis, xp)
            grads.append(grad if self.flat else grad.reshape(part.num_subexperiments, *grad.shape[-2:]))
        return grads

    def stacked_sensitivities(self, stacked, xp: ModuleType = np):
        """Both sensitivities [2, subexperiments, rows, terms] of a two-partition contraction
        from both term estimates stacked the same way (``coupling`` set): one matmul, where
        ``sensitivities`` takes one per partition and a copy to stack them."""
        assert self.coupling is not None, "only two partitions of equal size stack"
        coupling = self._on(xp, ("coupling",), self.coupling)
        return (coupling @ stacked.reshape(len(coupling), -1)).reshape(stacked.shape)


@dataclass(frozen=True)
class SettingBlock:
    """Sampled-mode measurement settings of one shape: ``subexperiments`` each, measuring
    ``paulis`` Paulis. Their sums lie side by side in a query's buffer and are reconstructed
    as one stack; ``term_maps[c, 0]`` [K, terms] weighs setting ``settings[c]``'s means into the
    term estimates of its partition ``partitions[c]`` (a term reads the Pauli it restricts to,
    averaged over the settings that measure it)."""

    settings: tuple[int, ...]
    partitions: tuple[int, ...]
    subexperiments: int
    paulis: int
    term_maps: np.ndarray
    identity: bool  # every term map is the identity: the means are the term estimates


class SettingBlocks(_DeviceCopies):
    """Sampled mode, worked out once per program and rank: its measurement settings grouped in
    SettingBlocks, the shot allocations, and the per-shots and per-observable factors of their
    reconstruction (kept for the shots and observables seen)."""

    def __init__(self, program: Program):
        plan = program.plan
        shapes: dict[tuple[int, int], list[int]] = {}
        for k, setting in enumerate(program.settings):
            part = plan.partitions[setting.partition]
            shapes.setdefault((part.num_subexperiments, len(setting.paulis)), []).append(k)
        self.blocks = []
        for (subexperiments, paulis), settings in shapes.items():
            maps = []
            for k in settings:
                setting = program.settings[k]
                term_pauli = plan.partitions[setting.partition].term_pauli
                maps.append(((setting.paulis[:, None] == term_pauli[None, :]) * setting.weights[:, None]))
            partitions = tuple(program.settings[k].partition for k in settings)
            term_maps = np.array(maps)[:, None]  # [settings, 1, K, terms]: multiplies [settings, s, r, K]
            identity = len(set(partitions)) == len(partitions) and all(
                m.shape[0] == m.shape[1] and np.array_equal(m, np.eye(len(m))) for m in maps
            )
            self.blocks.append(SettingBlock(tuple(settings), partitions, subexperiments, paulis, term_maps, identity))
        self.partitions = len(plan.partitions)
        # one block that holds every partition's setting, in partition order, as its term
        # estimates: its means are the operands stacked (``Contraction.stacked_sensitivities``)
        self.stacked = len(self.blocks) == 1 and self.blocks[0].identity and self.blocks[0].partitions == tuple(
            range(self.partitions)
        )
        self.program = program
        self._allocations: dict[int, tuple[np.ndarray, ...]] = {}
        self._scales: dict[int, list] = {}
        self._observable_maps: dict[tuple, list] = {}
        self._device: dict[tuple, object] = {}

    def allocation(self, shots: int, kernels: list[np.ndarray] | None) -> tuple[np.ndarray, ...]:
        """Shots of every (setting, subexperiment) (``Program.subexperiment_shots``), kept per
        ``shots``; [subexperiments, rows] where the split depends on the rows' ``kernels``."""
        if self.program.shots_per_row:
            return self.program.subexperiment_shots(shots, kernels)
        if shots not in self._allocations:
            self._allocations[shots] = self.program.subexperiment_shots(shots)
        return self._allocations[shots]

    def shot_scales(self, shots: int, allocation: tuple[np.ndarray, ...], xp: ModuleType = np) -> list[tuple]:
        """Per block [settings, subexperiments, 1 or rows, 1] of ``allocation`` (``allocation``
        of ``shots``): ``1 / n`` (a mean of ``n`` shots) and ``1 / (n - 1)`` (the variance of
        that mean from the shots' spread, unbiased); a subexperiment of zero weight gets no
        shots (n = 0) and is taken as n = 1: its sums, so its mean and variance, are 0."""
        per_row = self.program.shots_per_row
        if per_row or shots not in self._scales:
            scales = []
            for block in self.blocks:
                n = np.array([allocation[k] for k in block.settings])
                n = n[..., None] if per_row else n[:, :, None, None]
                scales.append((1.0 / np.maximum(n, 1), 1.0 / np.maximum(n - 1, 1)))
            if per_row:
                return [(xp.asarray(inverse), xp.asarray(scale)) for inverse, scale in scales]
            self._scales[shots] = scales
        return [
            (self._on(xp, ("inverse", shots, b), inverse), self._on(xp, ("scale", shots, b), scale))
            for b, (inverse, scale) in enumerate(self._scales[shots])
        ]

    def observable_maps(self, weights: np.ndarray) -> list[np.ndarray]:
        """Per block [settings, terms, K * observables]: the term maps times the observables'
        term ``weights`` [terms, observables] (kept for the latest few weights)."""
        key = (weights.shape, weights.dtype.str, weights.tobytes())
        if key not in self._observable_maps:
            if len(self._observable_maps) >= 8:
                self._observable_maps.clear()
            self._observable_maps[key] = [
                (block.term_maps[:, 0].transpose(0, 2, 1)[..., None] * weights[None, :, None, :]).reshape(
                    len(block.settings), len(weights), -1
                )
                for block in self.blocks
            ]
        return self._observable_maps[key]

    def means_and_products(self, sums, scales: list[tuple], xp: ModuleType = np) -> list[tuple]:
        """Per block the means [settings, subexperiments, rows, K] and means of products
        [..., K, K] from a buffer's sums [settings, subexperiments, rows, K + K * K] and the
        query's ``shot_scales``."""
        out = []
        for block, summed, (inverse, _) in zip(self.blocks, sums, scales):
            scaled = xp.asarray(summed) * inverse
            k = block.paulis
            out.append((scaled[..., :k], scaled[..., k:].reshape(*scaled.shape[:3], k, k)))
        return out

    def terms(self, moments, xp: ModuleType = np) -> list:
        """Per partition its term estimates [subexperiments, rows, terms]."""
        found: dict[int, object] = {}
        for b, (block, (means, _)) in enumerate(zip(self.blocks, moments)):
            # [settings, s, r, terms]; a setting measuring every term's Pauli, in term order, is its own map
            stacked = means if block.identity else means @ self._on(xp, ("terms", b), block.term_maps)
            for c, p in enumerate(block.partitions):
                found[p] = found[p] + stacked[c] if p in found else stacked[c]
        return [found[p] for p in range(self.partitions)]

    def stack(self, grads, xp: ModuleType = np) -> list:
        """Per block its partitions' sensitivities ``grads[p]`` [s, r, terms] stacked as its
        settings: [settings, s, r, terms] (``variance``'s input)."""
        return [xp.array([grads[p] for p in block.partitions]) for block in self.blocks]  # cheaper than stack

    def variance(self, stacked_grads, moments, weights: np.ndarray, scales: list[tuple], xp: ModuleType = np):
        """Delta-method variance of every value, shaped [rows, observables].

        ``stacked_grads[b]`` is d value[r, j] / d (term estimates of each setting's partition)
        [settings, s, r, j] of block ``b`` (``stack`` of ``Contraction.sensitivities``).
        Experiments are independent; the Paulis of one setting share shots, hence their
        covariances. ``scales`` are the query's ``shot_scales``.
        """
        variance = None
        for b, (block, g, (means, products), (_, scale)) in enumerate(zip(self.blocks, stacked_grads, moments, scales)):
            settings, s, r, k = means.shape
            # d value[r, o] / d means[c, s, r, k]: through the term maps, or, where a setting's
            # Paulis are its partition's terms in order, each term's weights as they are
            if block.identity:
                d = g[..., None] * xp.asarray(weights)
            else:
                maps = xp.asarray(self.observable_maps(weights)[b])
                d = (g.reshape(settings, s * r, -1) @ maps).reshape(settings, s, r, k, -1)
            covariance = products - means[..., :, None] * means[..., None, :]
            if k == 1:  # one Pauli per setting: d^2 times its variance (not one 1x1 matmul per row)
                spread = d[..., 0, :] ** 2 * covariance[..., 0, :]
            else:  # d^T covariance d per (setting, s, r, o)
                spread = (d * (covariance @ d)).sum(axis=-2)
            term = (spread * scale).sum(axis=(0, 1))
            variance = term if variance is None else variance + term
        return variance

def along(matrix, tensor, axis: int):
    """``matrix`` applied along ``axis`` of ``tensor`` (NumPy or CuPy arrays), the axis staying
    put: one (batched) matmul, no axis moves."""
    shape = tensor.shape
    lead = math.prod(shape[:axis])
    out = matrix @ (tensor.reshape(shape[0], -1) if axis == 0 else tensor.reshape(lead, shape[axis], -1))
    return out.reshape(*shape[:axis], matrix.shape[0], *shape[axis + 1 :])


def _apply(matrix, tensor, axis: int, xp: ModuleType):
    """A kernel applied along ``axis`` of an operand: one matrix (``along``), or one per row."""
    return along(matrix, tensor, axis) if matrix.ndim == 2 else along_rows(matrix, tensor, axis, xp)


def along_rows(matrices, tensor, axis: int, xp: ModuleType = np):
    """Per-row ``matrices`` [rows, m, n] applied along ``axis`` of ``tensor`` [..., n, ..., rows,
    terms] (rows second to last), the axis staying put."""
    moved = xp.moveaxis(tensor, axis, -3)
    return xp.moveaxis(xp.einsum("rmn,...nrt->...mrt", matrices, moved), -3, axis)


_DIRECT_LIMIT = 1 << 18  # below this many index combinations one direct einsum beats planning


@lru_cache(maxsize=256)
def _numpy_order(expression: str, shapes: tuple[tuple[int, ...], ...]):
    """einsum's ``optimize`` for NumPy, decided once per (expression, shapes): a direct loop for
    small contractions, else a greedy contraction order (finding one costs more than using it)."""
    sizes: dict[str, int] = {}
    for spec, shape in zip(expression.split("->")[0].split(","), shapes):
        sizes.update(zip(spec, shape))
    if math.prod(sizes.values()) < _DIRECT_LIMIT:
        return False
    return np.einsum_path(expression, *(np.empty(s) for s in shapes), optimize="greedy")[0]


def _contract(xp: ModuleType, expression: str, tensors):
    if xp is np:
        return np.einsum(expression, *tensors, optimize=_numpy_order(expression, tuple(t.shape for t in tensors)))
    return xp.einsum(expression, *tensors, optimize="greedy")
