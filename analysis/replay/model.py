"""The replay model's terms: a steady query (``Workload``), where and how it runs (``Scenario``,
``Network``), what its work costs (``TileCost``, ``Costs``) and its critical path (``Replay``).

The replay model gives a steady query's critical path at any rank count from measured costs:
``calibration`` fits ``Costs`` and a ``Network`` to the timing rows of measured runs,
``simulation`` replays a ``Workload`` in a ``Scenario`` under them, and ``validation`` predicts
each measured configuration from the others and projects the reference query to more ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hpcqnn.options import TILES_PER_RANK

#: Run columns that name a workload (same circuits), and one configuration of it.
WORKLOAD_KEYS = ["kind", "dataset", "qubits", "layers", "cuts", "cutting", "mode"]
CONFIG_KEYS = [
    "ranks",
    "schedule",
    "rows",
    "straggler",
    "straggler_ranks",
    "straggler_probability",
    "straggler_slowdown",
    "straggler_delay",
    "hosts",  # the same ranks on one host and across nodes are configurations apart
]


@dataclass(frozen=True)
class Network:
    """Message cost: ``latency + bytes / bandwidth`` per hop."""

    latency: float
    bandwidth: float

    def message(self, nbytes: float) -> float:
        return self.latency + nbytes / self.bandwidth


#: An HPC interconnect (HDR InfiniBand class): 2 us, 12.5 GB/s.
CLUSTER = Network(latency=2e-6, bandwidth=12.5e9)



@dataclass(frozen=True)
class TileCost:
    """Core-seconds of ``n`` experiments run in calls of at most ``batch`` experiments (as
    ``hpcqnn.execution.engine.call_pieces`` does with ``CALL_EXPERIMENTS``; ``inf``: one call): each
    call of ``m`` costs ``call + experiment x m ** exponent`` up to the largest calibrated call
    ``fitted_up_to``, linear beyond it (no extrapolated growth)."""

    call: float
    experiment: float
    exponent: float = 1.0
    fitted_up_to: float = math.inf
    batch: float = math.inf

    def __call__(self, n: float) -> float:
        return sum(self.single(m) for m in self.calls(n))

    def calls(self, n: float) -> list[float]:
        """Sizes of the calls ``n`` experiments take: ``batch``, ..., ``batch``, the remainder."""
        if n <= 0 or n <= self.batch:
            return [n]
        full, rest = divmod(n, self.batch)
        return [self.batch] * int(full) + ([rest] if rest > 0 else [])

    def single(self, m: float) -> float:
        """Core-seconds of one call on ``m`` experiments."""
        top = min(m, self.fitted_up_to)
        return self.call + self.experiment * top**self.exponent * m / top if m > 0 else self.call


@dataclass(frozen=True)
class Costs:
    """Calibrated per-query costs (core-seconds for compute, seconds otherwise)."""

    execute: TileCost
    reconstruct: TileCost
    contraction_row: float
    start_lag: float
    sync: float
    overhead: float
    capacity: float  # effective cores of the measured host when crowded (``simulation.core_shares``)
    root_share: float = 0.0  # how the measured host shared its cores (``simulation.core_shares``)
    loop: float = 0.0  # core-seconds of the dynamic schedule's loop per tile (request, reply, bookkeeping)
    crowded_lag: float | None = None  # ``start_lag`` and ``sync`` where ranks outnumbered cores (None: as uncrowded)
    crowded_sync: float | None = None


@dataclass(frozen=True)
class Workload:
    """One query: (subexperiment, row) experiments over ``circuits`` templates (split evenly),
    parameter rows and the bytes that move."""

    experiments: int
    rows: int
    param_bytes: int
    buffer_bytes: int
    align: int = 1
    circuits: int = 1

    def counts(self) -> list[int]:
        """Experiments per circuit."""
        share, extra = divmod(self.experiments, self.circuits)
        return [share + (c < extra) for c in range(self.circuits)]


@dataclass(frozen=True)
class Scenario:
    """Where and how the query runs."""

    ranks: int
    schedule: str = "static"
    reduce: str = "tree"
    rank_cores: int = 1  # cores a computing rank uses (``calibration.rank_cores``)
    cores: float | None = None  # cores all ranks share; None: each rank has its own
    root_share: float = 0.0  # how ranks share ``cores`` when they want more (``simulation.core_shares``)
    capacity: float | None = None  # what ``cores`` deliver when crowded (``simulation.core_shares``); None: ``cores``
    straggler_ranks: tuple[int, ...] = ()
    probability: float = 0.0  # chance that a tile is slowed (modelled by its expectation)
    slowdown: float = 1.0
    delay: float = 0.0  # seconds per slowed tile
    root_computes: bool = True
    tiles_per_rank: int = TILES_PER_RANK
    prompt_probe: bool = True  # False: a bare Iprobe loop that sees requests a tile late (``Machine._probe``)


@dataclass(frozen=True)
class Replay:
    """The modelled critical path of one query, by term (seconds)."""

    overhead: float
    broadcast: float
    compute: float
    barrier: float
    sync: float
    reduce: float
    contraction: float

    @property
    def wall(self) -> float:
        return self.overhead + self.broadcast + self.compute + self.barrier + self.sync + self.reduce + self.contraction
