"""Straggler injection: a model of slow ranks, applied to the tiles a rank has run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpcqnn.errors import ExecutionConfigError
from hpcqnn.execution.tiles import Tile


@dataclass(frozen=True)
class Straggler:
    """Injected slowness, per tile: a tile is hit on ``ranks`` (every tile) or with
    ``probability`` (drawn per query and tile, seeded); each hit tile adds ``delay`` seconds, and
    ``slowdown`` stretches the hit tiles' share of the measured execution time."""

    ranks: tuple[int, ...] = ()
    probability: float = 0.0
    delay: float = 0.0
    slowdown: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.probability <= 1.0:
            raise ExecutionConfigError(f"straggler probability must be in [0, 1], got {self.probability}")
        if self.delay < 0 or self.slowdown < 1.0:
            raise ExecutionConfigError(
                f"straggler delay must be >= 0 and slowdown >= 1, got {self.delay} and {self.slowdown}"
            )

    @classmethod
    def unless_idle(cls, ranks: Sequence[int], probability: float, delay: float, slowdown: float, seed: int):
        """The straggler these settings describe, or ``None`` when they slow nothing down."""
        if ranks or probability or delay or slowdown != 1.0:
            return cls(tuple(ranks), probability, delay, slowdown, seed)
        return None

    def seconds(self, rank: int, query: int, tiles: Sequence[Tile], elapsed: float) -> float:
        """Injected delay for a batch of tiles that took ``elapsed`` seconds on ``rank``."""
        if rank in self.ranks:
            hit = np.ones(len(tiles), dtype=bool)
        elif self.probability > 0:
            hit = np.array(
                [
                    np.random.default_rng([self.seed, query, t.circuit, t.start]).random() < self.probability
                    for t in tiles
                ]
            )
        else:
            return 0.0
        sizes = np.array([t.stop - t.start for t in tiles], dtype=float)
        share = sizes[hit].sum() / sizes.sum() if sizes.sum() else 0.0
        return self.delay * int(hit.sum()) + (self.slowdown - 1.0) * elapsed * share
