"""Whether a checkpoint can start this run: same model for --init-from, and for --resume also
the same optimizer and schedule (which the checkpoint restores)."""

from __future__ import annotations

from pathlib import Path

import torch

from segmentation.config import Config, config_from_dict
from segmentation.data.build import scheme_for
from segmentation.errors import UserError

# What --resume restores besides the weights (checkpoint_state in loop.py writes them all).
RESUME_ENTRIES = ("optimizer", "scheduler", "scaler", "state", "rng")


def check_compatible(found: dict, expected: Config, path: Path) -> None:
    """A checkpoint's model must match the configured one: name the differences."""
    found_config = config_from_dict(found["config"])
    pairs = {
        "model.arch": (expected.model.arch, found_config.model.arch),
        "model.backbone": (expected.model.backbone, found_config.model.backbone),
        "classes": (list(scheme_for(expected.data).class_names), list(found["class_names"])),
        "model.head": (expected.model.head, found_config.model.head),
        "model.options": (expected.model.options, found_config.model.options),
    }
    differences = [
        f"{key}: expected {want}, found {have}"
        for key, (want, have) in pairs.items()
        if want != have
    ]
    if differences:
        raise UserError(
            f"checkpoint {path} does not fit this model ({'; '.join(differences)}): use a "
            "checkpoint of the same architecture and classes, or change the config to match"
        )


def check_resumable(found: dict, expected: Config, path: Path) -> None:
    """Resuming restores the optimizer and its schedule from the checkpoint, so optimizer
    settings changed since (e.g. --lr) would be silently ignored: refuse them instead."""
    missing = [key for key in RESUME_ENTRIES if key not in found]
    if missing:
        raise UserError(
            f"checkpoint {path} has no '{missing[0]}' entry, which --resume restores: start a "
            f"new run from its weights with --init-from {path}"
        )
    check_compatible(found, expected, path)
    saved = config_from_dict(found["config"]).optim.model_dump()
    wanted = expected.optim.model_dump()
    changed = [
        f"optim.{key}: {saved[key]} -> {wanted[key]}" for key in saved if saved[key] != wanted[key]
    ]
    if changed:
        raise UserError(
            f"--resume continues the optimizer and schedule saved in {path}, which would ignore "
            f"{'; '.join(changed)}: drop those overrides, or start a new run from these weights "
            "with --init-from"
        )


def check_newest(found: dict, path: Path) -> None:
    """Resuming from a checkpoint older than the run's last.pt (e.g. best.pt) would train its
    later epochs again and overwrite last.pt: refuse, naming what to do instead."""
    last = path.parent / "last.pt"
    if path.name == "last.pt" or not last.is_file():
        return
    # Memory-mapped: only the small "state" entry is read from a file of hundreds of MB.
    newest = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["state"]
    if newest["step"] > found["state"]["step"]:
        raise UserError(
            f"{path} is older than the run's {last} (step {found['state']['step']} of "
            f"{newest['step']}): resuming from it would rewind the run; continue with --resume "
            f"{last}, or start a new run from these weights with --init-from {path}"
        )
