"""Reconstruction: one tensor contraction over cut indices, rows and Pauli terms.

For global Pauli term ``j`` and parameter row ``r``::

    value[r, j] = sum_{a, b} prod_c K_c[a_c, b_c] * prod_p E_p[(a or b of the cuts touching p), r, pauli_p(j)]

where ``a_c``/``b_c`` pick the simulated basis channel on each side of cut ``c`` and the kernel
``K_c`` folds in the QPD coefficients (``cutplan.CutPlan``). Each partition's operand carries
only the indices of the cuts that touch it, so the joint product of all QPD terms is never
materialised; ``einsum`` picks the contraction order. All
functions take an array module ``xp`` (NumPy or CuPy) and are free of MPI and simulators.
"""

from __future__ import annotations

import math
import string
from functools import lru_cache
from types import ModuleType

import numpy as np

from hpcqnn.cutting.plan import CutPlan

_ROW, _TERM = "r", "j"
_LETTERS = [c for c in string.ascii_letters if c not in (_ROW, _TERM)]


def _side_letter(cut: int, side: int) -> str:
    """The einsum index of the basis channel on ``side`` of ``cut``."""
    if 2 * cut + 1 >= len(_LETTERS):
        raise ValueError(f"reconstruction supports at most {len(_LETTERS) // 2} cuts, got cut {cut}")
    return _LETTERS[2 * cut + side]


def contraction_operands(plan: CutPlan, estimates, xp: ModuleType = np) -> tuple[list[str], list]:
    """einsum specs and operands: one kernel per cut, one tensor [basis channels..., rows, terms]
    per partition (on the device of ``xp``); built once per query, used by both functions below."""
    specs, tensors = [], []
    for c, kernel in enumerate(plan.cut_kernels):
        specs.append(_side_letter(c, 0) + _side_letter(c, 1))
        tensors.append(xp.asarray(kernel))
    for part, values in zip(plan.partitions, estimates):
        by_term = xp.asarray(values)[:, :, xp.asarray(part.term_pauli)]
        tensors.append(by_term.reshape(*part.basis_shape, *by_term.shape[1:]))
        specs.append("".join(_side_letter(c, k) for c, k in zip(part.cut_ids, part.sides)) + _ROW + _TERM)
    return specs, tensors


@lru_cache(maxsize=256)
def _numpy_path(expression: str, shapes: tuple[tuple[int, ...], ...]) -> list:
    """Contraction order, found once per (expression, shapes): finding it costs more than using it."""
    return np.einsum_path(expression, *(np.empty(s) for s in shapes), optimize="greedy")[0]


_DIRECT_LIMIT = 1 << 18  # below this many index combinations one direct einsum beats planning


def _contract(xp: ModuleType, expression: str, tensors):
    sizes: dict[str, int] = {}
    for spec, tensor in zip(expression.split("->")[0].split(","), tensors):
        sizes.update(zip(spec, tensor.shape))
    if xp is np and math.prod(sizes.values()) < _DIRECT_LIMIT:
        return np.einsum(expression, *tensors, optimize=False)
    if xp is np:
        return np.einsum(expression, *tensors, optimize=_numpy_path(expression, tuple(t.shape for t in tensors)))
    return xp.einsum(expression, *tensors, optimize="greedy")


def reconstruct_terms(operands: tuple[list[str], list], xp: ModuleType = np):
    """Value of every global Pauli term for every row, shape [rows, terms].

    Each cut's kernel is first contracted into the partition operand holding its side 1: a BLAS
    ``tensordot`` free of the row and term indices, where einsum's pairwise path would loop over
    them (measured here: 6x faster for two partitions, 3 cuts, 400 rows)."""
    specs, tensors = operands
    cuts = sum(_ROW not in spec for spec in specs)  # the kernels come first (contraction_operands)
    specs, tensors = list(specs[cuts:]), list(tensors[cuts:])
    for side0_side1, kernel in zip(operands[0][:cuts], operands[1][:cuts]):
        side1 = side0_side1[1]
        p = next(i for i, spec in enumerate(specs) if side1 in spec)
        tensors[p] = xp.tensordot(kernel, tensors[p], axes=([1], [specs[p].index(side1)]))
        specs[p] = side0_side1[0] + specs[p].replace(side1, "")
    return _contract(xp, ",".join(specs) + "->" + _ROW + _TERM, tensors)


def term_sensitivities(plan: CutPlan, operands: tuple[list[str], list], weights, xp: ModuleType = np) -> list:
    """d value[r, o] / d E_p[s, r, k] for every partition, shape [subexperiments, rows, paulis, obs].

    ``weights[j, o]`` is the coefficient of global term ``j`` in observable ``o``. Used for the
    delta-method standard errors of sampled mode.
    """
    specs, tensors = operands
    first_partition = len(plan.cut_kernels)
    weights = xp.asarray(weights)
    out = []
    for p, part in enumerate(plan.partitions):
        k = first_partition + p
        others, rest = specs[:k] + specs[k + 1 :], tensors[:k] + tensors[k + 1 :]
        if rest:
            grad = _contract(xp, ",".join(others) + "->" + specs[k], rest)
        else:  # a single uncut partition: the value is the estimate itself
            grad = xp.ones(tensors[k].shape)
        grad = grad.reshape(part.num_subexperiments, *grad.shape[-2:])  # [subexperiments, rows, terms]
        onehot = xp.zeros((len(part.term_pauli), len(part.paulis)))
        onehot[xp.arange(len(part.term_pauli)), xp.asarray(part.term_pauli)] = 1.0
        out.append(xp.einsum("srj,jo,jk->srko", grad, weights, onehot))
    return out
