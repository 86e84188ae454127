"""Where a rendered frame goes: image files in a folder, or the next frame of a video.

The Renderer hands each frame's FrameWork to a sink's `job`, which the writing threads run:
the pictures not made on the device are made there (colours, overlays, label ids from the
class map), then written as files, or returned for the video, which takes them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from segmentation.data.frames import Frame
from segmentation.data.labels import LabelScheme
from segmentation.errors import UserError
from segmentation.files import write_atomically
from segmentation.inference.encode import encode_jpeg_on_device, encode_on_host, file_suffix
from segmentation.inference.video_writer import VideoWriter
from segmentation.metrics import predictions_from_logits
from segmentation.visualize import colorize, overlay


@dataclass
class FrameWork:
    """One frame's prediction on its way to the writing threads."""

    image: torch.Tensor  # (3, H, W) uint8 RGB on the host: for pictures made there
    # (H, W) uint8 class map on the host, the frame's logits (K, H, W) on the CPU (its classes
    # are taken in the writing thread), or None when the device made every picture asked for.
    classes: torch.Tensor | None
    # kind -> (H, W, 3) uint8 picture made on the device: on the host, or still on the GPU
    # for its JPEG encoder.
    pictures: dict[str, torch.Tensor] = field(default_factory=dict)
    ready: torch.cuda.Event | None = None  # passed when classes and pictures are on the host


def make_pictures(
    work: FrameWork, kinds: list[str], scheme: LabelScheme, alpha: float
) -> dict[str, np.ndarray | torch.Tensor]:
    """kind -> (H, W[, 3]) uint8 picture: an array, or a tensor on a GPU (for nvJPEG)."""
    if work.ready is not None:
        work.ready.synchronize()
    made: dict[str, np.ndarray | torch.Tensor] = {}
    for kind, picture in work.pictures.items():
        made[kind] = picture if picture.is_cuda else picture.numpy()
    missing = [kind for kind in kinds if kind not in made]
    if not missing:
        return made
    classes = work.classes
    if classes.dim() == 3:
        with torch.inference_mode():
            classes = predictions_from_logits(classes[None])[0].to(torch.uint8)
    class_map = classes.numpy()
    colors = colorize(class_map, scheme) if {"overlay", "color"} & set(missing) else None
    for kind in missing:
        if kind == "overlay":
            rgb = work.image.permute(1, 2, 0).numpy()
            made[kind] = overlay(rgb, class_map, scheme, alpha, colors=colors)
        elif kind == "color":
            made[kind] = colors
        else:
            made[kind] = scheme.to_label_ids(class_map)
    return made


def write_file_atomic(path: Path, data: bytes) -> None:
    """A render killed mid-write leaves no truncated file that the next run would take for a
    finished frame."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda handle: handle.write(data), sync=False)
    except OSError as error:
        raise UserError(
            f"cannot write {path} ({error.strerror or error}): free disk space or check that "
            "the folder is writable"
        ) from None


@dataclass
class FolderSink:
    """One file per frame and kind in `output`: NAME_KIND.png, or .jpg for overlays and
    colour masks with image_format "jpg"."""

    output: Path
    kinds: list[str]
    image_format: str = "png"
    jpeg_quality: int = 90

    def paths(self, frame: Frame) -> list[Path]:
        return [
            self.output / f"{frame.name}_{kind}{file_suffix(kind, self.image_format)}"
            for kind in self.kinds
        ]

    def is_done(self, frame: Frame) -> bool:
        return all(path.is_file() for path in self.paths(frame))

    def job(
        self, frame: Frame, work: FrameWork, scheme: LabelScheme, alpha: float
    ) -> Callable[[], None]:
        def write() -> None:
            pictures = make_pictures(work, self.kinds, scheme, alpha)
            for kind, path in zip(self.kinds, self.paths(frame)):
                picture = pictures[kind]
                if isinstance(picture, torch.Tensor):  # on a GPU
                    data = encode_jpeg_on_device(picture, self.jpeg_quality)
                else:
                    image_format = file_suffix(kind, self.image_format)[1:]
                    data = encode_on_host(picture, image_format, self.jpeg_quality)
                write_file_atomic(path, data)

        return write


@dataclass
class VideoSink:
    """The frames of one kind, in order, into a video."""

    writer: VideoWriter
    kind: str

    @property
    def kinds(self) -> list[str]:
        return [self.kind]

    def job(
        self, frame: Frame, work: FrameWork, scheme: LabelScheme, alpha: float
    ) -> Callable[[], np.ndarray]:
        return lambda: make_pictures(work, [self.kind], scheme, alpha)[self.kind]
