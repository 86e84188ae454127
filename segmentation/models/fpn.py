"""FPN (panoptic-FPN style semantic head) on a ResNet/ResNeXt encoder (see MODELS.md)."""

import torch
import torch.nn.functional as F
from torch import nn

from segmentation.errors import UserError
from segmentation.models.base import SegmentationModel, check_dropout, check_positive_int

MERGE_POLICIES = ("add", "cat")
FINAL_UPSAMPLINGS = (4, 1)  # 4: logits at the input size; 1: at stride 4 (H/4, W/4)
GROUPS = 32  # GroupNorm groups of the segmentation branches


class Conv3x3GNReLU(nn.Module):
    """Conv3x3 (no bias: GroupNorm follows) + GroupNorm + ReLU, then optionally a bilinear x2.

    (B, in_channels, H, W) -> (B, out_channels, H, W), or (..., 2H, 2W) with upsample=True.
    """

    def __init__(self, in_channels: int, out_channels: int, upsample: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm = nn.GroupNorm(GROUPS, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.norm(self.conv(x)))
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        return x


def segmentation_branch(in_channels: int, out_channels: int, num_upsamples: int) -> nn.Sequential:
    """Blocks that bring one pyramid level to stride 4: one upsampling block per factor 2,
    or a single block without upsampling for the stride-4 level itself."""
    num_blocks = max(num_upsamples, 1)
    return nn.Sequential(
        *[
            Conv3x3GNReLU(in_channels if i == 0 else out_channels, out_channels, num_upsamples > 0)
            for i in range(num_blocks)
        ]
    )


class FPN(SegmentationModel):
    """FPN: image (B, in_channels, H, W) -> logits (B, num_classes, H, W); H, W multiples of 32.

    Options:
        pyramid_channels: width of the top-down pyramid p5..p2 (original project: 256).
        segmentation_channels: width of each segmentation branch (original project: 128; a
            multiple of 32 for GroupNorm(32)).
        merge: "add" sums the four branches; "cat" concatenates them (4x the channels).
        dropout: Dropout2d probability after the merge (seed and smp: 0.2).
        final_upsampling: 4 returns logits at the input size; 1 at stride 4.
    """

    arch = "fpn"
    input_divisor = 32  # the encoder's output stride

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        in_channels: int = 3,
        *,
        pyramid_channels: int = 256,
        segmentation_channels: int = 128,
        merge: str = "add",
        dropout: float = 0.2,
        final_upsampling: int = 4,
    ) -> None:
        super().__init__(backbone, in_channels)
        check_positive_int("num_classes", num_classes)
        check_positive_int("pyramid_channels", pyramid_channels)
        check_positive_int("segmentation_channels", segmentation_channels)
        check_dropout(dropout)
        if segmentation_channels % GROUPS:
            raise UserError(
                f"segmentation_channels must be a multiple of {GROUPS} (GroupNorm groups), "
                f"got {segmentation_channels}"
            )
        if merge not in MERGE_POLICIES:
            raise UserError(f"unknown merge {merge!r}: choose one of {', '.join(MERGE_POLICIES)}")
        if final_upsampling not in FINAL_UPSAMPLINGS:
            raise UserError(
                f"final_upsampling must be 4 (logits at input size) or 1 (at stride 4), "
                f"got {final_upsampling!r}"
            )
        c1, c2, c3, c4 = self.encoder.out_channels
        p, s = pyramid_channels, segmentation_channels
        self.lateral5 = nn.Conv2d(c4, p, kernel_size=1)
        self.lateral4 = nn.Conv2d(c3, p, kernel_size=1)
        self.lateral3 = nn.Conv2d(c2, p, kernel_size=1)
        self.lateral2 = nn.Conv2d(c1, p, kernel_size=1)
        # p5, p4, p3, p2 sit at strides 32, 16, 8, 4: 3, 2, 1, 0 doublings to stride 4.
        self.branches = nn.ModuleList([segmentation_branch(p, s, n) for n in (3, 2, 1, 0)])
        self.merge = merge
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(s if merge == "add" else 4 * s, num_classes, kernel_size=1)
        self.final_upsampling = final_upsampling

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints written before the 1x1 classifier was renamed call it "head".
        for name in ("weight", "bias"):
            old = f"{prefix}head.{name}"
            if old in state_dict:
                state_dict[f"{prefix}classifier.{name}"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, in_channels, H, W) -> logits (B, num_classes, H, W)."""
        c2, c3, c4, c5 = self.encode(image)
        p5 = self.lateral5(c5)
        p4 = _up2(p5) + self.lateral4(c4)
        p3 = _up2(p4) + self.lateral3(c3)
        p2 = _up2(p3) + self.lateral2(c2)
        s5, s4, s3, s2 = [branch(p) for branch, p in zip(self.branches, (p5, p4, p3, p2))]
        if self.merge == "add":
            # In place after the first sum: add's backward needs none of its operands, and
            # this saves two stride-4 buffers (smp stacks all four first, then sums).
            x = s5 + s4
            x += s3
            x += s2
        else:
            x = torch.cat([s5, s4, s3, s2], dim=1)
        logits = self.classifier(self.dropout(x))  # (B, num_classes, H/4, W/4)
        if self.final_upsampling == 1:
            return logits
        return F.interpolate(
            logits, scale_factor=float(self.final_upsampling), mode="bilinear", align_corners=True
        )


def _up2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2: the FPN top-down path (B, C, H, W) -> (B, C, 2H, 2W)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")
