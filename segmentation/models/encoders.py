"""ResNet/ResNeXt encoders: the torchvision backbones without their classifier.

Encoder variants are data: `ENCODERS` maps a backbone name to its torchvision builder, its
ImageNet weights, its four stage widths and the input normalization its weights expect.
"""

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision import models as tvm

from segmentation.errors import UserError
from segmentation.model_catalog import BACKBONE_ALIASES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BASIC_CHANNELS = (64, 128, 256, 512)  # resnet18/34: BasicBlock stages
BOTTLENECK_CHANNELS = (256, 512, 1024, 2048)  # resnet50 and up: Bottleneck stages

# The children whose outputs the encoder returns, at strides 4, 8, 16 and 32.
STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class EncoderSpec:
    """How to build one backbone and what its pretrained weights expect."""

    builder: Callable[..., tvm.ResNet]
    weights: type[tvm.WeightsEnum]  # its DEFAULT member is what "imagenet" loads
    channels: tuple[int, int, int, int]  # output widths of layer1..layer4
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


ENCODERS: dict[str, EncoderSpec] = {
    "resnet18": EncoderSpec(tvm.resnet18, tvm.ResNet18_Weights, BASIC_CHANNELS),
    "resnet34": EncoderSpec(tvm.resnet34, tvm.ResNet34_Weights, BASIC_CHANNELS),
    "resnet50": EncoderSpec(tvm.resnet50, tvm.ResNet50_Weights, BOTTLENECK_CHANNELS),
    "resnet101": EncoderSpec(tvm.resnet101, tvm.ResNet101_Weights, BOTTLENECK_CHANNELS),
    "resnext50_32x4d": EncoderSpec(
        tvm.resnext50_32x4d, tvm.ResNeXt50_32X4D_Weights, BOTTLENECK_CHANNELS
    ),
    "resnext101_32x8d": EncoderSpec(
        tvm.resnext101_32x8d, tvm.ResNeXt101_32X8D_Weights, BOTTLENECK_CHANNELS
    ),
}

# Short names used by the original project's command line and configs.
ENCODER_ALIASES: dict[str, str] = BACKBONE_ALIASES


def resolve_backbone(backbone: str) -> str:
    """Return the canonical name of `backbone` (aliases resolved); UserError if unknown."""
    name = ENCODER_ALIASES.get(backbone, backbone)
    if name not in ENCODERS:
        valid = ", ".join([*ENCODERS, *ENCODER_ALIASES])
        raise UserError(f"unknown backbone {backbone!r}: choose one of {valid}")
    return name


def encoder_spec(backbone: str) -> EncoderSpec:
    """The `EncoderSpec` of a backbone name or alias."""
    return ENCODERS[resolve_backbone(backbone)]


def encoder_normalization(
    backbone: str,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) per RGB channel, for inputs scaled to [0, 1], that the backbone expects."""
    spec = encoder_spec(backbone)
    return spec.mean, spec.std


class ResNetEncoder(nn.Sequential):
    """A torchvision ResNet/ResNeXt without `avgpool` and `fc`, returning its four stages.

    Children keep torchvision's names and order (conv1, bn1, relu, maxpool, layer1..layer4),
    so a torchvision state_dict loads as it is once its classifier keys are dropped.

    forward: image (B, 3, H, W) -> [layer1 (B, C1, H/4, W/4), layer2 (B, C2, H/8, W/8),
    layer3 (B, C3, H/16, W/16), layer4 (B, C4, H/32, W/32)], C = `out_channels`.
    """

    def __init__(self, backbone: str) -> None:
        name = resolve_backbone(backbone)
        spec = ENCODERS[name]
        resnet = spec.builder(weights=None)
        # Take the modules over and drop the torchvision model, so that every module is
        # registered exactly once and the classifier does not exist at all.
        # A Sequential because the encoder is one, with four taps: summary tools (torchsummary)
        # count a Sequential's children only, and its outputs are exactly its stages' outputs.
        super().__init__(
            OrderedDict(
                (child, getattr(resnet, child))
                for child in ("conv1", "bn1", "relu", "maxpool", *STAGE_NAMES)
            )
        )
        self.name = name
        self.out_channels = spec.channels

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = image
        for child, module in self.named_children():
            x = module(x)
            if child in STAGE_NAMES:
                features.append(x)
        return features
