"""Test-time augmentation, sliding windows and the small-cluster clean-up against hand
computations on toy models whose outputs are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from segmentation.errors import UserError
from segmentation.prediction.predict import drop_small_clusters, parse_scales, predict_probabilities

pytestmark = pytest.mark.usefixtures("one_thread")


def pointwise_model(outputs: int = 3) -> nn.Module:
    """1x1 convolutions only: equivariant to any flip, blind to how the image is tiled."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, outputs, 1)).eval()


def asymmetric_model() -> nn.Module:
    torch.manual_seed(1)
    model = nn.Conv2d(3, 3, 3, padding=1).eval()
    with torch.no_grad():
        model.weight[:, :, :, 0] += 1.0  # looks at the left neighbour much more than the right
    return model


class SizeDependent(nn.Module):
    """Logits [0, h / 16, -h / 32] everywhere, h the input height; records the input sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = images.shape
        self.sizes.append((height, width))
        logits = torch.tensor([0.0, height / 16, -height / 32])
        return logits.view(1, 3, 1, 1).expand(batch, 3, height, width).clone()


def predict(model, images, head="softmax", **options):
    options.setdefault("base_size", tuple(images.shape[-2:]))
    options.setdefault("divisor", 1)
    return predict_probabilities(model, images, head, **options)


def images_of(height: int, width: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize(("head", "outputs"), [("softmax", 3), ("sigmoid", 3), ("sigmoid", 1)])
def test_hflip_is_exact_for_a_flip_equivariant_model(head, outputs):
    model, images = pointwise_model(outputs), images_of(16, 24)
    plain = predict(model, images, head, tta="none")
    assert plain.shape == (2, max(outputs, 2), 16, 24)
    assert torch.allclose(predict(model, images, head, tta="hflip"), plain, atol=1e-7)


def test_hflip_is_the_mean_of_the_two_views():
    model, images = asymmetric_model(), images_of(16, 24)
    with torch.no_grad():
        straight = model(images).softmax(dim=1)
        mirrored = model(images.flip(-1)).softmax(dim=1).flip(-1)
    flipped = predict(model, images, tta="hflip")
    assert (flipped - straight).abs().max() > 1e-2  # the model is not equivariant
    assert torch.allclose(flipped, (straight + mirrored) / 2, atol=1e-6)


def _softmax(logits: list[float]) -> list[float]:
    exps = [math.exp(value) for value in logits]
    return [value / sum(exps) for value in exps]


@pytest.mark.parametrize("merge", ["mean", "gmean", "tsharpen"])
def test_multiscale_merges(merge):
    model, images = SizeDependent(), images_of(40, 80, batch=1)
    merged = predict(
        model,
        images,
        base_size=(32, 64),
        divisor=16,
        tta="multiscale",
        scales=[0.7, 1.0, 1.5],
        merge=merge,
    )
    # 32x64 x 0.7 = 22.4x44.8 -> multiples of 16: 16x48; x 1.5 -> 48x96; each view and its mirror
    assert model.sizes == [(16, 48), (16, 48), (32, 64), (32, 64), (48, 96), (48, 96)]
    views = [_softmax([0.0, height / 16, -height / 32]) for height in (16, 32, 48)]
    if merge == "mean":
        expected = [sum(view[c] for view in views) / 3 for c in range(3)]
    elif merge == "gmean":
        expected = [math.exp(sum(math.log(view[c]) for view in views) / 3) for c in range(3)]
    else:  # the mean of p ** 0.5
        expected = [sum(math.sqrt(view[c]) for view in views) / 3 for c in range(3)]
    assert merged.shape == (1, 3, 40, 80)  # back at the frame's size
    for c in range(3):
        assert torch.allclose(merged[0, c], torch.tensor(expected[c]), atol=1e-6), c


@pytest.mark.parametrize("tta", ["none", "hflip"])
def test_sliding_window_of_a_pointwise_model_equals_the_whole_image(tta):
    model, images = pointwise_model(), images_of(64, 96)
    seen = []
    model.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    windowed = predict(model, images, base_size=(32, 48), divisor=16, sliding_window=True, tta=tta)
    assert seen and set(seen) == {(32, 48)}  # windows only, never the whole image
    assert len(seen) == (3 * 3) * (2 if tta == "hflip" else 1)  # stride 21x32: 3x3 windows
    with torch.no_grad():
        whole = model(images).softmax(dim=1)
    assert torch.allclose(windowed, whole, atol=1e-6)


ISLAND_TO_2 = (slice(1, 3), slice(1, 3))  # 2x2, next most probable class: 2
ISLAND_TO_0 = (slice(1, 3), slice(8, 10))  # 2x2, next most probable class: 0
BIG_ISLAND = (slice(6, 10), slice(4, 8))  # 4x4, next most probable class: 2


def _cluster_case():
    """A 12x12 map of class 0 with three islands of class 1, the most probable class there."""
    classes = np.zeros((12, 12), np.int64)
    probs = np.empty((3, 12, 12), np.float32)
    probs[:] = np.array([0.6, 0.3, 0.1], np.float32).reshape(3, 1, 1)
    for island, island_probs in (
        (ISLAND_TO_2, [0.2, 0.5, 0.3]),
        (ISLAND_TO_0, [0.3, 0.5, 0.2]),
        (BIG_ISLAND, [0.2, 0.5, 0.3]),
    ):
        classes[island] = 1
        probs[(slice(None), *island)] = np.array(island_probs, np.float32).reshape(3, 1, 1)
    return classes, probs


def test_drop_small_clusters_gives_small_islands_their_next_class():
    classes, probs = _cluster_case()
    original = classes.copy()
    cleaned = drop_small_clusters(classes, probs, min_side=3)
    assert np.array_equal(classes, original)  # a new map
    assert (cleaned[ISLAND_TO_2] == 2).all()  # 4 pixels < 3x3: the next most probable class
    assert (cleaned[ISLAND_TO_0] == 0).all()  # ... here the surrounding class: it disappears
    assert (cleaned[BIG_ISLAND] == 1).all()  # 16 pixels >= 3x3: stays
    untouched = np.ones_like(classes, bool)
    untouched[ISLAND_TO_2] = untouched[ISLAND_TO_0] = False
    assert np.array_equal(cleaned[untouched], original[untouched])
    assert np.array_equal(drop_small_clusters(classes, probs, min_side=0), original)
    assert (drop_small_clusters(classes, probs, min_side=5)[BIG_ISLAND] == 2).all()  # 16 < 25


def test_bad_options_are_user_errors():
    model, images = pointwise_model(), images_of(16, 16)
    with pytest.raises(UserError, match="hflip"):
        predict(model, images, tta="vflip")
    with pytest.raises(UserError, match="gmean"):
        predict(model, images, tta="hflip", merge="max")
    with pytest.raises(UserError, match="positive"):
        parse_scales("1.0,-0.5")
    assert parse_scales("0.5, 1,1.25") == [0.5, 1.0, 1.25]
