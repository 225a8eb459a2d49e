"""Work splitting: pure functions from experiment counts to tiles (no MPI here).

Circuit ``c`` of a program runs ``counts[c]`` experiments (subexperiments x parameter rows for
an enumerated template, parameter rows for a coherent circuit).
Tiles are contiguous experiment ranges of one circuit whose starts are multiples of ``align``
(sampled mode seeds its shots per aligned block, so any split draws the same shots).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from hpcqnn.options import TILES_PER_RANK


class Tile(NamedTuple):
    """A unit of work: one program circuit for the experiments [start, stop)."""

    circuit: int
    start: int
    stop: int


def _round_up(value: int, align: int) -> int:
    return -(-value // align) * align


def split_static(counts: Sequence[int], parts: int, align: int) -> list[list[Tile]]:
    """Cut the concatenated experiments into ``parts`` contiguous shares of near-equal size.

    Share boundaries fall on multiples of ``align`` within each circuit, so shares differ by at
    most ``align`` experiments per circuit boundary they cross; empty shares are allowed.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    total = sum(counts)
    bounds = [total * k // parts for k in range(parts + 1)]
    shares: list[list[Tile]] = [[] for _ in range(parts)]
    offset = 0
    for circuit, count in enumerate(counts):
        for part in range(parts):
            lo = max(bounds[part], offset) - offset
            hi = min(bounds[part + 1], offset + count) - offset
            lo = 0 if lo <= 0 else min(_round_up(lo, align), count)
            hi = count if hi >= count else min(_round_up(hi, align), count)
            if hi > lo:
                shares[part].append(Tile(circuit, lo, hi))
        offset += count
    return shares


def split_chunks(counts: Sequence[int], chunk: int, align: int) -> list[Tile]:
    """Every circuit's experiments in tiles of ``chunk`` (rounded up to ``align``)."""
    size = max(align, _round_up(chunk, align))
    return [
        Tile(circuit, start, min(start + size, count))
        for circuit, count in enumerate(counts)
        for start in range(0, count, size)
    ]


def dynamic_chunk(total: int, ranks: int, tiles_per_rank: int = TILES_PER_RANK) -> int:
    """Tile size for on-demand scheduling: about ``tiles_per_rank`` tiles per rank."""
    return max(1, total // max(1, ranks * tiles_per_rank))


def pack(tiles: Sequence[Tile], limits: Sequence[int], align: int) -> list[list[Tile]]:
    """Simulator calls: ``tiles`` cut into pieces of at most ``limits[circuit]`` experiments
    (a multiple of ``align``, at least ``align``: pieces start where tiles may), grouped in order
    into calls whose pieces fill at most one limit altogether (a piece of ``n`` experiments fills
    ``n / its step``)."""
    calls: list[list[Tile]] = [[]]
    load = 0.0
    for tile in tiles:
        step = max(align, limits[tile.circuit] // align * align)
        for first in range(tile.start, tile.stop, step):
            piece = Tile(tile.circuit, first, min(first + step, tile.stop))
            share = (piece.stop - piece.start) / step
            if calls[-1] and load + share > 1.0:
                calls.append([])
                load = 0.0
            calls[-1].append(piece)
            load += share
    return [call for call in calls if call]
