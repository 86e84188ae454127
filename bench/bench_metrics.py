"""Metrics: ConfusionMatrix.update per batch against our model's forward on the same batch.

The confusion matrix is updated on every evaluated batch (evaluation.loop.evaluate, in
validation and in evaluate.py), so it must stay a small share of the forward that produced the
batch: target <= 2%. The forward is our own model's in inference mode, by default the cheapest
we ship (FPN-resnet18), which makes the ratio the strictest; the update counts (B, H, W) int64
predictions against int64 targets with 10% IGNORE_INDEX pixels, on the same device. All take
turns in one process.

Rows besides the target: the update through the scatter_add_ path that accelerators take (on a
CPU bincount is the path taken; this shows the other one's cost), and argmax + update, all
that evaluation adds to a batch's forward.

    python bench/bench_metrics.py [--device cuda] [--quick] [--size 512x1024 --batch 2]
        [--arch fpn --backbone resnet18] [--classes 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`

import torch

from bench.common import (
    Result,
    add_clock_option,
    add_common_options,
    apply_threads,
    interleave,
    paired_ratio,
    parse_size,
    ratio_spread,
    report,
    resolve_clock,
)
from segmentation import metrics
from segmentation.cli import run_guarded
from segmentation.config import ModelConfig
from segmentation.data.labels import IGNORE_INDEX
from segmentation.devices import resolve_device
from segmentation.metrics import ConfusionMatrix, predictions_from_logits
from segmentation.models import build_model, required_input_multiple

TARGET = "<= 0.02"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_options(parser)
    add_clock_option(parser)
    parser.add_argument("--arch", default="fpn")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--classes", type=int, default=20, help="the largest scheme's count")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", help="HxW (default 512x1024; --quick on a CPU 256x512)")
    parser.add_argument("--rounds", type=int, help="timed rounds (default 5; --quick 3)")
    args = parser.parse_args(argv)
    args.size = args.size or ("256x512" if args.quick and args.device == "cpu" else "512x1024")
    args.rounds = args.rounds or (3 if args.quick else 5)
    return args


def scatter_update(matrix: ConfusionMatrix, prediction, target, copies: int | None = None) -> None:
    """ConfusionMatrix.update with its accelerator counting path (scatter_add_), here, over
    `copies` of the histogram (default: the accelerator path's own count)."""
    copies = copies or metrics.SCATTER_COPIES
    original = metrics.count_bins
    metrics.count_bins = lambda index, bins: metrics.scatter_count(index, bins, copies)
    try:
        matrix.update(prediction, target)
    finally:
        metrics.count_bins = original


def workloads(args: argparse.Namespace, device: torch.device) -> dict[str, Callable[[], None]]:
    height, width = parse_size(args.size, required_input_multiple(args.arch))
    torch.manual_seed(0)
    shape = (args.batch, height, width)
    target = torch.randint(0, args.classes, shape, device=device)
    target[torch.rand(shape, device=device) < 0.1] = IGNORE_INDEX
    prediction = torch.randint(0, args.classes, shape, device=device)
    memory_format = torch.channels_last if ModelConfig().channels_last else torch.contiguous_format
    # In the layout the model returns them: argmax over channels is 3x faster channels-last.
    logits = torch.randn(args.batch, args.classes, height, width, device=device)
    logits = logits.contiguous(memory_format=memory_format)
    matrix = ConfusionMatrix(args.classes, device)
    model = build_model(args.arch, args.backbone, args.classes).to(device).eval()
    model.to(memory_format=memory_format)
    images = torch.randn(args.batch, 3, height, width, device=device)
    images = images.contiguous(memory_format=memory_format)

    def forward() -> None:
        with torch.inference_mode():
            model(images)

    functions = {
        "forward": forward,
        "update": lambda: matrix.update(prediction, target),
        "update_scatter": lambda: scatter_update(matrix, prediction, target),
        "argmax_update": lambda: matrix.update(predictions_from_logits(logits), target),
    }
    if device.type != "cpu":  # how many histogram copies the atomic adds should spread over
        for copies in COPIES:
            functions[f"update_copies_{copies}"] = partial(
                scatter_update, matrix, prediction, target, copies
            )
    return functions


COPIES = (1, 8, 32, 128)


ROWS = (
    ("update", TARGET, "ConfusionMatrix.update vs forward"),
    ("update_scatter", "", "update by scatter_add_ (accelerator path) vs forward"),
    ("argmax_update", "", "argmax + update vs forward"),
)


def run(args: argparse.Namespace) -> dict:
    apply_threads(args.threads)
    device = resolve_device(args.device)
    clock = resolve_clock(args)
    seconds = interleave(workloads(args, device), args.rounds, device, warmup=1, clock=clock)
    ms = {name: [value * 1e3 for value in values] for name, values in seconds.items()}
    label = f"metrics {args.size} b{args.batch} {args.classes} classes"
    model = f"{args.arch.upper()}-{args.backbone}"
    rows = []
    extra = [
        (f"update_copies_{n}", "", f"update over {n} histogram copies vs forward") for n in COPIES
    ]
    for name, target, what in ROWS + tuple(extra if device.type != "cpu" else ()):
        low, high = ratio_spread(ms[name], ms["forward"])
        rows.append(
            Result(
                f"{label}: {what} of {model}",
                statistics.median(ms[name]),
                statistics.median(ms["forward"]),
                "ms",
                target,
                note=f"{args.rounds} rounds, {clock} clock; per-round ratio {low:.4f}..{high:.4f}",
                paired=paired_ratio(ms[name], ms["forward"]),
            )
        )
    return report("bench_metrics", args, rows, {"ms": ms}, "Metrics")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
