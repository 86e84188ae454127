"""Known-answer tests of the losses on hand-written tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from segmentation.data.labels import IGNORE_INDEX
from segmentation.errors import UserError
from segmentation.losses import (
    BCEDiceLoss,
    CrossEntropyLoss,
    bce_dice_loss,
    build_loss,
    class_weights_from_pixel_counts,
    cross_entropy_loss,
    loss_head,
)

I = IGNORE_INDEX  # noqa: E741


def _logits(seed: int, shape=(2, 3, 4, 5)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _target(seed: int, classes: int = 3, shape=(2, 4, 5), ignored: float = 0.25) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes, shape, generator=generator)
    target[torch.rand(shape, generator=generator) < ignored] = IGNORE_INDEX
    return target


def _manual_bce_dice(logits, target, bce_weight, form, smooth=1.0, dice_weights=None):
    """Loops over pixels and channels: the definition, written plainly."""
    batch, channels, height, width = logits.shape
    bce_sum, count = 0.0, 0
    inter = [0.0] * channels
    psum = [0.0] * channels
    tsum = [0.0] * channels
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                t = int(target[b, y, x])
                if t == IGNORE_INDEX:
                    continue
                count += 1
                for c in range(channels):
                    is_c = float(t == 1) if channels == 1 else float(t == c)
                    z = float(logits[b, c, y, x])
                    p = 1 / (1 + math.exp(-z))
                    bce_sum += -(is_c * math.log(p) + (1 - is_c) * math.log(1 - p))
                    inter[c] += p * is_c
                    psum[c] += p
                    tsum[c] += is_c
    bce = bce_sum / (count * channels)
    dice = [(2 * inter[c] + smooth) / (psum[c] + tsum[c] + smooth) for c in range(channels)]
    weights = dice_weights or [1.0] * channels
    weighted = sum(w * d for w, d in zip(weights, dice)) / sum(weights)
    term = -math.log(weighted) if form == "log" else 1 - weighted
    return bce_weight * bce + (1 - bce_weight) * term


@pytest.mark.parametrize("form", ["log", "one_minus"])
def test_bce_dice_equals_manual_formula(form):
    logits, target = _logits(0).double(), _target(1)
    loss = bce_dice_loss(logits, target, 3, bce_weight=0.8, dice_form=form)
    assert loss.item() == pytest.approx(_manual_bce_dice(logits, target, 0.8, form), rel=1e-5)


def test_masked_bce_equals_masked_f_bce():
    logits, target = _logits(2), _target(3)
    loss = bce_dice_loss(logits, target, 3, bce_weight=1.0)
    valid = target != IGNORE_INDEX
    one_hot = F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float()
    bce = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none")
    expected = bce.permute(0, 2, 3, 1)[valid].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_weighted_dice_uses_normalized_class_weights():
    logits, target = _logits(4).double(), _target(5)
    weights = [1.0, 2.0, 5.0]
    loss = bce_dice_loss(logits, target, 3, bce_weight=0.3, class_weights=torch.tensor(weights))
    expected = _manual_bce_dice(logits, target, 0.3, "log", dice_weights=weights)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # Scaling the weights changes nothing: they are normalized.
    scaled = bce_dice_loss(
        logits, target, 3, bce_weight=0.3, class_weights=torch.tensor(weights) * 7
    )
    assert scaled.item() == pytest.approx(loss.item(), rel=1e-6)


def test_weighted_bce_weighs_pixels_by_their_class():
    logits = torch.tensor([[[[2.0, -1.0, 0.5]]]])  # (1, 1, 1, 3): binary, one channel
    target = torch.tensor([[[1, 0, I]]])
    weights = torch.tensor([1.0, 3.0])
    loss = bce_dice_loss(
        logits, target, 2, bce_weight=1.0, class_weights=weights, weighted_bce=True
    )
    bce_pos = -math.log(1 / (1 + math.exp(-2.0)))
    bce_neg = -math.log(1 - 1 / (1 + math.exp(1.0)))
    assert loss.item() == pytest.approx((3 * bce_pos + 1 * bce_neg) / 4, rel=1e-6)


def test_dice_gradient_is_not_zero():
    logits = _logits(6).requires_grad_()
    loss = bce_dice_loss(logits, _target(7), 3, bce_weight=0.0)
    loss.backward()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["bce_dice", "ce"])
def test_ignored_pixels_count_for_nothing(name):
    target = _target(8, ignored=0.4)
    ignored = (target == IGNORE_INDEX).unsqueeze(1).expand(-1, 3, -1, -1)
    loss_fn = build_loss(name, 3, dice_weight=0.5) if name == "ce" else build_loss(name, 3)

    def run(logits):
        logits = logits.clone().requires_grad_()
        loss = loss_fn(logits, target)
        loss.backward()
        return loss.detach(), logits.grad

    base = _logits(9)
    changed = base.clone()
    changed[ignored] = torch.randn(int(ignored.sum())) * 50
    loss_a, grad_a = run(base)
    loss_b, grad_b = run(changed)
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-6)
    assert torch.allclose(grad_a, grad_b, atol=1e-8)
    assert (grad_a[ignored] == 0).all() and (grad_b[ignored] == 0).all()
    assert grad_a[~ignored].abs().sum() > 0


def test_stray_target_values_are_ignored():
    logits = _logits(10)
    target = _target(11)
    stray = target.clone()
    stray[target == IGNORE_INDEX] = 7  # a label the scheme does not know
    for loss_fn in (BCEDiceLoss(3), CrossEntropyLoss(3)):
        assert loss_fn(logits, stray).item() == pytest.approx(loss_fn(logits, target).item())


def test_binary_single_channel_equals_manual():
    logits = _logits(12, (2, 1, 3, 4)).double()
    target = _target(13, classes=2, shape=(2, 3, 4))
    loss = BCEDiceLoss(2)(logits, target)
    assert loss.item() == pytest.approx(_manual_bce_dice(logits, target, 0.8, "log"), rel=1e-5)


def test_all_ignored_gives_zero_bce_not_nan():
    logits = _logits(14)
    target = torch.full((2, 4, 5), IGNORE_INDEX)
    assert bce_dice_loss(logits, target, 3, bce_weight=1.0).item() == 0.0
    assert cross_entropy_loss(logits, target, 3).item() == 0.0


@pytest.mark.parametrize("weighted", [False, True])
def test_ce_equals_f_cross_entropy(weighted):
    logits, target = _logits(15), _target(16)
    weights = torch.tensor([0.5, 2.0, 1.0]) if weighted else None
    loss = CrossEntropyLoss(3, class_weights=weights)(logits, target)
    expected = F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE_INDEX)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_ce_dice_term_adds_one_minus_soft_dice():
    logits, target = _logits(17), _target(18)
    loss = cross_entropy_loss(logits, target, 3, dice_weight=0.5)
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    probs = torch.softmax(logits, 1) * valid
    one_hot = F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    dice = (2 * (probs * one_hot).sum(dims) + 1) / (probs.sum(dims) + one_hot.sum(dims) + 1)
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    assert loss.item() == pytest.approx((ce + 0.5 * (1 - dice.mean())).item(), rel=1e-6)


def test_softmax_rejects_single_channel():
    with pytest.raises(UserError, match="2 output channels"):
        CrossEntropyLoss(2)(_logits(19, (1, 1, 2, 2)), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(UserError, match="output channels"):
        BCEDiceLoss(3)(_logits(20, (1, 2, 2, 2)), torch.zeros(1, 2, 2, dtype=torch.long))


@pytest.mark.parametrize("name", ["bce_dice", "ce"])
def test_autocast_and_channels_last(name):
    logits, target = _logits(21), _target(22)
    loss_fn = build_loss(name, 3)
    reference = loss_fn(logits, target)
    channels_last = loss_fn(logits.contiguous(memory_format=torch.channels_last), target)
    assert channels_last.item() == pytest.approx(reference.item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss_fn(logits.bfloat16(), target)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(reference.item(), rel=2e-2)


def test_class_weights_from_pixel_counts_inverse_log():
    counts = [600, 300, 100, 0]
    weights = class_weights_from_pixel_counts(counts, "inverse_log")
    raw = [1 / math.log(1.02 + f) for f in (0.6, 0.3, 0.1)]
    mean = sum(raw) / 3
    expected = [w / mean for w in raw] + [0.0]
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    assert weights[:3].mean().item() == pytest.approx(1.0)


def test_class_weights_from_pixel_counts_median_frequency():
    weights = class_weights_from_pixel_counts(torch.tensor([500, 250, 250, 0]), "median_frequency")
    # freq 0.5, 0.25, 0.25; median 0.25 -> raw 0.5, 1, 1; mean 2.5/3
    expected = [0.5 * 1.2, 1.2, 1.2, 0.0]
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)


def test_class_weights_errors():
    with pytest.raises(UserError, match="inverse_log, median_frequency"):
        class_weights_from_pixel_counts([1, 2], "sqrt")
    with pytest.raises(UserError, match="no labelled pixel"):
        class_weights_from_pixel_counts([0, 0])
    with pytest.raises(UserError, match="non-negative"):
        class_weights_from_pixel_counts([1, -2])


def test_build_loss_and_heads():
    assert isinstance(build_loss("bce_dice", 8, bce_weight=0.5), BCEDiceLoss)
    assert isinstance(build_loss("ce", 8, class_weights=None), CrossEntropyLoss)
    assert loss_head("bce_dice") == "sigmoid" and loss_head("ce") == "softmax"
    with pytest.raises(UserError, match="bce_dice, ce"):
        build_loss("focal", 8)
    with pytest.raises(UserError, match="valid options are .*bce_weight"):
        build_loss("bce_dice", 8, bce_wieght=0.5)
    with pytest.raises(UserError, match="bce_dice, ce"):
        loss_head("dice")
    with pytest.raises(UserError, match="one weight per class"):
        build_loss("ce", 3, class_weights=[1.0, 2.0])
    with pytest.raises(UserError, match="dice_form"):
        build_loss("bce_dice", 3, dice_form="square")
    with pytest.raises(UserError, match="smooth must be > 0"):
        build_loss("ce", 3, smooth=0)


def test_class_weights_move_with_the_module():
    loss_fn = build_loss("ce", 3, class_weights=torch.tensor([1.0, 2.0, 3.0]))
    assert "class_weights" in dict(loss_fn.named_buffers())
