"""Confusion-matrix metrics: hand-computed matrices, torchmetrics on random data, no host sync."""

import collections
import contextlib
import json
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

from segmentation import metrics
from segmentation.data.labels import IGNORE_INDEX
from segmentation.errors import UserError
from segmentation.metrics import (
    ConfusionMatrix,
    dice_per_class,
    iou_per_class,
    mean_score,
    pixel_accuracy,
    predictions_from_logits,
)

# rows ground truth, columns prediction; class 2 only predicted, class 3 absent from both.
HAND_CM = np.array(
    [
        [5, 1, 2, 0],
        [0, 3, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ],
    dtype=np.int64,
)


def test_hand_computed_scores():
    iou = iou_per_class(HAND_CM)
    dice = dice_per_class(HAND_CM)
    # class 0: tp 5, fp 0, fn 3; class 1: tp 3, fp 1, fn 1; class 2: tp 0, fp 3, fn 0.
    assert iou[:3].tolist() == pytest.approx([5 / 8, 3 / 5, 0.0])
    assert dice[:3].tolist() == pytest.approx([10 / 13, 6 / 8, 0.0])
    assert math.isnan(iou[3]) and math.isnan(dice[3])
    assert mean_score(iou) == pytest.approx((5 / 8 + 3 / 5 + 0) / 3)
    assert pixel_accuracy(HAND_CM) == pytest.approx(8 / 12)


def test_no_pixels_gives_nan_everywhere():
    empty = np.zeros((3, 3), np.int64)
    assert np.isnan(iou_per_class(empty)).all()
    assert math.isnan(mean_score(iou_per_class(empty)))
    assert math.isnan(pixel_accuracy(empty))


def test_compute_reports_none_for_absent_classes():
    matrix = ConfusionMatrix(4, "cpu")
    matrix.matrix += torch.from_numpy(HAND_CM)
    result = matrix.compute(["a", "b", "c", "d"])
    assert set(result) == {"mIoU", "mDice", "pixel_accuracy", "per_class"}
    assert result["per_class"]["d"] == {"iou": None, "dice": None}
    assert result["per_class"]["c"] == {"iou": 0.0, "dice": 0.0}
    assert result["mIoU"] == pytest.approx((5 / 8 + 3 / 5) / 3)
    json.dumps(result, allow_nan=False)  # valid JSON
    empty = ConfusionMatrix(2, "cpu").compute(["x", "y"])
    assert empty["mIoU"] is None and empty["pixel_accuracy"] is None


def test_update_counts_hand_written_pixels():
    prediction = torch.tensor([[[0, 1, 2], [1, 1, 0]]])
    target = torch.tensor([[[0, 1, IGNORE_INDEX], [2, 7, 0]]])  # 7: out of the scheme
    matrix = ConfusionMatrix(3, "cpu")
    matrix.update(prediction, target)
    expected = torch.zeros(3, 3, dtype=torch.int64)
    expected[0, 0] = 2
    expected[1, 1] = 1
    expected[2, 1] = 1
    assert torch.equal(matrix.matrix, expected)
    matrix.update(prediction, target)
    assert torch.equal(matrix.matrix, 2 * expected)
    matrix.reset()
    assert matrix.matrix.sum() == 0


@pytest.mark.parametrize("classes", [2, 5])
def test_against_torchmetrics(classes):
    generator = torch.Generator().manual_seed(classes)
    shape = (3, 17, 23)
    target = torch.randint(0, classes, shape, generator=generator)
    prediction = torch.where(
        torch.rand(shape, generator=generator) < 0.6,
        target,
        torch.randint(0, classes, shape, generator=generator),
    )
    target[torch.rand(shape, generator=generator) < 0.2] = IGNORE_INDEX
    matrix = ConfusionMatrix(classes, "cpu")
    for image in range(shape[0]):  # accumulate over several updates
        matrix.update(prediction[image : image + 1], target[image : image + 1])
    cm = matrix.matrix
    jaccard = MulticlassJaccardIndex(classes, average=None, ignore_index=IGNORE_INDEX)
    f1 = MulticlassF1Score(classes, average=None, ignore_index=IGNORE_INDEX)
    expected_iou = jaccard(prediction, target).double().numpy()
    expected_dice = f1(prediction, target).double().numpy()
    assert iou_per_class(cm) == pytest.approx(expected_iou, rel=1e-6)
    assert dice_per_class(cm) == pytest.approx(expected_dice, rel=1e-6)
    valid = target != IGNORE_INDEX
    accuracy = (prediction[valid] == target[valid]).double().mean().item()
    assert pixel_accuracy(cm) == pytest.approx(accuracy)


def test_scatter_path_counts_like_bincount():
    """The accelerator path (scatter_add_) runs on the CPU too: it must count the same."""
    index = torch.randint(0, 17, (3, 40, 50), generator=torch.Generator().manual_seed(3))
    expected = torch.bincount(index.reshape(-1), minlength=20)
    assert torch.equal(metrics.scatter_count(index.int(), 20), expected)
    assert torch.equal(metrics.count_bins(index.int(), 20), expected)
    for copies in (2, 7, 128):  # spread over histogram copies (a count not dividing 6000 too)
        assert torch.equal(metrics.scatter_count(index.int(), 20, copies), expected)


def test_predictions_from_logits():
    single = torch.tensor([[[[-0.5, 0.0, 2.0]]]])  # (1, 1, 1, 3)
    assert predictions_from_logits(single).tolist() == [[[0, 0, 1]]]
    multi = torch.tensor([[[[0.1, 3.0]], [[0.5, -1.0]], [[0.2, 0.0]]]])  # (1, 3, 1, 2)
    prediction = predictions_from_logits(multi.contiguous(memory_format=torch.channels_last))
    assert prediction.tolist() == [[[1, 0]]]
    assert prediction.dtype == torch.int64


def test_shape_mismatch_is_a_user_error():
    with pytest.raises(UserError, match="differ in shape"):
        ConfusionMatrix(3, "cpu").update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3))


def test_all_reduce_without_process_group_is_a_no_op():
    matrix = ConfusionMatrix(2, "cpu")
    matrix.matrix += 3
    matrix.all_reduce()
    assert matrix.matrix.tolist() == [[3, 3], [3, 3]]


# Tensor methods that read values on the host: on an accelerator each waits for the device.
HOST_READS = (
    "item",
    "tolist",
    "numpy",
    "cpu",
    "nonzero",
    "__array__",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
)


@contextlib.contextmanager
def counting_host_reads(monkeypatch) -> Iterator[collections.Counter]:
    """Count the calls of HOST_READS on any tensor inside the block."""
    calls = collections.Counter()
    with monkeypatch.context() as patch:
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def counted(*args, _name=name, _original=original, **kwargs):
                calls[_name] += 1
                return _original(*args, **kwargs)

            patch.setattr(torch.Tensor, name, counted)
        yield calls


def update_inputs(classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (2, classes, 8, 9) and a target with ignored and unknown values."""
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, classes, 8, 9, generator=generator)
    target = torch.randint(0, classes, (2, 8, 9), generator=generator)
    target[0, 0] = IGNORE_INDEX
    target[1, 1] = classes + 3
    return logits, target


def test_the_host_read_counter_sees_such_calls(monkeypatch):
    tensor = torch.ones(2)
    with counting_host_reads(monkeypatch) as calls:
        bool(tensor[0])
        int(tensor[0])
        tensor.sum().item()
        tensor.cpu().tolist()
    assert calls == {"__bool__": 1, "__int__": 1, "item": 1, "cpu": 1, "tolist": 1}
    assert bool(torch.ones(())) and calls["__bool__"] == 1  # restored after the block


def test_update_path_reads_no_tensor_value_on_the_host(monkeypatch):
    """predictions_from_logits and ConfusionMatrix.update run on every training step: they
    must never read a value on the host (.item(), bool(), .tolist()...), a device sync."""
    logits, target = update_inputs()
    matrix = ConfusionMatrix(4, "cpu")
    with counting_host_reads(monkeypatch) as calls:
        matrix.update(predictions_from_logits(logits), target)
        matrix.update(predictions_from_logits(logits[:, :1]), target)  # a sigmoid head
    assert calls == {}
    counted = (target >= 0) & (target < 4)
    assert matrix.matrix.sum() == 2 * counted.sum()


def test_update_path_runs_without_values_on_the_accelerator_path():
    """On the meta device tensors have no values: any read of one (.item(), bool(), a boolean
    mask, nonzero, bincount's min and max) raises. It takes the accelerator path of the
    update (scatter_add_, not bincount), which CPU tests do not run otherwise."""
    logits, target = update_inputs()
    matrix = ConfusionMatrix(4, "meta")
    matrix.update(predictions_from_logits(logits.to("meta")), target.to("meta"))
    matrix.update(predictions_from_logits(logits[:, :1].to("meta")), target.to("meta"))
    assert matrix.matrix.device.type == "meta" and matrix.matrix.shape == (4, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_update_path_never_synchronizes_a_cuda_device():
    logits, target = update_inputs()
    expected = ConfusionMatrix(4, "cpu")
    expected.update(predictions_from_logits(logits), target)
    matrix = ConfusionMatrix(4, "cuda")
    logits, target = logits.cuda(), target.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        matrix.update(predictions_from_logits(logits), target)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(matrix.matrix.cpu(), expected.matrix)


def test_per_image_confusion_counts_each_image_as_the_matrix_does():
    from segmentation.metrics import per_image_confusion

    generator = torch.Generator().manual_seed(4)
    prediction = torch.randint(0, 4, (3, 9, 11), generator=generator)
    target = torch.randint(0, 5, (3, 9, 11), generator=generator)  # 4: outside the scheme
    target[1, :4] = 255  # ignored
    counts = per_image_confusion(prediction, target, 4)
    assert counts.shape == (3, 4, 4) and counts.dtype == torch.int64
    total = ConfusionMatrix(4, "cpu")
    for image in range(3):
        alone = ConfusionMatrix(4, "cpu")
        alone.update(prediction[image : image + 1], target[image : image + 1])
        assert torch.equal(counts[image], alone.matrix)
        total.update(prediction[image : image + 1], target[image : image + 1])
    assert torch.equal(counts.sum(dim=0), total.matrix)
    both = metrics.PerImageConfusionMatrix(4, "cpu")
    both.update(prediction, target)
    assert torch.equal(both.last, counts) and torch.equal(both.matrix, total.matrix)
    assert int(counts[1].sum()) == int((target[1] < 4).sum())
