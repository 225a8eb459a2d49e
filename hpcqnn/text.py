"""Numbers in words, as messages and reports print them."""

from __future__ import annotations


def count(number: int, noun: str) -> str:
    """``number`` ``noun``s: ``1 cut``, ``3 cuts``."""
    return f"{number} {noun}{'s' * (number != 1)}"


def size(nbytes: float) -> str:
    """A byte count in bytes, KiB, MiB or GiB."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.4g} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")
