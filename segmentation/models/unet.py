"""UNET with a ResNet/ResNeXt encoder and a transposed-convolution decoder (see MODELS.md)."""

import torch
from torch import nn

from segmentation.errors import UserError
from segmentation.models.base import SegmentationModel, check_dropout, check_positive_int


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 convolution, stride 1, same padding, with bias (the original project's decoder has no
    norm)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


class ResidualBlock(nn.Module):
    """Two 3x3 conv+BN layers and a skip: (B, C, H, W) -> (B, C, H, W).

    The third BatchNorm before the sum is the original project's; it is kept so that the
    parameter count (and the published scores) stay comparable.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.bn3 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.bn2(self.conv2(out)))
        return self.relu(out + x)


class DecoderBlock(nn.Sequential):
    """Conv3x3+ReLU, optional ResidualBlock, ConvTranspose2d x2 upsample (+ReLU if plain).

    (B, in_channels, H, W) -> (B, out_channels, 2H, 2W).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, residual: bool):
        layers: list[nn.Module] = [conv3x3(in_channels, mid_channels), nn.ReLU(inplace=True)]
        if residual:
            layers.append(ResidualBlock(mid_channels))
        # Kernel 4 = 2 x stride gives every output pixel the same number of taps (no
        # checkerboard pattern); padding 1 makes the output exactly twice the input.
        layers.append(
            nn.ConvTranspose2d(mid_channels, out_channels, kernel_size=4, stride=2, padding=1)
        )
        if not residual:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNet(SegmentationModel):
    """UNET: image (B, in_channels, H, W) -> logits (B, num_classes, H, W); H, W multiples of 64.

    Options:
        num_filters: decoder width unit F (original project: 32); decoder widths are multiples of F.
        residual_decoder: put a ResidualBlock in dec5..dec2 (the original project's
            --unet_res_blocks 1).
        dropout: Dropout2d probability on the encoder's four outputs and after dec2. The
            default 0.2 is the original project's (and segmentation_models_pytorch's) value.
    """

    arch = "unet"
    # The center block max-pools the stride-32 features once more, to stride 64.
    input_divisor = 64

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        in_channels: int = 3,
        *,
        num_filters: int = 32,
        residual_decoder: bool = False,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(backbone, in_channels)
        check_positive_int("num_classes", num_classes)
        check_positive_int("num_filters", num_filters)
        check_dropout(dropout)
        if not isinstance(residual_decoder, bool):
            raise UserError(f"residual_decoder must be true or false, got {residual_decoder!r}")
        c1, c2, c3, c4 = self.encoder.out_channels
        f = num_filters
        res = residual_decoder
        self.dropout = nn.Dropout2d(dropout)
        self.center = nn.Sequential(
            nn.MaxPool2d(2), DecoderBlock(c4, f * 16, f * 8, residual=False)
        )
        self.dec5 = DecoderBlock(c4 + f * 8, f * 16, f * 8, res)
        self.dec4 = DecoderBlock(c3 + f * 8, f * 16, f * 8, res)
        self.dec3 = DecoderBlock(c2 + f * 8, f * 8, f * 2, res)
        self.dec2 = DecoderBlock(c1 + f * 2, f * 4, f * 4, res)
        self.dec1 = DecoderBlock(f * 4, f * 4, f, residual=False)
        self.dec0 = nn.Sequential(conv3x3(f, f), nn.ReLU(inplace=True))
        self.final = nn.Conv2d(f, num_classes, kernel_size=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, in_channels, H, W) -> logits (B, num_classes, H, W)."""
        c2, c3, c4, c5 = [self.dropout(f) for f in self.encode(image)]
        center = self.center(c5)  # stride 64 -> 32
        d5 = self.dec5(torch.cat([center, c5], dim=1))  # -> stride 16
        d4 = self.dec4(torch.cat([d5, c4], dim=1))  # -> 8
        d3 = self.dec3(torch.cat([d4, c3], dim=1))  # -> 4
        d2 = self.dropout(self.dec2(torch.cat([d3, c2], dim=1)))  # -> 2
        d1 = self.dec1(d2)  # -> 1
        return self.final(self.dec0(d1))
