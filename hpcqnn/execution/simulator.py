"""Qiskit Aer execution of work tiles: every tile of a call goes into one Aer execution.

A tile is (program circuit, first experiment, end experiment). For an enumerated template,
experiment ``e`` is subexperiment ``e // n`` with row ``e % n`` of the ``n`` parameter rows the
circuit's partition runs (``query.QueryRows``); for a coherent circuit it is row ``e``. The
circuit's parameters and a template's term parameters (its subexperiment) are bound at run time
(Aer's parameterizations), never as circuit copies. Aer's public ``run`` re-assembles every
circuit on every call and builds a ``Result`` object per experiment; for the small circuits of
cut QNNs that Python work costs several times the simulation itself (measured: about 1 ms per
circuit per call), so a program's circuits are compiled and assembled once per rank
(``assemble``, called by ``execution.compiled.compile_program``) and reused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from qiskit.circuit import Parameter, ParameterExpression, QuantumCircuit
from qiskit.primitives.containers.bindings_array import BindingsArray
from qiskit_aer import AerError, AerSimulator
from qiskit_aer.backends.aer_compiler import assemble_circuits, generate_aer_config
from qiskit_aer.backends.backend_utils import LIBRARY_DIR
from qiskit_aer.backends.controller_wrappers import AerConfig

from hpcqnn.cutting.program import Program
from hpcqnn.cutting.trainable import affine_form
from hpcqnn.errors import ExecutionConfigError, SimulationError
from hpcqnn.execution.compiled import CompiledProgram
from hpcqnn.execution.devices import Placement
from hpcqnn.execution.query import QueryRows
from hpcqnn.execution.tiles import Tile
from hpcqnn.noise import make_sampler


@dataclass(frozen=True)
class Assembled:
    """A program's circuits in Aer's native form, with where each free parameter is bound."""

    compiled: list[QuantumCircuit]
    aer_circuits: list
    slots: list[list[Slot]]
    simulator: AerSimulator  # the runner's, or a noisy program's density-matrix simulator
    noise: dict | None = None  # the noise model as Aer's compilation left it, serialised once (None: noiseless)


class AerRunner:
    """Runs program tiles on one Aer statevector simulator.

    ``placement`` is where (``"CPU"``, ``"GPU"`` meaning GPU 0, or a ``devices.Placement``);
    on a GPU every Aer call targets that one GPU. ``options`` are further Aer backend options
    (e.g. ``cuStateVec_enable``), for benchmarks; an unknown name is an ``ExecutionConfigError``.
    """

    def __init__(
        self, placement: str | Placement = "CPU", threads: int = 0, options: Mapping[str, object] | None = None
    ):
        if isinstance(placement, str):
            if placement not in ("CPU", "GPU"):
                raise ExecutionConfigError(f"AerRunner runs on 'CPU' or 'GPU', got {placement!r}")
            placement = Placement(0 if placement == "GPU" else None)
        self.placement = placement
        try:
            self.backend = AerSimulator(
                method="statevector", device=placement.device, max_parallel_threads=threads, **(options or {})
            )
        except AerError as exc:
            raise ExecutionConfigError(f"invalid Aer option: {exc}") from exc

    @property
    def device(self) -> str:
        return self.placement.device

    @property
    def run_options(self) -> dict[str, object]:
        """Per-call Aer options: one shot per experiment, run-time binding, this runner's GPU."""
        options: dict[str, object] = {"shots": 1, "runtime_parameter_bind_enable": True}
        if self.placement.gpu is not None:
            options["target_gpus"] = [self.placement.gpu]
        return options

    def run(
        self, compiled: CompiledProgram, rows: QueryRows, tiles: Sequence[Tile],
        allocation: tuple[np.ndarray, ...] | None = None,
    ) -> list[np.ndarray]:
        """Raw outputs per tile, each shaped [tile experiments, outputs of that circuit], from ONE
        Aer execution of ``tiles`` (``engine.call_pieces`` sizes the calls); a program whose
        noise is a sampler's: outcome counts from one sampler job, with the query's shot
        ``allocation`` (``Query.allocation``)."""
        program, assembled = compiled.program, compiled.assembled
        if program.noisy is not None and program.noisy.sampler is not None:
            if allocation is None:
                raise ValueError("a sampler's program runs with the query's shot allocation")
            return self._run_on_sampler(program, rows, tiles, allocation)
        if assembled is None:
            raise ValueError("this program was compiled without a simulator (compile_program(program, runner))")
        by_circuit: dict[int, list[int]] = {}
        for k, tile in enumerate(tiles):
            by_circuit.setdefault(tile.circuit, []).append(k)

        circuits, aer_circuits, parameterizations, experiments, expand = [], [], [], [], []
        for c, members in by_circuit.items():
            index = np.concatenate([np.arange(tiles[k].start, tiles[k].stop) for k in members])
            p = program.partition_of[c]
            part, params = program.plan.partitions[p], rows.unique[p]
            subexperiment, row = np.divmod(index, len(params))  # experiment = subexperiment x rows + row
            spread = None
            if rows.same is not None:  # sampled mode: equal rows share one simulated distribution
                index, spread = np.unique(subexperiment * len(params) + rows.same[p][row], return_inverse=True)
                subexperiment, row = np.divmod(index, len(params))
            expand.append(spread)
            used = [program.plan.parameters[i] for i in part.parameter_columns]
            values = dict(zip(used, params[:, part.parameter_columns][row].T))
            if program.coherent(c) is None and program.noisy is None:  # only templates have term parameters
                values.update(zip(part.term_parameters, part.term_values[subexperiment].T))
            slots = assembled.slots[c]
            circuits.append(assembled.compiled[c])
            aer_circuits.append(assembled.aer_circuits[c])
            parameterizations.append([[slot.where, slot.values(values)] for slot in slots])
            experiments.append(len(index) if slots else 1)  # parameter-free: once for all

        simulator = assembled.simulator
        config = generate_aer_config(
            circuits, simulator.options, parameterizations=parameterizations, **self.run_options
        )
        try:
            # Aer's own _execute_circuits serialises the noise model on every call (30 ms for a
            # fake device's, measured here): it is serialised once, in ``assemble``
            config.library_dir = LIBRARY_DIR
            output = simulator._controller.execute(aer_circuits, assembled.noise or {}, config)
        except Exception as exc:  # Aer's controller raises AerError and plain C++ exceptions
            raise _simulation_error(exc, circuits) from exc
        results = output.get("results", []) if isinstance(output, dict) else []
        if not results or not output.get("success", False) or not all(r.get("success") for r in results):
            failed = next((r.get("status") for r in results if not r.get("success")), None)
            status = failed or (output.get("status") if isinstance(output, dict) else output)
            raise SimulationError(f"Aer simulation failed: {status}")

        out: dict[int, np.ndarray] = {}
        first = 0
        for (c, members), count, spread in zip(by_circuit.items(), experiments, expand):
            outcomes = compiled.readouts[c].outputs(results[first : first + count])
            first += count
            if spread is not None and count > 1:
                outcomes, count = outcomes[spread.reshape(-1)], len(spread)
            offset = 0
            for k in members:
                n = tiles[k].stop - tiles[k].start
                block = outcomes if count == 1 else outcomes[offset : offset + n]
                out[k] = np.broadcast_to(block, (n, outcomes.shape[1])).copy()
                offset += n
        return [out[k] for k in range(len(tiles))]

    def _run_on_sampler(
        self, program: Program, rows: QueryRows, tiles: Sequence[Tile], allocation: tuple[np.ndarray, ...]
    ) -> list[np.ndarray]:
        """Counts [tile rows, 2**bits] per tile: each tile's device circuit run by the program's
        sampler (``noise.make_sampler``: built once per process) as one pub per distinct shot count of its rows, bits as
        ``cutting.noisy`` numbers them (``obs`` low, ``qpd`` high)."""
        noisy = program.noisy
        assert noisy is not None and noisy.sampler is not None
        pubs, owners = [], []
        for k, tile in enumerate(tiles):
            c = tile.circuit
            p = program.partition_of[c]
            circuit = noisy.device_circuits[c]
            shots = allocation[program.settings_of[c][0]][noisy.subexperiment_of[c]]
            shots = np.broadcast_to(shots[tile.start : tile.stop] if shots.ndim else shots, tile.stop - tile.start)
            used = [program.plan.parameters[i] for i in program.plan.partitions[p].parameter_columns]
            values = rows.unique[p][tile.start : tile.stop][:, program.plan.partitions[p].parameter_columns]
            for n in np.unique(shots[shots > 0]):
                members = np.flatnonzero(shots == n)
                if used:
                    pubs.append((circuit, BindingsArray({tuple(used): values[members]}), int(n)))
                else:  # one pub of every row's shots (samplers run a parameter-free circuit once)
                    pubs.append((circuit, None, int(n) * len(members)))
                owners.append((k, members))
        out = [np.zeros((t.stop - t.start, 2 ** len(noisy.confusions[t.circuit]))) for t in tiles]
        if not pubs:
            return out
        sampler = make_sampler(noisy.sampler)
        try:
            results = sampler.run(pubs).result()
        except Exception as exc:
            raise SimulationError(f"the sampler {noisy.sampler!r} failed ({type(exc).__name__}): {exc}") from exc
        for (k, members), result in zip(owners, results):
            bits = [getattr(result.data, name) for name in ("obs", "qpd") if hasattr(result.data, name)]
            shots_bits = np.concatenate([b.to_bool_array(order="little") for b in bits], axis=-1)
            outcome = shots_bits.astype(np.int64) @ (1 << np.arange(shots_bits.shape[-1], dtype=np.int64))
            counts = out[k]
            for row, seen in zip(members, outcome.reshape(len(members), -1)):  # rows' shots in order
                counts[row] = np.bincount(seen, minlength=counts.shape[1])
        return out

    def assemble(self, program: Program) -> Assembled:
        """``program``'s circuits compiled and assembled for this simulator (once per rank); a
        noisy program's for a density-matrix simulator with its noise model, built here."""
        simulator = self.backend
        if program.noisy is not None and program.noisy.sampler is not None:  # runs on its sampler
            return Assembled([], [], [], simulator)
        if program.noisy is not None:
            simulator = AerSimulator(
                method="density_matrix",
                device=self.placement.device,
                max_parallel_threads=self.backend.options.max_parallel_threads,
                noise_model=program.noisy.noise_model,
            )
        try:
            compiled, noise_model = simulator._compile(list(program.circuits))
            aer_circuits, index_maps = assemble_circuits(compiled)
        except Exception as exc:  # e.g. AerError('unknown instruction: ...')
            raise _simulation_error(exc, program.circuits) from exc
        for circ_id, aer_circuit in enumerate(aer_circuits):
            aer_circuit.circ_id = circ_id
        slots = [_parameter_slots(c, m) for c, m in zip(compiled, index_maps)]
        noise = noise_model.to_dict(serializable=True) if noise_model else None
        return Assembled(compiled, aer_circuits, slots, simulator, noise)


def _simulation_error(exc: Exception, circuits: Sequence[QuantumCircuit]) -> SimulationError:
    """A ``SimulationError`` naming what Aer refused: the instruction, with the circuits that hold it."""
    message = str(exc).strip("'\"")
    if "unknown instruction" in message:
        name = message.rsplit(":", 1)[-1].strip()
        holders = [c.name for c in circuits if any(inst.operation.name == name for inst in c.data)]
        where = f" (in {', '.join(holders)})" if holders else ""
        return SimulationError(
            f"Aer cannot simulate the instruction {name!r}{where}: hpcqnn should have unrolled it; "
            "please report this circuit"
        )
    return SimulationError(f"Aer simulation failed ({type(exc).__name__}): {message}")


@dataclass(frozen=True)
class Slot:
    """Where Aer binds an unbound ``expression`` (instruction index, parameter position, as Aer
    numbers them), and its ``trainable.affine_form`` over its ``parameters`` when it has one."""

    where: tuple[int, int]
    expression: ParameterExpression
    parameters: tuple[Parameter, ...]
    affine: tuple[np.ndarray, float] | None

    def values(self, values: dict[Parameter, np.ndarray]) -> list[float]:
        """The expression at every row of ``values``: vectorised where it is affine (the
        transpiler's ``theta + pi`` and the like), else bound row by row."""
        if isinstance(self.expression, Parameter):
            return values[self.expression].tolist()
        if self.affine is not None:
            slopes, offset = self.affine
            return (np.column_stack([values[p] for p in self.parameters]) @ slopes + offset).tolist()
        count = len(values[self.parameters[0]])
        return [
            float(self.expression.bind({p: values[p][k] for p in self.parameters}).numeric()) for k in range(count)
        ]


def _parameter_slots(circuit: QuantumCircuit, index_map) -> list[Slot]:
    """A ``Slot`` for every unbound parameter expression of ``circuit``."""
    found = []
    phase = circuit.global_phase
    if isinstance(phase, ParameterExpression) and phase.parameters:
        found.append(((AerConfig.GLOBAL_PHASE_POS, -1), phase))
    for index, inst in enumerate(circuit.data):
        for position, value in enumerate(inst.operation.params):
            if isinstance(value, ParameterExpression) and value.parameters:
                found.append(((index_map[index] if index_map else index, position), value))
    slots = []
    for where, expression in found:
        parameters = tuple(expression.parameters)
        affine = None if isinstance(expression, Parameter) else affine_form(expression, parameters)
        slots.append(Slot(where, expression, parameters, affine))
    return slots
