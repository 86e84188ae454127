"""Whether a checkpoint can start this run: same model for --init-from, and for --resume also
the same optimizer and schedule (which the checkpoint restores)."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import torch
import yaml

from segmentation.checkpoint import load_checkpoint
from segmentation.config import Config, saved_config_from_dict
from segmentation.data.build import scheme_for
from segmentation.engine.run_dir import CHECKPOINTS, RUN_FILES, read_run_id
from segmentation.errors import UserError

# What --resume restores besides the weights (checkpoint_state in loop.py writes them all).
RESUME_ENTRIES = ("optimizer", "scheduler", "scaler", "state", "rng")


def check_compatible(found: dict, expected: Config, path: Path) -> None:
    """A checkpoint's model must match the configured one: name the differences."""
    found_config = saved_config_from_dict(found["config"], f"checkpoint {path}")
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
    saved = saved_config_from_dict(found["config"], f"checkpoint {path}").optim.model_dump()
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


def new_run_id() -> str:
    return uuid.uuid4().hex


def run_id_of(checkpoint: dict) -> str:
    """The id of the run that wrote `checkpoint`. Checkpoints from before run ids get one
    from what a resume cannot change (model, optimizer, dataset and labels): the same for
    every checkpoint and config.yaml of such a run."""
    return checkpoint.get("run_id") or legacy_run_id(checkpoint["config"])


def legacy_run_id(config_values: dict) -> str:
    config = saved_config_from_dict(config_values, "a saved run config")
    model = config.model
    fixed = {
        "model": [model.arch, model.backbone, model.head, model.options],
        "optim": config.optim.model_dump(),
        "data": [config.data.dataset, config.data.labels],
    }
    text = json.dumps(fixed, sort_keys=True, default=str)
    return "legacy-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def check_run_directory(found: dict, path: Path) -> None:
    """--resume continues in the checkpoint's folder and writes its config.yaml, last.pt,
    best.pt and tensorboard/ there: refuse a folder where any of them belongs to another run
    or to the user (a checkpoint copied next to another run's files), naming them."""
    folder = Path(path).parent
    run_id = run_id_of(found)
    owner = read_run_id(folder)
    if owner is not None:
        foreign = [] if owner == run_id else [f"it is run {owner}'s folder"]
    else:
        foreign = _files_of_others(folder, Path(path), run_id, found)
    if foreign:
        raise UserError(
            f"--resume {path} would write into {folder}, which holds files this run did not "
            f"write ({', '.join(foreign)}): copy {path.name} into a new folder and resume from "
            f"there, or start a new run from its weights with --init-from {path}"
        )


def _files_of_others(folder: Path, path: Path, run_id: str, found: dict) -> list[str]:
    """The files a resume would replace in a folder no run has marked (one of a run from
    before run ids, or the folder a checkpoint was copied to) that are not this run's."""
    foreign = []
    for name in CHECKPOINTS:
        other = folder / name
        mine = other.resolve() == path.resolve()
        if other.is_file() and not mine and not _same_run(other, run_id, found):
            foreign.append(name)
    config_ours = (folder / "config.yaml").is_file() and _config_of_run(
        folder / "config.yaml", run_id
    )
    for name in RUN_FILES:
        if (folder / name).exists() and not config_ours:
            foreign.append(name)
    return foreign


def _same_run(other: Path, run_id: str, found: dict) -> bool:
    try:
        checkpoint = load_checkpoint(other, mmap=True, needs=("config", "state"))
        other_id = run_id_of(checkpoint)
    except UserError:
        return False
    if other_id != run_id:
        return False
    if run_id.startswith("legacy-") and other.name == "best.pt":
        # Runs of one config share a legacy id: a run's best.pt holds the best metric that
        # its last.pt records, another run's almost surely not.
        return checkpoint["state"].get("best_metric") == found["state"].get("best_metric")
    return True


def _config_of_run(config_path: Path, run_id: str) -> bool:
    """Whether config.yaml was written by run `run_id`; only a run from before run ids can
    be recognized by its config (a newer run marks its folder instead)."""
    if not run_id.startswith("legacy-"):
        return False
    try:
        return legacy_run_id(yaml.safe_load(config_path.read_text())) == run_id
    except (UserError, yaml.YAMLError, UnicodeDecodeError, OSError):
        return False
