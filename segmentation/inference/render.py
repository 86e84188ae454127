"""Rendering predictions for a sequence of frames: overlays, colour masks, label ids, as image
files (PNG, or JPEG) or as one video.

The work overlaps: image files decode in DataLoader workers and a video in a reader thread
(both stack equally sized frames, so that pinned memory reaches the device without a copy),
the model runs in the main thread. On a GPU the overlays and colour masks are made there too,
and only the uint8 pictures come back, without stopping the main thread (a non-blocking copy
that the writing thread waits for), or only JPEG files (the writing threads encode them on the
GPU with nvJPEG, which blocks its caller per frame); on the CPU the writing threads
take the classes and make the pictures with OpenCV, beside the next forward. The writing
threads encode and write the files; for a video, the writer's thread takes their pictures in
order and pipes them to ffmpeg.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from segmentation.data.dataset import collate_size_groups
from segmentation.data.frames import (
    Frame,
    FrameFiles,
    VideoReader,
    find_frames,
    is_video,
    video_frame_name,
)
from segmentation.data.loading import make_loader, progress_bar
from segmentation.errors import UserError
from segmentation.inference.encode import IMAGE_FORMATS, device_jpeg_available
from segmentation.inference.sinks import FolderSink, FrameWork, VideoSink
from segmentation.inference.video_writer import (
    DEFAULT_FPS,
    VideoOptions,
    VideoWriter,
    check_video_options,
    is_video_output,
    sigterm_interrupts,
)
from segmentation.prediction.predict import PredictionOptions, drop_small_clusters_in_batch
from segmentation.prediction.trained_model import TrainedModel
from segmentation.visualize import DeviceColors

logger = logging.getLogger(__name__)

SAVE_KINDS = ("overlay", "color", "labelIds")
PICTURE_KINDS = ("overlay", "color")  # the kinds a device can make, JPEG and video can hold


@dataclass
class RenderOptions:
    save: list[str] = field(default_factory=lambda: ["overlay"])
    alpha: float = 0.5
    prediction: PredictionOptions = field(default_factory=PredictionOptions)
    batch_size: int = 4
    workers: int | None = None  # image-decoding processes; None: decode_workers()
    overwrite: bool = False
    image_format: str = "png"  # png | jpg, for overlays and colour masks in a folder
    jpeg_quality: int = 90
    video: VideoOptions = field(default_factory=VideoOptions)  # for an .mp4/.mkv output
    # Colour and blend on the model's device: None on a GPU (where it pays) and not on the
    # CPU, where OpenCV in the writing threads beside the forward is faster.
    pictures_on_device: bool | None = None


@dataclass
class RenderReport:
    rendered: int = 0
    skipped_done: int = 0
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else 0.0


def decode_workers(requested: int | None) -> int:
    """`requested`, or by default every core but two: one for the main process (batches to the
    device, the model, the pictures made there), one for the writing (the threads' encoding,
    or ffmpeg's); the rest decode, the costliest host stage of an image frame (a 512x1024
    PNG: 14 ms, against 1.5 ms of an H200's forward). At least one."""
    if requested is not None:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 2)


def output_paths(
    output: Path, frame: Frame, kinds: list[str], image_format: str = "png"
) -> list[Path]:
    return FolderSink(Path(output), kinds, image_format).paths(frame)


def collate_frames(items: list[dict]) -> dict:
    """Decoded frames -> {"groups": [{"index": [...], "image": (B, 3, H, W) uint8}],
    "errors": [(index, message)]}: frames of one size stacked, in the worker."""
    readable = [{"image": item["image"], "index": item["index"]} for item in items]
    readable = [item for item in readable if item["image"] is not None]
    errors = [(item["index"], item["error"]) for item in items if item["image"] is None]
    return {"groups": collate_size_groups(readable), "errors": errors}


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
        if options.image_format not in IMAGE_FORMATS:
            raise UserError(
                f"unknown --image-format {options.image_format}: use {' or '.join(IMAGE_FORMATS)}"
            )
        if not 1 <= options.jpeg_quality <= 100:
            raise UserError(f"--jpeg-quality must be within 1 and 100, got {options.jpeg_quality}")
        if options.workers is not None and options.workers < 0:
            raise UserError(f"--workers must be 0 or more, got {options.workers}")
        check_video_options(options.video)
        self.trained = trained
        self.options = options
        on_device = options.pictures_on_device
        self.pictures_on_device = trained.device.type != "cpu" if on_device is None else on_device
        self.device_colors = DeviceColors(trained.scheme, trained.device)
        jpeg = options.image_format == "jpg"
        self.jpeg_on_device = jpeg and device_jpeg_available(trained.device)

    def frames(self, source: str, output: Path) -> list[Frame]:
        """The frames of `source`, once `output` is known to be a place for their renders;
        inference.py calls it before a long ONNX export too."""
        video = Path(source) if is_video(source) else None
        frames = _video_frames(video) if video is not None else find_frames(source)
        if is_video_output(output):
            self._check_video_output(Path(output))
        else:
            check_output_outside_input(source, frames, Path(output))
        return frames

    def _check_video_output(self, output: Path) -> None:
        kinds = self.options.save
        if len(kinds) != 1 or kinds[0] not in PICTURE_KINDS:
            raise UserError(
                f"a video --output ({output.name}) holds one kind of picture, overlay or color; "
                f"got --save {' '.join(kinds)}: choose one, or render to a folder"
                + (" (label ids need lossless PNGs)" if "labelIds" in kinds else "")
            )
        if self.options.image_format != "png":
            raise UserError(
                "--image-format is for frames written to a folder; a video --output is H.264: "
                "leave it out, or give a folder as --output"
            )
        VideoWriter.check_output(output, overwrite=self.options.overwrite)

    def run(self, source: str, output: Path) -> RenderReport:
        output = Path(output)
        video = Path(source) if is_video(source) else None
        frames = self.frames(source, output)
        if is_video_output(output):
            return self._run_to_video(video, frames, output)
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"cannot create output folder {output} ({error.strerror}): choose another --output"
            ) from None
        options = self.options
        sink = FolderSink(output, options.save, options.image_format, options.jpeg_quality)
        done = set()
        if not options.overwrite:
            done = {index for index, frame in enumerate(frames) if sink.is_done(frame)}
        report = RenderReport(skipped_done=len(done))
        if frames and len(frames) == len(done):
            logger.info(
                "all %d frames are already rendered in %s (--overwrite redoes them)",
                len(frames),
                output,
            )
            return report
        started = time.perf_counter()
        batches = self._batches(frames, video, done)
        frame_at = _frame_lookup(frames, video)
        decoded = self._render(batches, len(frames) - len(done), sink, frame_at, report)
        if video is not None:
            check_every_frame_read(video, len(frames), done | decoded, output)
        report.seconds = time.perf_counter() - started
        return report

    def _run_to_video(self, video: Path | None, frames: list[Frame], output: Path) -> RenderReport:
        """Every frame, in order, into one video file (nothing is skipped: a video is made
        whole or not at all)."""
        fps = self.options.video.fps
        if fps is None:
            fps = VideoReader(video).fps if video is not None else 0.0
            fps = fps if fps > 0 else DEFAULT_FPS
        report = RenderReport()
        started = time.perf_counter()
        writer = VideoWriter(output, fps, self.options.video, overwrite=self.options.overwrite)
        with sigterm_interrupts(), writer:
            sink = VideoSink(writer, self.options.save[0])
            batches = self._batches(frames, video, set())
            decoded = self._render(batches, len(frames), sink, _frame_lookup(frames, video), report)
        if video is not None:
            check_every_frame_read(video, len(frames), decoded, output)
        report.seconds = time.perf_counter() - started
        return report

    def _batches(self, frames: list[Frame], video: Path | None, done: set[int]):
        """Batches of decoded frames, as collate_frames makes them, in order."""
        if video is not None:
            reader = VideoReader(video, skip=done)
            pin = self.trained.device.type == "cuda"
            return reader.batches(self.options.batch_size, collate_frames, pin_memory=pin)
        return self._loader(frames, video, done)

    def _loader(self, frames: list[Frame], video: Path | None, done: set[int]):
        """A DataLoader of the image files not done."""
        todo = [index for index in range(len(frames)) if index not in done]
        dataset = torch.utils.data.Subset(FrameFiles(frames), todo)
        # One batch at most (an image, a few): decoded here it costs what a worker's
        # decoding would, without forking workers first and ending them after.
        batches = -(-len(todo) // self.options.batch_size)
        # No more workers than batches: each decodes whole batches, the others would idle.
        workers = min(decode_workers(self.options.workers), batches)
        workers = workers if batches > 1 else 0
        return make_loader(
            dataset,
            batch_size=self.options.batch_size,
            workers=workers,
            device=self.trained.device,
            collate_fn=collate_frames,
        )

    def _render(self, batches, total: int, sink, frame_at, report: RenderReport) -> set[int]:
        """Predict every decoded frame and hand it to the sink's writing jobs (for a video,
        their results to the writer, in order). Returns the indices of the frames decoded
        (readable or not)."""
        progress = progress_bar(total, "render", unit="frame")
        decoded: set[int] = set()
        # A video's reader thread ends when its batches are closed: at the end, or on an error.
        with contextlib.closing(batches) if hasattr(batches, "close") else contextlib.nullcontext():
            self._render_batches(batches, sink, frame_at, report, progress, decoded)
        progress.close()
        return decoded

    def _render_batches(
        self, batches, sink, frame_at, report: RenderReport, progress, decoded: set[int]
    ) -> None:
        """_render's loop: predictions in the main thread, writing jobs in a thread pool."""
        options = self.options
        writers = min(8, max(2, (os.cpu_count() or 2) // 2))
        style = (self.trained.scheme, options.alpha)
        with ThreadPoolExecutor(max_workers=writers) as pool:
            pending: deque[Future] = deque()
            for batch in batches:
                for index, error in batch["errors"]:
                    report.unreadable.append(f"{frame_at(index).name}: {error}")
                for group in batch["groups"]:
                    for index, work in zip(group["index"], self._predict(group["image"], sink)):
                        future = pool.submit(sink.job(frame_at(index), work, *style))
                        pending.append(future)
                        if isinstance(sink, VideoSink):
                            sink.writer.put(future)
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

    def _predict(self, images: torch.Tensor, sink) -> list[FrameWork]:
        """uint8 (B, 3, H, W) -> each frame's FrameWork: its class map on the host at the
        frame's size (or, from a plain prediction on the CPU, its logits: the writing threads
        take the classes, beside the next forward rather than before it), and the pictures
        made on the device, on their way to the host."""
        options = self.options
        with torch.inference_mode():
            if self.trained.device.type == "cpu" and not self.pictures_on_device:
                logits = self.trained.plain_logits(images, options.prediction)
                if logits is not None:
                    return [FrameWork(image, frame) for image, frame in zip(images, logits)]
            on_device = images.to(self.trained.device, non_blocking=True)
            # The clean-up is a host job: done here, its maps stay on the host.
            clean_up = options.prediction.drop_clusters > 0  # needs the probabilities
            classes, probs = self.trained.predict(
                on_device, replace(options.prediction, drop_clusters=0), probabilities=clean_up
            )
            if clean_up:
                cleaned = drop_small_clusters_in_batch(
                    classes, probs, options.prediction.drop_clusters
                ).to(torch.uint8)
                return [FrameWork(image, frame) for image, frame in zip(images, cleaned)]
            classes = classes.to(torch.uint8)
            pictures = self._device_pictures(on_device, classes, sink.kinds)
            needs_classes = any(kind not in pictures for kind in sink.kinds)
            host_classes, ready = _to_host(classes) if needs_classes else (None, None)
            if self.jpeg_on_device:
                # They stay on the GPU: the writing threads encode them there once made.
                ready = copy_finished_event(on_device.device)
            else:
                pictures, pictures_ready = _pictures_to_host(pictures)
                ready = pictures_ready or ready
        return [
            FrameWork(
                image,
                None if host_classes is None else host_classes[position],
                {kind: made[position] for kind, made in pictures.items()},
                ready,
            )
            for position, image in enumerate(images)
        ]

    def _device_pictures(
        self, images: torch.Tensor, classes: torch.Tensor, kinds: list[str]
    ) -> dict[str, torch.Tensor]:
        """kind -> (B, H, W, 3) uint8 pictures on the device (none where made on the host)."""
        if not self.pictures_on_device:
            return {}
        pictures: dict = {}
        colors = None
        if {"overlay", "color"} & set(kinds):
            colors = self.device_colors.colorize(classes)
        if "color" in kinds:
            pictures["color"] = colors
        if "overlay" in kinds:
            overlays = self.device_colors.overlay(images, classes, self.options.alpha, colors)
            pictures["overlay"] = overlays
        return pictures


def _frame_lookup(frames: list[Frame], video: Path | None):
    def frame_at(index: int) -> Frame:
        # A video's frame count in its container may be short: later names from the index.
        if video is not None and index >= len(frames):
            return Frame(video_frame_name(video, index), None)
        return frames[index]

    return frame_at


def _video_frames(video: Path) -> list[Frame]:
    return [
        Frame(video_frame_name(video, index), None) for index in range(VideoReader(video).count)
    ]


def _pictures_to_host(
    pictures: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], torch.cuda.Event | None]:
    """The device's pictures on the host, without waiting: and the event after the copies."""
    moved: dict[str, torch.Tensor] = {}
    ready = None
    for kind, made in pictures.items():
        moved[kind], ready = _to_host(made)
    return moved, ready
