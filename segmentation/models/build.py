"""`build_model`: architecture and backbone by name, options checked, weights loaded."""

import os

from segmentation import model_catalog
from segmentation.errors import UserError
from segmentation.models.base import SegmentationModel
from segmentation.models.encoders import resolve_backbone
from segmentation.models.fpn import FPN
from segmentation.models.unet import UNet
from segmentation.models.weights import load_encoder_weights

# The names are those of `segmentation.model_catalog`, which the config checks against.
ARCHITECTURES: dict[str, type[SegmentationModel]] = {"unet": UNet, "fpn": FPN}


def architecture(arch: str) -> type[SegmentationModel]:
    """The model class of an architecture name; UserError listing the valid names."""
    if arch not in ARCHITECTURES:
        raise UserError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def architecture_options(arch: str) -> dict[str, object]:
    """The options (keyword-only constructor arguments) of an architecture, with defaults."""
    architecture(arch)  # an unknown name is refused with the valid ones
    return model_catalog.architecture_options(arch)


def required_input_multiple(arch: str) -> int:
    """Input height and width of `arch` must be multiples of this (unet 64, fpn 32)."""
    return architecture(arch).input_divisor


def build_model(
    arch: str,
    backbone: str,
    num_classes: int,
    pretrained: str | os.PathLike | None = None,
    in_channels: int = 3,
    **options: object,
) -> SegmentationModel:
    """Build a segmentation model: image (B, in_channels, H, W) -> logits (B, num_classes, H, W).

    arch: "unet" or "fpn". backbone: a key of ENCODERS or ENCODER_ALIASES.
    pretrained: None (random init), "imagenet" (torchvision's DEFAULT weights, downloaded once
    to the torch hub cache) or the path of a torchvision state_dict of the backbone.
    options: the architecture's keyword options (see `architecture_options(arch)`).
    """
    model_class = architecture(arch)
    resolve_backbone(backbone)  # fail on a bad name before building anything
    valid = architecture_options(arch)
    unknown = [name for name in options if name not in valid]
    if unknown:
        raise UserError(
            f"unknown option {', '.join(map(repr, unknown))} for {arch}: "
            f"valid options are {', '.join(valid)}"
        )
    model = model_class(backbone, num_classes, in_channels, **options)
    load_encoder_weights(model.encoder, pretrained)
    return model
