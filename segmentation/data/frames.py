"""Unlabeled frames for inference: a folder of images, a glob pattern, or a video file."""

from __future__ import annotations

import glob
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from segmentation.data.io import IMAGE_SUFFIXES, read_rgb
from segmentation.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
# Dataset suffixes dropped from output names: stuttgart_00_000000_000001_leftImg8bit.png
# renders as stuttgart_00_000000_000001_overlay.png.
_NAME_SUFFIXES = ("_leftImg8bit",)


@dataclass(frozen=True)
class Frame:
    name: str  # output name prefix, sortable like the input
    path: Path | None  # None for video frames


def frame_name(path: Path) -> str:
    stem = path.stem
    for suffix in _NAME_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def is_video(source: str) -> bool:
    return Path(source).suffix.lower() in VIDEO_SUFFIXES


def find_frames(source: str) -> list[Frame]:
    """Image files of a folder (sorted; not its subfolders), of a glob pattern, or one file."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        where = f"folder {path}"
        if not files:
            _refuse_frames_in_subfolders(path)
    elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        files, where = [path], f"file {path}"
    elif any(char in source for char in "*?["):
        files = sorted(Path(p) for p in glob.glob(source) if p.lower().endswith(IMAGE_SUFFIXES))
        where = f"pattern {source}"
    else:
        raise UserError(
            f"--input {source} is neither a folder, an image, a glob pattern nor a video "
            f"({', '.join(VIDEO_SUFFIXES)}): check the path"
        )
    if not files:
        raise UserError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in {where}: point --input at the frames"
        )
    names = [frame_name(file) for file in files]
    _refuse_shared_names(names, files, where)
    return [Frame(name, file) for name, file in zip(names, files)]


def _refuse_shared_names(names: list[str], files: list[Path], where: str) -> None:
    """Two frames of one output name would write over each other's PNGs: name a pair."""
    first_with_name: dict[str, Path] = {}
    for name, file in zip(names, files):
        if name in first_with_name:
            raise UserError(
                f"frames {first_with_name[name]} and {file} in {where} would both render as "
                f"'{name}': render their folders one at a time, each to its own --output"
            )
        first_with_name[name] = file


def _refuse_frames_in_subfolders(folder: Path) -> None:
    """A folder without images of its own whose subfolders hold them (a dataset split's
    cities): say where the frames are instead of 'no images'."""
    holding = {}  # subfolder name -> the suffix of its first image found
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        images = (p.suffix for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        first = next(images, None)  # not a listing of every frame of a long sequence
        if first is not None:
            holding[sub.name] = first
    if not holding:
        return
    shown = ", ".join(list(holding)[:3]) + (
        f" and {len(holding) - 3} more" if len(holding) > 3 else ""
    )
    suffix = next(iter(holding.values()))
    raise UserError(
        f"folder {folder} holds no images itself but its subfolders do ({shown}): point "
        f"--input at one of them, e.g. {folder / next(iter(holding))}, or at all of them "
        f"with a quoted glob, e.g. '{folder}/*/*{suffix}'"
    )


def _item(index: int, image: np.ndarray | None, error: str = "") -> dict:
    tensor = (
        None if image is None else torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    )
    return {"index": index, "image": tensor, "error": error}


class FrameFiles(Dataset):
    """Image files -> dict(index, image (3, H, W) uint8 RGB or None, error). An unreadable
    file gives image None and the reason, so that one bad frame does not end a long render."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        try:
            return _item(index, read_rgb(self.frames[index].path))
        except UserError as error:
            return _item(index, None, str(error))


class VideoReader:
    """The frames of a video file, decoded in order by a thread into a bounded queue of
    batches. A thread, not a DataLoader worker process: a video decodes sequentially anyway,
    OpenCV's decoder releases the GIL, and the batches need no copy between processes."""

    def __init__(self, path: Path, skip: set[int] | None = None) -> None:
        self.path = Path(path)
        self.skip = skip or set()
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise UserError(f"cannot open video {path}: the file is missing or not a video")
        self.count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)  # 0: the container says none
        capture.release()

    def batches(
        self,
        batch_size: int,
        collate: Callable[[list[dict]], dict],
        *,
        pin_memory: bool = False,
        depth: int = 4,
    ) -> Iterator[dict]:
        """collate(items) of each `batch_size` frames in order (items as FrameFiles gives
        them), at most `depth` batches decoded ahead; pinned for a GPU's copies if asked."""
        ready: queue.Queue = queue.Queue(maxsize=depth)
        stop = threading.Event()
        end = object()

        def hand_over(item: object) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def decode() -> None:
            try:
                items: list[dict] = []
                for item in self._frames(stop):
                    items.append(item)
                    if len(items) == batch_size:
                        if not hand_over(_pinned(collate(items), pin_memory)):
                            return
                        items = []
                if items:
                    hand_over(_pinned(collate(items), pin_memory))
                hand_over(end)
            except BaseException as error:  # raised again in the consuming thread
                hand_over(error)

        thread = threading.Thread(target=decode, name="video-reader", daemon=True)
        thread.start()
        try:
            while True:
                batch = ready.get()
                if batch is end:
                    return
                if isinstance(batch, BaseException):
                    raise batch
                yield batch
        finally:
            stop.set()
            thread.join()

    def _frames(self, stop: threading.Event) -> Iterator[dict]:
        capture = cv2.VideoCapture(str(self.path))
        index = 0
        try:
            while not stop.is_set():
                ok, bgr = capture.read()
                if not ok:
                    break
                if index not in self.skip:
                    yield _item(index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                index += 1
        finally:
            capture.release()


def _pinned(batch: dict, pin_memory: bool) -> dict:
    if pin_memory:
        for group in batch["groups"]:
            group["image"] = group["image"].pin_memory()
    return batch


def video_frame_name(path: Path, index: int) -> str:
    """Output name prefix of a video's frame: drive.mp4, frame 7 -> drive_000007."""
    return f"{Path(path).stem}_{index:06d}"
