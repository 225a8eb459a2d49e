"""Local QPD channels of a cut side, reduced to a linearly independent basis.

qiskit-addon-cutting's ``QPDBasis`` lists, per QPD term, the local operations on each side of a
cut. Duplicates are merged and, with ``minimal``, only a linearly independent subset (by Pauli
transfer matrix) is simulated; every term's channel is an exact combination of that basis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qiskit.circuit import Gate
from qiskit_addon_cutting.qpd import QPDBasis

from hpcqnn.errors import CutPlanError


@dataclass(frozen=True)
class CutSide:
    """The local channels one side of a cut simulates: ``basis`` op lists, and per QPD term ``t``
    its channel as a combination ``expansion[t] @ basis`` (one-hot when nothing is reduced)."""

    basis: list[list]
    expansion: np.ndarray  # [QPD terms, basis channels]


def _local_op_key(ops) -> tuple:
    # params are angles, or a matrix for the ``unitary`` gates of the addon's KAK decompositions
    return tuple((op.name, tuple(tuple(np.asarray(x, dtype=complex).ravel()) for x in op.params)) for op in ops)


def cut_side(basis: QPDBasis, side: int, minimal: bool) -> CutSide:
    """Distinct local op lists of one side of a cut, reduced to a linearly independent basis."""
    keys: dict[tuple, int] = {}
    distinct: list[list] = []
    term_to_distinct: list[int] = []
    for term in basis.maps:
        key = _local_op_key(term[side])
        if key not in keys:
            keys[key] = len(distinct)
            distinct.append(list(term[side]))
        term_to_distinct.append(keys[key])
    transfer = np.array([_transfer_matrix(ops).ravel() for ops in distinct])  # also validates the ops
    if minimal:
        chosen: list[int] = []
        for d in range(len(distinct)):
            if np.linalg.matrix_rank(transfer[chosen + [d]], tol=1e-9) > len(chosen):
                chosen.append(d)
        coefficients, *_ = np.linalg.lstsq(transfer[chosen].T, transfer.T, rcond=None)
        if not np.allclose(coefficients.T @ transfer[chosen], transfer, atol=1e-12):
            raise CutPlanError("internal: a local QPD channel is not spanned by the chosen basis")
        by_distinct = np.where(np.abs(coefficients.T) < 1e-12, 0.0, coefficients.T)
    else:
        chosen, by_distinct = list(range(len(distinct))), np.eye(len(distinct))
    return CutSide([distinct[d] for d in chosen], by_distinct[term_to_distinct])


_PAULIS = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]])


_PROJECTORS = (np.diag([1.0, 0.0]), np.diag([0.0, 1.0]))


def _transfer_matrix(ops) -> np.ndarray:
    """Pauli transfer matrix of a local op list; a QPD measurement is the signed map
    P0 . P0 - P1 . P1 (its outcome sign joins the estimate), a reset is Tr(.) |0><0|."""

    def apply(op, rho: np.ndarray) -> np.ndarray:
        if op.name == "qpd_measure":
            return _PROJECTORS[0] @ rho @ _PROJECTORS[0] - _PROJECTORS[1] @ rho @ _PROJECTORS[1]
        if op.name == "reset":
            return np.trace(rho) * _PROJECTORS[0]
        if not isinstance(op, Gate):
            raise CutPlanError(f"QPD term uses {op.name!r}, which hpcqnn cannot defer")
        u = op.to_matrix()
        return u @ rho @ u.conj().T

    columns = []
    for pauli in _PAULIS:
        rho = pauli
        for op in ops:
            rho = apply(op, rho)
        columns.append([np.real(np.trace(p @ rho)) / 2 for p in _PAULIS])
    return np.array(columns).T
