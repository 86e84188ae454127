"""Rendering predictions for a sequence of frames: overlays, colour masks, label ids.

Frames decode in DataLoader workers and PNGs encode in a thread pool, so that the model runs
while the previous frames are written and the next are read.
"""

from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from segmentation.data.dataset import collate_list, size_groups
from segmentation.data.frames import (
    Frame,
    FrameFiles,
    VideoFrames,
    find_frames,
    is_video,
    video_frame_names,
)
from segmentation.data.io import write_png
from segmentation.engine.restore import TrainedModel
from segmentation.errors import UserError
from segmentation.predict import drop_small_clusters, predict_probabilities
from segmentation.visualize import overlay

logger = logging.getLogger(__name__)

SAVE_KINDS = ("overlay", "color", "labelIds")


@dataclass
class RenderOptions:
    save: list[str] = field(default_factory=lambda: ["overlay"])
    alpha: float = 0.5
    tta: str = "none"
    scales: list[float] = field(default_factory=lambda: [0.75, 1.0, 1.25])
    merge: str = "mean"
    drop_clusters: int = 0
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


def _write_outputs(
    image: np.ndarray, classes: np.ndarray, paths: list[Path], kinds: list[str], trained, alpha
) -> None:
    scheme = trained.scheme
    for kind, path in zip(kinds, paths):
        if kind == "overlay":
            write_png(path, overlay(image, classes, scheme, alpha))
        elif kind == "color":
            write_png(path, scheme.colorize(classes))
        else:
            write_png(path, scheme.to_label_ids(classes))


class Renderer:
    def __init__(self, trained: TrainedModel, options: RenderOptions) -> None:
        unknown = [kind for kind in options.save if kind not in SAVE_KINDS]
        if unknown:
            raise UserError(f"unknown --save {unknown}: use any of {', '.join(SAVE_KINDS)}")
        if "labelIds" in options.save and trained.scheme.dataset != "cityscapes":
            raise UserError("--save labelIds needs a Cityscapes model: use overlay or color")
        if not 0.0 <= options.alpha <= 1.0:
            raise UserError(f"--alpha must be within 0 and 1, got {options.alpha}")
        self.trained = trained
        self.options = options

    def run(self, source: str, output: Path) -> RenderReport:
        output = Path(output)
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"cannot create output folder {output} ({error.strerror}): choose another --output"
            ) from None
        options = self.options
        if is_video(source):
            probe = VideoFrames(Path(source))
            frames = video_frame_names(Path(source), probe.count)
        else:
            frames = find_frames(source)
        done = set()
        if not options.overwrite:
            done = {
                index
                for index, frame in enumerate(frames)
                if all(path.is_file() for path in output_paths(output, frame, options.save))
            }
        report = RenderReport(skipped_done=len(done))
        if is_video(source):
            dataset = VideoFrames(Path(source), skip=done)
            workers = min(options.workers, 1)
        else:
            todo = [index for index in range(len(frames)) if index not in done]
            dataset = torch.utils.data.Subset(FrameFiles(frames), todo)
            workers = options.workers
        if len(frames) == len(done):
            logger.info(
                "all %d frames are already rendered in %s (--overwrite redoes them)",
                len(frames),
                output,
            )
            return report
        loader = DataLoader(
            dataset,
            batch_size=options.batch_size,
            num_workers=workers,
            collate_fn=collate_list,
            pin_memory=self.trained.device.type == "cuda",
        )
        progress = tqdm(
            total=len(frames) - len(done),
            desc="render",
            unit="frame",
            disable=not sys.stderr.isatty(),
        )
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            pending: list[Future] = []
            for batch in loader:
                for index, error in zip(batch["index"], batch["error"]):
                    if error:
                        report.unreadable.append(f"{frames[index].name}: {error}")
                readable = [i for i, image in enumerate(batch["image"]) if image is not None]
                for group in size_groups([batch["image"][i] for i in readable]):
                    images = torch.stack([batch["image"][readable[i]] for i in group])
                    indices = [batch["index"][readable[i]] for i in group]
                    classes = self._predict(images)
                    for image, class_map, index in zip(images, classes, indices):
                        paths = output_paths(output, frames[index], options.save)
                        pending.append(
                            pool.submit(
                                _write_outputs,
                                image.permute(1, 2, 0).numpy(),
                                class_map,
                                paths,
                                options.save,
                                self.trained,
                                options.alpha,
                            )
                        )
                    report.rendered += len(indices)
                progress.update(len(batch["index"]))
                # Bound the backlog of frames waiting to be written.
                while len(pending) > 4 * options.batch_size:
                    pending.pop(0).result()
            for future in pending:
                future.result()
        progress.close()
        report.seconds = time.perf_counter() - started
        return report

    def _predict(self, images: torch.Tensor) -> np.ndarray:
        """uint8 (B, 3, H, W) -> class maps (B, H, W) uint8 at the frames' size."""
        trained, options = self.trained, self.options
        with torch.inference_mode():
            probs = predict_probabilities(
                trained.model,
                trained.normalize(images),
                trained.head,
                base_size=trained.image_size,
                divisor=trained.divisor,
                tta=options.tta,
                scales=options.scales,
                merge=options.merge,
            )
            classes = probs.argmax(dim=1).to(torch.uint8).cpu().numpy()
        if options.drop_clusters:
            probs_cpu = probs.cpu().numpy()
            classes = np.stack(
                [
                    drop_small_clusters(c, p, options.drop_clusters).astype(np.uint8)
                    for c, p in zip(classes, probs_cpu)
                ]
            )
        return classes
