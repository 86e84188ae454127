"""torch.compile: the engine's training step and an inference forward, compiled against eager.

Report only (no target on a CPU, where inductor's gains are small and its compile time long):
per-step time of each side taking turns after both are warm, and the time the first compiled
call took, which is what a run pays once. Training: the engine's train_one_epoch (as train.py
runs it, train.compile on and off) over pre-made batches of the default config's loss and
optimizer. Inference: TrainedModel.forward (as evaluate.py / inference.py run it with and
without --compile) on a batch of normalized images.

    python bench/bench_compile.py [--device cuda] [--quick] [--backbone resnet18]
        [--train-size 64x128] [--infer-size 256x512] [--batch 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`

import torch

from bench.bench_train_step import engine_epoch, make_batches
from bench.common import (
    Result,
    add_common_options,
    apply_threads,
    interleave,
    paired_ratio,
    parse_size,
    ratio_spread,
    report,
    synchronize,
)
from segmentation.cli import run_guarded
from segmentation.config import config_from_dict
from segmentation.data.build import scheme_for
from segmentation.devices import resolve_device
from segmentation.engine.setup import wrap_model
from segmentation.engine.state import TrainState
from segmentation.losses import build_loss
from segmentation.model_setup import model_for
from segmentation.prediction.trained_model import TrainedModel


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_options(parser)
    parser.add_argument("--arch", default="fpn")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--train-size", default="64x128")
    parser.add_argument("--infer-size", default="256x512")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, help="timed turns of each (default 5; --quick 3)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 5)
    return args


def timed_first_call(function) -> float:
    """Seconds of the first call: for a compiled function, mostly compilation."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def training_sides(args, device: torch.device) -> tuple[dict, dict]:
    """{eager, compiled}: one engine epoch of `steps` steps each, from the same weights."""
    size = parse_size(args.train_size, 32)
    sides, compile_seconds = {}, {}
    for mode in ("eager", "compiled"):
        config = config_from_dict({})
        config.model.arch, config.model.backbone, config.model.pretrained = (
            args.arch,
            args.backbone,
            None,
        )
        config.train.compile = "default" if mode == "compiled" else "off"
        scheme = scheme_for(config.data)
        torch.manual_seed(0)
        model = model_for(config, scheme)
        model = model.to(device, memory_format=torch.channels_last)
        runnable = wrap_model(model, config, _single(device), TrainState(), config.train.compile)
        loss_fn = build_loss(config.loss.name, scheme.num_classes).to(device)
        batches = make_batches(2, args.batch, size, scheme.num_classes, device, one_hot=False)
        epoch = engine_epoch(config, runnable, loss_fn, batches, device)
        compile_seconds[mode] = timed_first_call(lambda e=epoch: (e(), synchronize(device)))
        sides[mode] = epoch
    return sides, compile_seconds


def inference_sides(args, device: torch.device) -> tuple[dict, dict]:
    size = parse_size(args.infer_size, 32)
    config = config_from_dict({})
    config.model.arch, config.model.backbone, config.model.pretrained = (
        args.arch,
        args.backbone,
        None,
    )
    scheme = scheme_for(config.data)
    torch.manual_seed(0)
    model = model_for(config, scheme)
    model = model.to(device, memory_format=torch.channels_last).eval()
    images = torch.randn(args.batch, 3, *size, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    sides, compile_seconds = {}, {}
    for mode in ("eager", "compiled"):
        trained = TrainedModel(
            model=model,
            config=config,
            scheme=scheme,
            head=config.model.head,
            mean=(0.0,) * 3,
            std=(1.0,) * 3,
            divisor=32,
            checkpoint=Path("none"),
            device=device,
            compiled=torch.compile(model) if mode == "compiled" else None,
        )

        def forward(trained=trained) -> None:
            with torch.inference_mode():
                trained.forward(images)

        compile_seconds[mode] = timed_first_call(lambda f=forward: (f(), synchronize(device)))
        sides[mode] = forward
    return sides, compile_seconds


def _single(device: torch.device):
    from segmentation.engine.distributed import DistributedContext

    return DistributedContext(0, 1, 0, device)


def rows_for(what: str, seconds: dict, first: dict, per_call: int, note: str) -> Result:
    low, high = ratio_spread(seconds["compiled"], seconds["eager"])
    return Result(
        what,
        1e3 * statistics.median(seconds["compiled"]) / per_call,
        1e3 * statistics.median(seconds["eager"]) / per_call,
        "ms",
        note=f"{note}; first compiled call {first['compiled']:.1f} s (eager "
        f"{first['eager']:.1f} s); per-round ratio {low:.3f}..{high:.3f}",
        paired=paired_ratio(seconds["compiled"], seconds["eager"]),
    )


def run(args: argparse.Namespace) -> dict:
    apply_threads(args.threads)
    device = resolve_device(args.device)
    model = f"{args.arch.upper()}-{args.backbone}"
    train, train_first = training_sides(args, device)
    train_seconds = interleave(train, args.rounds, device, warmup=1)
    infer, infer_first = inference_sides(args, device)
    infer_seconds = interleave(infer, args.rounds, device, warmup=1)
    rows = [
        rows_for(
            f"compile {model} {args.train_size} b{args.batch}: engine train step, compiled vs "
            "eager",
            train_seconds,
            train_first,
            2,
            f"{args.rounds} rounds x 2 steps",
        ),
        rows_for(
            f"compile {model} {args.infer_size} b{args.batch}: inference forward, compiled vs "
            "eager",
            infer_seconds,
            infer_first,
            1,
            f"{args.rounds} rounds",
        ),
    ]
    details = {"train": train_seconds, "inference": infer_seconds}
    details["first_call_seconds"] = {"train": train_first, "inference": infer_first}
    return report("bench_compile", args, rows, details, "torch.compile")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
