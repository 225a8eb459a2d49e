"""Per-rank HDF5 timing logs: rows survive a hard kill, and a resumed run appends to them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from hpcqnn.run.timelog import ROW_DTYPE, HDF5TimingLog, read_timing
from hpcqnn.run.timing import SCHEMA_VERSION, PhaseRow


def test_rows_survive_a_hard_kill_and_appending_continues(tmp_path):
    path = tmp_path / "timing" / "rank-00000.h5"
    script = textwrap.dedent(
        f"""
        import os
        from hpcqnn.run.timelog import HDF5TimingLog
        from hpcqnn.run.timing import PhaseRow
        log = HDF5TimingLog({str(path)!r}, {{"rank": 0, "size": 2}})
        log.write([PhaseRow(0, "execute", 1.0, 2.0, 1, 4), PhaseRow(0, "reduce", 2.0, 2.5)])
        os._exit(9)  # no close: HDF5 keeps the file marked open for writing
        """
    )
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == 9
    rows, attributes = read_timing(path)
    assert list(rows["phase"]) == ["execute", "reduce"] and attributes["size"] == 2

    log = HDF5TimingLog(path, {"size": 3}, resume_at=1)  # a resumed run, now on 3 ranks
    log.write([PhaseRow(1, "execute", 3.0, 4.0, 1, 4)])
    log.close()
    rows, attributes = read_timing(path)
    assert list(rows["query"]) == [0, 0, 1]
    assert attributes["rank"] == 0 and attributes["size"] == 3


def test_a_new_log_never_overwrites(tmp_path):
    path = tmp_path / "rank-00000.h5"
    HDF5TimingLog(path, {"rank": 0}).close()
    with pytest.raises(FileExistsError):
        HDF5TimingLog(path, {"rank": 0})


def test_an_unreadable_log_is_set_aside_on_append(tmp_path):
    path = tmp_path / "rank-00000.h5"
    path.write_bytes(b"not an hdf5 file")
    log = HDF5TimingLog(path, {"rank": 0}, resume_at=0)
    log.write([PhaseRow(0, "execute", 1.0, 2.0)])
    log.close()
    assert log.set_aside == tmp_path / "rank-00000.h5.unreadable-1"
    assert log.set_aside.read_bytes() == b"not an hdf5 file"
    assert len(read_timing(path)[0]) == 1
    assert h5py.is_hdf5(path)


def test_every_unreadable_log_is_kept(tmp_path):
    """A second damaged log, after another resume, goes beside the first, not over it."""
    path = tmp_path / "rank-00000.h5"
    for damage in (b"first damage", b"second damage"):
        path.write_bytes(damage)
        HDF5TimingLog(path, {"rank": 0}, resume_at=0).close()
    assert (tmp_path / "rank-00000.h5.unreadable-1").read_bytes() == b"first damage"
    assert (tmp_path / "rank-00000.h5.unreadable-2").read_bytes() == b"second damage"


def test_a_truncated_log_is_refused_at_once_and_set_aside_on_append(tmp_path):
    """HDF5's SWMR reader would wait for a truncated file to grow; hpcqnn names it instead."""
    path = tmp_path / "rank-00000.h5"
    log = HDF5TimingLog(path, {"rank": 0})
    log.write([PhaseRow(q, "execute", 1.0, 2.0) for q in range(50)])
    log.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated"):
        read_timing(path)
    log = HDF5TimingLog(path, {"rank": 0}, resume_at=0)  # a resumed run
    log.close()
    assert (tmp_path / "rank-00000.h5.unreadable-1").read_bytes() == data[: len(data) // 2]
    assert len(read_timing(path)[0]) == 0


def test_a_resumed_log_moves_the_queries_it_redoes_to_superseded(tmp_path):
    """Queries after the checkpoint were run, then discarded by the stop, and are redone under
    the same numbers: ``phases`` keeps each query once, ``superseded`` keeps the discarded work."""
    path = tmp_path / "rank-00000.h5"
    log = HDF5TimingLog(path, {"rank": 0})
    log.write([PhaseRow(q, "execute", float(q), q + 0.5) for q in range(5)])
    log.close()
    log = HDF5TimingLog(path, {"rank": 0}, resume_at=3)  # the checkpoint had run queries 0-2
    log.write([PhaseRow(q, "execute", 10.0 + q, 10.5 + q) for q in (3, 4, 5)])
    log.close()
    log = HDF5TimingLog(path, {"rank": 0}, resume_at=5)  # stopped again after query 4
    log.close()
    rows, _ = read_timing(path)
    assert list(rows["query"]) == [0, 1, 2, 3, 4] and list(rows["t_start"]) == [0.0, 1.0, 2.0, 13.0, 14.0]
    with h5py.File(path, "r") as f:
        superseded = f["superseded"][()]
    assert list(superseded["query"]) == [3, 4, 5] and list(superseded["t_start"]) == [3.0, 4.0, 15.0]


def test_a_schema_1_log_reads_and_resumes_in_todays_phase_names(tmp_path):
    """Before schema 2 a tile's accumulation and rank 0's contraction were both 'reconstruct'."""
    path = tmp_path / "rank-00000.h5"
    old = np.array(
        [(0, b"execute", 1.0, 2.0, 1, 4, 8, 1, 0, 0.0), (0, b"reconstruct", 2.0, 2.1, 1, 4, 8, 1, 0, 0.0),
         (0, b"reconstruct", 2.1, 2.2, 0, 4, 0, 0, 0, 0.0), (1, b"reconstruct", 3.0, 3.1, 0, 4, 0, 0, 0, 0.0)],
        dtype=ROW_DTYPE,
    )
    with h5py.File(path, "w", libver="latest") as f:  # as hpcqnn 0.1.0 wrote it: no schema_version
        f.create_dataset("phases", data=old, maxshape=(None,), chunks=(256,))
        f.attrs["rank"] = 0
    rows, attributes = read_timing(path)
    assert list(rows["phase"]) == ["execute", "accumulate", "contract", "contract"]
    assert "schema_version" not in attributes

    log = HDF5TimingLog(path, {"size": 1}, resume_at=1)
    assert [row.phase for row in log.kept] == ["execute", "accumulate", "contract"]
    log.write([PhaseRow(1, "contract", 4.0, 4.1)])
    log.close()
    rows, attributes = read_timing(path)
    assert list(rows["phase"]) == ["execute", "accumulate", "contract", "contract"]
    assert attributes["schema_version"] == SCHEMA_VERSION
    with h5py.File(path, "r") as f:  # rewritten in today's names, the redone query's row superseded
        assert [p.decode() for p in f["superseded"]["phase"]] == ["contract"]
