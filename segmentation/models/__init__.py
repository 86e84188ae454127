"""Segmentation models: ResNet/ResNeXt encoders with a UNET or FPN decoder.

Example: `build_model("fpn", "resnext50", num_classes=8, pretrained="imagenet")` maps
images (B, 3, H, W) to logits (B, 8, H, W); H and W must be multiples of 32 (unet: 64).
"""

from segmentation.models.base import SegmentationModel, check_input_size, set_encoder_trainable
from segmentation.models.build import (
    ARCHITECTURES,
    architecture_options,
    build_model,
    required_input_multiple,
)
from segmentation.models.encoders import (
    ENCODER_ALIASES,
    ENCODERS,
    EncoderSpec,
    ResNetEncoder,
    encoder_normalization,
    resolve_backbone,
)
from segmentation.models.fpn import FPN
from segmentation.models.unet import UNet
from segmentation.models.weights import hub_checkpoint_dir, load_encoder_weights

__all__ = [
    "ARCHITECTURES",
    "ENCODERS",
    "ENCODER_ALIASES",
    "FPN",
    "EncoderSpec",
    "ResNetEncoder",
    "SegmentationModel",
    "UNet",
    "architecture_options",
    "build_model",
    "check_input_size",
    "encoder_normalization",
    "hub_checkpoint_dir",
    "load_encoder_weights",
    "required_input_multiple",
    "resolve_backbone",
    "set_encoder_trainable",
]
