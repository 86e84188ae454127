"""Training-step speed of our FPN-resnext50 against segmentation_models_pytorch's FPN.

Both models get the same batch, loss (BCEWithLogits), optimizer (Adam) and precision; their
steps alternate (ours, smp, smp, ours, ...) in one process after a warmup, so that drifting
clocks or a busy machine hit both alike. Prints a markdown table, optionally writes JSON.

    PYTHONPATH=. python bench/bench_fpn_vs_smp.py --size 256x512 --batch 2 --steps 10
"""

import argparse
import contextlib
import json
import statistics
import sys
import time

import segmentation_models_pytorch as smp
import torch
from torch import nn

from segmentation.errors import UserError
from segmentation.models import build_model, check_input_size, required_input_multiple

NUM_CLASSES = 8
PRECISIONS = ("float32", "bf16-autocast")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256x512", help="HxW of the input images")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--channels-last", action="store_true", help="for both models")
    parser.add_argument(
        "--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS), metavar="P"
    )
    parser.add_argument("--json", help="write the results to this file")
    return parser.parse_args(argv)


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must be HxW, e.g. 256x512, got {text!r}") from None
    check_input_size(height, width, required_input_multiple("fpn"), "fpn")
    return height, width


def make_step(model: nn.Module, precision: str, device: torch.device):
    """A closure running one training step of `model` on (images, targets)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()

    def step(images: torch.Tensor, targets: torch.Tensor) -> None:
        autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16)
            if precision == "bf16-autocast"
            else contextlib.nullcontext()
        )
        with autocast:
            loss = loss_fn(model(images).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timed(step, images: torch.Tensor, targets: torch.Tensor, device: torch.device) -> float:
    """Milliseconds of one call of `step`, synchronized on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step(images, targets)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3


def bench(args: argparse.Namespace, precision: str) -> dict[str, float]:
    device = torch.device(args.device)
    height, width = parse_size(args.size)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    models = {
        "ours": build_model("fpn", "resnext50", NUM_CLASSES),
        "smp": smp.FPN("resnext50_32x4d", encoder_weights=None, classes=NUM_CLASSES),
    }
    steps = {
        name: make_step(model.to(device, memory_format=memory_format).train(), precision, device)
        for name, model in models.items()
    }
    images = torch.randn(args.batch, 3, height, width, device=device)
    images = images.contiguous(memory_format=memory_format)
    targets = torch.rand(args.batch, NUM_CLASSES, height, width, device=device)
    for _ in range(args.warmup):
        for step in steps.values():
            step(images, targets)
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for _ in range(args.steps):
        for name in order:
            times[name].append(timed(steps[name], images, targets, device))
        order.reverse()  # ABBA: neither model always runs right after the other
    ours, theirs = (statistics.median(times[name]) for name in ("ours", "smp"))
    return {"ours_ms": ours, "smp_ms": theirs, "speed_ours_over_smp": theirs / ours}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("--device cuda but no CUDA device is available: use --device cpu")
        results = {precision: bench(args, precision) for precision in args.precisions}
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"FPN resnext50_32x4d, {NUM_CLASSES} classes, batch {args.batch}, {args.size}, "
        f"{args.device}, median of {args.steps} steps after {args.warmup} warmup\n"
    )
    print("| precision | ours ms/step | smp ms/step | speed ours/smp |")
    print("|---|---:|---:|---:|")
    for precision, r in results.items():
        print(
            f"| {precision} | {r['ours_ms']:.1f} | {r['smp_ms']:.1f} "
            f"| {r['speed_ours_over_smp']:.3f} |"
        )
    if args.json:
        config = {k: v for k, v in vars(args).items() if k != "json"}
        with open(args.json, "w") as file:
            json.dump({"config": config, "results": results}, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
