"""What a run writes as it goes: TensorBoard events, metrics.jsonl, console lines.

Only the main process writes; the others get a logger that does nothing.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("segmentation")


def _plain(value: object) -> object:
    """JSON-safe values: NaN and infinities become null."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None = None) -> None:
        self.enabled = enabled
        self.metrics_path = Path(run_dir) / "metrics.jsonl"
        self.writer = None
        if enabled:
            # Imported here: TensorBoard's import is slow, and non-main processes never need it.
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a crashed run logged after its last checkpoint.
            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge_step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def images(self, tag: str, images: np.ndarray, step: int) -> None:
        """images (N, H, W, 3) uint8, shown as one picture, one image a row."""
        if self.writer is None or len(images) == 0:
            return
        column = np.concatenate(list(images), axis=0)
        self.writer.add_image(tag, torch.from_numpy(column), step, dataformats="HWC")

    def epoch_record(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(_plain(record)) + "\n")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
