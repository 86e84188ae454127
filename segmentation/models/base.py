"""What UNet and FPN share: the encoder in front, the input check and encoder freezing."""

import torch
from torch import nn

from segmentation.errors import UserError
from segmentation.models.encoders import ResNetEncoder


def nearest_multiples(size: int, multiple: int) -> list[int]:
    """The multiples of `multiple` nearest to `size`: [size] if it is one, else below and above."""
    below = size // multiple * multiple
    if below == size:
        return [size]
    above = below + multiple
    return [below, above] if below > 0 else [above]


def check_input_size(
    height: int, width: int, multiple: int, arch: str, name: str = "input"
) -> None:
    """Raise UserError unless height and width are multiples of `multiple`, naming valid sizes;
    `name` says what the size is (a config key)."""
    if height % multiple == 0 and width % multiple == 0:
        return
    heights = nearest_multiples(height, multiple)
    widths = nearest_multiples(width, multiple)
    # Pair the sizes below with each other and the sizes above with each other: the two
    # closest choices that round both sides the same way.
    choices = {f"{heights[0]}x{widths[0]}", f"{heights[-1]}x{widths[-1]}"}
    hint = "resize, crop or pad the images" if name == "input" else f"set {name} to one of them"
    suggestion = " or ".join(sorted(choices, key=lambda s: [int(n) for n in s.split("x")]))
    raise UserError(
        f"{name} {height}x{width} is not a multiple of {multiple} for {arch}: "
        f"use {suggestion} ({hint})"
    )


class SegmentationModel(nn.Module):
    """Base of the segmentation models: optional channel tuner -> ResNet encoder -> decoder.

    Subclasses set `arch` and `input_divisor` and implement forward:
    image (B, in_channels, H, W) -> logits (B, num_classes, H, W).
    """

    arch = ""
    input_divisor = 1  # H and W of the input must be multiples of this

    def __init__(self, backbone: str, in_channels: int) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        self.in_channels = in_channels
        # The original project's "channel tuner": a learned 1x1 map from any number of input
        # channels to the 3 the pretrained encoder expects. Absent for RGB, so the original
        # project's parameter counts hold.
        self.channel_tuner = nn.Conv2d(in_channels, 3, kernel_size=1) if in_channels != 3 else None
        self.encoder = ResNetEncoder(backbone)
        self.encoder_frozen = False

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """image (B, in_channels, H, W) -> the encoder's four stage outputs (strides 4..32)."""
        self._check_input(image)
        if self.channel_tuner is not None:
            image = self.channel_tuner(image)
        return self.encoder(image)

    def _check_input(self, image: torch.Tensor) -> None:
        # Under tracing/compilation the sizes are symbolic and a Python check would become a
        # graph guard; the check is for eager use, where the mistakes happen.
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        if image.ndim != 4 or image.shape[1] != self.in_channels:
            raise UserError(
                f"{self.arch} expects images of shape (B, {self.in_channels}, H, W), got "
                f"{tuple(image.shape)}: check in_channels against the data"
            )
        check_input_size(image.shape[-2], image.shape[-1], self.input_divisor, self.arch)

    def train(self, mode: bool = True) -> "SegmentationModel":
        """nn.Module.train, except that a frozen encoder stays in eval mode (see
        `set_encoder_trainable`)."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self


def set_encoder_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (trainable=False) or unfreeze the encoder of a segmentation model.

    Frozen means requires_grad=False on every encoder parameter AND the encoder's BatchNorm
    layers in eval mode, also across later model.train() calls: with small segmentation
    batches, updating the running statistics would drift the pretrained features that the
    freeze is meant to keep while the decoder warms up. The channel tuner (in_channels != 3)
    stays trainable: it is new and must learn from the start.

    Accepts the model wrapped in DistributedDataParallel or torch.compile. Under DDP, changing
    requires_grad after wrapping needs find_unused_parameters=True or a rebuilt wrapper.
    """
    while not isinstance(model, SegmentationModel) and hasattr(model, "module"):
        model = model.module  # DistributedDataParallel, DataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile
    if not isinstance(model, SegmentationModel):
        raise TypeError(f"expected a SegmentationModel, got {type(model).__name__}")
    for parameter in model.encoder.parameters():
        parameter.requires_grad_(trainable)
    model.encoder_frozen = not trainable
    model.train(model.training)


def check_positive_int(name: str, value: object) -> None:
    """UserError unless `value` is an int >= 1 (bool excluded: YAML's yes/no are bools)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")


def check_dropout(value: object) -> None:
    """UserError unless `value` is a probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise UserError(f"dropout must be a number in [0, 1), got {value!r}")
