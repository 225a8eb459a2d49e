"""hpcqnn.execution.tiles: static shares, chunks and the dynamic chunk size, checked as properties
over many random experiment-count vectors (plain seeded NumPy draws)."""

from __future__ import annotations

import numpy as np
import pytest

from hpcqnn.execution.tiles import Tile, dynamic_chunk, pack, split_chunks, split_static
from hpcqnn.options import TILES_PER_RANK

CASES = 400


def random_cases(seed: int):
    """``CASES`` (counts, parts, align) draws: empty and zero-count circuits, counts below and
    above ``align``, more parts than experiments, align 1 (exact mode) and larger (sampled)."""
    rng = np.random.default_rng(seed)
    for _ in range(CASES):
        circuits = int(rng.integers(0, 7))
        high = int(rng.choice([3, 20, 200, 5000]))
        counts = [int(c) for c in rng.integers(0, high, circuits)]
        if circuits and rng.random() < 0.2:
            counts[int(rng.integers(circuits))] = 0
        parts = int(rng.choice([1, 2, 3, 4, 7, 16, 64]))
        align = int(rng.choice([1, 1, 2, 8, 64]))
        yield counts, parts, align


def check_exact_cover(counts: list[int], tiles: list[Tile], align: int) -> None:
    """``tiles``, in order, are every circuit's experiments once, in order, in non-empty tiles
    whose starts are multiples of ``align`` (and whose stops are too, or the circuit's end)."""
    expected = [(c, e) for c, count in enumerate(counts) for e in range(count)]
    covered = [(t.circuit, e) for t in tiles for e in range(t.start, t.stop)]
    assert covered == expected
    for t in tiles:
        assert 0 <= t.circuit < len(counts) and 0 <= t.start < t.stop <= counts[t.circuit], t
        assert t.start % align == 0, (t, align)
        assert t.stop % align == 0 or t.stop == counts[t.circuit], (t, align)


def share_size(share: list[Tile]) -> int:
    return sum(t.stop - t.start for t in share)


# -- split_static -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_static_shares_cover_every_experiment_once_in_order(seed):
    for counts, parts, align in random_cases(seed):
        shares = split_static(counts, parts, align)
        assert len(shares) == parts
        assert all(isinstance(t, Tile) for share in shares for t in share)
        # contiguous shares: share k ends where share k + 1 begins, in circuit order
        check_exact_cover(counts, [t for share in shares for t in share], align)


@pytest.mark.parametrize("seed", range(3))
def test_static_shares_are_near_equal(seed):
    """Each share boundary sits at most ``align - 1`` experiments after its ideal place
    (``total * k // parts``), so a share is within ``align - 1`` of its ideal size, and ideal
    sizes differ by at most one."""
    for counts, parts, align in random_cases(seed):
        total = sum(counts)
        sizes = [share_size(share) for share in split_static(counts, parts, align)]
        ideal = [total * (k + 1) // parts - total * k // parts for k in range(parts)]
        assert sum(sizes) == total
        for size, want in zip(sizes, ideal, strict=True):
            assert abs(size - want) <= align - 1, (counts, parts, align, sizes)
        if align == 1:
            assert sizes == ideal
        assert max(sizes) - min(sizes) <= 2 * (align - 1) + 1


def test_static_shares_may_be_empty():
    assert split_static([], 3, 1) == [[], [], []]
    assert split_static([0, 0], 2, 4) == [[], []]
    shares = split_static([2], 5, 1)  # fewer experiments than parts
    assert sorted(map(share_size, shares)) == [0, 0, 0, 1, 1]
    shares = split_static([3], 3, 8)  # one aligned block: it cannot be split
    assert [share_size(s) for s in shares].count(3) == 1 and sum(map(share_size, shares)) == 3


def test_static_one_part_is_every_circuit_whole():
    assert split_static([5, 0, 3], 1, 4) == [[Tile(0, 0, 5), Tile(2, 0, 3)]]


def test_static_boundaries_round_up_to_the_alignment():
    # 20 experiments in 2 parts: the ideal boundary 10 rounds up to 16 at align 8
    assert split_static([20], 2, 8) == [[Tile(0, 0, 16)], [Tile(0, 16, 20)]]
    # across circuits: boundary 6 falls in circuit 1 at offset 2, rounded up to 4
    assert split_static([4, 8], 2, 4) == [[Tile(0, 0, 4), Tile(1, 0, 4)], [Tile(1, 4, 8)]]


@pytest.mark.parametrize("parts", [0, -1, -5])
def test_static_refuses_fewer_than_one_part(parts):
    with pytest.raises(ValueError, match="parts must be >= 1"):
        split_static([4, 4], parts, 1)


# -- split_chunks -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_chunks_cover_every_experiment_once_in_aligned_tiles(seed):
    rng = np.random.default_rng(100 + seed)
    for counts, _, align in random_cases(seed):
        chunk = int(rng.integers(1, 300))
        tiles = split_chunks(counts, chunk, align)
        check_exact_cover(counts, tiles, align)
        size = max(align, -(-chunk // align) * align)  # chunk rounded up to the alignment
        assert size % align == 0 and size >= chunk
        for t in tiles:  # full tiles but each circuit's last
            assert t.stop - t.start == size or t.stop == counts[t.circuit]
        assert len(tiles) == sum(-(-count // size) for count in counts)


def test_chunks_examples():
    assert split_chunks([5, 0, 2], 2, 1) == [Tile(0, 0, 2), Tile(0, 2, 4), Tile(0, 4, 5), Tile(2, 0, 2)]
    assert split_chunks([10], 3, 4) == [Tile(0, 0, 4), Tile(0, 4, 8), Tile(0, 8, 10)]
    assert split_chunks([10], 1, 8) == [Tile(0, 0, 8), Tile(0, 8, 10)]  # never below one aligned block
    assert split_chunks([], 4, 1) == [] and split_chunks([0, 0], 4, 2) == []


# -- dynamic_chunk ------------------------------------------------------------------------------


def test_dynamic_chunk_gives_about_tiles_per_rank_tiles():
    """At least ``tiles_per_rank`` tiles per rank when there is that much work, and fewer than
    twice as many."""
    rng = np.random.default_rng(7)
    for _ in range(2000):
        total = int(rng.integers(0, 100_000))
        ranks = int(rng.integers(1, 65))
        per_rank = int(rng.integers(1, 9))
        chunk = dynamic_chunk(total, ranks, per_rank)
        assert chunk >= 1
        wanted = ranks * per_rank
        tiles = -(-total // chunk)
        if total >= wanted:
            assert chunk == total // wanted
            assert wanted <= tiles < 2 * wanted, (total, ranks, per_rank, chunk)
        else:
            assert chunk == 1 and tiles == total


def test_dynamic_chunk_defaults_and_degenerate_inputs():
    assert dynamic_chunk(1000, 2) == dynamic_chunk(1000, 2, TILES_PER_RANK) == max(1, 1000 // (2 * TILES_PER_RANK))
    assert dynamic_chunk(0, 4) == 1
    assert dynamic_chunk(50, 0, 4) == 50  # no ranks counted as one
    assert dynamic_chunk(50, 5, 0) == 50


@pytest.mark.parametrize("seed", range(2))
def test_dynamic_chunks_cover_every_experiment_once(seed):
    """The dynamic schedule's tiles: ``split_chunks`` at ``dynamic_chunk`` of the total."""
    rng = np.random.default_rng(200 + seed)
    for counts, _, align in random_cases(seed):
        chunk = dynamic_chunk(sum(counts), int(rng.integers(1, 33)))
        check_exact_cover(counts, split_chunks(counts, chunk, align), align)


def test_pack_cuts_tiles_at_their_limits_and_fills_calls_in_order():
    tiles = [Tile(0, 0, 7), Tile(1, 0, 5), Tile(1, 8, 9)]
    calls = pack(tiles, limits=[3, 10], align=1)
    # the last call fills 1/3 + 5/10 + 1/10 of a limit
    assert calls == [[Tile(0, 0, 3)], [Tile(0, 3, 6)], [Tile(0, 6, 7), Tile(1, 0, 5), Tile(1, 8, 9)]]
    assert pack(tiles, limits=[100, 100], align=1) == [tiles]


def test_pack_keeps_pieces_aligned_even_over_a_limit():
    """A limit below the alignment gives pieces of one alignment each (shots are drawn per block)."""
    calls = pack([Tile(0, 0, 130), Tile(1, 64, 100)], limits=[10, 256], align=64)
    assert calls == [[Tile(0, 0, 64)], [Tile(0, 64, 128)], [Tile(0, 128, 130), Tile(1, 64, 100)]]
    assert all(piece.start % 64 == 0 for call in calls for piece in call)

