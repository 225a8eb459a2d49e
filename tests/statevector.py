"""Exact expectation values of the uncut circuit, from Qiskit's Statevector alone (no hpcqnn code)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp, Statevector


def exact_values(
    circuit: QuantumCircuit,
    observables: SparsePauliOp | Sequence[SparsePauliOp],
    parameter_values: np.ndarray | Sequence = (),
) -> np.ndarray:
    """``<observable>`` in the state of ``circuit`` bound to each row of ``parameter_values``,
    broadcast like an estimator pub: values ``[..., num_parameters]`` (in ``circuit.parameters``
    order; none for a parameter-free circuit) against one observable or a list of them.

    A single row and a single observable give a scalar. The addon's CutWire markers, identities
    on the state, are dropped before simulating.
    """
    uncut = circuit.copy_empty_like()
    for inst in circuit.data:
        if inst.operation.name != "cut_wire":
            uncut.append(inst)
    values = np.asarray(parameter_values, dtype=float)
    rows = values.reshape(int(np.prod(values.shape[:-1])), values.shape[-1])
    states = [Statevector(uncut.assign_parameters(row)) for row in rows]
    single = isinstance(observables, SparsePauliOp)
    table = np.empty(() if single else len(observables), dtype=object)
    for index, observable in zip(np.ndindex(table.shape), [observables] if single else observables):
        table[index] = observable
    state_index, table = np.broadcast_arrays(np.arange(len(rows)).reshape(values.shape[:-1]), table)
    evs = [states[s].expectation_value(o).real for s, o in zip(state_index.flat, table.flat)]
    return np.array(evs, dtype=float).reshape(state_index.shape)[()]
