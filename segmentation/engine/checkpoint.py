"""Checkpoints: plain tensors and plain data, written atomically, loaded without pickle."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from segmentation.errors import UserError

FORMAT = "segmentation-checkpoint"
VERSION = 1


class CheckpointWriteError(UserError):
    """A checkpoint could not be written; the previous file at that path is intact."""


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically: a temporary file in the same folder, flushed to
    disk, then renamed over the target, so a crash or a full disk never leaves a half file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            torch.save({"format": FORMAT, "version": VERSION, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        kept = "the previous checkpoint there is intact" if path.exists() else "nothing was written"
        raise CheckpointWriteError(
            f"could not write checkpoint {path} ({error.strerror or error}): {kept}; "
            "free disk space or fix the folder's permissions"
        ) from None


def copy_checkpoint(source: Path, target: Path) -> None:
    """Copy a written checkpoint (e.g. last.pt to best.pt) atomically, without serializing the
    state a second time."""
    target = Path(target)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(source, temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        kept = "the previous one is intact" if target.exists() else "nothing was written"
        raise CheckpointWriteError(
            f"could not write checkpoint {target} ({error.strerror or error}): {kept}; "
            "free disk space or fix the folder's permissions"
        ) from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `torch.load(weights_only=True)`: files that need pickle to run
    arbitrary code are refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"checkpoint {path} does not exist: check the path (runs keep last.pt and best.pt)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"checkpoint {path} holds Python objects that only pickle can load ({first_line}); "
            "it is refused because unpickling can run arbitrary code: use a checkpoint written "
            "by this toolkit, or re-save the weights as plain tensors"
        ) from None
    except (RuntimeError, EOFError, ValueError) as error:
        raise UserError(
            f"checkpoint {path} is unreadable ({str(error).splitlines()[0]}): it may be truncated; "
            "use the run's other checkpoint (last.pt or best.pt)"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(
            f"{path} is not a checkpoint of this toolkit (no '{FORMAT}' marker): for pretrained "
            "encoder weights use model.pretrained instead"
        )
    return state
