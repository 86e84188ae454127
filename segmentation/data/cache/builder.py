"""Building a cache: decode every sample once, write it under a temporary sibling folder, and
rename that into place only when it is complete."""

from __future__ import annotations

import errno
import glob
import logging
import os
import shutil
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from segmentation.data.cache.manifest import MANIFEST_NAME, read_manifest
from segmentation.data.cache.store import PartWriter, write_manifest
from segmentation.data.dataset import FileReader, Sample
from segmentation.data.loading import progress_bar
from segmentation.errors import UserError

logger = logging.getLogger(__name__)

# Decoding threads: OpenCV releases the GIL while it decodes and resizes.
MAX_THREADS = 8


def scaled(
    image: np.ndarray, stored: np.ndarray | None, scale: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """A frame and its labels at `scale` of their sides: the image averaged over the pixels it
    shrinks (INTER_AREA), the labels by nearest neighbour, so that they keep only values they
    had."""
    if scale == 1.0:
        return image, stored
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if stored is not None:
        stored = cv2.resize(stored, size, interpolation=cv2.INTER_NEAREST)
    return image, stored


def build_cache(
    folder: Path,
    parts: dict[str, list[Sample]],
    manifest: dict,
    read_label: Callable[[Path], np.ndarray],
    *,
    replace: bool = False,
) -> None:
    """Decode `parts` into a new cache at `folder` (replacing the cache there when `replace`).

    Any failure removes the temporary folder this call made, and nothing else; a failed write
    (a full disk) is a UserError. When another process installed the same cache first, its
    copy stays and this one is dropped: the caller checks the manifest of what is there."""
    folder = Path(folder)
    temporary = _own_folder(folder, "building")
    _remove_abandoned(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        temporary.mkdir()
    except OSError as error:
        raise UserError(
            f"cannot create data.cache {folder} ({error.strerror or error}): choose another folder"
        ) from None
    try:
        _write(temporary, folder, parts, manifest, read_label)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(error, OSError):
            raise UserError(
                f"cannot write data.cache {folder} ({error.strerror or error}): free disk space "
                "or set data.cache to a folder on a larger disk (the partial cache was removed)"
            ) from None
        raise
    _install(temporary, folder, replace=replace)


def _own_folder(folder: Path, kind: str) -> Path:
    """A hidden sibling of `folder` that only this process uses: named by host and process."""
    return folder.with_name(f".{folder.name}.{kind}-{socket.gethostname()}-{os.getpid()}")


def _remove_abandoned(folder: Path) -> None:
    """Remove the temporary folders of builds on this machine whose process is gone (killed
    mid-build): only folders named as this module names its own."""
    if not folder.parent.is_dir():
        return
    for kind in ("building", "old"):
        pattern = f".{glob.escape(folder.name)}.{kind}-{glob.escape(socket.gethostname())}-*"
        for path in folder.parent.glob(pattern):
            pid = path.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _running(int(pid)):
                logger.info("removing %s, left by a build that was stopped", path)
                shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _write(
    temporary: Path,
    folder: Path,
    parts: dict[str, list[Sample]],
    manifest: dict,
    read_label: Callable[[Path], np.ndarray],
) -> None:
    reader = FileReader(read_label)
    scale = manifest["scale"]
    total = sum(len(samples) for samples in parts.values())
    threads = max(1, min(MAX_THREADS, len(os.sched_getaffinity(0))))
    logger.info("building data.cache %s: %d frames, %d decoding threads", folder, total, threads)

    def decode(sample: Sample):
        return scaled(*reader.read(0, sample), scale)

    bar = progress_bar(total, "data cache", unit="frame")
    with ThreadPoolExecutor(threads) as pool, bar:
        for part, samples in parts.items():
            writer = PartWriter(temporary, part)
            try:
                chunk = 4 * threads  # bounds the decoded frames waiting to be written
                for start in range(0, len(samples), chunk):
                    for image, stored in pool.map(decode, samples[start : start + chunk]):
                        writer.append(image, stored)
                        bar.update()
                writer.close()
            except BaseException:
                writer.discard()
                raise
    write_manifest(temporary, manifest, MANIFEST_NAME)


def _install(temporary: Path, folder: Path, *, replace: bool) -> None:
    """Rename the finished cache into place. An old cache being replaced is moved aside first
    and removed after; a cache another builder installed meanwhile wins."""
    old = None
    if replace:
        old = _own_folder(folder, "old")
        try:
            os.rename(folder, old)
        except FileNotFoundError:
            old = None
    try:
        os.rename(temporary, folder)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        lost_race = error.errno in (errno.EEXIST, errno.ENOTEMPTY)
        if not (lost_race and read_manifest(folder) is not None):
            raise UserError(
                f"cannot move the new data.cache into {folder} ({error.strerror or error}): "
                "it must be a new or empty folder"
            ) from None
        logger.info("data.cache %s was built by another process meanwhile: using it", folder)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
