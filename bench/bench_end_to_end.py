"""End to end: train.py's own steady-state throughput against a bare step, and its loader alone.

Three rows, one run of train.py and two measurements in this process:

- train.py, run as it is (a child process, its own loop and DataLoader) on a generated Cityscapes
  tree, with `train.log_every=1`: every optimizer step leaves a scalar event (step, wall time) in
  the run's TensorBoard file. Its images/s = (steps after the first --skip) x batch / (wall time
  between their events), over windows inside an epoch: start-up, the first steps (cuDNN's
  autotuning, torch.compile) and validation are left out. Reference: the bare step, the same
  model, loss, optimizer, precision, channels_last and compile (built by the engine's own
  functions from the same config) in the plainest loop (bench_train_step.bare_loop), on batches
  made ahead and already on the device. Target >= 0.90.
- The achieved TFLOP/s of train.py: 3 x the forward FLOPs per image (models.profiling
  .forward_gflops; forward + backward = 3 forwards) x images/s, against the device's dense
  tensor-core peak where bench/common.py knows it (float32: the TF32 peak), else reported.
- The loader alone: train.py's training DataLoader built by the engine (engine.setup.build_data:
  dataset, EpochSampler, workers, pinned memory) iterated with nothing else running, against
  the bare step's images/s. Below it, the run is data-bound; the note says how many workers
  (at the measured samples/s per worker) the bare step would need.

The tree: --unique-frames frames are drawn by segmentation.sample at --frame-size, then
hard-linked under new names until one epoch holds --skip + --steps batches (drawing hundreds
of 1024x2048 frames takes minutes; decoding a linked file costs the same as a distinct one).
Validation (3 frames) runs after the epoch and is not measured. With --cache DIR (data.cache)
train.py builds the decoded-sample cache before its first step, so the build is start-up and is
left out like the rest of it; the loader alone reads the same cache.

The child's torch threads follow --threads (OMP_NUM_THREADS), like this process's.

    python bench/bench_end_to_end.py --quick
    python bench/bench_end_to_end.py --device cuda --batch 8 --workers 12 --compile default
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`

import torch

from bench.bench_train_step import bare_loop, make_batches
from bench.common import (
    REPO_ROOT,
    Result,
    add_common_options,
    apply_threads,
    machine_line,
    parse_size,
    peak_tflops,
    report,
    timed,
)
from segmentation.cli import run_guarded
from segmentation.config import Config, config_from_dict, save_config
from segmentation.data.build import scheme_for
from segmentation.data.normalize import Normalizer
from segmentation.devices import resolve_device
from segmentation.engine.distributed import DistributedContext
from segmentation.engine.optim import build_optimizer
from segmentation.engine.setup import StartingPoint, build_data, starting_model, wrap_model
from segmentation.engine.state import TrainState
from segmentation.errors import UserError
from segmentation.losses import build_loss
from segmentation.models import encoder_normalization
from segmentation.models.profiling import forward_gflops
from segmentation.sample.generate import generate_cityscapes

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
STEP_EVENT_TAG = "train/loss"  # logged once per optimizer step with train.log_every=1
VAL_FRAMES_PER_CITY = 1  # 3 validation cities: a short validation after the measured epoch
BARE_CHUNK = 5  # bare-loop steps per timed round


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_options(parser)
    parser.add_argument("--arch", choices=("fpn", "unet"), default="fpn")
    parser.add_argument("--backbone", help="default resnext50; --quick: resnet18")
    parser.add_argument(
        "--size",
        help="training crop HxW (default: cuda 512x1024, cpu 128x256; --quick: cuda 256x512, "
        "cpu 64x128)",
    )
    parser.add_argument(
        "--frame-size",
        help="HxW of the generated frames (default 1024x2048; --quick: cuda 512x1024, cpu 128x256)",
    )
    parser.add_argument("--batch", type=int, help="images per step (default: cuda 8, cpu 2)")
    parser.add_argument(
        "--amp", choices=("off", "bf16"), help="train.amp (default: cuda bf16, cpu off)"
    )
    parser.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        default="off",
        help="train.compile of both sides; the modes other than default need a train.compile "
        "that takes modes",
    )
    parser.add_argument(
        "--workers", type=int, help="data.workers (default: the config's; --quick 2)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="data.cache=DIR for train.py and the loader: train.py builds it before its first "
        "step (start-up, not measured)",
    )
    parser.add_argument(
        "--steps", type=int, help="measured steps after --skip (default: cuda 40, cpu 20)"
    )
    parser.add_argument("--skip", type=int, default=20, help="first steps left out (default 20)")
    parser.add_argument(
        "--unique-frames",
        type=int,
        default=10,
        help="frames drawn; the rest of the epoch links to them (default 10)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="where the tree and the run go, kept (default: a temporary folder, deleted)",
    )
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.backbone = args.backbone or ("resnet18" if args.quick else "resnext50")
    if args.quick:  # CPU-sized; on CUDA a quarter of the pixels, still worth a GPU
        args.size = args.size or ("256x512" if cuda else "64x128")
        args.frame_size = args.frame_size or ("512x1024" if cuda else "128x256")
    args.size = args.size or ("512x1024" if cuda else "128x256")
    args.frame_size = args.frame_size or "1024x2048"
    args.batch = args.batch or (8 if cuda else 2)
    args.amp = args.amp or ("bf16" if cuda else "off")
    args.workers = args.workers if args.workers is not None else (2 if args.quick else None)
    args.steps = args.steps or (40 if cuda else 20)
    for name in ("batch", "steps", "unique_frames"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be 1 or more")
    if args.skip < 1:
        raise UserError("--skip must be 1 or more: the first step's event starts the clock")
    return args


def compile_setting(mode: str) -> str | bool | None:
    """train.compile's value for --compile MODE: the mode itself where the config takes modes,
    True for "default" where it is a switch; None for off (the config's default)."""
    if mode == "off":
        return None
    try:
        config_from_dict({"train": {"compile": mode}})
        return mode
    except UserError:
        if mode == "default":
            return True
        raise UserError(
            f"--compile {mode} needs a train.compile that takes modes; this version's is on/off: "
            "use --compile default"
        ) from None


def run_config(args: argparse.Namespace, data_root: Path, output_dir: Path) -> Config:
    """The one config both sides are built from: train.py reads it from a file."""
    epochs = 1
    data = {"dataset": "cityscapes", "root": str(data_root), "image_size": list(args.size)}
    if args.workers is not None:
        data["workers"] = args.workers
    if args.cache is not None:
        data["cache"] = str(args.cache)
    train = {
        "epochs": epochs,
        "batch_size": args.batch,
        "amp": args.amp,
        "device": args.device,
        "log_every": 1,
    }
    compile_value = compile_setting(args.compile)
    if compile_value is not None:
        train["compile"] = compile_value
    model = {"arch": args.arch, "backbone": args.backbone, "pretrained": None}
    return config_from_dict(
        {"output_dir": str(output_dir), "data": data, "model": model, "train": train}
    )


def make_tree(root: Path, frame_size: tuple[int, int], frames: int, unique: int) -> None:
    """A Cityscapes tree whose train split holds `frames` frames: `unique` drawn, the others
    hard links to them (copies where links fail) under new frame numbers."""
    cities = 5  # segmentation.sample's train cities
    height, width = frame_size
    generate_cityscapes(
        root,
        height=height,
        width=width,
        train_per_city=math.ceil(min(unique, frames) / cities),
        val_per_city=VAL_FRAMES_PER_CITY,
        test_per_city=0,
        video_frames=0,
    )
    images = sorted((root / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    for index in range(len(images), frames):
        source = images[index % len(images)]
        city = source.parent.name
        stem = source.name.removesuffix("_leftImg8bit.png")
        new_stem = f"{city}_{100000 + index:06d}_000019"
        for tree in ("leftImg8bit", "gtFine"):
            for path in (root / tree / "train" / city).glob(f"{stem}_*"):
                target = path.with_name(new_stem + path.name.removeprefix(stem))
                try:
                    os.link(path, target)
                except OSError:
                    target.write_bytes(path.read_bytes())


def run_train_py(config_path: Path, log_path: Path, threads: int) -> None:
    """train.py on the config, its output in `log_path`; a failure raises with its last line."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, str(REPO_ROOT / "train.py"), "--config", str(config_path)]
    with open(log_path, "w") as log:
        code = subprocess.run(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode
    if code != 0:
        lines = [line for line in log_path.read_text().splitlines() if line.strip()]
        last = lines[-1] if lines else "no output"
        raise UserError(f"train.py failed (exit {code}): {last} (whole output: {log_path})")


def step_events(run_dir: Path) -> list[tuple[int, float]]:
    """(step, wall time) of every training-step event in the run's TensorBoard files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    if STEP_EVENT_TAG not in accumulator.Tags()["scalars"]:
        raise UserError(f"the run in {run_dir} logged no {STEP_EVENT_TAG} events")
    return sorted((event.step, event.wall_time) for event in accumulator.Scalars(STEP_EVENT_TAG))


@dataclass
class SteadyRate:
    steps: int
    seconds: float
    first_step: int
    last_step: int

    def images_per_second(self, images_per_step: int) -> float:
        return self.steps * images_per_step / self.seconds


def steady_rate(
    events: list[tuple[int, float]], skip: int, steps_per_epoch: int, first_epoch: int = 0
) -> SteadyRate:
    """Steps and seconds between consecutive step events (step n's event is written once
    optimizer step n is done), counting only windows that start at step `skip` or later and
    lie inside one epoch from `first_epoch` (0-based) on: a window across an epoch boundary
    holds the validation, and the first step of each epoch goes with it."""
    steps, seconds, measured = 0, 0.0, []
    for (start, started), (end, ended) in zip(events, events[1:]):
        epoch = (end - 1) // steps_per_epoch
        if start < skip or epoch < first_epoch or (start - 1) // steps_per_epoch != epoch:
            continue
        steps += end - start
        seconds += ended - started
        measured += [start + 1, end]
    if steps == 0 or seconds <= 0:
        raise UserError(
            f"no steps after the first {skip} within an epoch: raise --steps or lower --skip"
        )
    return SteadyRate(steps, seconds, min(measured), max(measured))


class BareStep:
    """The bare step over batches already on the device, warmed up by `skip` steps when made;
    `rounds(n)` times n rounds of BARE_CHUNK steps each."""

    def __init__(self, config: Config, args: argparse.Namespace, device: torch.device) -> None:
        scheme = scheme_for(config.data)
        self.model = starting_model(config, scheme, device, StartingPoint())
        loss_fn = build_loss(config.loss.name, scheme.num_classes, **config.loss.options)
        loss_fn = loss_fn.to(device)
        optimizer = build_optimizer(self.model, config.optim)
        context = DistributedContext(0, 1, 0, device)
        runnable = wrap_model(self.model, config, context, TrainState())
        channels_last = config.model.channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        batches = make_batches(
            BARE_CHUNK, args.batch, args.size, scheme.num_classes, device, one_hot=False
        )
        batches = [{key: value.to(device) for key, value in batch.items()} for batch in batches]
        self.epoch = bare_loop(
            runnable,
            lambda logits, batch, target: loss_fn(logits, target),
            optimizer,
            batches,
            config.train.amp,
            device,
            self.memory_format,
            Normalizer(*encoder_normalization(config.model.backbone)),
        )
        self.device, self.images_per_round = device, BARE_CHUNK * args.batch
        for _ in range(math.ceil(args.skip / BARE_CHUNK)):
            self.epoch()

    def rounds(self, count: int) -> list[float]:
        """Images/s of each of `count` timed rounds, after one untimed round."""
        self.epoch()
        rates = []
        for _ in range(count):
            rates.append(self.images_per_round / timed(self.epoch, self.device))
        return rates

    def forward_gflops(self, size: tuple[int, int]) -> float:
        """GFLOPs of the (uncompiled) model's forward on one image of `size`."""
        image = torch.zeros(1, 3, *size, device=self.device)
        return forward_gflops(self.model, image.contiguous(memory_format=self.memory_format))


def loader_rate(config: Config, device: torch.device, measured_epoch: int) -> tuple[float, int]:
    """Samples/s of train.py's training loader alone over epoch `measured_epoch` (the ones
    before it run untimed), leaving out its first 2 x workers batches (the workers' start and
    their prefetched batches); and how many batches were timed."""
    pipeline = build_data(config, DistributedContext(0, 1, 0, device))
    warm = max(1, 2 * config.data.workers)
    for epoch in range(measured_epoch + 1):
        pipeline.train_sampler.set_epoch(epoch)
        times, samples = [], []
        for batch in pipeline.train_loader:
            times.append(time.perf_counter())
            samples.append(len(batch["image"]))
    warm = min(warm, len(times) // 2)
    if len(times) - warm < 2:
        raise UserError("the loader's epoch is too short to time: raise --steps")
    timed_samples = sum(samples[warm + 1 :])
    return timed_samples / (times[-1] - times[warm]), len(times) - warm - 1


def workers_needed(target_rate: float, per_worker_rate: float) -> int:
    """Workers whose samples/s together reach `target_rate`, each giving `per_worker_rate`."""
    return max(1, math.ceil(target_rate / per_worker_rate))


def device_name(device: torch.device) -> str | None:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def run(args: argparse.Namespace) -> dict:
    apply_threads(args.threads)
    device = resolve_device(args.device)
    multiple = 64 if args.arch == "unet" else 32
    args.size = parse_size(args.size, multiple)
    frame_size = parse_size(args.frame_size)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as temporary:
        work = args.work_dir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        return measure(args, device, frame_size, work)


def measure(args, device: torch.device, frame_size: tuple[int, int], work: Path) -> dict:
    steps_per_epoch = args.skip + args.steps
    run_dir = work / "run"
    if run_dir.exists():
        raise UserError(f"{run_dir} exists: give a new --work-dir")
    config = run_config(args, work / "cityscapes", run_dir)
    make_tree(work / "cityscapes", frame_size, steps_per_epoch * args.batch, args.unique_frames)
    config_path = work / "config.yaml"
    save_config(config, config_path)
    # The bare step's rounds go half before train.py runs, half after: a machine that gets
    # busier or cooler during the run moves both sides alike.
    bare = BareStep(config, args, device)
    rounds = max(2, math.ceil(args.steps / BARE_CHUNK))
    bare_rates = bare.rounds(rounds // 2)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the child gets the memory this process cached
    print(f"train.py: {config.train.epochs} epoch(s) of {steps_per_epoch} steps", flush=True)
    run_train_py(config_path, work / "train.log", args.threads)
    bare_rates += bare.rounds(rounds - rounds // 2)
    bare_rate = statistics.median(bare_rates)
    gflops = bare.forward_gflops(args.size)
    del bare
    if device.type == "cuda":
        torch.cuda.empty_cache()
    first_epoch = config.train.epochs - 1
    events = step_events(run_dir)
    train = steady_rate(events, args.skip, steps_per_epoch, first_epoch)
    train_rate = train.images_per_second(args.batch)
    workers = config.data.workers
    loader, loader_batches = loader_rate(config, device, first_epoch)
    per_worker = loader / max(workers, 1)
    needed = workers_needed(bare_rate, per_worker)
    tflops_per_image = 3 * gflops / 1e3
    peak = peak_tflops(device_name(device), args.amp)

    crop, frame = "x".join(map(str, args.size)), "x".join(map(str, frame_size))
    precision = "float32" if args.amp == "off" else args.amp
    label = (
        f"train.py {args.arch.upper()}-{args.backbone} {precision} {crop} crops of {frame} "
        f"b{args.batch} w{workers} compile {args.compile}"
    )
    window = (
        f"steps {train.first_step}..{train.last_step} of train.py's TensorBoard events "
        f"({train.steps} steps in {train.seconds:.1f} s; start-up, the first {args.skip} steps "
        "and validation left out)"
    )
    bare_text = (
        f"bare step: {len(bare_rates)} rounds x {BARE_CHUNK} steps on batches already on the "
        f"device, half before train.py, half after: {min(bare_rates):.3g}.."
        f"{max(bare_rates):.3g} images/s"
    )
    peak_text = f"{peak[1]} {peak[0]:.0f} TFLOP/s" if peak else "no known peak for this device"
    bound = "data-bound" if loader < bare_rate else "not data-bound"
    rows = [
        Result(
            f"{label}: steady state vs bare step",
            train_rate,
            bare_rate,
            "images/s",
            ">= 0.90",
            note=f"{window}; {bare_text}",
        ),
        Result(
            f"{label}: achieved TFLOP/s vs the device's peak",
            train_rate * tflops_per_image,
            peak[0] if peak else None,
            "TFLOP/s",
            note=f"3 x {gflops:.1f} forward GFLOP per image (FlopCounterMode); bare step "
            f"{bare_rate * tflops_per_image:.3g} TFLOP/s; {peak_text}",
        ),
        Result(
            f"train.py's loader alone, {workers} workers, {crop} crops of {frame}: vs bare step",
            loader,
            bare_rate,
            "images/s",
            ">= 1.00",
            note=f"{bound}: {per_worker:.3g} samples/s per worker over {loader_batches} batches; "
            f"the bare step needs {needed} worker{'s' if needed > 1 else ''}",
        ),
    ]
    details = {
        "device_name": device_name(device),
        "steps_per_epoch": steps_per_epoch,
        "epochs": config.train.epochs,
        "train_events": len(events),
        "train_window": {"steps": train.steps, "seconds": train.seconds},
        "train_images_per_second": train_rate,
        "bare_images_per_second_rounds": bare_rates,
        "forward_gflops_per_image": gflops,
        "loader_samples_per_second": loader,
        "loader_samples_per_second_per_worker": per_worker,
        "workers_needed": needed,
        "peak_tflops": peak[0] if peak else None,
        "work_dir": str(work) if args.work_dir else None,
    }
    record = report("bench_end_to_end", args, rows, details, "End to end: train.py")
    print(f"{machine_line(record['machine'])}\n")  # the table read alone names its machine
    return record


def main(argv: list[str] | None = None) -> int:
    return run_guarded(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
