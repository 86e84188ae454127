"""FPN (panoptic-FPN style semantic head) on a ResNet/ResNeXt encoder (see MODELS.md)."""

import torch
import torch.nn.functional as F
from torch import nn

from segmentation.errors import UserError
from segmentation.models.base import SegmentationModel, check_dropout, check_positive_int

MERGE_POLICIES = ("add", "cat")
FINAL_UPSAMPLINGS = (4, 1)  # 4: logits at the input size; 1: at stride 4 (H/4, W/4)
GROUPS = 32  # GroupNorm groups of the segmentation branches


NORMS = ("group", "batch")  # of the segmentation branches


class Conv3x3NormReLU(nn.Module):
    """Conv3x3 (no bias: a norm follows) + GroupNorm or BatchNorm + ReLU, then optionally a
    bilinear x2.

    (B, in_channels, H, W) -> (B, out_channels, H, W), or (..., 2H, 2W) with upsample=True.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        upsample: bool,
        norm: str = "group",
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm = (
            nn.GroupNorm(GROUPS, out_channels) if norm == "group" else nn.BatchNorm2d(out_channels)
        )
        self.relu = nn.ReLU(inplace=True)
        self.upsample = upsample
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.norm(self.conv(x)))
        if self.upsample:
            x = F.interpolate(
                x, scale_factor=2.0, mode="bilinear", align_corners=self.align_corners
            )
        return x


def segmentation_branch(
    in_channels: int, out_channels: int, num_upsamples: int, norm: str, align_corners: bool
) -> nn.Sequential:
    """Blocks that bring one pyramid level to stride 4: one upsampling block per factor 2,
    or a single block without upsampling for the stride-4 level itself."""
    num_blocks = max(num_upsamples, 1)
    return nn.Sequential(
        *[
            Conv3x3NormReLU(
                in_channels if i == 0 else out_channels,
                out_channels,
                num_upsamples > 0,
                norm,
                align_corners,
            )
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
        pyramid_smoothing: a 3x3 convolution on each pyramid level after the top-down sums, as
            in the FPN paper and mmsegmentation's FPN neck (off in the original project).
        branch_norm: "group" (GroupNorm(32), the original project) or "batch" (BatchNorm, as
            mmsegmentation's FPNHead; SyncBatchNorm with model.sync_batchnorm).
        align_corners: of the bilinear upsamplings in the branches and to the input size
            (the original project: true; mmsegmentation: false).

    pyramid_smoothing=True, branch_norm="batch", dropout=0.1, align_corners=False is
    mmsegmentation's Semantic FPN neck and head.
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
        pyramid_smoothing: bool = False,
        branch_norm: str = "group",
        align_corners: bool = True,
    ) -> None:
        super().__init__(backbone, in_channels)
        check_positive_int("num_classes", num_classes)
        check_positive_int("pyramid_channels", pyramid_channels)
        check_positive_int("segmentation_channels", segmentation_channels)
        check_dropout(dropout)
        if branch_norm not in NORMS:
            raise UserError(
                f"unknown branch_norm {branch_norm!r}: choose one of {', '.join(NORMS)}"
            )
        if branch_norm == "group" and segmentation_channels % GROUPS:
            raise UserError(
                f"segmentation_channels must be a multiple of {GROUPS} (GroupNorm groups), "
                f"got {segmentation_channels}"
            )
        for name, value in (
            ("pyramid_smoothing", pyramid_smoothing),
            ("align_corners", align_corners),
        ):
            if not isinstance(value, bool):
                raise UserError(f"{name} must be true or false, got {value!r}")
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
        # With bias and without norm or activation, as the FPN paper's output convolutions.
        self.smoothing = (
            nn.ModuleList([nn.Conv2d(p, p, kernel_size=3, padding=1) for _ in range(4)])
            if pyramid_smoothing
            else None
        )
        # p5, p4, p3, p2 sit at strides 32, 16, 8, 4: 3, 2, 1, 0 doublings to stride 4.
        self.branches = nn.ModuleList(
            [segmentation_branch(p, s, n, branch_norm, align_corners) for n in (3, 2, 1, 0)]
        )
        self.merge = merge
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(s if merge == "add" else 4 * s, num_classes, kernel_size=1)
        self.final_upsampling = final_upsampling
        self.align_corners = align_corners

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
        pyramid = (p5, p4, p3, p2)
        if self.smoothing is not None:
            # After the top-down path, which carries the unsmoothed sums (as mmsegmentation's).
            pyramid = tuple(conv(p) for conv, p in zip(self.smoothing, pyramid))
        s5, s4, s3, s2 = [branch(p) for branch, p in zip(self.branches, pyramid)]
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
            logits,
            scale_factor=float(self.final_upsampling),
            mode="bilinear",
            align_corners=self.align_corners,
        )


def _up2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2: the FPN top-down path (B, C, H, W) -> (B, C, 2H, 2W)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")
