"""Checkpoints: plain tensors and plain data, written atomically, loaded without pickle."""

from __future__ import annotations

import contextlib
import errno
import pickle
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from segmentation.errors import UserError
from segmentation.files import write_atomically

FORMAT = "segmentation-checkpoint"
# 2: the run's id (run_id), and an epoch whose validation is still to run (state.trained_epoch).
VERSION = 2
# What every use of a checkpoint's model needs (train.py writes them all, and more).
USE_ENTRIES = ("model", "config", "class_names")
# The first bytes of what torch.save writes: a zip archive, or a pickle (the legacy format).
_TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")


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
    state a second time. A copy, not a hard link: a user who saves over one name in place
    (torch.save(state, "best.pt")) must not change the other."""

    def copy(handle: BinaryIO) -> None:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, handle)

    _write(Path(target), copy)


def load_checkpoint(
    path: Path,
    map_location: str | torch.device = "cpu",
    *,
    mmap: bool = False,
    needs: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Load a checkpoint with `torch.load(weights_only=True)`: files that need pickle to run
    arbitrary code are refused, and so are files that are no checkpoint of this toolkit, of
    a newer format than this code reads, or without the entries `needs` names (e.g.
    USE_ENTRIES, what every use of a model needs).
    mmap: map the tensors instead of reading them (to look at the small entries only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"checkpoint {path} does not exist: check the path (runs keep last.pt and best.pt)"
        )
    state = _torch_load(path, map_location, mmap)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(
            f"{path} is not a checkpoint of this toolkit (no '{FORMAT}' marker): for pretrained "
            "encoder weights use model.pretrained instead"
        )
    version = state.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise UserError(
            f"checkpoint {path} has format version {version}, newer than the {VERSION} this "
            "toolkit reads: update the toolkit to use it"
        )
    missing = [key for key in needs if key not in state]
    if missing:
        raise UserError(
            f"checkpoint {path} has no '{missing[0]}' entry: the file is incomplete; use the "
            "run's other checkpoint (last.pt or best.pt)"
        )
    damaged = [key for key in ("model", "config") if not isinstance(state.get(key, {}), dict)]
    if damaged:
        raise UserError(
            f"checkpoint {path} holds no mapping in its '{damaged[0]}' entry: the file is "
            "damaged; use the run's other checkpoint (last.pt or best.pt)"
        )
    return state


def _torch_load(path: Path, map_location: str | torch.device, mmap: bool) -> Any:
    with open(path, "rb") as handle:
        start = handle.read(4)
    if start and not start.startswith(_TORCH_FILE_STARTS):
        # torch.load would answer with a long essay on weights_only about a file that is
        # no pickle at all.
        raise UserError(
            f"{path} is not a checkpoint: it is not a file written by torch.save; give a .pt "
            "file of train.py (runs keep last.pt and best.pt)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
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


def load_model_weights(
    model: nn.Module, weights: dict[str, torch.Tensor], path: Path | None
) -> None:
    """Load a checkpoint's weights into the model its config describes. Weights that do not
    fit it (a config edited after training: other classes, another backbone) are refused in
    one line that names the first difference, not torch's list of every tensor."""
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        differences = _differences(model.state_dict(), weights)
        if not differences:
            raise
        more = f"; {len(differences) - 1} more differ" if len(differences) > 1 else ""
        where = "the checkpoint" if path is None else f"checkpoint {path}"
        raise UserError(
            f"the weights in {where} do not fit the model its config describes "
            f"({differences[0]}{more}): the config was changed after training or the file "
            "mixes two runs; use another checkpoint"
        ) from None


def _differences(expected: dict[str, torch.Tensor], weights: dict[str, Any]) -> list[str]:
    """What keeps `weights` from loading into a model of state_dict `expected`."""
    differences = [
        f"{key} is {_shape(weights[key])} in the file but {_shape(tensor)} in the model"
        for key, tensor in expected.items()
        if key in weights and _shape(weights[key]) != _shape(tensor)
    ]
    differences += [f"{key} is missing" for key in expected if key not in weights]
    differences += [f"{key} is not in the model" for key in weights if key not in expected]
    return differences


def _shape(tensor: Any) -> str:
    shape = getattr(tensor, "shape", None)
    return "not a tensor" if shape is None else "x".join(map(str, shape)) or "a scalar"
