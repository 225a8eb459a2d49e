"""A program compiled for one rank: everything execution works out from it, built once.

Programs and plans are plain data, broadcast to every rank. When one arrives, its engine builds
a ``CompiledProgram`` explicitly (``compile_program``), keyed by the program id the engine sends
over MPI; queries carry it. It holds the simulator's assembled circuits, one readout per circuit,
the contraction of the plan, and in sampled mode the settings' reconstruction factors and shot
allocations: the only per-rank state a program has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpcqnn.cutting.program import Program
from hpcqnn.execution.readout import Readout, readout_for
from hpcqnn.execution.reconstruct import Contraction, SettingBlocks

if TYPE_CHECKING:
    from hpcqnn.execution.simulator import AerRunner, Assembled


@dataclass(frozen=True, eq=False)
class CompiledProgram:
    """``program`` as rank-local objects; ``key`` is its id within its engine."""

    key: int
    program: Program
    readouts: tuple[Readout, ...]
    contraction: Contraction
    settings: SettingBlocks | None  # sampled mode
    assembled: Assembled | None  # None: compiled without a simulator (reconstruction only)


def compile_program(program: Program, runner: AerRunner | None = None, key: int = 0) -> CompiledProgram:
    """Compile ``program`` for this rank (for ``runner``'s simulator, when given)."""
    return CompiledProgram(
        key=key,
        program=program,
        readouts=tuple(readout_for(program, c) for c in range(len(program.circuits))),
        contraction=Contraction(program.plan),
        settings=SettingBlocks(program) if program.sampled else None,
        assembled=None if runner is None else runner.assemble(program),
    )
