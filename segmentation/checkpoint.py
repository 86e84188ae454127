"""Checkpoints: plain tensors and plain data, written atomically, loaded without pickle."""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from segmentation.errors import UserError
from segmentation.files import write_atomically

FORMAT = "segmentation-checkpoint"
VERSION = 1


class CheckpointWriteError(UserError):
    """A checkpoint could not be written; the previous file at that path is intact."""


def _write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    try:
        with _stop_signals_deferred():
            write_atomically(path, write)
    except (OSError, RuntimeError) as error:
        kept = "the previous checkpoint is kept" if path.exists() else "nothing was written"
        if _is_disk_full(error):
            raise CheckpointWriteError(f"no space left writing {path}; {kept}") from None
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise CheckpointWriteError(
            f"could not write checkpoint {path} ({reason}): {kept}; fix the folder's "
            "permissions or choose another --output-dir"
        ) from None


@contextlib.contextmanager
def _stop_signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them: a second Ctrl-C
    during a save must not turn it into a traceback and a half-written file."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda number, frame: received.append(number))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in received:
            signal.raise_signal(signum)


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    # torch.save's zip writer reports a failed write as a RuntimeError ("unexpected pos").
    return "unexpected pos" in str(error) or "No space left" in str(error)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` (plain tensors and data) to `path` atomically."""
    _write(
        Path(path),
        lambda handle: torch.save({"format": FORMAT, "version": VERSION, **state}, handle),
    )


def copy_checkpoint(source: Path, target: Path) -> None:
    """Copy a written checkpoint (e.g. best.pt to last.pt) atomically, without serializing the
    state a second time.

    A hard link where the file system has them: checkpoints are only ever replaced whole (a
    new file renamed over the old one), never written in place, so the two names can share
    one file until either is replaced, and the copy writes nothing. The demo's checkpoints
    are 141 MB, copied after most epochs; a copy rewrote (and synced) all of it each time.
    """
    source, target = Path(source), Path(target)
    link = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        link.unlink(missing_ok=True)
        os.link(source, link)
    except OSError:  # no hard links here (FAT, some network file systems): copy the bytes
        _write(target, lambda handle: _copy_bytes(source, handle))
        return
    try:
        os.replace(link, target)
    except OSError as error:
        link.unlink(missing_ok=True)
        kept = "the previous checkpoint is kept" if target.exists() else "nothing was written"
        raise CheckpointWriteError(
            f"could not write checkpoint {target} ({error.strerror or error}): {kept}; fix the "
            "folder's permissions or choose another --output-dir"
        ) from None


def _copy_bytes(source: Path, handle: BinaryIO) -> None:
    with open(source, "rb") as original:
        shutil.copyfileobj(original, handle)


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
        lines = str(error).strip().splitlines()
        reason = lines[0] if lines else f"{type(error).__name__}: the file ends too early"
        raise UserError(
            f"checkpoint {path} is unreadable ({reason}): it may be truncated or empty; use the "
            "run's other checkpoint (last.pt or best.pt)"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(
            f"{path} is not a checkpoint of this toolkit (no '{FORMAT}' marker): for pretrained "
            "encoder weights use model.pretrained instead"
        )
    return state
