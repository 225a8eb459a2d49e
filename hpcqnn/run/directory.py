"""Run directories: what one holds, and the checks made before any rank starts work.

``DIR/config.toml``, ``DIR/results.json`` (written last: a finished run), ``DIR/checkpoint.npz``
(the latest training state) and ``DIR/timing/rank-NNNNN.h5``. Run directories are never
overwritten, and one process at a time writes one (``lock_run_directory``); ``slurm/launch.sh``
reads them the same way (``hpcqnn_run_state``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import tomllib
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
    if state in ("stopped", "partial"):
        saved_config(path)  # a stopped run that cannot be continued says so, not "use --resume"
    if state != "new":
        raise RunDirectoryError(_NOT_NEW[state].format(path=path))


def create_run_directory(path: Path) -> bool:
    """Create the run directory ``path`` now, before any rank starts work, or say why it cannot
    be (a file in the way, a read-only or virtual file system such as /proc); whether it was
    created here (``remove_if_empty`` takes it back if the job ends before writing to it)."""
    created = not path.exists()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirectoryError(f"cannot create the run directory {path}: {existing} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".hpcqnn-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise RunDirectoryError(f"cannot create the run directory {path}: {exc.strerror or exc}") from None
    return created


def remove_if_empty(path: Path) -> None:
    """Take back a run directory that a job created and then ended before writing anything to
    (a check after its creation refused the run)."""
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


def saved_config(path: Path) -> str:
    """The resolved config a stopped run in ``path`` started with (its ``config.toml``); a
    named error when it is missing or damaged: such a run cannot be continued."""
    saved = path / "config.toml"
    try:
        text = saved.read_text(encoding="utf-8")
        tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        reason = "missing" if isinstance(exc, FileNotFoundError) else f"unreadable ({exc})"
        raise RunDirectoryError(
            f"{path} holds a stopped run whose {saved.name} is {reason}: it cannot be continued "
            "(--resume compares it with the config given); restore it, or give another --out"
        ) from None
    return text


def lock_run_directory(path: Path) -> int | None:
    """Hold ``path`` for this process (an exclusive ``flock`` on the directory, released when
    the process ends, however it ends); the descriptor to keep open, or None where the file
    system has no locks. A second writer - say ``--resume`` against a run still training - is
    refused by name: both would write the same checkpoint and timing logs."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise RunDirectoryError(
            f"{path} is in use by another hpcqnn process (it holds the run directory's lock): "
            "wait until it stops, or give another --out"
        ) from None
    except OSError as exc:  # no locks on this file system (some network mounts)
        os.close(descriptor)
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EBADF, errno.EINVAL):
            return None
        raise
    return descriptor
