"""Writing files so that nothing half-written is ever left under a final name."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np


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
