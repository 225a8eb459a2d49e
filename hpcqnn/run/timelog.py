"""Per-rank HDF5 timing logs: ``DIR/timing/rank-00000.h5`` (schema in the README).

Dataset ``phases``: one row per (query, phase) with the columns of ``timing.PhaseRow``; file
attributes describe the rank (``rank``, ``size``, ``hostname``, ``device``, ``mpi_library``,
``hpcqnn_version``, ``config``, ``schema_version``, ...); logs of an older schema read in today's
phase names (``timing.upgrade_phases``), and a resumed one is rewritten in them. The file is
opened in SWMR mode and flushed after every query, so a killed job keeps every finished query
and readers may look while it runs. A resumed run moves the rows of queries its checkpoint did
not keep (work it redoes under the same query numbers) to dataset ``superseded``, so ``phases``
holds each query once; an existing log it cannot read moves to the first free
``rank-NNNNN.h5.unreadable-N``, never deleted.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import h5py
import numpy as np

from hpcqnn.errors import RunDirectoryError
from hpcqnn.run.timing import SCHEMA_VERSION, PhaseRow, upgrade_phases

ROW_DTYPE = np.dtype(
    [
        ("query", "i8"),
        ("phase", "S16"),
        ("t_start", "f8"),
        ("t_end", "f8"),
        ("n_circuits", "i8"),
        ("n_rows", "i8"),
        ("n_experiments", "i8"),
        ("n_tiles", "i8"),
        ("bytes", "i8"),
        ("injected_delay", "f8"),
    ]
)


def rank_file(run_dir: str | Path, rank: int) -> Path:
    return Path(run_dir) / "timing" / f"rank-{rank:05d}.h5"


class HDF5TimingLog:
    """Appends phase rows to one rank's HDF5 file, flushing after each write."""

    def __init__(self, path: str | Path, attributes: dict, resume_at: int | None = None):
        """A new file, or with ``resume_at`` the existing one (if any) of a run resumed at that
        query: rows of queries before it stay in ``phases``, later ones move to ``superseded``.

        An existing file is copied into a fresh one (its attributes updated by ``attributes``): a
        process killed while writing leaves the file marked open for writing, which HDF5
        refuses to reopen for writing but still reads.
        """
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and resume_at is None:
            raise RunDirectoryError(f"{self.path} exists: timing logs are never overwritten; give a new run directory")
        #: where an existing log that could not be read was moved (None: nothing was moved)
        self.set_aside: Path | None = None
        try:
            old_rows, old_superseded, old_attributes = _previous(self.path)
        except (OSError, KeyError):
            self.set_aside = set_aside(self.path, "unreadable")
            old_rows = old_superseded = np.zeros(0, dtype=ROW_DTYPE)
            old_attributes = {}
        kept = old_rows["query"] < (resume_at or 0)
        fresh = self.path.with_name(self.path.name + ".new")
        self._file = h5py.File(fresh, "w", libver="latest")
        for key, value in {**old_attributes, **attributes, "schema_version": SCHEMA_VERSION}.items():
            self._file.attrs[key] = "" if value is None else value
        superseded = np.concatenate([old_superseded, old_rows[~kept]])
        if len(superseded):
            self._file.create_dataset("superseded", data=superseded, dtype=ROW_DTYPE)
        self._rows = self._file.create_dataset(
            "phases", data=old_rows[kept], maxshape=(None,), dtype=ROW_DTYPE, chunks=(256,)
        )
        #: the rows the resumed run continues from (its earlier queries), for its summaries
        self.kept = [PhaseRow(query, phase.decode(), *rest) for query, phase, *rest in old_rows[kept].tolist()]
        self._file.swmr_mode = True
        self._file.flush()
        os.replace(fresh, self.path)

    def write(self, rows: list[PhaseRow]) -> None:
        if not rows:
            return
        block = np.array([tuple(r) for r in rows], dtype=ROW_DTYPE)
        start = self._rows.shape[0]
        self._rows.resize((start + len(block),))
        self._rows[start:] = block
        self._rows.flush()
        self._file.flush()

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()


def _previous(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rows, superseded rows and attributes of an existing log (empty if none); OSError or
    KeyError for an unreadable one."""
    empty = np.zeros(0, dtype=ROW_DTYPE)
    if not path.exists():
        return empty, empty, {}
    rows, superseded, attributes = _read(path)
    return rows.astype(ROW_DTYPE), superseded.astype(ROW_DTYPE), attributes


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_complete(path: Path) -> None:
    """Raise OSError naming why ``path`` cannot be a complete HDF5 file.

    Checked before opening: HDF5's SWMR reader waits for a truncated file to grow instead of
    failing. Superblock versions 2 and 3 (``libver="latest"``) store the end-of-file address
    at byte 28.
    """
    with open(path, "rb") as handle:
        head = handle.read(48)
    if len(head) < 8 or head[:8] != _HDF5_SIGNATURE:
        raise OSError(f"{path}: not an HDF5 file (bad signature)")
    if head[8] in (2, 3):
        if len(head) < 36:
            raise OSError(f"{path}: truncated (shorter than its superblock)")
        (end,) = struct.unpack("<Q", head[28:36])
        size = Path(path).stat().st_size
        if size < end:
            raise OSError(f"{path}: truncated ({size} of {end} bytes)")


def _read(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rows, superseded rows (empty if none) and attributes, phases in today's names."""
    _check_complete(Path(path))
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        superseded = f["superseded"][()] if "superseded" in f else np.zeros(0, dtype=ROW_DTYPE)
        rows, attributes = f["phases"][()], dict(f.attrs)
    version = int(attributes.get("schema_version", 1))
    for table in (rows, superseded):
        table["phase"] = upgrade_phases(table["phase"], table["n_experiments"], version)
    return rows, superseded, attributes


def read_timing(path: str | Path) -> tuple[np.ndarray, dict]:
    """Rows (structured array, ``phase`` decoded to str) and attributes of one rank file;
    OSError for a damaged or truncated one."""
    rows, _, attributes = _read(path)
    decoded = rows.astype([(n, "U16" if n == "phase" else rows.dtype[n]) for n in rows.dtype.names or ()])
    return decoded, attributes


def set_aside(path: Path, tag: str) -> Path | None:
    """Move ``path`` (if present) to the first free ``<path>.<tag>-N`` and return that; nothing
    is deleted."""
    if not path.exists():
        return None
    n = 1
    while path.with_name(f"{path.name}.{tag}-{n}").exists():
        n += 1
    aside = path.with_name(f"{path.name}.{tag}-{n}")
    path.rename(aside)
    return aside


def set_aside_other_size(run_dir: str | Path, size: int) -> Path | None:
    """Where a run resumes on another number of ranks, move its timing logs to
    ``timing.ranks<old size>-N`` (returned) so that the new logs hold one rank count."""
    timing = Path(run_dir) / "timing"
    try:
        _, _, attributes = _read(rank_file(run_dir, 0))
    except (OSError, KeyError):
        return None  # no (readable) log: nothing to keep apart
    old = int(attributes.get("size", size))
    return set_aside(timing, f"ranks{old}") if old != size else None
