"""Data pipeline: training samples/s of the Cityscapes dataset against the decode-only floor.

Ours: the training dataset exactly as train.py builds it (build_training_datasets: the real
SegmentationDataset and training_transform with the configured augmentations, items as
(index, seed) pairs) turning 1024x2048 frames into 512x1024 samples (uint8 (H, W, 3) images:
the engine normalizes them on the device). Floor: reading the same two PNGs (image and
labelIds) with cv2.imread and nothing else. The two take turns image by image, in one process.
Target: >= 0.80 of the floor's samples/s.

Then train.py's DataLoader (its seeded EpochSampler, batch 2) with 0, 1 and 2 workers, taking
turns epoch by epoch, against the same loader with 0 workers; the rows' notes give the bytes
per sample the loader ships (image and target). With --profile, or when the target is missed,
a cost breakdown per stage and per transform, and cProfile's top functions.

The decoded-sample cache (data.cache at data.cache_scale 1.0 of the images measured, built
into the temporary folder first): the same training dataset reading it, against the PNG path,
taking turns sample by sample in one process (samples/s of one worker; target >= 5x). Then
both in train.py's DataLoader with --cache-workers workers (default: this machine's cores),
epoch by epoch in turns: the samples/s a GPU box's host feeds with all its cores.

    python bench/bench_data.py [--quick] [--images 10] [--data-root DIR] [--profile]
        [--cache-workers N] [--recipe original|scale-jitter] [--json out.json]

Without --data-root a synthetic Cityscapes tree is generated into a temporary folder.
--recipe scale-jitter measures the field's protocol (data.augment.scale) instead of the
original recipe.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`

import cv2
import numpy as np
import torch

from bench.common import (
    CLOCKS,
    Result,
    add_clock_option,
    add_common_options,
    apply_threads,
    parse_size,
    report,
    resolve_clock,
)
from segmentation.cli import run_guarded
from segmentation.config import DataConfig
from segmentation.data.build import build_training_datasets
from segmentation.data.cache import open_cache
from segmentation.data.dataset import SegmentationDataset, _to_hwc_tensor
from segmentation.data.io import read_label_ids

# train.py's own loader factory, so that this measures what training uses.
from segmentation.data.loading import make_loader
from segmentation.devices import resolve_device
from segmentation.engine.sampler import EpochSampler
from segmentation.errors import UserError
from segmentation.sample.generate import generate_cityscapes

TARGET = ">= 0.80"
CACHE_TARGET = ">= 5"
BGR2RGB, UNCHANGED = cv2.COLOR_BGR2RGB, cv2.IMREAD_UNCHANGED


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_options(parser)
    add_clock_option(parser)
    parser.add_argument("--data-root", type=Path, help="a Cityscapes tree (default: generated)")
    parser.add_argument("--images", type=int, help="images used (default 10; --quick 5)")
    parser.add_argument("--source-size", default="1024x2048", help="HxW of generated frames")
    parser.add_argument("--size", default="512x1024", help="HxW of the training samples")
    parser.add_argument(
        "--recipe",
        choices=["original", "scale-jitter"],
        default="original",
        help="training augmentation: the original recipe (crop resized to --size) or the "
        "scale-jitter style (ratios 0.5-2.0 of --source-size, --size crops, cat_max_ratio 0.75, "
        "photometric)",
    )
    parser.add_argument("--rounds", type=int, help="timed passes (default 3; --quick 2)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=2, help="DataLoader batch size")
    parser.add_argument("--epochs", type=int, help="timed epochs per loader (default 2; quick 1)")
    parser.add_argument("--profile", action="store_true", help="cost breakdown even if met")
    parser.add_argument(
        "--cache-workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="DataLoader workers of the cached vs PNG loader row (default: the cores)",
    )
    args = parser.parse_args(argv)
    args.images = args.images or (5 if args.quick else 10)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.epochs = args.epochs or (1 if args.quick else 2)
    return args


def make_dataset(args: argparse.Namespace, root: Path) -> SegmentationDataset:
    """The training dataset of a Cityscapes tree at `root`, first `args.images` images."""
    height, width = parse_size(args.size, 32)
    config = DataConfig(root=str(root), image_size=(height, width))
    if args.recipe == "scale-jitter":
        config = DataConfig(
            root=str(root),
            image_size=(height, width),
            base_size=parse_size(args.source_size),
            crop_size=(height, width),
            augment={"scale": [0.5, 2.0], "cat_max_ratio": 0.75, "photometric": True},
        )
    train, _ = build_training_datasets(config)
    if len(train) < args.images:
        print(f"note: {root} has {len(train)} training images, fewer than --images {args.images}")
    train.samples = train.samples[: args.images]
    return train


def generate(args: argparse.Namespace, folder: Path) -> Path:
    height, width = parse_size(args.source_size)
    root = folder / "cityscapes"
    # 5 training cities; one validation image per city, because build_training_datasets
    # builds the validation set too.
    generate_cityscapes(
        root,
        height=height,
        width=width,
        train_per_city=math.ceil(args.images / 5),
        val_per_city=1,
        test_per_city=0,
        video_frames=0,
    )
    return root


def read_floor(dataset: SegmentationDataset, index: int) -> None:
    """The decode-only floor: the two PNGs of a sample, read and nothing else."""
    sample = dataset.samples[index]
    cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR)
    cv2.imread(str(sample.label_path), cv2.IMREAD_UNCHANGED)


def dataset_vs_floor(
    dataset: SegmentationDataset, rounds: int, clock: str
) -> dict[str, list[float]]:
    """Seconds per sample of the dataset and of the floor, taking turns image by image (the
    order alternating), after one untimed pass that also fills the page cache."""
    now = CLOCKS[clock]
    times: dict[str, list[float]] = {"dataset": [], "floor": []}
    for round_index in range(1 + rounds):
        for index in range(len(dataset)):
            item = (index, 1000 * round_index + index)
            pair = [
                ("dataset", lambda item=item: dataset[item]),
                ("floor", lambda index=index: read_floor(dataset, index)),
            ]
            if (round_index + index) % 2:
                pair.reverse()
            for name, function in pair:
                start = now()
                function()
                if round_index > 0:
                    times[name].append(now() - start)
    return times


def cache_vs_png(
    cached: SegmentationDataset, png: SegmentationDataset, rounds: int, clock: str
) -> dict[str, list[float]]:
    """Seconds per training sample read from the cache and from the PNGs, the same items in
    turns (the order alternating), after one untimed pass that also fills the page cache."""
    now = CLOCKS[clock]
    times: dict[str, list[float]] = {"cache": [], "png": []}
    for round_index in range(1 + rounds):
        for index in range(len(png)):
            item = (index, 1000 * round_index + index)
            pair = [("cache", cached), ("png", png)]
            if (round_index + index) % 2:
                pair.reverse()
            for name, dataset in pair:
                start = now()
                dataset[item]
                if round_index > 0:
                    times[name].append(now() - start)
    return times


def loaders_in_turns(
    datasets: dict[str, SegmentationDataset],
    workers: int,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, list[float]]:
    """Samples/s of train.py's DataLoader over each dataset with `workers` workers, one epoch
    each in turn. An epoch has at least 4 batches per worker (the images repeat, with new
    seeds), so that every worker is busy."""
    count = max(len(next(iter(datasets.values()))), 4 * args.batch * max(workers, 1))
    samplers = {name: RepeatingSampler(len(dataset), count) for name, dataset in datasets.items()}
    loaders = {
        name: make_loader(
            dataset,
            sampler=samplers[name],
            batch_size=args.batch,
            workers=workers,
            device=device,
            drop_last=True,
        )
        for name, dataset in datasets.items()
    }
    speeds: dict[str, list[float]] = {name: [] for name in datasets}
    order = list(datasets)
    for epoch in range(1 + args.epochs):  # epoch 0 starts the (persistent) workers: untimed
        for name in order:
            samplers[name].epoch = epoch
            seen = 0
            start = time.perf_counter()
            for batch in loaders[name]:
                seen += len(batch["image"])
            if epoch > 0:
                speeds[name].append(seen / (time.perf_counter() - start))
        order.reverse()
    return speeds


class RepeatingSampler:
    """`count` (index, seed) items over a dataset of `size` samples, new seeds each epoch."""

    def __init__(self, size: int, count: int) -> None:
        self.size, self.count, self.epoch = size, count, 0

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        base = self.epoch * self.count
        return iter([(position % self.size, base + position) for position in range(self.count)])


def cached_twin(png: SegmentationDataset, folder: Path) -> SegmentationDataset:
    """The same dataset (samples, scheme, transform) reading a cache of its own samples built
    at `folder`, as build_training_datasets does with data.cache (the cache there also holds
    the validation frames; here only the images measured, so that a real --data-root is not
    cached whole)."""
    readers = open_cache(
        folder,
        {"train": png.samples},
        png.read_label,
        scale=1.0,
        scheme=png.scheme.name,
        label_reader={"dataset": "cityscapes", "reader": png.read_label.__name__},
    )
    return SegmentationDataset(
        png.samples, png.scheme, png.transform, png.read_label, reader=readers["train"]
    )


def cache_rows(folder: Path, png: SegmentationDataset, args, device, clock) -> list:
    """The cache rows: one worker's samples/s from the cache vs the PNGs, then the DataLoaders
    with --cache-workers workers."""
    start = time.perf_counter()
    cached = cached_twin(png, folder / "cache")
    build_seconds = time.perf_counter() - start
    times = cache_vs_png(cached, png, args.rounds, clock)
    workers = args.cache_workers
    speeds = loaders_in_turns({"cache": cached, "png": png}, workers, args, device)
    cache_speed = len(times["cache"]) / sum(times["cache"])
    png_speed = len(times["png"]) / sum(times["png"])
    return [
        Result(
            f"data: training dataset from data.cache -> {args.size} vs from the PNGs",
            cache_speed,
            png_speed,
            "samples/s",
            CACHE_TARGET,
            note=f"one process, in turns sample by sample, {len(png)} images x {args.rounds} "
            f"passes; building the cache of these images took {build_seconds:.1f} s",
        ),
        Result(
            f"data: DataLoader from data.cache, {workers} worker(s) vs from the PNGs",
            statistics.median(speeds["cache"]),
            statistics.median(speeds["png"]),
            "samples/s",
            note=f"batch {args.batch}, median of {args.epochs} epoch(s) in turns, wall clock; "
            f"{workers} = --cache-workers (default: the cores)",
        ),
    ]


def loader_throughput(
    dataset: SegmentationDataset, args: argparse.Namespace, device: torch.device
) -> dict[int, list[float]]:
    """Samples/s of train.py's DataLoader per worker count, one epoch each in turn."""
    loaders, samplers = {}, {}
    for workers in args.workers:
        samplers[workers] = EpochSampler(len(dataset), shuffle=True, seed=0)
        loaders[workers] = make_loader(
            dataset,
            sampler=samplers[workers],
            batch_size=args.batch,
            workers=workers,
            device=device,
            drop_last=True,
        )
    if len(dataset) < args.batch:
        raise UserError(f"--images {len(dataset)} gives no full batch of --batch {args.batch}")
    speeds: dict[int, list[float]] = {workers: [] for workers in args.workers}
    order = list(args.workers)
    for epoch in range(1 + args.epochs):  # epoch 0 starts the (persistent) workers: untimed
        for workers in order:
            samplers[workers].set_epoch(epoch)
            count = 0
            start = time.perf_counter()
            for batch in loaders[workers]:
                count += len(batch["image"])
            if epoch > 0:
                speeds[workers].append(count / (time.perf_counter() - start))
        order.reverse()
    return speeds


def bytes_per_sample(dataset: SegmentationDataset) -> dict[str, int]:
    """Bytes of each tensor a sample ships through the DataLoader (image, target): what a
    worker writes to shared memory and the host copies to the device."""
    item = dataset[(0, 0)]
    return {key: value.nbytes for key, value in item.items() if isinstance(value, torch.Tensor)}


def stage_breakdown(dataset: SegmentationDataset) -> list[tuple[str, float]]:
    """Milliseconds per sample of each stage of SegmentationDataset.__getitem__, done one by
    one as it does them, and of each top-level transform of its pipeline."""
    stages: dict[str, list[float]] = {}

    def clock(name: str, function: Callable[[], object]) -> object:
        start = time.perf_counter()
        value = function()
        stages.setdefault(name, []).append((time.perf_counter() - start) * 1e3)
        return value

    for index, sample in enumerate(dataset.samples):
        dataset.transform.set_random_seed(index)
        image_path, label_path = str(sample.image_path), str(sample.label_path)
        bgr = clock("cv2.imread image (floor)", lambda p=image_path: cv2.imread(p))
        image = clock("cvtColor BGR->RGB, full frame", lambda b=bgr: cv2.cvtColor(b, BGR2RGB))
        clock("cv2.imread label (floor)", lambda p=label_path: cv2.imread(p, UNCHANGED))
        stored = clock("read_label_ids (imread, checks)", lambda p=label_path: read_label_ids(p))
        out = clock(
            "transform (whole Compose)",
            lambda i=image, m=stored: dataset.transform(image=i, mask=m),
        )
        data = {"image": image, "mask": stored}
        # The original recipe's albumentations steps (the scale-jitter transform is one step).
        for transform in getattr(dataset.transform, "transforms", []):
            name = f"  of which {type(transform).__name__}"
            data = clock(name, lambda t=transform, d=data: t(**d))
        clock("scheme.count_unknown", lambda m=out["mask"]: dataset.scheme.count_unknown(m))
        clock(
            "scheme.encode (LUT)",
            lambda m=out["mask"]: dataset.scheme.encode(np.ascontiguousarray(m)),
        )
        clock("image to tensor (uint8 HWC)", lambda i=out["image"]: _to_hwc_tensor(i))
    return [(name, statistics.mean(values)) for name, values in stages.items()]


def cprofile_top(dataset: SegmentationDataset, lines: int = 14) -> str:
    """cProfile of one pass of dataset items: the functions with the most own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for index in range(len(dataset)):
        dataset[(index, index)]
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(lines)
    text = stream.getvalue()
    return text[text.find("   ncalls") :].rstrip()


def run(args: argparse.Namespace) -> dict:
    apply_threads(args.threads)
    device = resolve_device(args.device)
    parse_size(args.size, 32), parse_size(args.source_size)  # fail before generating data
    details: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_data_") as folder:
        root = args.data_root or generate(args, Path(folder))
        dataset = make_dataset(args, root)
        clock = resolve_clock(args)
        times = dataset_vs_floor(dataset, args.rounds, clock)
        speeds = loader_throughput(dataset, args, device)
        shipped = bytes_per_sample(dataset)
        rows = [
            Result(
                f"data: training dataset -> {args.size} vs decode-only floor",
                len(times["dataset"]) / sum(times["dataset"]),
                len(times["floor"]) / sum(times["floor"]),
                "samples/s",
                TARGET,
                note=f"{len(dataset)} images x {args.rounds} passes, in turns image by image; "
                f"{args.threads} thread(s), {clock} clock",
            )
        ]
        rows += loader_rows(speeds, args, len(dataset), shipped)
        rows += cache_rows(Path(folder), dataset, args, device, clock)
        if args.profile or not rows[0].met:
            details["stages_ms"] = stage_breakdown(dataset)
            details["cprofile_top"] = cprofile_top(dataset)
    details["dataset_ms"] = [t * 1e3 for t in times["dataset"]]
    details["floor_ms"] = [t * 1e3 for t in times["floor"]]
    details["loader_samples_per_second"] = {str(k): v for k, v in speeds.items()}
    details["bytes_per_sample"] = shipped
    record = report("bench_data", args, rows, details, "Data pipeline")
    if "stages_ms" in details:
        print_breakdown(details["stages_ms"], details["cprofile_top"])
    return record


def loader_rows(
    speeds: dict[int, list[float]], args: argparse.Namespace, images: int, shipped: dict
) -> list:
    """One row per worker count; those with workers against the loader with 0 workers."""
    base = statistics.median(speeds[0]) if 0 in speeds else None
    parts = " + ".join(f"{key} {size:,}" for key, size in shipped.items())
    note = (
        f"batch {args.batch}, median of {args.epochs} epoch(s) of {images} images, wall clock; "
        f"{sum(shipped.values()):,} bytes per sample shipped ({parts})"
    )
    # Worker processes run beside this one: only the wall clock sees their work.
    return [
        Result(
            f"data: DataLoader, {workers} worker(s)" + (" vs 0 workers" if workers else ""),
            statistics.median(values),
            base if workers else None,
            "samples/s",
            note=note if position == 0 else "",  # said once, on the first row
        )
        for position, (workers, values) in enumerate(speeds.items())
    ]


def print_breakdown(stages: list[tuple[str, float]], profile: str) -> None:
    print("### Where a training sample's time goes (ms per sample, stages run one by one)\n")
    print("| stage | ms |")
    print("|---|---:|")
    for name, milliseconds in stages:
        print(f"| {name} | {milliseconds:.2f} |")
    print("\ncProfile, one pass over the dataset, by own time:\n")
    print("```")
    print(profile)
    print("```\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
