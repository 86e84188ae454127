"""Typed run configuration: dataclasses with defaults, loaded from YAML, overridden by flags.

A YAML file holds any subset of the sections below; unknown keys are refused with the list of
valid ones. The resolved configuration is saved with every run and every checkpoint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segmentation.errors import UserError


@dataclass
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.81, 1.0)  # area of the random crop, before resizing
    hflip: float = 0.5
    color: float = 0.5  # probability of one of brightness/contrast or gamma
    weather: bool = False  # fog, rain, snow, sun flare or shadow


@dataclass
class DataConfig:
    dataset: str = "cityscapes"  # cityscapes | kitti
    root: str = "data/cityscapes"
    labels: list[str] = field(default_factory=lambda: ["categories"])
    image_size: tuple[int, int] = (256, 512)  # training height, width
    train_split: str = "train"
    val_split: str = "val"
    holdout_cities: list[str] = field(default_factory=list)  # seed: [ulm, bremen, aachen]
    coarse: bool = False  # add train_extra with gtCoarse labels to training (Cityscapes)
    val_fraction: float = 0.1  # KITTI: share of each category held out for validation
    skip_missing_labels: bool = False
    workers: int = 4
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    arch: str = "fpn"  # fpn | unet
    backbone: str = "resnext50"
    pretrained: str | None = "imagenet"  # imagenet | a local state_dict file | null
    options: dict[str, Any] = field(default_factory=dict)  # e.g. num_filters, dropout
    # sigmoid (one channel per class, one for a binary scheme) | softmax; null: the loss's own
    # (bce_dice: sigmoid, ce: softmax). Saved resolved, so a checkpoint says how to read its logits.
    head: str | None = None
    channels_last: bool = True
    sync_batchnorm: bool = False  # under DDP


@dataclass
class LossConfig:
    name: str = "bce_dice"  # bce_dice (per-channel sigmoid) | ce (softmax)
    options: dict[str, Any] = field(default_factory=dict)  # e.g. bce_weight, dice_form
    class_weights: str | list[float] | None = None  # null | auto | one weight per class


@dataclass
class OptimConfig:
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    scheduler: str = "plateau"  # plateau | poly | cosine | none
    warmup_iters: int = 0
    plateau_patience: int = 3
    plateau_factor: float = 0.1
    poly_power: float = 0.9
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 6
    accumulate: int = 1  # gradient accumulation steps per optimizer step
    grad_clip: float | None = None  # max gradient norm
    freeze_encoder_iters: int = 0
    amp: str = "off"  # off | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    key_metric: str = "mIoU"  # what best.pt maximizes: mIoU | mDice | pixel_accuracy
    log_images: int = 4  # validation images in the TensorBoard panel
    log_every: int = 20  # optimizer steps between training scalars (loss, lr, images/s)
    skip_nonfinite: int = 0  # batches with a NaN/inf loss to skip before stopping
    cudnn_benchmark: bool = True


@dataclass
class Config:
    output_dir: str = "runs/run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Check and convert one YAML value to the field's annotated type."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping, got {value!r}")
        return _build(annotation, value, key)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except UserError as error:
                errors.append(str(error))
        raise UserError(errors[-1])
    if annotation is Any:
        return value
    if origin is tuple:
        if isinstance(value, str) and "x" in value:
            value = value.split("x")
        item_types = typing.get_args(annotation)
        if not isinstance(value, list | tuple) or len(value) != len(item_types):
            raise UserError(
                f"config key '{key}' needs {len(item_types)} values, got {value!r}"
                + (" (write HxW, e.g. 256x512)" if key.endswith("size") else "")
            )
        return tuple(_convert(v, t, key) for v, t in zip(value, item_types))
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise UserError(f"config key '{key}' must be a list, got {value!r}")
        (item_type,) = typing.get_args(annotation)
        return [_convert(v, item_type, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"config key '{key}' must be true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise UserError(f"config key '{key}' must be a number, got {value!r}")
        try:
            number = annotation(value)
        except (TypeError, ValueError):
            raise UserError(f"config key '{key}' must be a number, got {value!r}") from None
        if annotation is int and isinstance(value, float) and value != number:
            raise UserError(f"config key '{key}' must be a whole number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, dict | list):
            raise UserError(f"config key '{key}' must be a single value, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config annotation {annotation} for {key}")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in values if key not in names]
    if unknown:
        where = f" in section '{prefix}'" if prefix else ""
        raise UserError(
            f"unknown config key(s) {', '.join(map(str, unknown))}{where}: "
            f"valid keys are {', '.join(names)}"
        )
    instance = cls()
    for key, value in values.items():
        full_key = f"{prefix}.{key}" if prefix else key
        current = getattr(instance, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = _merge(dataclasses.asdict(current), value)
        setattr(instance, key, _convert(value, hints[key], full_key))
    return instance


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# The output head each loss trains: per-channel sigmoids or one softmax over the classes.
LOSS_HEADS = {"bce_dice": "sigmoid", "ce": "softmax"}


def _resolve_head(config: Config) -> Config:
    wanted = LOSS_HEADS.get(config.loss.name)
    if config.model.head is None:
        config.model.head = wanted
    elif wanted is not None and config.model.head != wanted:
        raise UserError(
            f"model.head '{config.model.head}' does not fit loss.name '{config.loss.name}', "
            f"which trains a {wanted} head: set model.head to {wanted} or null"
        )
    return config


def config_from_dict(values: dict) -> Config:
    """A Config from nested plain data; unknown keys and wrong types raise UserError."""
    return _resolve_head(_build(Config, values or {}))


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist: see configs/ for examples")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"config file {path} is not valid YAML: {error}".splitlines()[0]) from None
    if values is not None and not isinstance(values, dict):
        raise UserError(f"config file {path} must hold a mapping of sections, e.g. 'data:'")
    return config_from_dict(values or {})


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A new Config with dotted keys ("train.epochs": 4) replaced; None values are skipped."""
    values = config_to_dict(config)
    for dotted, value in overrides.items():
        if value is None:
            continue
        section = values
        *parents, last = dotted.split(".")
        for parent in parents:
            section = section[parent]
        section[last] = value
    return config_from_dict(values)


def config_to_dict(config: Config) -> dict:
    """Plain nested data (lists, not tuples), as saved in config.yaml and checkpoints."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [plain(item) for item in value]
        return value

    return plain(dataclasses.asdict(config))


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
