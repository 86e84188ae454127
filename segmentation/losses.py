"""Training losses: the original project's per-channel sigmoid BCE + soft Dice, and softmax
cross-entropy.

Every loss takes `logits (B, K, H, W)` (any dtype, any memory format; computed in float32) and
`target (B, H, W) int64` of class indices 0..C-1 or IGNORE_INDEX, and returns a scalar.

Heads (see `loss_head`):
- "sigmoid" ("bce_dice"): one channel per class, K == C; binary schemes (C == 2, class 0 the
  background) may use K == 1, the logit of class 1. The target becomes one-hot channels inside
  the loss.
- "softmax" ("ce"): K == C always, binary schemes included.

Pixels whose target is IGNORE_INDEX, or any value outside 0..C-1, count for nothing: they add
nothing to any sum and get a zero gradient.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segmentation.data.labels import IGNORE_INDEX
from segmentation.errors import UserError

DICE_FORMS = ("log", "one_minus")
WEIGHT_METHODS = ("inverse_log", "median_frequency")

# --------------------------------------------------------------------------- functional core


def valid_pixels(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) bool: pixels with a class index 0..C-1 (IGNORE_INDEX and stray values not)."""
    return (target >= 0) & (target < num_classes)


def one_hot_channels(target: torch.Tensor, num_channels: int) -> torch.Tensor:
    """target (B, H, W) -> (B, K, H, W) float32 one-hot; K == 1 means "target == 1".

    Out-of-range values (ignore included) give all-zero channels; the callers mask them anyway.
    """
    if num_channels == 1:
        return (target == 1).unsqueeze(1).float()
    classes = torch.arange(num_channels, device=target.device).view(1, -1, 1, 1)
    return (target.unsqueeze(1) == classes).float()


def soft_dice_per_channel(
    probs: torch.Tensor, one_hot: torch.Tensor, valid: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """Soft Dice of each channel over the whole batch: (K,) float32.

    probs, one_hot (B, K, H, W) float32; valid (B, 1, H, W) bool.
    dice_k = (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth), sums over valid pixels.
    """
    # torch.where, not a product with the mask: the gradient at ignored pixels is then exactly 0.
    probs = torch.where(valid, probs, 0.0)
    one_hot = torch.where(valid, one_hot, 0.0)
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    return (2.0 * intersection + smooth) / (probs.sum(dims) + one_hot.sum(dims) + smooth)


def dice_term(dice: torch.Tensor, channel_weights: torch.Tensor | None, form: str) -> torch.Tensor:
    """Weighted soft Dice (K,) -> loss term: -log(weighted Dice) ("log") or 1 - it ("one_minus").

    channel_weights (K,) are normalized to sum 1; None weighs channels equally.
    """
    if channel_weights is None:
        weighted = dice.mean()
    else:
        weighted = (dice * channel_weights).sum() / channel_weights.sum()
    if form == "log":
        return -torch.log(weighted)
    return 1.0 - weighted


def masked_bce(
    logits: torch.Tensor,
    one_hot: torch.Tensor,
    valid: torch.Tensor,
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over valid pixels x channels: scalar float32.

    logits, one_hot (B, K, H, W) float32; valid (B, 1, H, W) bool; pixel_weights (B, 1, H, W)
    float32 or None. With weights: sum(w * bce) / (sum(w over valid) * K). No valid pixel: 0.
    """
    bce = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none")
    weights = valid.float() if pixel_weights is None else torch.where(valid, pixel_weights, 0.0)
    total = torch.where(valid, bce * weights, 0.0).sum()
    # clamp, not an `if`: a data-dependent branch would wait for the device.
    return total / (weights.sum() * logits.shape[1]).clamp_min(torch.finfo(torch.float32).tiny)


def bce_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    bce_weight: float = 0.8,
    dice_form: str = "log",
    class_weights: torch.Tensor | None = None,
    weighted_bce: bool = False,
    smooth: float = 1.0,
) -> torch.Tensor:
    """The original project's loss: bce_weight * BCE + (1 - bce_weight) * Dice term.

    dice_form "log": w * BCE - (1 - w) * log(weighted soft Dice) (the original project's form);
    "one_minus": w * BCE + (1 - w) * (1 - weighted soft Dice).
    logits (B, K, H, W) with K == C, or K == 1 for binary schemes (C == 2); target (B, H, W).
    class_weights (C,): Dice weights per channel (normalized to sum 1; for K == 1 only class 1
    has a channel, so they do not matter); with weighted_bce also BCE weights, each valid pixel
    weighted by the weight of its ground-truth class (as F.cross_entropy's `weight` does).
    Dice uses sigmoid probabilities, never thresholded, so that it has a gradient.
    """
    check_channels(logits, num_classes, head="sigmoid")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits, target = logits.float(), target.long()
        valid = valid_pixels(target, num_classes)
        one_hot = one_hot_channels(target, logits.shape[1])
        pixel_weights = None
        if weighted_bce and class_weights is not None:
            safe_target = torch.where(valid, target, 0)
            pixel_weights = class_weights.float()[safe_target].unsqueeze(1)
        valid = valid.unsqueeze(1)
        bce = masked_bce(logits, one_hot, valid, pixel_weights)
        dice = soft_dice_per_channel(torch.sigmoid(logits), one_hot, valid, smooth)
        # With K == 1 the one channel is class 1: nothing to weigh against.
        channel_weights = class_weights if logits.shape[1] > 1 else None
        return bce_weight * bce + (1.0 - bce_weight) * dice_term(dice, channel_weights, dice_form)


def cross_entropy_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    class_weights: torch.Tensor | None = None,
    dice_weight: float = 0.0,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Softmax cross-entropy (+ dice_weight * (1 - weighted soft Dice of softmax probabilities)).

    logits (B, C, H, W); target (B, H, W). Equals F.cross_entropy(logits, target,
    weight=class_weights, ignore_index=IGNORE_INDEX) (mean over the weights of valid pixels),
    except that a batch without valid pixels gives 0 instead of NaN. class_weights (C,) also
    weigh the Dice channels.
    """
    check_channels(logits, num_classes, head="softmax")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits, target = logits.float(), target.long()
        valid = valid_pixels(target, num_classes)
        weights = None if class_weights is None else class_weights.float()
        safe_target = torch.where(valid, target, IGNORE_INDEX)
        total = F.cross_entropy(
            logits, safe_target, weight=weights, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        if weights is None:
            denominator = valid.sum().float()
        else:
            denominator = torch.where(valid, weights[torch.where(valid, target, 0)], 0.0).sum()
        loss = total / denominator.clamp_min(torch.finfo(torch.float32).tiny)
        if dice_weight:
            probs = torch.softmax(logits, dim=1)
            one_hot = one_hot_channels(target, num_classes)
            dice = soft_dice_per_channel(probs, one_hot, valid.unsqueeze(1), smooth)
            loss = loss + dice_weight * dice_term(dice, weights, "one_minus")
        return loss


def check_channels(logits: torch.Tensor, num_classes: int, head: str) -> None:
    """Raise UserError unless logits (B, K, H, W) have the channels `head` needs for C classes."""
    if logits.dim() != 4:
        raise UserError(f"logits must be (B, K, H, W), got shape {tuple(logits.shape)}")
    channels = logits.shape[1]
    if channels == num_classes:
        return
    if head == "sigmoid" and num_classes == 2 and channels == 1:
        return
    if head == "softmax" and num_classes == 2 and channels == 1:
        raise UserError(
            "the softmax head ('ce') needs 2 output channels for a binary scheme, the model "
            "has 1: use loss 'bce_dice' for a single-channel model, or build it with 2 outputs"
        )
    raise UserError(
        f"the model has {channels} output channels but the loss expects {num_classes} classes "
        f"({head} head): build the model with scheme.num_outputs('{head}') channels"
    )


def class_weights_from_pixel_counts(
    pixel_counts: Sequence[int] | np.ndarray | torch.Tensor, method: str = "inverse_log"
) -> torch.Tensor:
    """Class weights (C,) float32 from pixel counts per class (C,), mean 1 over present classes.

    "inverse_log" (ENet): 1 / ln(1.02 + freq); "median_frequency": median(freq) / freq, the
    median over present classes (SegNet's form, with freq taken over all pixels rather than
    over the images where the class appears, since only pixel counts are given).
    freq = count / total count. Classes with no pixel get weight 0 (nothing to weigh).
    """
    if method not in WEIGHT_METHODS:
        raise UserError(f"unknown class weight method '{method}': use {', '.join(WEIGHT_METHODS)}")
    counts = np.asarray(torch.as_tensor(pixel_counts).cpu(), dtype=np.float64).reshape(-1)
    if counts.size == 0 or (counts < 0).any() or not np.isfinite(counts).all():
        raise UserError(f"pixel counts must be finite and non-negative, got {counts.tolist()}")
    if counts.sum() == 0:
        raise UserError("no labelled pixel in the training split: cannot compute class weights")
    present = counts > 0
    freq = counts / counts.sum()
    weights = np.zeros_like(freq)
    if method == "inverse_log":
        weights[present] = 1.0 / np.log(1.02 + freq[present])
    else:
        weights[present] = np.median(freq[present]) / freq[present]
    weights[present] /= weights[present].mean()
    return torch.as_tensor(weights, dtype=torch.float32)


# --------------------------------------------------------------------------- thin modules


def _check_smooth(smooth: float) -> None:
    # smooth > 0 keeps the Dice of a channel absent from both sides at 1, not 0 / 0.
    if not smooth > 0:
        raise UserError(f"smooth must be > 0, got {smooth}: the usual value is 1")


def _weights_buffer(class_weights, num_classes: int) -> torch.Tensor | None:
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=torch.float32).detach().cpu().reshape(-1)
    if weights.numel() != num_classes:
        raise UserError(
            f"class_weights has {weights.numel()} values for {num_classes} classes: give one "
            "weight per class"
        )
    if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise UserError(
            f"class_weights must be finite, non-negative and not all 0, got {weights.tolist()}"
        )
    return weights


class BCEDiceLoss(nn.Module):
    """Per-channel sigmoid BCE + soft Dice ("bce_dice"); see `bce_dice_loss`."""

    def __init__(
        self,
        num_classes: int,
        bce_weight: float = 0.8,
        dice_form: str = "log",
        class_weights: Sequence[float] | torch.Tensor | None = None,
        weighted_bce: bool = False,
        smooth: float = 1.0,
    ) -> None:
        super().__init__()
        if dice_form not in DICE_FORMS:
            raise UserError(f"unknown dice_form '{dice_form}': use {', '.join(DICE_FORMS)}")
        if not 0.0 <= bce_weight <= 1.0:
            raise UserError(f"bce_weight must lie in [0, 1], got {bce_weight}")
        _check_smooth(smooth)
        self.num_classes = num_classes
        self.bce_weight = bce_weight
        self.dice_form = dice_form
        self.weighted_bce = weighted_bce
        self.smooth = smooth
        self.register_buffer("class_weights", _weights_buffer(class_weights, num_classes))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return bce_dice_loss(
            logits,
            target,
            self.num_classes,
            bce_weight=self.bce_weight,
            dice_form=self.dice_form,
            class_weights=self.class_weights,
            weighted_bce=self.weighted_bce,
            smooth=self.smooth,
        )


class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy with ignore and class weights, optional soft Dice ("ce")."""

    def __init__(
        self,
        num_classes: int,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        dice_weight: float = 0.0,
        smooth: float = 1.0,
    ) -> None:
        super().__init__()
        if dice_weight < 0:
            raise UserError(f"dice_weight must be >= 0, got {dice_weight}")
        _check_smooth(smooth)
        self.num_classes = num_classes
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.register_buffer("class_weights", _weights_buffer(class_weights, num_classes))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy_loss(
            logits,
            target,
            self.num_classes,
            class_weights=self.class_weights,
            dice_weight=self.dice_weight,
            smooth=self.smooth,
        )


LOSSES: dict[str, type[nn.Module]] = {"bce_dice": BCEDiceLoss, "ce": CrossEntropyLoss}
LOSS_HEADS = {"bce_dice": "sigmoid", "ce": "softmax"}


def _check_name(name: str) -> None:
    if name not in LOSSES:
        raise UserError(f"unknown loss '{name}': use one of {', '.join(LOSSES)}")


def loss_head(name: str) -> str:
    """The model head a loss needs: "sigmoid" (one channel per class) or "softmax"."""
    _check_name(name)
    return LOSS_HEADS[name]


def loss_options(name: str) -> dict[str, object]:
    """The options a loss takes in `loss.options`, with defaults (class_weights is its own key)."""
    _check_name(name)
    signature = inspect.signature(LOSSES[name].__init__)
    return {
        key: parameter.default
        for key, parameter in signature.parameters.items()
        if key not in ("self", "num_classes", "class_weights")
    }


def build_loss(name: str, num_classes: int, **options) -> nn.Module:
    """The loss `name` ("bce_dice" | "ce") for `num_classes` classes; options as its __init__."""
    _check_name(name)
    loss_class = LOSSES[name]
    valid = [p for p in inspect.signature(loss_class.__init__).parameters if p != "self"]
    valid.remove("num_classes")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for loss '{name}': valid options are "
            f"{', '.join(valid)}"
        )
    return loss_class(num_classes, **options)
