"""Reconstruction: one tensor contraction over cut indices, rows and Pauli terms.

For global Pauli term ``j`` and parameter row ``r``::

    value[r, j] = sum_{t_1..t_C} prod_c coeff_c[t_c] * prod_p E_p[sub_p(t restricted to p), r, pauli_p(j)]

Each partition's operand carries only the indices of the cuts that touch it, so the joint
product of all QPD terms is never materialised; ``einsum`` picks the contraction order. All
functions take an array module ``xp`` (NumPy or CuPy) and are free of MPI and simulators.
"""

from __future__ import annotations

import string
from functools import lru_cache
from types import ModuleType

import numpy as np

from .cutplan import CutPlan

_ROW, _TERM = "r", "j"
_CUT_LETTERS = [c for c in string.ascii_letters if c not in (_ROW, _TERM)]


def _cut_letter(cut: int) -> str:
    if cut >= len(_CUT_LETTERS):
        raise ValueError(f"reconstruction supports at most {len(_CUT_LETTERS)} cuts, got cut {cut}")
    return _CUT_LETTERS[cut]


def _operands(plan: CutPlan, estimates, xp: ModuleType):
    """einsum operands: one coefficient vector per cut, one gathered tensor per partition."""
    specs, tensors = [], []
    for c, coeffs in enumerate(plan.cut_coefficients):
        specs.append(_cut_letter(c))
        tensors.append(xp.asarray(coeffs))
    for part, values in zip(plan.partitions, estimates):
        by_term = xp.asarray(values)[:, :, xp.asarray(part.term_pauli)]
        tensors.append(by_term[xp.asarray(part.term_index)])
        specs.append("".join(_cut_letter(c) for c in part.cut_ids) + _ROW + _TERM)
    return specs, tensors


@lru_cache(maxsize=256)
def _numpy_path(expression: str, shapes: tuple[tuple[int, ...], ...]) -> list:
    """Contraction order, found once per (expression, shapes): finding it costs more than using it."""
    return np.einsum_path(expression, *(np.empty(s) for s in shapes), optimize="greedy")[0]


def _contract(xp: ModuleType, expression: str, tensors):
    if xp is np:
        return np.einsum(expression, *tensors, optimize=_numpy_path(expression, tuple(t.shape for t in tensors)))
    return xp.einsum(expression, *tensors, optimize="greedy")


def reconstruct_terms(plan: CutPlan, estimates, xp: ModuleType = np):
    """Value of every global Pauli term for every row, shape [rows, terms]."""
    specs, tensors = _operands(plan, estimates, xp)
    return _contract(xp, ",".join(specs) + "->" + _ROW + _TERM, tensors)


def term_sensitivities(plan: CutPlan, estimates, weights, xp: ModuleType = np) -> list:
    """d value[r, o] / d E_p[s, r, k] for every partition, shape [subexperiments, rows, paulis, obs].

    ``weights[j, o]`` is the coefficient of global term ``j`` in observable ``o``. Used for the
    delta-method standard errors of sampled mode.
    """
    specs, tensors = _operands(plan, estimates, xp)
    first_partition = len(plan.cut_coefficients)
    weights = xp.asarray(weights)
    out = []
    for p, part in enumerate(plan.partitions):
        k = first_partition + p
        others = specs[:k] + specs[k + 1 :]
        rest = tensors[:k] + tensors[k + 1 :]
        if rest:
            grad = _contract(xp, ",".join(others) + "->" + specs[k], rest)
        else:  # a single uncut partition: the value is the estimate itself
            grad = xp.ones(tensors[k].shape)
        grad = grad.reshape(-1, *grad.shape[-2:])  # [joint local terms, rows, terms]
        onehot = xp.zeros((len(part.term_pauli), len(part.paulis)))
        onehot[xp.arange(len(part.term_pauli)), xp.asarray(part.term_pauli)] = 1.0
        per_term = xp.einsum("trj,jo,jk->trko", grad, weights, onehot)
        sens = xp.zeros((part.num_subexperiments, *per_term.shape[1:]))
        xp.add.at(sens, xp.asarray(part.term_index).reshape(-1), per_term)
        out.append(sens)
    return out
