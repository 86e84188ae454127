"""Rendering predictions for a sequence of frames: overlays, colour masks, label ids.

The work overlaps: frames decode in DataLoader workers (which also stack equally sized frames,
so that pinned memory reaches the device without a copy), the model runs in the main thread,
and the class maps come back to the host without stopping it (on a GPU, a non-blocking copy
that the writing thread waits for); colouring, blending and PNG encoding run in a thread pool.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from segmentation.data.dataset import collate_size_groups
from segmentation.data.frames import (
    Frame,
    FrameFiles,
    VideoFrames,
    find_frames,
    is_video,
    video_frame_name,
)
from segmentation.data.io import encode_png
from segmentation.data.labels import LabelScheme
from segmentation.data.loading import make_loader, progress_bar
from segmentation.errors import UserError
from segmentation.files import write_atomically
from segmentation.inference.model import TrainedModel
from segmentation.inference.predict import PredictionOptions, drop_small_clusters_in_batch
from segmentation.metrics import predictions_from_logits
from segmentation.visualize import colorize, overlay

logger = logging.getLogger(__name__)

SAVE_KINDS = ("overlay", "color", "labelIds")


@dataclass
class RenderOptions:
    save: list[str] = field(default_factory=lambda: ["overlay"])
    alpha: float = 0.5
    prediction: PredictionOptions = field(default_factory=PredictionOptions)
    batch_size: int = 4
    workers: int = 2
    overwrite: bool = False


@dataclass
class RenderReport:
    rendered: int = 0
    skipped_done: int = 0
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else 0.0


def output_paths(output: Path, frame: Frame, kinds: list[str]) -> list[Path]:
    return [output / f"{frame.name}_{kind}.png" for kind in kinds]


def _video_frames(video: Path) -> list[Frame]:
    return [
        Frame(video_frame_name(video, index), None) for index in range(VideoFrames(video).count)
    ]


def collate_frames(items: list[dict]) -> dict:
    """Decoded frames -> {"groups": [{"index": [...], "image": (B, 3, H, W) uint8}],
    "errors": [(index, message)]}: frames of one size stacked, in the worker."""
    readable = [{"image": item["image"], "index": item["index"]} for item in items]
    readable = [item for item in readable if item["image"] is not None]
    errors = [(item["index"], item["error"]) for item in items if item["image"] is None]
    return {"groups": collate_size_groups(readable), "errors": errors}


def _write_png_atomic(path: Path, array: np.ndarray) -> None:
    """A render killed mid-write leaves no truncated PNG that the next run would take for a
    finished frame."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda handle: handle.write(encode_png(array)), sync=False)
    except OSError as error:
        raise UserError(
            f"cannot write {path} ({error.strerror or error}): free disk space or check that "
            "the folder is writable"
        ) from None


def _write_outputs(
    image: torch.Tensor,
    classes: torch.Tensor,
    ready: torch.cuda.Event | None,
    paths: list[Path],
    kinds: list[str],
    scheme: LabelScheme,
    alpha: float,
) -> None:
    """image (3, H, W) uint8 RGB; classes (H, W) uint8 on the host once `ready` has passed,
    or the frame's logits (K, H, W) on the CPU, whose classes are taken here."""
    if ready is not None:
        ready.synchronize()
    if classes.dim() == 3:
        with torch.inference_mode():
            classes = predictions_from_logits(classes[None])[0].to(torch.uint8)
    class_map = classes.numpy()
    colors = colorize(class_map, scheme) if {"overlay", "color"} & set(kinds) else None
    for kind, path in zip(kinds, paths):
        if kind == "overlay":
            rgb = image.permute(1, 2, 0).numpy()
            _write_png_atomic(path, overlay(rgb, class_map, scheme, alpha, colors=colors))
        elif kind == "color":
            _write_png_atomic(path, colors)
        else:
            _write_png_atomic(path, scheme.to_label_ids(class_map))


def _to_host(classes: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """Class maps to the host. From a GPU without waiting: a copy into pinned memory and the
    event that marks its end, which the writing thread waits for."""
    if classes.device.type != "cuda":
        return classes.cpu(), None
    host = torch.empty(classes.shape, dtype=classes.dtype, pin_memory=True)
    host.copy_(classes, non_blocking=True)
    return host, copy_finished_event(classes.device)


def copy_finished_event(device: torch.device) -> torch.cuda.Event:
    """An event after the work queued so far on `device`'s current stream, where a copy from
    that device runs: not on the current device's, which is another GPU with --device cuda:1."""
    ready = torch.cuda.Event()
    ready.record(torch.cuda.current_stream(device))
    return ready


def check_output_outside_input(source: str, frames: list[Frame], output: Path) -> None:
    """Refuse an output folder that is a folder the frames were found in, or inside one: the
    next run would take the rendered PNGs for frames (..._overlay_overlay.png). One image or a
    video is never looked for again, so their folder may hold the outputs."""
    if Path(source).is_file():
        return
    folders = {frame.path.parent.resolve() for frame in frames if frame.path is not None}
    target = output.resolve()
    for folder in sorted(folders):
        if target == folder or folder in target.parents:
            where = "is" if target == folder else "is inside"
            raise UserError(
                f"--output {output} {where} the input folder {folder}: PNGs rendered inside the "
                "input folder would be taken for frames by the next run; choose an --output "
                "outside it"
            )


def check_every_frame_read(video: Path, announced: int, read: set[int], output: Path) -> None:
    """A video that ends before the frame count in its container (a copy cut short, a damaged
    file) must not pass for a finished render: name how many frames were read of how many.
    The frames read stay rendered; an unknown count (0) checks nothing."""
    if not read:
        raise UserError(f"no frame could be decoded from {video}: check that it is a video")
    missing = [index for index in range(announced) if index not in read]
    if missing:
        raise UserError(
            f"read {announced - len(missing)} of the {announced} frames that {video} announces "
            f"(the first missing is {video_frame_name(video, missing[0])}: the file is cut "
            f"short or damaged); the frames read are rendered in {output}: copy or re-encode "
            "the video and render again to add the rest"
        )


class Renderer:
    def __init__(self, trained: TrainedModel, options: RenderOptions) -> None:
        unknown = [kind for kind in options.save if kind not in SAVE_KINDS]
        if unknown:
            raise UserError(f"unknown --save {unknown}: use any of {', '.join(SAVE_KINDS)}")
        if "labelIds" in options.save and trained.scheme.export_label_ids is None:
            raise UserError(
                "--save labelIds needs a Cityscapes or folder dataset model: use overlay or color"
            )
        if not 0.0 <= options.alpha <= 1.0:
            raise UserError(f"--alpha must be within 0 and 1, got {options.alpha}")
        self.trained = trained
        self.options = options

    def frames(self, source: str, output: Path) -> list[Frame]:
        """The frames of `source`, once `output` is known to be a place for their renders;
        inference.py calls it before a long ONNX export too."""
        video = Path(source) if is_video(source) else None
        frames = _video_frames(video) if video is not None else find_frames(source)
        check_output_outside_input(source, frames, Path(output))
        return frames

    def run(self, source: str, output: Path) -> RenderReport:
        output = Path(output)
        video = Path(source) if is_video(source) else None
        frames = self.frames(source, output)
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"cannot create output folder {output} ({error.strerror}): choose another --output"
            ) from None
        done = set()
        if not self.options.overwrite:
            done = {
                index
                for index, frame in enumerate(frames)
                if all(path.is_file() for path in output_paths(output, frame, self.options.save))
            }
        report = RenderReport(skipped_done=len(done))
        if frames and len(frames) == len(done):
            logger.info(
                "all %d frames are already rendered in %s (--overwrite redoes them)",
                len(frames),
                output,
            )
            return report

        def frame_at(index: int) -> Frame:
            # A video's frame count in its container may be short: later names from the index.
            if video is not None and index >= len(frames):
                return Frame(video_frame_name(video, index), None)
            return frames[index]

        started = time.perf_counter()
        loader = self._loader(frames, video, done)
        decoded = self._render(loader, len(frames) - len(done), output, frame_at, report)
        if video is not None:
            check_every_frame_read(video, len(frames), done | decoded, output)
        report.seconds = time.perf_counter() - started
        return report

    def _loader(self, frames: list[Frame], video: Path | None, done: set[int]):
        if video is not None:
            dataset = VideoFrames(video, skip=done)
            workers = min(self.options.workers, 1)  # a video decodes in order
        else:
            todo = [index for index in range(len(frames)) if index not in done]
            dataset = torch.utils.data.Subset(FrameFiles(frames), todo)
            # One batch at most (an image, a few): decoded here it costs what a worker's
            # decoding would, without forking workers first and ending them after.
            workers = self.options.workers if len(todo) > self.options.batch_size else 0
        return make_loader(
            dataset,
            batch_size=self.options.batch_size,
            workers=workers,
            device=self.trained.device,
            collate_fn=collate_frames,
        )

    def _render(self, loader, total: int, output: Path, frame_at, report: RenderReport) -> set[int]:
        """Predict every decoded frame and hand its PNGs to the writing threads. Returns the
        indices of the frames decoded (readable or not)."""
        options = self.options
        progress = progress_bar(total, "render", unit="frame")
        decoded: set[int] = set()
        writers = min(8, max(2, (os.cpu_count() or 2) // 2))
        with ThreadPoolExecutor(max_workers=writers) as pool:
            pending: deque[Future] = deque()
            for batch in loader:
                for index, error in batch["errors"]:
                    report.unreadable.append(f"{frame_at(index).name}: {error}")
                for group in batch["groups"]:
                    classes, ready = self._predict(group["image"])
                    for image, class_map, index in zip(group["image"], classes, group["index"]):
                        paths = output_paths(output, frame_at(index), options.save)
                        write = (image, class_map, ready, paths, options.save)
                        style = (self.trained.scheme, options.alpha)
                        pending.append(pool.submit(_write_outputs, *write, *style))
                    report.rendered += len(group["index"])
                indices = [index for index, _ in batch["errors"]]
                indices += [index for group in batch["groups"] for index in group["index"]]
                decoded.update(int(index) for index in indices)
                progress.update(len(indices))
                # Bound the backlog of frames waiting to be written.
                while len(pending) > 4 * options.batch_size:
                    pending.popleft().result()
            for future in pending:
                future.result()
        progress.close()
        return decoded

    def _predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """uint8 (B, 3, H, W) -> class maps (B, H, W) uint8 on the host at the frames' size,
        and the CUDA event after which they are there (None: they are there already). A
        plain prediction on the CPU returns its logits (B, K, H, W) instead: the writing
        threads take the classes, beside the next forward rather than before it."""
        options = self.options
        with torch.inference_mode():
            if self.trained.device.type == "cpu":
                logits = self.trained.plain_logits(images, options.prediction)
                if logits is not None:
                    return logits, None
            # The clean-up is a host job: done here, its maps stay on the host.
            clean_up = options.prediction.drop_clusters > 0  # needs the probabilities
            classes, probs = self.trained.predict(
                images, replace(options.prediction, drop_clusters=0), probabilities=clean_up
            )
            if options.prediction.drop_clusters:
                cleaned = drop_small_clusters_in_batch(
                    classes, probs, options.prediction.drop_clusters
                )
                return cleaned.to(torch.uint8), None
            return _to_host(classes.to(torch.uint8))
