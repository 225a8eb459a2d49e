"""Run directories: what one holds, and the checks made before any rank starts work.

``DIR/config.toml``, ``DIR/results.json`` (written last: a finished run), ``DIR/checkpoint.npz``
(the latest training state) and ``DIR/timing/rank-NNNNN.h5``. Run directories are never
overwritten; ``slurm/launch.sh`` reads them the same way (``hpcqnn_run_state``).
"""

from __future__ import annotations

import os
from pathlib import Path

from hpcqnn.errors import RunDirectoryError

CHECKPOINT = "checkpoint.npz"


def run_state(path: Path) -> str:
    """Where the run directory ``path`` stands: ``new`` (absent or empty), ``finished``
    (results.json), ``stopped`` (a checkpoint), ``partial`` (config.toml without a checkpoint:
    stopped before its first one), ``occupied`` (other files only) or ``file``.

    ``slurm/launch.sh``'s ``hpcqnn_run_state`` decides the first three the same way and calls
    the rest ``partial`` (a requeued job sets such a directory aside whole)."""
    if not path.exists() or path.is_dir() and not any(path.iterdir()):
        return "new"
    if not path.is_dir():
        return "file"
    if (path / "results.json").exists():
        return "finished"
    if (path / CHECKPOINT).exists():
        return "stopped"
    return "partial" if (path / "config.toml").is_file() else "occupied"


_NOT_NEW = {
    "file": "{path} is a file, not a run directory: give another --out",
    "finished": "{path} holds a finished run (results.json): give another --out",
    "stopped": "{path} holds a stopped run: continue it with --resume, or give another --out",
    "partial": "{path} holds a training run stopped before its first checkpoint: --resume starts "
               "it again there, or give another --out",
    "occupied": "{path} is not empty and holds no run: give another --out (run directories are never overwritten)",
}


def require_new_directory(path: Path) -> None:
    """Run directories are never overwritten: ``path`` must be absent or an empty directory;
    otherwise the error says what is there and what to do."""
    state = run_state(path)
    if state != "new":
        raise RunDirectoryError(_NOT_NEW[state].format(path=path))


def require_creatable(path: Path) -> None:
    """Say now, before any rank starts work, when the run directory ``path`` cannot be created
    (nothing is created here: a later check may still stop the run)."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirectoryError(f"cannot create the run directory {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirectoryError(f"cannot create the run directory {path}: {existing} is not writable")
