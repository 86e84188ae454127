"""Rendered frames straight into an H.264 video: raw RGB frames piped to ffmpeg's libx264.

The video is written under a hidden temporary name in the output's folder, with the output's
suffix (.NAME.partial.mp4: ffmpeg picks the container from it), and renamed when ffmpeg has
finished it: a run that is interrupted, crashes or whose ffmpeg dies leaves nothing under the
final name, and removes its temporary file where it still runs.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segmentation.errors import UserError
from segmentation.ffmpeg import find_ffmpeg
from segmentation.files import check_new_file

VIDEO_OUTPUT_SUFFIXES = (".mp4", ".mkv")
DEFAULT_FPS = 20.0  # make_video.sh's default, for frames that are not a video's
_BACKLOG = 8  # frames waiting for ffmpeg at most: their memory stays bounded


@dataclass(frozen=True)
class VideoOptions:
    fps: float | None = None  # None: the input video's rate, else DEFAULT_FPS
    crf: int = 18  # libx264's constant rate factor: 0 lossless, 18 visually lossless, 51 worst
    preset: str = "veryfast"  # libx264's speed against size trade-off


X264_PRESETS = (
    *("ultrafast", "superfast", "veryfast", "faster", "fast"),
    *("medium", "slow", "slower", "veryslow", "placebo"),
)


def is_video_output(output: Path) -> bool:
    return Path(output).suffix.lower() in VIDEO_OUTPUT_SUFFIXES


def check_video_options(options: VideoOptions) -> None:
    if options.fps is not None and not options.fps > 0:
        raise UserError(f"--fps must be more than 0, got {options.fps}")
    if not 0 <= options.crf <= 51:
        raise UserError(f"--crf must be within 0 (lossless) and 51, got {options.crf}")
    if options.preset not in X264_PRESETS:
        raise UserError(f"unknown --preset {options.preset}: use one of {', '.join(X264_PRESETS)}")


def partial_path(path: Path) -> Path:
    """drive.mp4 -> .drive.partial.mp4 beside it."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def first_error_line(log: str) -> str:
    """ffmpeg's first non-empty line: the cause; the lines after it follow from it."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return lines[0] if lines else "no message"


class VideoWriter:
    """Frames (H, W, 3) uint8 RGB, all of one size, in order -> `path`. Use as a context
    manager: a clean exit finishes the video and renames it into place; an exception (Ctrl-C
    included) ends ffmpeg and removes the temporary file.

    `put` takes a frame or a Future of one: a thread of this writer waits for them in the
    order they were put and feeds ffmpeg, so that frames finished out of order by a thread
    pool are written in order, and the caller does not wait for the encoder."""

    def __init__(self, path: Path, fps: float, options: VideoOptions, *, overwrite: bool) -> None:
        self.path = Path(path)
        self.ffmpeg = self.check_output(self.path, overwrite=overwrite)
        self.temporary = partial_path(self.path)
        self.fps = fps
        self.options = options
        self.frames_written = 0
        self._size: tuple[int, int] | None = None
        self._process: subprocess.Popen | None = None
        # ffmpeg's messages, for the first error line; closed by finish or abort.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        self._queue: queue.Queue = queue.Queue(maxsize=_BACKLOG)
        self._error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._feed, name="video-writer", daemon=True)

    @staticmethod
    def check_output(path: Path, *, overwrite: bool) -> str:
        """Refuse, before any work, a video that could not be written or would replace a file
        without `overwrite`; returns the ffmpeg that will write it."""
        check_new_file(path, "--output", overwrite=overwrite)
        return find_ffmpeg()

    def __enter__(self) -> VideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.finish()
        else:
            self.abort()

    def put(self, frame: np.ndarray | Future) -> None:
        """Queue the next frame (blocks while the backlog is full); raises the writer's error,
        if it met one, as soon as it is known."""
        while True:
            self._raise_error()
            try:
                self._queue.put(frame, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait for the frames put, let ffmpeg finish the file, rename it into place."""
        try:
            self._queue.put(None)
            self._thread.join()
            self._raise_error()
            if self._process is None:
                raise UserError(f"no frame to write to {self.path}: nothing was rendered")
            self._process.stdin.close()
            if self._process.wait() != 0:
                raise self._ffmpeg_failed()
            os.replace(self.temporary, self.path)
        except BaseException:
            self.abort()
            raise
        finally:
            self._log.close()

    def abort(self) -> None:
        """End ffmpeg and the feeding thread, remove the temporary file."""
        self._stopping = True
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()  # make room for the end mark, frames are dropped
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._thread.join(timeout=0.1)
        if self._process is not None and self._process.poll() is None:
            # Started by the thread after the first check: its file would outlive the unlink.
            self._process.kill()
            self._process.wait()
        if self._process is not None and self._process.stdin and not self._process.stdin.closed:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        self.temporary.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._log.close()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _feed(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None or self._stopping:
                    return
                frame = item.result() if isinstance(item, Future) else item
                if self._stopping:  # aborted while the frame was being made
                    return
                self._write(frame)
        except BaseException as error:  # handed to the caller's thread
            if not self._stopping:
                self._error = error
            # Keep taking frames so that a caller blocked on a full backlog gets to the error.
            while not self._stopping:
                with contextlib.suppress(queue.Empty):
                    if self._queue.get(timeout=0.1) is None:
                        return

    def _write(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if self._process is None:
            self._start(height, width)
        elif (height, width) != self._size:
            raise UserError(
                f"frame {self.frames_written} is {width}x{height} but the video's frames are "
                f"{self._size[1]}x{self._size[0]}: a video holds frames of one size; render "
                "to a folder instead (an --output without .mp4/.mkv)"
            )
        try:
            self._process.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, OSError):
            self._process.wait()
            raise self._ffmpeg_failed() from None
        self.frames_written += 1

    def _start(self, height: int, width: int) -> None:
        self._size = (height, width)
        command = [
            *(self.ffmpeg, "-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"),
            *("-framerate", f"{self.fps:g}", "-i", "-"),
            # yuv420p (what players take) needs even sides: pad odd ones (KITTI's 375 rows).
            *("-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"),
            *("-c:v", "libx264", "-crf", str(self.options.crf), "-preset", self.options.preset),
            *("-pix_fmt", "yuv420p", str(self.temporary)),
        ]
        try:
            # Its own session: a Ctrl-C on the terminal is this process's to handle (it ends
            # ffmpeg and removes the file); ffmpeg would otherwise stop on it too, and a
            # frame written after that would read as ffmpeg failing.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._log,
                start_new_session=True,
            )
        except OSError as error:
            raise UserError(f"cannot run ffmpeg {self.ffmpeg}: {error.strerror or error}") from None

    def _ffmpeg_failed(self) -> UserError:
        self._log.seek(0)
        reason = first_error_line(self._log.read().decode(errors="replace"))
        return UserError(f"ffmpeg could not write {self.path}: {reason}")


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler, `kill`) raises KeyboardInterrupt in the main thread while the
    block runs, as Ctrl-C does, so that the video's clean-up runs instead of the process
    ending on the spot. Elsewhere than the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
