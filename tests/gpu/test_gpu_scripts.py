"""evaluate.py and inference.py on the GPU, and their agreement with the CPU (the two sides
run side by side); KITTI road trained and scored on the device."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpu_runs import PYTHON, epochs_logged

pytestmark = pytest.mark.gpu

SCORE_TOLERANCE = 0.01  # mIoU and pixel accuracy, absolute
PIXEL_AGREEMENT = 0.99  # share of pixels with the same class in the label-id maps
VAL_IMAGES = 6  # of the 64x128 Cityscapes tree
FRAMES = 4  # of its demoVideo sequence stuttgart_00


def evaluate_command(bf16_run: Path, data_root: Path, device: str, scores: Path, *extra: str):
    return [
        *(PYTHON, "evaluate.py", "--checkpoint", str(bf16_run / "best.pt")),
        *("--data-root", str(data_root), "--device", device, "--workers", "2"),
        *("--output-json", str(scores), *extra),
    ]


def read_scores(path: Path, images: int | None = None) -> dict:
    """evaluate.py's JSON, checked: a finite mIoU over `images` images."""
    scores = json.loads(path.read_text())
    assert math.isfinite(scores.get("mIoU") or math.nan), f"mIoU {scores.get('mIoU')} in {path}"
    if images is not None:
        assert scores["images"] == images, f"{scores['images']} images in {path}, not {images}"
    return scores


def test_evaluate_on_the_gpu_agrees_with_the_cpu(
    bf16_run, cityscapes_root, device, script, out, record_property
):
    runs = {
        side: script(
            f"evaluate_{side}",
            evaluate_command(bf16_run, cityscapes_root, side, out / f"eval_{side}.json"),
        )
        for side in dict.fromkeys((device, "cpu"))  # the device, and the CPU to compare with
    }
    for run in runs.values():
        run.wait()
    gpu = read_scores(out / f"eval_{device}.json", VAL_IMAGES)
    if device == "cpu":
        record_property("detail", f"mIoU {gpu['mIoU']:.4f}; no GPU: nothing to compare")
        return
    cpu = read_scores(out / "eval_cpu.json", VAL_IMAGES)
    per_class = [
        abs(scores["iou"] - gpu["per_class"][name]["iou"])
        for name, scores in cpu["per_class"].items()
        if scores["iou"] is not None and gpu["per_class"][name]["iou"] is not None
    ]
    record_property(
        "detail",
        f"mIoU cpu {cpu['mIoU']:.5f} gpu {gpu['mIoU']:.5f}; pixel accuracy cpu "
        f"{cpu['pixel_accuracy']:.5f} gpu {gpu['pixel_accuracy']:.5f}; largest per-class IoU "
        f"gap {max(per_class, default=0.0):.4f}",
    )
    for key in ("mIoU", "pixel_accuracy"):
        assert abs(cpu[key] - gpu[key]) <= SCORE_TOLERANCE, f"{key}: cpu {cpu[key]} gpu {gpu[key]}"


@pytest.mark.gpu(quick=False)
def test_evaluate_with_tta_sliding_window_and_export(
    bf16_run, cityscapes_root, device, script, out, work, record_property
):
    export = work / "export"
    command = evaluate_command(
        bf16_run, cityscapes_root, device, out / "eval_tta.json",
        *("--tta", "multiscale", "--sliding-window", "--drop-clusters", "3"),
        *("--export-dir", str(export), "--export-color"),
    )  # fmt: skip
    script("evaluate_tta", command).wait()
    scores = read_scores(out / "eval_tta.json", VAL_IMAGES)
    exported = len(list((export / "labelIds").rglob("*.png")))
    assert exported == VAL_IMAGES, f"{exported} label-id PNGs exported, not {VAL_IMAGES}"
    record_property("detail", f"mIoU {scores['mIoU']:.4f}; {exported} label-id PNGs exported")


def label_maps(folder: Path) -> dict[str, Path]:
    return {path.name: path for path in folder.rglob("*_labelIds.png")}


def test_inference_on_the_gpu_agrees_with_the_cpu(
    bf16_run, cityscapes_root, device, script, work, record_property
):
    frames = cityscapes_root / "leftImg8bit" / "demoVideo" / "stuttgart_00"

    def inference(side: str, *save: str):
        return script(
            f"inference_{side}",
            [
                *(PYTHON, "inference.py", "--checkpoint", str(bf16_run / "best.pt")),
                *("--input", str(frames), "--output", str(work / f"render_{side}")),
                *("--device", side, "--batch-size", "4", "--workers", "2", "--save", *save),
            ],
        )

    runs = [inference(device, "overlay", "color", "labelIds")]
    if device != "cpu":
        runs.append(inference("cpu", "labelIds"))
    for run in runs:
        run.wait()
    rendered = len(list((work / f"render_{device}").rglob("*.png")))
    assert rendered == 3 * FRAMES, f"{rendered} PNGs rendered, not {3 * FRAMES}"
    if device == "cpu":
        record_property("detail", f"{rendered} PNGs; no GPU: nothing to compare")
        return
    gpu, cpu = label_maps(work / "render_cuda"), label_maps(work / "render_cpu")
    assert cpu.keys() == gpu.keys() and len(cpu) == FRAMES, f"cpu {sorted(cpu)} gpu {sorted(gpu)}"
    same = total = 0
    for name in cpu:
        a = cv2.imread(str(cpu[name]), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(gpu[name]), cv2.IMREAD_UNCHANGED)
        assert a is not None and b is not None and a.shape == b.shape, name
        same += int(np.count_nonzero(a == b))
        total += a.size
    record_property("detail", f"{rendered} PNGs; {same / total:.4%} of pixels as on the CPU")
    assert same / total >= PIXEL_AGREEMENT


@pytest.mark.gpu(quick=False)
def test_kitti_road_training_and_evaluation(kitti_run, device, script, out, record_property):
    trained = epochs_logged(kitti_run, 1)
    scores_path = out / "eval_kitti.json"
    script(
        "evaluate_kitti",
        [
            *(PYTHON, "evaluate.py", "--checkpoint", str(kitti_run / "last.pt")),
            *("--device", device, "--tta", "hflip", "--workers", "2"),
            *("--output-json", str(scores_path)),
        ],
    ).wait()
    overall = (read_scores(scores_path).get("kitti_road") or {}).get("overall") or {}
    assert math.isfinite(overall.get("MaxF", math.nan)), f"no overall MaxF in {scores_path}"
    record_property("detail", f"{trained}; overall MaxF {overall['MaxF']:.3f}")
