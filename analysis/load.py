"""Load hpcqnn run directories into tidy pandas tables.

A run directory (from ``hpcqnn train``, one ``cutsC-MODE`` setting of ``hpcqnn bench --out``, or
``mpi_estimator(timing_dir=...)``) holds ``timing/rank-NNNNN.h5`` per rank and, once the run
finished, ``results.json`` (train runs also ``config.toml``). ``load_runs`` takes run directories
or folders holding them (searched recursively; a path that does not exist is an error, one
holding no run directory is reported) and returns:

- ``runs``: one row per run: label, path, kind (train/bench/estimator), workload (dataset,
  qubits, layers, cuts, cutting, mode; ``pieces``, and ``width``, the widest circuit it
  simulated: see ``simulated_width``), execution (schedule, straggler, ranks, hosts; machines:
  those whose cores the ranks shared, the hosts unless ``on_one_machine``; threads, device) and
  whether ``results.json`` was there.
- ``intervals``: one row per timing row (run, rank, host, query, phase, t_start, t_end, seconds,
  counts).
- ``phases``: one row per (run, rank, query, phase): summed seconds and counts, first start and
  last end, with the run's metadata columns.
- ``results``: ``results.json`` of every run that has a readable one.

Killed runs load: their files keep every finished query (SWMR) and ``results.json`` is simply
absent. A corrupt, truncated or missing file is reported by name (``RunLoadWarning``, and in
``skipped``) and left out; the rest of its run still loads.

``tables_of`` builds the same tables from rows and attributes in memory (``hpcqnn plan`` hands
it the queries it timed), so the replay model calibrates the same way on both.
"""

from __future__ import annotations

import json
import os
import tomllib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpcqnn.run.timelog import ROW_DTYPE, rank_file, read_timing
from hpcqnn.run.timing import PhaseRow

TIMING_COLUMNS = tuple(ROW_DTYPE.names)
RUN_COLUMNS = (
    "run", "path", "kind", "name", "dataset", "qubits", "layers", "cuts", "pieces", "width", "cutting", "mode",
    "schedule", "straggler", "straggler_ranks", "straggler_slowdown", "straggler_delay",
    "straggler_probability", "ranks", "ranks_read", "hosts", "machines", "threads", "device", "complete",
)
#: Run metadata repeated on every row of the ``phases`` table.
META_COLUMNS = ("run", "path", "kind", "ranks", "schedule", "cuts", "cutting", "mode", "device")


#: What makes a directory a run directory, for messages.
RUN_DIR = "a run directory holds results.json or timing/rank-NNNNN.h5"


class RunLoadWarning(UserWarning):
    """A file of a run directory could not be read and was left out."""


@dataclass(frozen=True)
class RunTables:
    """Everything loaded from a set of run directories (see the module docstring)."""

    runs: pd.DataFrame
    intervals: pd.DataFrame
    phases: pd.DataFrame
    results: dict[str, dict]
    skipped: tuple[str, ...]


def find_run_dirs(paths: Iterable[str | Path], skipped: list[str] | None = None) -> list[Path]:
    """Run directories among ``paths``: each path itself if it is one, else those below it.

    A path that does not exist raises ``FileNotFoundError`` before any search; one holding no run
    directory is reported (``RunLoadWarning``, and in ``skipped``).
    """
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such file or directory: {', '.join(missing)}")
    found: list[Path] = []
    for path in paths:
        if _is_run_dir(path):
            found.append(path)
            continue
        below = {p.parent for pattern in ("timing", "results.json") for p in path.rglob(pattern)}
        mine = sorted(filter(_is_run_dir, below))
        if not mine:
            _skip([] if skipped is None else skipped, path, f"no run directory in it ({RUN_DIR})")
        found.extend(mine)
    return list(dict.fromkeys(found))


def _is_run_dir(path: Path) -> bool:
    return (path / "timing").is_dir() or (path / "results.json").is_file()


def load_runs(paths: Iterable[str | Path]) -> RunTables:
    """Load every run directory found in ``paths`` (see ``find_run_dirs``)."""
    skipped: list[str] = []
    dirs = find_run_dirs(paths, skipped)
    entries = []
    for label, path in zip(_labels(dirs), dirs):
        rows, attributes = _read_rank_files(path, skipped)
        result = _read_json(path / "results.json", skipped)
        if not rows and result is None:
            _skip(skipped, path, "no readable timing logs and no results.json")
            continue
        entries.append(RunEntry(label, path, rows, attributes, result))
    return tables_of(entries, skipped)


@dataclass(frozen=True)
class RunEntry:
    """What one run directory holds: every rank's rows (``ROW_DTYPE`` arrays) and attributes,
    and its ``results.json`` (None if absent)."""

    label: str
    path: Path
    rows: dict[int, np.ndarray]
    attributes: dict[int, dict]
    result: dict | None


def tables_of(entries: Iterable[RunEntry], skipped: Iterable[str] = ()) -> RunTables:
    """The tables of ``entries`` (see the module docstring); ``skipped`` lists what was left out."""
    run_rows, frames, results = [], [], {}
    for entry in entries:
        if entry.result is not None:
            results[entry.label] = entry.result
        run_rows.append(_describe(entry.label, entry.path, entry.attributes, entry.result, len(entry.rows)))
        for rank, data in entry.rows.items():
            frame = pd.DataFrame({name: data[name] for name in TIMING_COLUMNS})
            frame.insert(0, "host", entry.attributes[rank].get("hostname", ""))
            frame.insert(0, "rank", rank)
            frame.insert(0, "run", entry.label)
            frames.append(frame)
    runs = pd.DataFrame(run_rows, columns=list(RUN_COLUMNS))
    empty = pd.DataFrame({"run": pd.Series(dtype=str), "rank": np.empty(0, "int64"), "host": pd.Series(dtype=str),
                          **{c: np.empty(0, ROW_DTYPE[c]) for c in TIMING_COLUMNS}})
    intervals = pd.concat(frames, ignore_index=True) if frames else empty
    intervals = intervals.astype({"rank": "int64", "query": "int64", "phase": str, "t_start": float, "t_end": float})
    intervals["seconds"] = intervals["t_end"] - intervals["t_start"]
    return RunTables(runs, intervals, _phase_table(intervals, runs), results, tuple(skipped))


def on_one_machine(tables: RunTables) -> RunTables:
    """``tables`` with every rank on one host: for nodes that shared one machine's cores (the
    network namespaces of ``slurm/local_cluster.sh``), so that the replay shares those cores
    among all of a run's ranks. ``hosts`` keeps the count of nodes."""
    intervals = tables.intervals.assign(host="one machine")
    return RunTables(tables.runs.assign(machines=1), intervals, tables.phases, tables.results, tables.skipped)


def row_array(rows: Iterable[PhaseRow]) -> np.ndarray:
    """``rows`` as a timing log holds them (``ROW_DTYPE``), e.g. a ``PhaseRecorder``'s."""
    return np.array([tuple(row) for row in rows], dtype=ROW_DTYPE)


def _phase_table(intervals: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, rank, query, phase), with the run's metadata columns."""
    sums = {c: "sum" for c in ("seconds", "n_experiments", "n_tiles", "bytes", "injected_delay")}
    table = (
        intervals.groupby(["run", "rank", "query", "phase"], as_index=False, sort=True)
        .agg(t_start=("t_start", "min"), t_end=("t_end", "max"), intervals=("t_start", "size"),
             n_circuits=("n_circuits", "max"), n_rows=("n_rows", "max"), **{c: (c, f) for c, f in sums.items()})
    )
    return table.merge(runs[list(META_COLUMNS)], on="run", how="left")


def _read_rank_files(path: Path, skipped: list[str]) -> tuple[dict[int, np.ndarray], dict[int, dict]]:
    """Rows and attributes of every readable rank file; unreadable and missing ones reported."""
    rows, attributes = {}, {}
    if not (path / "timing").is_dir():
        _skip(skipped, path / "timing", "missing")
        return rows, attributes
    for file in sorted((path / "timing").glob("rank-*.h5")):
        try:
            data, attrs = read_timing(file)
        except Exception as exc:  # noqa: BLE001 - h5py raises OSError, KeyError, RuntimeError, ... on damage
            _skip(skipped, file, f"unreadable ({type(exc).__name__}: {exc})")
            continue
        attrs = {k: _plain(v) for k, v in attrs.items()}
        rank = int(attrs.get("rank", int(file.stem.split("-")[1])))
        rows[rank], attributes[rank] = data, attrs
    sizes = {int(a["size"]) for a in attributes.values() if "size" in a}
    for rank in range(max(sizes, default=0)):
        name = rank_file(path, rank)
        if rank not in rows and not name.exists():
            _skip(skipped, name, "missing")
    return rows, attributes


def _read_json(path: Path, skipped: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _skip(skipped, path, f"unreadable JSON ({exc})")
        return None


def _describe(label: str, path: Path, attributes: dict[int, dict], result: dict | None, read: int) -> dict:
    """The ``runs`` row of one run, from its config (results.json, config.toml or HDF5 attribute)."""
    first = attributes[min(attributes)] if attributes else {}
    config = (result or {}).get("config") or _parse_config(path / "config.toml", first.get("config", ""))
    hosts = {a.get("hostname") for a in attributes.values()}
    row = {
        "run": label, "path": str(path), "kind": "estimator", "name": label, "dataset": None,
        "qubits": np.nan, "layers": np.nan, "cuts": np.nan, "pieces": np.nan, "width": np.nan, "cutting": True,
        "mode": None,
        "schedule": first.get("schedule") or None, **_straggler((), 1.0, 0.0, 0.0),
        "ranks": int(first.get("size", (result or {}).get("ranks", 0))), "ranks_read": read,
        "hosts": len(hosts) if attributes else np.nan, "machines": len(hosts) if attributes else np.nan,
        "threads": first.get("threads", np.nan), "device": first.get("device") or (result or {}).get("device"),
        "complete": result is not None,
    }
    if "model" in config:  # hpcqnn train: the resolved TOML config
        execution = config.get("execution", {})
        row.update(
            kind="train", name=config["run"]["name"], dataset=config["data"]["dataset"],
            qubits=config["data"]["features"], layers=config["model"]["layers"], cuts=config["model"]["cuts"],
            pieces=config["model"].get("pieces", 2), cutting=bool(execution.get("cutting", True)),
            mode=execution.get("mode", "exact"),
            schedule=row["schedule"] or execution.get("schedule"),
            **_straggler(*(execution.get(f"straggler_{k}", d) for k, d in _STRAGGLER_DEFAULTS)),
        )
    elif "qubits" in config:  # hpcqnn bench: the JSON settings of one (cuts, mode)
        straggler = config.get("straggler") or {}
        row.update(
            kind="bench",
            dataset="bench",
            qubits=config["qubits"],
            cuts=config["cuts"],
            pieces=config.get("pieces", 2),
            layers=max(config.get("layers", 3), config["cuts"]),
            mode=config.get("mode"),  # older benches kept --layers as given
            schedule=row["schedule"] or config.get("schedule"),
            **_straggler(*(straggler.get(k, d) for k, d in _STRAGGLER_DEFAULTS)),
        )
    row["width"] = simulated_width(result)
    row["straggler"] = bool(
        (row["straggler_ranks"] or row["straggler_probability"] > 0)
        and (row["straggler_slowdown"] != 1.0 or row["straggler_delay"] > 0)
    )
    return row


def simulated_width(result: dict | None) -> float:
    """The widest circuit a run simulated (qubits: a partition's own plus its control or ancilla
    qubits), from the cut plan its ``results.json`` records (``plan``, as ``hpcqnn plan`` prints
    it); NaN where none is recorded (bench runs, runs of earlier versions)."""
    partitions = ((result or {}).get("plan") or {}).get("partitions") or []
    widths = [p.get("simulated_qubits") for p in partitions if isinstance(p, dict)]
    widths = [w for w in widths if isinstance(w, int | float)]
    return float(max(widths)) if widths else np.nan


_STRAGGLER_DEFAULTS = (("ranks", ()), ("slowdown", 1.0), ("delay", 0.0), ("probability", 0.0))


def _straggler(ranks: Iterable[int], slowdown: float, delay: float, probability: float) -> dict:
    """The straggler columns of a run (``hpcqnn.Straggler``'s fields)."""
    return {
        "straggler_ranks": ",".join(map(str, ranks)), "straggler_slowdown": float(slowdown),
        "straggler_delay": float(delay), "straggler_probability": float(probability),
    }


def _parse_config(toml_file: Path, attribute: str) -> dict:
    """The run's config: ``config.toml`` if present, else the HDF5 ``config`` text (TOML or JSON)."""
    text = toml_file.read_text() if toml_file.is_file() else attribute
    for parse in (json.loads, tomllib.loads):
        try:
            value = parse(text)
        except (ValueError, tomllib.TOMLDecodeError):
            continue
        if isinstance(value, dict):
            return value
    return {}


def _labels(dirs: list[Path]) -> list[str]:
    """Each directory's path below the deepest folder holding them all (its name if alone)."""
    if len(dirs) < 2:
        return [d.resolve().name for d in dirs]
    resolved = [d.resolve() for d in dirs]
    common = Path(os.path.commonpath(resolved))
    return [d.relative_to(common).as_posix() for d in resolved]


def _plain(value):
    """HDF5 attribute values as plain Python values."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _skip(skipped: list[str], path: Path, reason: str) -> None:
    message = f"{path}: {reason}; skipped"
    skipped.append(message)
    warnings.warn(message, RunLoadWarning, stacklevel=3)
