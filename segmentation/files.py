"""Writing files so that nothing half-written is ever left under a final name."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from segmentation.errors import UserError


def write_atomically(path: Path, write: Callable[[BinaryIO], None], *, sync: bool = True) -> None:
    """Write `path` through a hidden temporary file in the same folder, then rename it over
    `path`: a crash, a full disk or an exception mid-write leaves the previous file (or none),
    never a truncated one. The temporary file is removed on any failure, which propagates."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def json_safe(value: object) -> object:
    """Plain JSON data: NaN and infinities become null, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _unwritable_reason(folder: Path) -> str | None:
    """Why `folder` can be neither created nor written into, or None when it can."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    # As root os.access says yes to everything: the write itself may still fail, later.
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def check_new_folder(folder: Path, flag: str) -> None:
    """Refuse, before any work is done, an output folder that is a file or cannot be created:
    found after the work, such a failure would lose its results."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file: give a new folder")
    reason = _unwritable_reason(folder)
    if reason:
        raise UserError(f"cannot create {flag} {folder}: {reason}: choose another path")


def check_new_file(path: Path, flag: str, *, overwrite: bool = False) -> None:
    """Refuse, before any work is done, an output file that could not be written, or that
    would replace an existing file without `overwrite`: a command never replaces a file it did
    not create unless asked to."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder: give a file name inside it")
    if path.exists() and not overwrite:
        raise UserError(
            f"{path} already exists: choose another {flag}, or add --overwrite to replace it"
        )
    reason = _unwritable_reason(path.parent)
    if reason:
        raise UserError(f"cannot write {flag} {path}: {reason}: choose another path")
