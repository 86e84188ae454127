"""What a decoded-sample cache was built from, and the check that it still matches."""

from __future__ import annotations

import json
import os
from pathlib import Path

from segmentation.data.dataset import Sample
from segmentation.errors import UserError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
REBUILD_HINT = (
    "rebuild it with `python -m segmentation.data.cache --config CONFIG --rebuild` (the run's "
    "config and flags), or delete the folder"
)


def file_entry(path: Path) -> dict:
    """A source file as the manifest records it: what changes when the file is replaced."""
    status = os.stat(path)
    return {"path": str(Path(path).absolute()), "size": status.st_size, "mtime": status.st_mtime_ns}


def sample_entry(sample: Sample) -> dict:
    label = file_entry(sample.label_path) if sample.label_path is not None else None
    return {"image": file_entry(sample.image_path), "label": label}


def expected_manifest(
    parts: dict[str, list[Sample]], *, scale: float, scheme: str, label_reader: dict
) -> dict:
    """The manifest a cache of these samples must carry, from the files as they are now."""
    return {
        "format": FORMAT_VERSION,
        "scale": scale,
        "scheme": scheme,
        "label_reader": label_reader,
        "parts": {
            part: [sample_entry(sample) for sample in samples] for part, samples in parts.items()
        },
    }


def read_manifest(folder: Path) -> dict | None:
    """The manifest of the cache in `folder`, or None when the folder holds no cache."""
    path = Path(folder) / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        message = f"data.cache {folder}: cannot read {path} ({error}): {REBUILD_HINT}"
        raise UserError(message) from None


def check_manifest(folder: Path, found: dict | None, expected: dict) -> None:
    """Refuse, in one line naming the first difference, a cache built from other files or
    with other settings. The label scheme is recorded but not compared: the cache holds the
    values stored in the label files, before the scheme maps them to classes."""
    difference = first_difference(found or {}, expected)
    if difference:
        raise UserError(f"data.cache {folder} is stale or foreign: {difference}: {REBUILD_HINT}")


def first_difference(found: dict, expected: dict) -> str | None:
    if found.get("format") != expected["format"]:
        return f"it has format {found.get('format')}, this version reads {expected['format']}"
    if found.get("scale") != expected["scale"]:
        return f"it was built at data.cache_scale {found.get('scale')}, not {expected['scale']}"
    found_reader, reader = found.get("label_reader") or {}, expected["label_reader"]
    if found_reader.get("dataset") != reader["dataset"]:
        return f"it holds {found_reader.get('dataset')} samples, not {reader['dataset']}"
    if found_reader != reader:
        return "its labels were read as other classes (classes.yaml changed)"
    found_parts = found.get("parts") or {}
    for part, entries in expected["parts"].items():
        difference = _first_file_difference(part, found_parts.get(part) or [], entries)
        if difference:
            return difference
    return None


def _first_file_difference(part: str, found: list[dict], expected: list[dict]) -> str | None:
    for position, entry in enumerate(expected):
        if position >= len(found):
            return f"{entry['image']['path']} ({part}) is not in it"
        for kind in ("image", "label"):
            now, then = entry[kind], found[position][kind]
            if now == then:
                continue
            path = (now or then)["path"]
            if now is None or then is None or now["path"] != then["path"]:
                return f"{path} ({part}) is not in it"
            return f"{path} changed since it was built (size or modification time)"
    if len(found) > len(expected):
        extra = found[len(expected)]["image"]["path"]
        return f"it holds {extra} ({part}), which the run does not use"
    return None
