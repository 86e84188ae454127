"""Claiming a run directory: one training process writes it at a time, a failed start can be
retried, and nothing a user put there is ever replaced."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from segmentation.errors import UserError
from segmentation.files import write_atomically

CHECKPOINTS = ("last.pt", "best.pt")
RUN_ID_NAME = ".run_id"  # the id of the run that owns the folder; its checkpoints carry it too
# What a start writes before its first checkpoint: a start that failed there left only these.
LEFT_BY_A_FAILED_START = {"config.yaml", "tensorboard", ".lock", RUN_ID_NAME}
# What a run writes besides its checkpoints, and so would replace in a folder it resumed in.
RUN_FILES = ("config.yaml", "tensorboard", "metrics.jsonl")
LOCK_NAME = ".lock"


class RunDirectory:
    """A run's folder, held with an exclusive lock (`RUN/.lock`, holding the PID) from
    `claim` until the process ends or `release` is called. The lock dies with its process, so a
    crashed run never blocks the next."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_file = None
        self.reused_failed_start = False

    def claim(self, resuming: bool, run_id: str = "") -> None:
        """Lock the folder for this process and mark it as run `run_id`'s. A new run needs a
        new folder (or one a failed start left); a resumed one was checked to be its own
        (resume.check_run_directory)."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(
                f"--output-dir {self.path} is a file, not a folder: choose a new --output-dir"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock()  # first: a folder in use is refused as such, whatever it holds
        except OSError as error:
            raise UserError(
                f"cannot write to run directory {self.path} ({error.strerror or error}): "
                "choose a writable --output-dir"
            ) from None
        try:
            if not resuming:
                self._check_new_or_reusable()
        except UserError:
            self.release()
            raise
        self._remove_stale_temporaries()
        if run_id and read_run_id(self.path) != run_id:
            _write_run_id(self.path, run_id)

    def _check_new_or_reusable(self) -> None:
        if not self.path.is_dir():
            return
        present = {
            entry.name
            for entry in self.path.iterdir()
            if not _is_temporary(entry.name) and entry.name != LOCK_NAME
        }
        if not present:
            return
        if present <= LEFT_BY_A_FAILED_START:
            self.reused_failed_start = True
            return
        existing = [name for name in CHECKPOINTS if name in present]
        if existing:
            continue_with = "last.pt" if "last.pt" in existing else existing[0]
            raise UserError(
                f"run directory {self.path} already holds a run: continue it with --resume "
                f"{self.path / continue_with}, or choose a new --output-dir"
            )
        raise UserError(
            f"run directory {self.path} already exists and holds other files "
            f"({', '.join(sorted(present)[:5])}): choose a new --output-dir"
        )

    def _lock(self) -> None:
        handle = open(self.path / LOCK_NAME, "a+")  # noqa: SIM115 - held for the run's life
        try:
            # A POSIX record lock belongs to this process: DataLoader workers forked from it
            # do not inherit it (they would with flock), so it ends with the run, not with them.
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UserError(
                f"run directory {self.path} is in use by another train.py (PID {holder}): wait "
                "for it to finish, or choose another --output-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_file = handle

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of writers that died mid-write. Every writer of this folder holds
        its lock, and this process holds it now: any temporary file left is stale."""
        for entry in self.path.iterdir():
            if _is_temporary(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def read_run_id(folder: Path) -> str | None:
    """The id of the run that owns `folder`, None where no run of this version wrote it."""
    try:
        return (Path(folder) / RUN_ID_NAME).read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None


def _write_run_id(folder: Path, run_id: str) -> None:
    try:
        write_atomically(folder / RUN_ID_NAME, lambda handle: handle.write(f"{run_id}\n".encode()))
    except OSError as error:
        raise UserError(
            f"cannot write to run directory {folder} ({error.strerror or error}): "
            "choose a writable --output-dir"
        ) from None
