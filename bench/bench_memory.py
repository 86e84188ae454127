"""Memory: peak memory of a training step of FPN and UNET (resnext50) at 512x1024, batch 2.

Each measurement runs in a fresh process (nothing of an earlier one stays in its allocator):
the engine's step (engine.loop.train_one_epoch with the default config, as bench_train_step.py
builds it) over --steps batches. Reported: the peak increase over the memory held just before
the steps (model, optimizer and batches built), i.e. what the step itself needs: gradients,
Adam's state (created by the first step), activations, workspaces.
- CPU: resident set size (RSS); the peak is the kernel's high-water mark (ru_maxrss), checked
  against a psutil thread sampling RSS every millisecond.
- CUDA: torch.cuda.max_memory_allocated, and the absolute peak (weights included) in the notes.
bf16 autocast rows compare with float32 at the same size. The CPU has no bf16 instructions here
(10-18x slower), so CPU bf16 runs one step at --bf16-size (256x512), beside a float32 run of the
same size and steps.

    python bench/bench_memory.py [--device cuda] [--quick] [--archs fpn unet] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import resource
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`

import psutil
import torch

from bench.bench_train_step import PRECISIONS, engine_epoch, make_batches
from bench.common import (
    Result,
    add_common_options,
    apply_threads,
    parse_size,
    report,
    synchronize,
)
from segmentation.cli import run_guarded
from segmentation.config import config_from_dict
from segmentation.data.build import scheme_for
from segmentation.devices import resolve_device
from segmentation.losses import build_loss
from segmentation.model_setup import model_for
from segmentation.models.profiling import RssSampler

GIB = 2**30


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_options(parser)
    parser.add_argument("--archs", nargs="+", choices=("fpn", "unet"), default=["fpn", "unet"])
    parser.add_argument("--backbone", default="resnext50")
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, help="training steps (cuda 3; cpu 2; --quick 1)")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=tuple(PRECISIONS),
        help="default float32 and bf16; float32 only with --quick on the CPU",
    )
    parser.add_argument("--bf16-size", default="256x512", help="HxW of CPU bf16 runs")
    parser.add_argument(
        "--jobs",
        type=int,
        help="measurements at once, each in its own process (RSS and max_memory_allocated are "
        "per process); default 1, on the CPU with --quick 2",
    )
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.steps = args.steps or (3 if cuda else 1 if args.quick else 2)
    args.jobs = args.jobs or (2 if args.quick and not cuda else 1)
    if args.precisions is None:
        args.precisions = ["float32"] if args.quick and not cuda else list(PRECISIONS)
    return args


def measure(spec: dict) -> dict:
    """One configuration's training-step peak, in this (fresh) process. spec: arch, backbone,
    precision, size (H, W), batch, steps, device, threads."""
    apply_threads(spec["threads"])
    device = torch.device(spec["device"])
    config = config_from_dict({})
    config.model.arch, config.model.backbone = spec["arch"], spec["backbone"]
    config.model.pretrained = None
    config.train.amp = PRECISIONS[spec["precision"]]
    scheme = scheme_for(config.data)
    torch.manual_seed(0)
    model = model_for(config, scheme).to(device)
    if config.model.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(config.loss.name, scheme.num_classes, **config.loss.options)
    classes = scheme.num_classes
    batches = make_batches(spec["steps"], spec["batch"], spec["size"], classes, device, False)
    epoch = engine_epoch(config, model, loss_fn.to(device), batches, device)
    gc.collect()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        epoch()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"increase": peak - before, "before": before, "peak": peak}
    before = psutil.Process().memory_info().rss
    high_water_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with RssSampler() as sampler:
        epoch()
    high_water = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # The high-water mark is exact, but only if the steps raised it above earlier peaks.
    peak = high_water if high_water > high_water_before else sampler.peak
    return {
        "increase": peak - before,
        "before": before,
        "peak": peak,
        "sampled_peak": sampler.peak,
        "high_water_mark": high_water,
    }


def in_fresh_processes(specs: dict[str, dict], jobs: int) -> dict[str, dict]:
    """measure(spec) of each spec, each in a process of its own, `jobs` at a time."""
    context = multiprocessing.get_context("spawn")
    results, names = {}, list(specs)
    for start in range(0, len(names), jobs):
        group = names[start : start + jobs]
        pools = [ProcessPoolExecutor(max_workers=1, mp_context=context) for _ in group]
        futures = [pool.submit(measure, specs[name]) for pool, name in zip(pools, group)]
        for pool, name, future in zip(pools, group, futures):
            results[name] = future.result()
            pool.shutdown()
    return results


def run(args: argparse.Namespace) -> dict:
    apply_threads(args.threads)
    device = resolve_device(args.device)
    size = parse_size(args.size, 64)
    bf16_size = parse_size(args.bf16_size, 64) if device.type == "cpu" else size
    base = {"backbone": args.backbone, "batch": args.batch, "device": args.device}
    base["threads"] = args.threads
    specs: dict[str, dict] = {}

    def key(arch: str, precision: str, hw: tuple[int, int], steps: int) -> str:
        name = f"{arch}/{precision}/{hw[0]}x{hw[1]}/{steps} steps"
        specs[name] = {**base, "arch": arch, "precision": precision, "size": hw, "steps": steps}
        return name

    planned = []  # (arch, precision, size, steps, key, key of the float32 reference or None)
    for arch in args.archs:
        for precision in args.precisions:
            cpu_bf16 = precision == "bf16" and device.type == "cpu"
            hw, steps = (bf16_size, 1) if cpu_bf16 else (size, args.steps)
            reference = key(arch, "float32", hw, steps) if precision == "bf16" else None
            planned.append((arch, precision, hw, steps, key(arch, precision, hw, steps), reference))
    details = in_fresh_processes(specs, args.jobs)
    what = "RSS" if device.type == "cpu" else "max_memory_allocated"
    rows = []
    for arch, precision, hw, steps, name, reference in planned:
        result = details[name]
        note = f"{steps} step(s) in a fresh process; before {result['before'] / GIB:.2f} GiB, "
        note += f"absolute peak {result['peak'] / GIB:.2f} GiB"
        if reference:
            note += "; reference: float32 at the same size and steps"
        rows.append(
            Result(
                f"memory {arch.upper()}-{args.backbone} {precision} {hw[0]}x{hw[1]} "
                f"b{args.batch}: peak increase of a training step ({what})",
                result["increase"] / GIB,
                details[reference]["increase"] / GIB if reference else None,
                "GiB",
                note=note,
            )
        )
    return report("bench_memory", args, rows, details, "Memory")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
