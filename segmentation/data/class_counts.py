"""Pixel counts per class over a split, for class weights; cached, since a full pass over
Cityscapes' training labels takes a while."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from segmentation.data.dataset import Sample
from segmentation.data.labels import IGNORE_INDEX, LabelScheme

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "segmentation" / "class_counts"


def _cache_key(samples: list[Sample], scheme: LabelScheme) -> str:
    digest = hashlib.sha1(f"{scheme.dataset}/{scheme.name}".encode())
    # A folder dataset's scheme is its classes file: edited, it counts the same files anew.
    digest.update(scheme.lookup.tobytes() + scheme.colors.tobytes())
    digest.update("\n".join(scheme.class_names).encode())
    for sample in samples:
        stat = sample.label_path.stat()
        digest.update(f"{sample.label_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def pixel_counts(
    samples: list[Sample],
    scheme: LabelScheme,
    read_label: Callable[[Path], np.ndarray],
    cache_dir: Path | None = None,
) -> np.ndarray:
    """(C,) int64 pixels of each class over the samples' label files, ignored pixels left out.

    The result is cached in `cache_dir` under a key of the scheme and the files' paths, sizes
    and modification times, so that a changed file is counted again.
    """
    cache_dir = cache_dir or default_cache_dir()
    cache_file = cache_dir / f"{_cache_key(samples, scheme)}.json"
    if cache_file.is_file():
        return np.array(json.loads(cache_file.read_text())["pixel_counts"], np.int64)
    logger.info("counting class pixels over %d label files (cached afterwards)", len(samples))
    counts = np.zeros(256, np.int64)
    for sample in samples:
        target = scheme.encode(read_label(sample.label_path))
        counts += np.bincount(target.reshape(-1), minlength=256)
    counts[IGNORE_INDEX] = 0
    result = counts[: scheme.num_classes]
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(
            json.dumps({"classes": scheme.class_names, "pixel_counts": result.tolist()})
        )
    except OSError as error:
        logger.warning("could not cache class counts in %s: %s", cache_dir, error)
    return result
