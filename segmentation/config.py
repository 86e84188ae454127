"""Typed run configuration: pydantic models with defaults, loaded from YAML, overridden by flags.

A YAML file holds any subset of the sections below; unknown keys are refused with the list of
valid ones. Every check of a value lives here, so that a mistake is refused in one line that
names the dotted key before any data is read or any model is built. The resolved configuration
is saved with every run and every checkpoint.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    PlainSerializer,
    PlainValidator,
    SerializeAsAny,
    TypeAdapter,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from segmentation import model_catalog
from segmentation.errors import UserError
from segmentation.yaml_io import read_yaml

logger = logging.getLogger(__name__)

MaskFormat = Literal["index", "rgb"]
Arch = Literal[model_catalog.ARCHITECTURES]
Head = Literal["sigmoid", "softmax"]
LossName = Literal["bce_dice", "ce"]
Optimizer = Literal["adam", "adamw", "sgd"]
Scheduler = Literal["plateau", "poly", "cosine", "none"]
AmpMode = Literal["off", "bf16", "fp16", "auto"]
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]
KeyMetric = Literal["mIoU", "mDice", "pixel_accuracy"]
ValMode = Literal["resized", "whole", "slide"]

OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)
AMP_MODES: tuple[str, ...] = get_args(AmpMode)
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
KEY_METRICS: tuple[str, ...] = get_args(KeyMetric)
VAL_MODES: tuple[str, ...] = get_args(ValMode)

# The output head each loss trains: per-channel sigmoids or one softmax over the classes.
LOSS_HEADS = {"bce_dice": "sigmoid", "ce": "softmax"}


def config_line(message: str) -> PydanticCustomError:
    """An error whose message is already the whole line the user sees."""
    return PydanticCustomError("config_line", "{message}", {"message": message})


def _reason(reason: str) -> PydanticCustomError:
    """An error that says what is allowed; the key and the value given are added later."""
    return PydanticCustomError("config_reason", "{reason}", {"reason": reason})


# --------------------------------------------------------------------------- value types


def _not_bool(value: Any) -> Any:
    # YAML reads yes/no/on/off as booleans, which pydantic would take as the numbers 1 and 0.
    if isinstance(value, bool):
        raise _reason("it should be a number, not true/false")
    return value


def _yaml_word(value: Any) -> Any:
    # YAML 1.1 reads `amp: off` as False: give back the word the user wrote.
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def _compile_word(value: Any) -> Any:
    # Configs and checkpoints from before the modes say `compile: true` / `false`.
    if isinstance(value, bool):
        return "default" if value else "off"
    return "off" if value is None else value


def _no_schedule(value: Any) -> Any:
    # `scheduler: off` (False in YAML) or null mean what "none" means: a constant rate.
    return "none" if value is False or value is None or value == "off" else value


def _pretrained_word(value: Any) -> Any:
    # `pretrained: no` means random init, `pretrained: yes` the usual ImageNet weights.
    if isinstance(value, bool):
        return "imagenet" if value else None
    return value


def _as_list(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    return list(value) if isinstance(value, tuple) else value


def comma_list(value: Any) -> Any:
    # `--set data.holdout_cities=ulm,bremen` names two cities, not one called "ulm,bremen".
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return _as_list(value)


def _height_width(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*[xX]\s*\d+\s*", value):
        return [int(part) for part in re.split(r"[xX]", value)]
    if isinstance(value, list | tuple) and len(value) == 2:
        return value
    raise _reason("it should be HEIGHTxWIDTH, e.g. 256x512, or [256, 512]")


def _scale_range(value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    if not 0 < low <= high <= 1:
        raise _reason("it should be [min, max] with 0 < min <= max <= 1, e.g. [0.81, 1.0]")
    return value


def _jitter_range(value: tuple[float, float] | None) -> tuple[float, float] | None:
    if value is not None and not 0 < value[0] <= value[1]:
        raise _reason("it should be [min, max] with 0 < min <= max, e.g. [0.5, 2.0]")
    return value


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise _reason("it should be auto, cpu, cuda or cuda:N")
    return value


def _empty_if_null(value: Any) -> Any:
    # `options:` with nothing below it is null in YAML, and means no options.
    return {} if value is None else value


_WEIGHTS = TypeAdapter(list[Annotated[FiniteFloat, BeforeValidator(_not_bool), Field(ge=0)]])


def _class_weights(value: Any) -> str | list[float] | None:
    if value is None or value == "auto":
        return value
    try:
        weights = _WEIGHTS.validate_python(value)
    except ValidationError:
        weights = []
    if not weights or sum(weights) <= 0:
        raise _reason("it should be null, auto, or one finite weight >= 0 per class, not all 0")
    return weights


def _rgb_color(value: Any) -> tuple[int, int, int]:
    # Exactly three integers: YAML reads 1.0 as a float and yes as a boolean, neither a colour.
    numbers = value if isinstance(value, list | tuple) else ()
    if len(numbers) == 3 and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in numbers
    ):
        return tuple(numbers)
    raise _reason("it should be 3 integers in 0..255 (red, green, blue), e.g. [128, 64, 128]")


def _printable_name(value: str) -> str:
    # A class name is printed in tables, logs, charts and the report: a control character
    # (a newline, a tab, a terminal escape, a direction override) would break or forge them.
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            raise _reason(
                f"it holds the control character U+{ord(char):04X}: use printable characters"
            )
    return value


def _none_as_empty(value: Any) -> Any:
    # `classes:` with nothing below it is null in YAML: an empty list, refused as such below.
    return [] if value is None else value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[FiniteFloat, BeforeValidator(_not_bool)]
Positive = Annotated[Int, Field(ge=1)]
Count = Annotated[Int, Field(ge=0)]
Probability = Annotated[Float, Field(ge=0, le=1)]
Text = Annotated[str, Field(min_length=1)]
Choice = BeforeValidator(_yaml_word)


class _Section(BaseModel):
    # coerce_numbers_to_str: a city or file called 2024 is still a name.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, values: Any) -> Any:
        if isinstance(values, dict):
            unknown = [str(key) for key in values if key not in cls.model_fields]
            if unknown:
                raise PydanticCustomError(
                    "unknown_keys",
                    "unknown config key(s) {unknown}",
                    {"unknown": ", ".join(unknown), "valid": ", ".join(cls.model_fields)},
                )
        return values


# --------------------------------------------------------------------------- sections
# Every key has a one-line `Field(description=...)`: `train.py --print-config` and
# docs/config.md (python -m segmentation.config_doc > docs/config.md) are made from them, with
# the allowed values read from the key's type and range. Where a validator decides what is
# allowed, `json_schema_extra=allowed("...")` says it in words.


def allowed(text: str) -> dict[str, str]:
    """The values a key takes, in words, where its type and range do not say it."""
    return {"allowed": text}


def allowed_from(describe: Callable[[], str]) -> Callable[[dict], None]:
    """As `allowed`, for names kept in another module (the losses), which imports torch:
    `describe` runs only when the reference is made."""

    def add(schema: dict) -> None:
        schema["allowed"] = describe()

    return add


def _backbone_names() -> str:
    aliases = {name: alias for alias, name in model_catalog.BACKBONE_ALIASES.items()}
    return ", ".join(
        f"{name} ({aliases[name]})" if name in aliases else name for name in model_catalog.BACKBONES
    )


def _options_text(options_of: dict[str, dict[str, object]]) -> str:
    def shown(value: object) -> str:  # as YAML spells it: false, not False
        return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()

    return "; ".join(
        f"{owner}: " + ", ".join(f"{name}={shown(value)}" for name, value in options.items())
        for owner, options in options_of.items()
    )


def _model_options() -> str:
    return _options_text(model_catalog.ARCHITECTURE_OPTIONS)


def _loss_options() -> str:
    from segmentation.losses import LOSSES, loss_options

    return _options_text({name: loss_options(name) for name in LOSSES})


class AugmentConfig(_Section):
    """Random changes to the training images (validation images are only resized).

    Two styles, never mixed: the original project's recipe (crop_scale, color, weather: a crop
    of most of the frame resized to data.image_size), the default; and the field's scale jitter
    at native resolution (scale, cat_max_ratio, photometric, with data.base_size and
    data.crop_size), chosen by setting scale. hflip serves both."""

    crop_scale: Annotated[tuple[Float, Float], AfterValidator(_scale_range)] = Field(
        (0.81, 1.0),
        description="original recipe: area of the random crop, before resizing to "
        "data.image_size, as a share of the image",
        json_schema_extra=allowed("[min, max] with 0 < min <= max <= 1"),
    )
    hflip: Probability = Field(0.5, description="probability of a horizontal flip")
    color: Probability = Field(
        0.5, description="original recipe: probability of one brightness/contrast or gamma change"
    )
    weather: bool = Field(
        False, description="original recipe: add fog, rain, snow, sun flare or shadow"
    )
    # The scale-jitter style (mmsegmentation's Cityscapes protocol): set scale to use it.
    scale: Annotated[tuple[Float, Float] | None, AfterValidator(_jitter_range)] = Field(
        None,
        description="scale-jitter style: the frame is rescaled by a ratio drawn uniformly from "
        "[min, max] of data.base_size (aspect kept), then a data.crop_size crop is cut, padded "
        "with 0 / ignore where the frame is smaller; null: the original recipe (crop_scale, "
        "color, weather)",
        json_schema_extra=allowed("null, or [min, max] with 0 < min <= max, e.g. [0.5, 2.0]"),
    )
    cat_max_ratio: Annotated[Float, Field(gt=0, le=1)] = Field(
        1.0,
        description="scale-jitter style: a crop where one class covers more than this share of "
        "the labelled pixels is drawn again (up to 10 times); 1.0: off",
    )
    photometric: bool = Field(
        False,
        description="scale-jitter style: mmsegmentation's PhotoMetricDistortion (brightness "
        "+-32, contrast and saturation 0.5-1.5, hue +-18, each with p=0.5)",
    )

    @property
    def scale_jitter(self) -> bool:
        """Whether the scale-jitter style is chosen (augment.scale given)."""
        return self.scale is not None


class ClassEntry(_Section):
    name: Annotated[Text, AfterValidator(_printable_name)]
    color: Annotated[
        tuple[int, int, int], PlainValidator(_rgb_color), PlainSerializer(lambda v: list(v))
    ]


class FolderClasses(_Section):
    """The content of a folder dataset's ROOT/classes.yaml: the label scheme of the dataset.
    A class's index (its id in index masks) is its position in `classes`."""

    mask_format: Annotated[MaskFormat, Choice]
    ignore_index: Annotated[Int, Field(ge=0, le=255)] = 255  # index masks: "no label here"
    classes: Annotated[list[ClassEntry], BeforeValidator(_none_as_empty)]

    @model_validator(mode="after")
    def _distinct(self) -> FolderClasses:
        if not self.classes:
            raise config_line("classes is empty: list at least one {name: ..., color: [r, g, b]}")
        if len(self.classes) > 255:
            raise config_line(
                f"classes lists {len(self.classes)} classes: 8-bit masks hold at most 255 "
                "(ids 0..254, 255 being ignore_index)"
            )
        for key in ("name", "color"):
            seen: dict = {}
            for index, entry in enumerate(self.classes):
                value = getattr(entry, key)
                if value in seen:
                    shown = list(value) if key == "color" else repr(value)
                    raise config_line(
                        f"classes[{seen[value]}] and classes[{index}] have the same {key} "
                        f"{shown}: give each class its own {key}"
                    )
                seen[value] = index
        if self.ignore_index < len(self.classes):
            name = self.classes[self.ignore_index].name
            raise config_line(
                f"ignore_index {self.ignore_index} is the id of class '{name}' (a class's id is "
                "its position in the list, from 0): use 255 (or another value from "
                f"{len(self.classes)} to 255)"
            )
        if self.mask_format == "rgb" and self.ignore_index != 255:
            raise config_line(
                f"ignore_index {self.ignore_index} is for index masks: in rgb masks every colour "
                "that no class has is ignored; remove ignore_index"
            )
        return self


class DataConfig(_Section):
    """What to train on and how its images are read: the keys every dataset kind shares.

    Each kind's options (segmentation/data/kinds/) add the keys of its own layout;
    `DataConfig(dataset=..., ...)` and the data section of a config are validated as the options
    of the kind that `dataset` names."""

    dataset: Text = Field(
        "cityscapes",
        description="layout of the dataset under data.root; each has its own keys below",
        json_schema_extra=lambda schema: schema.update(type="choice", allowed=", ".join(_kinds())),
    )
    root: Text = Field("data/cityscapes", description="dataset root folder (--data-root)")
    # "road,car" stays one string, which the kind's scheme splits.
    labels: Annotated[list[Text], BeforeValidator(_as_list), Field(min_length=1)] | None = Field(
        None,
        description="label scheme: a scheme name or label names (--labels); null: the "
        "dataset's default scheme",
        json_schema_extra=allowed_from(lambda: "; ".join(k.labels_help for k in _kinds().values())),
    )
    image_size: Annotated[tuple[Positive, Positive], BeforeValidator(_height_width)] = Field(
        (256, 512),
        description="size (height, width) that validation and inference resize frames to, and, "
        "in the original recipe, the size of the training crops (--image-size)",
        json_schema_extra=allowed("HEIGHTxWIDTH (e.g. 256x512) or [height, width], each >= 1"),
    )
    base_size: Annotated[tuple[Positive, Positive], BeforeValidator(_height_width)] | None = Field(
        None,
        description="scale-jitter style: the frame size (height, width) that augment.scale's "
        "ratios are relative to, in the files' pixels (Cityscapes: 1024x2048); each frame is "
        "rescaled, aspect kept, to fit within base_size x ratio; null: each frame's own size",
        json_schema_extra=allowed("null, HEIGHTxWIDTH or [height, width], each >= 1"),
    )
    crop_size: Annotated[tuple[Positive, Positive], BeforeValidator(_height_width)] | None = Field(
        None,
        description="scale-jitter style: size (height, width) of the training crops cut from "
        "the rescaled frame, the training input (e.g. 512x1024); needs augment.scale",
        json_schema_extra=allowed("null, HEIGHTxWIDTH or [height, width], each >= 1"),
    )
    skip_missing_labels: bool = Field(
        False, description="leave out images without a mask (with a warning) instead of refusing"
    )
    workers: Count = Field(4, description="DataLoader workers per process (--workers)")
    cache: Text | None = Field(
        None,
        description="folder of decoded train/val samples (memmap files) read instead of the "
        "PNGs; built on first use or by python -m segmentation.data.cache; null: off",
        json_schema_extra=allowed("null, or a folder path (node-local disk for several nodes)"),
    )
    cache_scale: Annotated[Float, Field(gt=0, le=1)] = Field(
        1.0,
        description="data.cache: frames stored at this fraction of their side (1.0: full "
        "frame); augmentations cut from the stored frame (scale-jitter ratios stay relative "
        "to the files' pixels)",
    )
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig, description="random changes to the training images"
    )

    def __new__(cls, *args: Any, **values: Any) -> DataConfig:
        if cls is DataConfig:  # the options of the kind named, whose __init__ then runs
            return object.__new__(_options_of(values.get("dataset", _DEFAULT_DATASET)))
        return super().__new__(cls)

    @model_validator(mode="wrap")
    @classmethod
    def _of_its_kind(cls, values: Any, handler: Callable) -> Any:
        if cls is not DataConfig or not isinstance(values, dict):
            return handler(values)
        options = _options_of(values.get("dataset", _DEFAULT_DATASET))
        try:
            return options.model_validate(values)
        except ValidationError as error:  # one line naming data.KEY, as for any other section
            raise config_line(_one_line(error, values, outer=("data",))) from None

    @model_validator(mode="after")
    def _default_labels(self) -> DataConfig:
        if self.labels is None:
            self.labels = list(_kinds()[self.dataset].default_labels)
        return self

    @model_validator(mode="after")
    def _one_augmentation_style(self) -> DataConfig:
        problem = _mixed_styles(self)
        if problem:
            raise config_line(problem)
        return self

    @property
    def train_input_size(self) -> tuple[int, int]:
        """(height, width) of the training samples: data.crop_size in the scale-jitter style,
        data.image_size in the original recipe."""
        return self.crop_size if self.augment.scale_jitter else self.image_size

    def input_sizes(self) -> dict[str, tuple[int, int]]:
        """The sizes the model sees, by the key that sets them: the training crops and the
        resized validation frames (the same key in the original recipe)."""
        sizes = {"data.image_size": tuple(self.image_size)}
        if self.augment.scale_jitter:
            sizes["data.crop_size"] = tuple(self.crop_size)
        return sizes


_DEFAULT_DATASET = "cityscapes"


def _belong(keys: list[str]) -> str:
    return "belongs" if len(keys) == 1 else "belong"


def _mixed_styles(data: DataConfig) -> str | None:
    """Why `data` mixes the original recipe with the scale-jitter style, or None."""
    augment, defaults = data.augment, AugmentConfig()
    if augment.scale_jitter:
        original = [
            f"data.augment.{key}={getattr(augment, key)!r}"
            for key in ("crop_scale", "color", "weather")
            if getattr(augment, key) != getattr(defaults, key)
        ]
        if original:
            return (
                f"{', '.join(original)} {_belong(original)} to the original recipe, which "
                "data.augment.scale replaces: remove them, or set data.augment.scale to null"
            )
        if data.crop_size is None:
            return (
                "data.augment.scale (the scale-jitter style) needs data.crop_size, the size of "
                "the training crops: set it, e.g. data.crop_size=512x1024"
            )
        return None
    jitter = [f"data.{key}" for key in ("base_size", "crop_size") if getattr(data, key) is not None]
    jitter += [
        f"data.augment.{key}"
        for key in ("cat_max_ratio", "photometric")
        if getattr(augment, key) != getattr(defaults, key)
    ]
    if jitter:
        return (
            f"{', '.join(jitter)} {_belong(jitter)} to the scale-jitter style, which needs "
            "data.augment.scale (e.g. [0.5, 2.0]): set it, or remove them for the original recipe"
        )
    return None


def _kinds() -> dict:
    from segmentation.data.kinds.catalog import KINDS  # the kinds import this module

    return KINDS


def _options_of(dataset: Any) -> type[DataConfig]:
    kinds = _kinds()
    if dataset not in kinds:
        raise config_line(
            f"data.dataset={dataset!r} is not valid: it should be one of {', '.join(kinds)}"
        )
    return kinds[dataset].options


class ModelConfig(_Section):
    """The network: architecture, encoder and output head."""

    arch: Annotated[Arch, Choice] = Field("fpn", description="decoder architecture (--model)")
    backbone: Text = Field(
        "resnext50",
        description="encoder, a torchvision ResNet or ResNeXt (--backbone)",
        json_schema_extra=allowed(_backbone_names()),
    )
    pretrained: Annotated[Text | None, BeforeValidator(_pretrained_word)] = Field(
        "imagenet",
        description="encoder weights: imagenet (torchvision's), a local state_dict file, or "
        "null (random)",
        json_schema_extra=allowed("imagenet, a path to a state_dict file, null"),
    )
    options: Annotated[dict[str, Any], BeforeValidator(_empty_if_null)] = Field(
        default_factory=dict,
        description="the architecture's keyword options; left out: their defaults",
        json_schema_extra=allowed(_model_options()),
    )
    head: Head | None = Field(
        None,
        description="sigmoid (one channel per class, one for a binary scheme) or softmax; null: "
        "the loss's (bce_dice: sigmoid, ce: softmax), saved resolved",
    )
    channels_last: bool = Field(
        True, description="channels-last memory layout (faster convolutions on recent GPUs)"
    )
    sync_batchnorm: bool = Field(
        False, description="under DDP: batch norm statistics over all processes"
    )


class LossConfig(_Section):
    """The training loss."""

    name: Annotated[LossName, Choice] = Field(
        "bce_dice",
        description="bce_dice: BCE + log-Dice on sigmoids (the original project's); ce: "
        "softmax cross-entropy",
    )
    options: Annotated[dict[str, Any], BeforeValidator(_empty_if_null)] = Field(
        default_factory=dict,
        description="the loss's keyword options; left out: their defaults",
        json_schema_extra=allowed_from(_loss_options),
    )
    class_weights: Annotated[
        str | list[float] | None, PlainValidator(_class_weights), PlainSerializer(lambda v: v)
    ] = Field(
        None,
        description="per-class loss weights: null (equal), auto (from the training labels' "
        "pixel counts) or one per class",
        json_schema_extra=allowed("null, auto, or one finite weight >= 0 per class, not all 0"),
    )


class OptimConfig(_Section):
    """The optimizer and the learning-rate schedule."""

    optimizer: Annotated[Optimizer, Choice] = Field("adam", description="optimizer")
    lr: Annotated[Float, Field(gt=0)] = Field(
        1e-3, description="learning rate the schedule starts from, after any warmup (--lr)"
    )
    weight_decay: Annotated[Float, Field(ge=0)] = Field(
        0.0, description="weight decay (adamw: decoupled from the gradient)"
    )
    momentum: Annotated[Float, Field(ge=0, lt=1)] = Field(0.9, description="sgd only: momentum")
    scheduler: Annotated[Scheduler, BeforeValidator(_no_schedule)] = Field(
        "plateau",
        description="plateau: divide the rate when the validation loss stalls; poly, cosine: "
        "decay it every step to min_lr; none (or off): keep it",
    )
    warmup_iters: Count = Field(
        0, description="poly, cosine, none: optimizer steps of linear warmup to lr"
    )
    plateau_patience: Count = Field(
        3, description="plateau: epochs without a better validation loss before the rate drops"
    )
    plateau_factor: Annotated[Float, Field(gt=0, lt=1)] = Field(
        0.1, description="plateau: what the rate is multiplied by when it drops"
    )
    poly_power: Annotated[Float, Field(gt=0)] = Field(
        0.9, description="poly: the exponent of (1 - progress)"
    )
    min_lr: Annotated[Float, Field(ge=0)] = Field(
        0.0, description="lowest rate the schedule reaches (at most lr)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> OptimConfig:
        if self.warmup_iters and self.scheduler == "plateau":
            raise config_line(
                f"optim.warmup_iters={self.warmup_iters} is not valid with optim.scheduler "
                "'plateau': warmup works with the poly, cosine and none schedulers; set it to 0"
            )
        if self.min_lr > self.lr:
            raise config_line(
                f"optim.min_lr={self.min_lr} is not valid: it should be at most optim.lr "
                f"({self.lr}), the rate the schedule starts from"
            )
        return self


class TrainConfig(_Section):
    """The training loop: length, batches, precision, device, logging."""

    epochs: Positive = Field(
        40, description="passes over the training set (--epochs); excludes train.iters"
    )
    iters: Positive | None = Field(
        None,
        description="optimizer steps in all, over as many passes of the training set as they "
        "take (the poly/cosine schedules decay over them); excludes train.epochs; null: epochs",
    )
    val_every: Positive | None = Field(
        None,
        description="with train.iters: optimizer steps between validations, which also run at "
        "the last step; null: at the last step only",
    )
    save_every: Positive | None = Field(
        None,
        description="with train.iters: optimizer steps between saves of last.pt (every "
        "validation saves it too); null: at validations only",
    )
    val_mode: Annotated[ValMode, Choice] = Field(
        "resized",
        description="validation frames: resized to data.image_size (fast); whole: at full "
        "resolution, each frame in one pass; slide: at full resolution in windows of "
        "train.val_window (as evaluate.py --sliding-window); best.pt is chosen on its score",
    )
    val_window: Annotated[tuple[Positive, Positive], BeforeValidator(_height_width)] | None = Field(
        None,
        description="val_mode slide: window size (evaluate.py --window); null: the "
        "training size, data.image_size",
        json_schema_extra=allowed("null, HEIGHTxWIDTH (e.g. 512x1024) or [height, width]"),
    )
    val_stride: Annotated[tuple[Positive, Positive], BeforeValidator(_height_width)] | None = Field(
        None,
        description="val_mode slide: step between windows (evaluate.py --stride), at most "
        "the window; null: 2/3 of the window's sides, rounded down",
        json_schema_extra=allowed("null, HEIGHTxWIDTH (e.g. 341x682) or [height, width]"),
    )
    val_batch_size: Positive | None = Field(
        None,
        description="validation images per batch in each process; null: train.batch_size for "
        "val_mode resized, 1 for whole and slide (full frames)",
    )
    batch_size: Positive = Field(
        6, description="images per micro-batch in each process (--batch-size)"
    )
    accumulate: Positive = Field(
        1, description="micro-batches per optimizer step (gradient accumulation)"
    )
    grad_clip: Annotated[Float, Field(gt=0)] | None = Field(
        None, description="largest gradient norm (clipped above it); null: no clipping"
    )
    freeze_encoder_iters: Count = Field(
        0, description="first optimizer steps with the encoder frozen: only the decoder learns"
    )
    amp: Annotated[AmpMode, Choice] = Field(
        "off",
        description="mixed precision (--amp); auto: bf16 where the device computes it natively "
        "(Ampere+ GPUs, CPUs with AMX or AVX512-BF16), else off; checkpoints record the choice",
    )
    compile: Annotated[CompileMode, BeforeValidator(_compile_word)] = Field(
        "off",
        description="torch.compile the model for training (--compile [MODE]): default fuses "
        "kernels; reduce-overhead also replays each step as CUDA graphs (GPU only: fewest "
        "launches, for steps the GPU finishes faster than Python issues them); max-autotune "
        "also times kernel choices (first steps take minutes); true/false: default/off",
    )
    device: Annotated[str, AfterValidator(_device)] = Field(
        "auto",
        description="where to train (--device); auto: the GPU when CUDA works, else the CPU",
        json_schema_extra=allowed("auto, cpu, cuda, cuda:N"),
    )
    seed: Annotated[Int, Field(ge=0, lt=2**32)] = Field(0, description="random seed (--seed)")
    key_metric: Annotated[KeyMetric, Choice] = Field(
        "mIoU", description="validation metric that best.pt maximizes"
    )
    log_images: Count = Field(4, description="validation images in the TensorBoard panel")
    log_every: Positive = Field(
        20, description="optimizer steps between training scalars (loss, lr, images/s)"
    )
    skip_nonfinite: Count = Field(
        0, description="batches with a NaN/inf loss to skip before the run stops"
    )
    cudnn_benchmark: bool = Field(
        True, description="let cuDNN time and pick the fastest convolutions"
    )

    @model_validator(mode="before")
    @classmethod
    def _epochs_null_is_left_out(cls, values: Any) -> Any:
        # `--set train.epochs=null` takes back a config file's epochs, for train.iters.
        if isinstance(values, dict) and "epochs" in values and values["epochs"] is None:
            values = {key: value for key, value in values.items() if key != "epochs"}
        return values

    @model_validator(mode="after")
    def _one_length(self) -> TrainConfig:
        if self.iters is not None and "epochs" in self.model_fields_set:
            raise config_line(
                f"train.iters={self.iters} and train.epochs={self.epochs} are both given: a run "
                "is as long as one of them; remove one (or set train.epochs to null)"
            )
        for key in ("val_every", "save_every"):
            if getattr(self, key) is not None and self.iters is None:
                raise config_line(
                    f"train.{key}={getattr(self, key)} counts optimizer steps of train.iters: a "
                    "run of train.epochs validates and saves last.pt after every epoch; set "
                    f"train.iters, or remove train.{key}"
                )
        for key in ("val_window", "val_stride"):
            if getattr(self, key) is not None and self.val_mode != "slide":
                raise config_line(
                    f"train.{key} is for train.val_mode slide, not {self.val_mode}: set "
                    f"train.val_mode to slide, or remove train.{key}"
                )
        if self.val_stride is not None and self.val_window is not None:
            window, stride = self.val_window, self.val_stride
            if stride[0] > window[0] or stride[1] > window[1]:
                raise config_line(
                    f"train.val_stride {stride[0]}x{stride[1]} is larger than train.val_window "
                    f"{window[0]}x{window[1]}: windows would leave gaps; use a stride of at "
                    "most the window"
                )
        return self

    @model_serializer(mode="wrap")
    def _without_unused_epochs(self, handler: Callable) -> dict:
        # A run of train.iters saves no epochs: read back, its config would give both.
        values = handler(self)
        if self.iters is not None:
            values.pop("epochs", None)
        return values


class Config(_Section):
    """A whole run: the sections, and where the run writes."""

    output_dir: Text = Field(
        "runs/run",
        description="run folder for checkpoints, logs and config.yaml; must be new (--output-dir)",
    )
    # SerializeAsAny: a run's config.yaml and checkpoints keep the keys of the data's kind.
    data: SerializeAsAny[DataConfig] = Field(
        default_factory=DataConfig, description="what to train on"
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="the network")
    loss: LossConfig = Field(default_factory=LossConfig, description="the training loss")
    optim: OptimConfig = Field(
        default_factory=OptimConfig, description="optimizer and learning-rate schedule"
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="the training loop")

    @model_validator(mode="after")
    def _across_sections(self) -> Config:
        # Runs only once every section is valid, so that plain mistakes are refused without
        # importing torch, which the loss's option check needs (the model's uses the catalog).
        _resolve_head(self)
        _check_validation_loss(self)
        _check_model(self.model)
        _check_loss(self.loss)
        return self


# --------------------------------------------------------------------------- cross checks


def _resolve_head(config: Config) -> None:
    wanted = LOSS_HEADS[config.loss.name]
    if config.model.head is None:
        config.model.head = wanted
    elif config.model.head != wanted:
        raise config_line(
            f"model.head '{config.model.head}' does not fit loss.name '{config.loss.name}', "
            f"which trains a {wanted} head: set model.head to {wanted} or null"
        )


def _check_validation_loss(config: Config) -> None:
    # Full-resolution validation scores the merged predictions; it computes no loss.
    if config.optim.scheduler == "plateau" and config.train.val_mode != "resized":
        raise config_line(
            f"optim.scheduler 'plateau' steps on the validation loss, which train.val_mode "
            f"'{config.train.val_mode}' does not compute: use optim.scheduler poly (or cosine, "
            "none), or train.val_mode resized"
        )


def _check_model(model: ModelConfig) -> None:
    if not model_catalog.is_backbone(model.backbone):
        raise config_line(
            f"model.backbone={model.backbone!r} is not valid: it should be one of "
            f"{', '.join(model_catalog.backbone_names())}"
        )
    model.options = _checked_options(
        "model.options",
        f"arch '{model.arch}'",
        model.options,
        model_catalog.architecture_options(model.arch),
    )


def _check_loss(loss: LossConfig) -> None:
    from segmentation.losses import LOSSES, loss_options

    loss.options = _checked_options(
        "loss.options", f"loss '{loss.name}'", loss.options, loss_options(loss.name)
    )
    try:  # the loss checks its own ranges (bce_weight in [0, 1], ...): a tiny one tells now
        LOSSES[loss.name](2, **loss.options)
    except UserError as error:
        raise config_line(f"loss.options is not valid for loss '{loss.name}': {error}") from None


_OPTION_TYPES = {
    bool: TypeAdapter(bool),
    int: TypeAdapter(Int),
    float: TypeAdapter(Float),
    str: TypeAdapter(str),
}


def _checked_options(key: str, owner: str, given: dict, defaults: dict) -> dict:
    """`given` with each value converted to the type of its default; unknown names refused."""
    unknown = [str(name) for name in given if name not in defaults]
    if unknown:
        raise config_line(
            f"{key} has unknown option(s) {', '.join(unknown)} for {owner}: valid options are "
            f"{', '.join(defaults)}"
        )
    checked = {}
    for name, value in given.items():
        adapter = _OPTION_TYPES.get(type(defaults[name]))
        if adapter is None:
            checked[name] = value
            continue
        try:
            checked[name] = adapter.validate_python(value)
        except ValidationError as error:
            reason = _reason_text(error.errors(include_url=False)[0])
            raise config_line(
                f"{key}.{name}={value!r} is not valid: {reason} (default {defaults[name]!r})"
            ) from None
    return checked


# --------------------------------------------------------------------------- errors


def _reason_text(error: dict) -> str:
    if error["type"] == "config_reason":
        return error["ctx"]["reason"]
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return "it should be a mapping of keys to values"
    message = error["msg"].removeprefix("Value error, ").replace(" after validation", "")
    return re.sub(r"^(Input|Tuple|List|Value|String|Dictionary) should", "it should", message)


def _given(values: Any, keys: list[str], fallback: Any) -> Any:
    """The value the user gave at `keys`, before any conversion."""
    for key in keys:
        if not isinstance(values, dict) or key not in values:
            return fallback
        values = values[key]
    return values


def _one_line(error: ValidationError, values: Any, outer: tuple[str, ...] = ()) -> str:
    """The first problem of `error` as one line: dotted key, value given, what is allowed.
    `outer`: the keys above `values` (a section validated on its own)."""
    first = error.errors(include_url=False)[0]
    inner = [part for part in first["loc"] if isinstance(part, str)]
    keys = [*outer, *inner]
    key = ".".join(keys)
    if first["type"] == "config_line":
        message = first["ctx"]["message"]
    elif first["type"] == "unknown_keys":
        where = f" in section '{key}'" if key else ""
        message = (
            f"unknown config key(s) {first['ctx']['unknown']}{where}: valid keys are "
            f"{first['ctx']['valid']}"
        )
    else:
        reason = _reason_text(first)
        indexes = [part for part in first["loc"] if isinstance(part, int)]
        if indexes:
            reason = reason.replace("it should", f"item {indexes[-1] + 1} should", 1)
        given = _given(values, inner, first["input"])
        message = f"{key}={given!r} is not valid: {reason}"
    return " ".join(message.split())


# --------------------------------------------------------------------------- public API


def config_from_dict(values: dict | None) -> Config:
    """A Config from nested plain data; unknown keys and wrong values raise UserError."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise UserError(
            "a config must be a mapping of sections (data, model, ...), "
            f"not a {type(values).__name__}"
        )
    try:
        return Config.model_validate(values)
    except ValidationError as error:
        raise UserError(_one_line(error, values)) from None


_WARNED: set[tuple] = set()  # (source, dropped keys) already named: warn once per process


def saved_config_from_dict(values: dict | None, source: str) -> Config:
    """The Config that a run saved (its config.yaml, a checkpoint), named `source` in messages.
    As config_from_dict, except that data keys of another dataset kind are dropped with one
    warning: runs saved before each kind had its own keys carry every kind's keys (a KITTI run's
    holdout_cities), which mean nothing for their kind. In a user's config file they are
    refused."""
    data = values.get("data") if isinstance(values, dict) else None
    if isinstance(data, dict) and data.get("dataset", _DEFAULT_DATASET) in _kinds():
        kinds = _kinds()
        own = _options_of(data.get("dataset", _DEFAULT_DATASET)).model_fields
        known = {key for kind in kinds.values() for key in kind.options.model_fields}
        foreign = [key for key in data if key in known and key not in own]
        if foreign:
            if (source, tuple(foreign)) not in _WARNED:
                _WARNED.add((source, tuple(foreign)))
                logger.warning(
                    "%s: data key(s) %s mean nothing for the %s dataset (saved before each "
                    "dataset kind had its own keys): dropped",
                    source,
                    ", ".join(foreign),
                    data.get("dataset", _DEFAULT_DATASET),
                )
            kept = {key: value for key, value in data.items() if key not in foreign}
            values = {**values, "data": kept}
    return config_from_dict(values)


def _location(loc: tuple) -> str:
    """A pydantic location as the user reads it in a classes file: classes[2].color."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _given_at(values: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            values = values[part]
        except (KeyError, IndexError, TypeError):
            return None
    return values


def _classes_line(error: ValidationError, values: Any) -> str:
    """The first problem of a classes file as one line naming the key, e.g. classes[2].color."""
    first = error.errors(include_url=False)[0]
    where = _location(first["loc"])
    if first["type"] == "config_line":
        return first["ctx"]["message"]
    if first["type"] == "unknown_keys":
        inside = f" in {where}" if where else ""
        return (
            f"unknown key(s) {first['ctx']['unknown']}{inside}: valid keys are "
            f"{first['ctx']['valid']}"
        )
    if first["type"] == "missing":
        return f"{where} is missing"
    return f"{where}={_given_at(values, first['loc'])!r} is not valid: {_reason_text(first)}"


def classes_from_dict(values: Any, source: str) -> FolderClasses:
    """FolderClasses from the data of a classes file; UserError naming `source` and the key."""
    if not isinstance(values, dict):
        raise UserError(
            f"{source} must hold a mapping with the keys mask_format, ignore_index and classes, "
            f"not {'nothing' if values is None else 'a ' + type(values).__name__}"
        )
    try:
        return FolderClasses.model_validate(values)
    except ValidationError as error:
        raise UserError(f"{source}: {' '.join(_classes_line(error, values).split())}") from None


def load_config(path: str | Path) -> Config:
    """The Config of a YAML file; any problem with the file or its values raises UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist: see configs/ for examples")
    values = read_yaml(path, f"config file {path}")
    if values is not None and not isinstance(values, dict):
        raise UserError(
            f"config file {path} must hold a mapping of sections, e.g. 'data:', "
            f"not a {type(values).__name__}"
        )
    return config_from_dict(values)


def _set_dotted(values: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    section = values
    for depth, parent in enumerate(parents, start=1):
        # A missing section is made here so that validation names the valid keys.
        child = section.setdefault(parent, {})
        if not isinstance(child, dict):
            above = ".".join(parents[:depth])
            raise UserError(
                f"config key '{dotted}' does not exist: {above} holds a value ({child!r}), "
                f"not keys; set it as {above}=VALUE"
            )
        section = child
    current = section.get(last)
    if isinstance(value, dict) and isinstance(current, dict):
        section[last] = _merged(current, value)
    else:
        section[last] = value


def _merged(current: dict, update: dict) -> dict:
    """`current` with the keys of `update` set, mappings merged key by key: `data={root: X}`
    changes data.root and keeps the other data keys, as `data.root=X` does."""
    merged = dict(current)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _sets(overrides: dict[str, Any], dotted: str) -> bool:
    """Whether `overrides` set the key `dotted`, by its name or inside a mapping above it."""
    for key, value in overrides.items():
        if key == dotted:
            return True
        if dotted.startswith(key + "."):
            for part in dotted[len(key) + 1 :].split("."):
                if not isinstance(value, dict) or part not in value:
                    break
                value = value[part]
            else:
                return True
    return False


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A new Config with dotted keys ("train.epochs": 4) set; a None value sets null. A
    mapping merges into the mapping it replaces (set a key to null to reset it)."""
    values = config_to_dict(config)
    if _sets(overrides, "loss.name") and not _sets(overrides, "model.head"):
        # The head is the loss's (any other is refused): a new loss brings its own.
        values["model"]["head"] = None
    for dotted, value in overrides.items():
        _set_dotted(values, dotted, value)
    _leave_the_old_kinds_defaults(config.data, values.get("data"))
    return config_from_dict(values)


def _leave_the_old_kinds_defaults(old: DataConfig, data: Any) -> None:
    """An override of data.dataset takes the new kind's defaults: the old kind's keys at their
    defaults (and its default scheme) go; a value the config chose stays, to be refused if it
    means nothing for the new kind."""
    if not isinstance(data, dict) or data.get("dataset") in (old.dataset, None):
        return
    if data.get("dataset") not in _kinds():
        return  # refused by validation, naming the known kinds
    defaults = type(old)(dataset=old.dataset).model_dump(mode="json")
    new_keys = _options_of(data["dataset"]).model_fields
    for key, default in defaults.items():
        if key not in new_keys and key in data and data[key] == default:
            del data[key]
    if data.get("labels") == defaults["labels"]:
        data["labels"] = None


def config_to_dict(config: Config) -> dict:
    """Plain nested data (lists, not tuples), as saved in config.yaml and checkpoints."""
    return config.model_dump(mode="json")


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def check_amp_device(config: Config) -> None:
    """fp16 autocast needs a CUDA GPU (bf16 runs on CPUs too): refuse it where none will run.

    Apart from the other checks because the answer depends on this machine, and a checkpoint
    trained with fp16 must still load on a CPU for evaluation.
    """
    train = config.train
    if train.amp != "fp16" or train.device.startswith("cuda"):
        return
    if train.device == "auto":
        import torch

        if torch.cuda.is_available():
            return
    raise UserError(
        f"train.amp='fp16' needs a CUDA GPU (train.device is '{train.device}'"
        f"{' and none is available' if train.device == 'auto' else ''}): use --amp bf16 on the "
        "CPU, or --amp off"
    )
