"""Time ConfusionMatrix.update against a model forward pass on the same batch.

The confusion matrix is updated on every training step, so it must stay a small fraction of a
forward pass (target: <= 2%). The forward stand-in is torchvision's resnet18 (the encoder of a
resnet18-FPN) on (B, 3, H, W); the update counts (B, H, W) predictions.

    python bench/bench_metrics.py [--device cpu|cuda] [--batch 2 --height 512 --width 1024]
        [--classes 20] [--repeats 5] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
import torchvision

from segmentation import metrics
from segmentation.data.labels import IGNORE_INDEX
from segmentation.metrics import ConfusionMatrix

TARGET_RATIO = 0.02


def _seconds(function: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median wall time of `function` over `repeats` runs, after one warm-up run."""

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    function()
    synchronize()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        synchronize()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def _scatter_update(matrix: ConfusionMatrix, prediction, target) -> None:
    """ConfusionMatrix.update with its accelerator counting path (scatter_add_), on this device."""
    original = metrics.count_bins
    metrics.count_bins = metrics.scatter_count
    try:
        matrix.update(prediction, target)
    finally:
        metrics.count_bins = original


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (args.batch, args.height, args.width)
    target = torch.randint(0, args.classes, shape, device=device)
    target[torch.rand(shape, device=device) < 0.1] = IGNORE_INDEX
    prediction = torch.randint(0, args.classes, shape, device=device)
    matrix = ConfusionMatrix(args.classes, device)
    model = torchvision.models.resnet18(weights=None).to(device).eval()
    images = torch.randn(args.batch, 3, args.height, args.width, device=device)

    @torch.no_grad()
    def forward() -> None:
        model(images)

    update = _seconds(lambda: matrix.update(prediction, target), device, args.repeats)
    scatter = _seconds(lambda: _scatter_update(matrix, prediction, target), device, args.repeats)
    forward_time = _seconds(forward, device, args.repeats)
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_shape": list(shape),
        "classes": args.classes,
        "update_ms": update * 1e3,
        "update_scatter_path_ms": scatter * 1e3,
        "forward_resnet18_ms": forward_time * 1e3,
        "ratio": update / forward_time,
        "ratio_scatter_path": scatter / forward_time,
        "target_ratio": TARGET_RATIO,
        "meets_target": update / forward_time <= TARGET_RATIO,
    }


def table(result: dict) -> str:
    shape = "x".join(str(size) for size in result["batch_shape"])
    return "\n".join(
        [
            f"device {result['device']} ({result['threads']} threads), batch {shape}, "
            f"{result['classes']} classes",
            "",
            "| what | ms | share of forward |",
            "|---|---|---|",
            f"| ConfusionMatrix.update | {result['update_ms']:.2f} | {result['ratio']:.2%} |",
            f"| update, scatter_add_ path (accelerators) | {result['update_scatter_path_ms']:.2f}"
            f" | {result['ratio_scatter_path']:.2%} |",
            f"| resnet18 forward | {result['forward_resnet18_ms']:.1f} | 100% |",
            "",
            f"ratio update / forward: {result['ratio']:.4f} (target <= {TARGET_RATIO}): "
            f"{'met' if result['meets_target'] else 'NOT met'}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for both timings (default: torch's); on a loaded machine 1 avoids "
        "OpenMP threads waiting for each other on busy cores",
    )
    parser.add_argument("--json", help="write the result to this JSON file")
    args = parser.parse_args(argv)
    result = run(args)
    print(table(result))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
