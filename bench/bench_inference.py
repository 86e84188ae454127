"""Inference: inference.py's Renderer frames/s against a bare forward of the same model.

Ours: Renderer.run, what inference.py runs once it has loaded the checkpoint (frames decoded in
DataLoader workers, normalized on the device, forward, argmax, overlays made and written), over
N 512x1024 PNG frames, with a checkpoint in train.py's format (an FPN-resnet18 by default,
config data.image_size 512x1024, so no resizing), for each output: overlay PNGs, overlay JPEGs
(--image-format jpg) and one mp4 (--output NAME.mp4, libx264). Reference: the same model's
forward on the same frames, already decoded, normalized and on the device, in batches of the
Renderer's size. They take turns in one process. Targets: PNGs >= 0.85 of the bare frames/s on
a CPU; the mp4 >= 0.90 on a CPU (FPN-resnet18 at 256x512: --size 256x512), >= 0.5 on a GPU.
Then where the time goes: each stage of a frame on its own, in ms per frame.

    python bench/bench_inference.py [--device cuda] [--quick] [--frames 12] [--backbone resnet18]
        [--size 256x512] [--outputs png jpg mp4] [--batch-size 4 --workers auto] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`

import torch

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
from segmentation.checkpoint import save_checkpoint
from segmentation.cli import run_guarded
from segmentation.config import config_from_dict, config_to_dict
from segmentation.data.build import scheme_for
from segmentation.data.frames import find_frames
from segmentation.data.io import read_rgb, write_png
from segmentation.devices import native_bf16, resolve_device
from segmentation.inference.arguments import worker_count
from segmentation.inference.encode import encode_on_host
from segmentation.inference.render import Renderer, RenderOptions, decode_workers
from segmentation.inference.sinks import FrameWork
from segmentation.model_setup import model_for
from segmentation.models import required_input_multiple
from segmentation.prediction.predict import ViewMerger, probabilities_from_logits
from segmentation.prediction.trained_model import TrainedModel, load_trained_model
from segmentation.sample.generate import generate_cityscapes
from segmentation.visualize import DeviceColors, overlay

# On a CPU the model is most of a frame's time: the Renderer is held against a bare forward,
# and bf16 must pay off. On a GPU the forward is a few percent of it (an H200: 1.5 ms of a
# frame's 14): decoding and PNG encoding set the pace, and the Renderer is held against its
# own pipeline without the model instead; bf16 rows are reported there, not judged.
TARGET = ">= 0.85"
PIPELINE_TARGET = ">= 0.85"
BF16_SPEEDUP_TARGET = ">= 2.0"
# Straight into a video, the host's PNG costs are gone: the whole command close to the forward
# on a CPU, half of it at least on a GPU (where libx264 is the host's share of the work).
VIDEO_TARGETS = {"cpu": ">= 0.90", "cuda": ">= 0.5"}
OUTPUTS = ("png", "jpg", "mp4")


def judged_on(device: str, target: str, where: str) -> str:
    """`target` where it applies ("cpu" or "cuda"), else no target (reported only)."""
    return target if device == where else ""


SEQUENCES = 3  # generate_cityscapes writes this many demo video sequences


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = RenderOptions()
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_options(parser)
    parser.add_argument("--arch", default="fpn")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", default="512x1024", help="HxW of frames and model input")
    parser.add_argument(
        "--frames",
        type=int,
        help="frames rendered, a multiple of 3 (default 24, --quick 12; on cuda 48, --quick 24)",
    )
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument(
        "--workers", type=worker_count, default=defaults.workers, help="a number, or auto"
    )
    parser.add_argument("--save", nargs="+", default=defaults.save, help="as inference.py's")
    parser.add_argument(
        "--outputs",
        nargs="+",
        choices=OUTPUTS,
        default=list(OUTPUTS),
        help="png, jpg: frames in a folder; mp4: one video of the first --save kind",
    )
    parser.add_argument("--rounds", type=int, help="timed runs of each (default 3; --quick 2)")
    args = parser.parse_args(argv)
    # Throughput is what is compared: enough frames that a run's fixed costs (forking the
    # decoders, the last frames' writes) are a small part of it.
    scale = 2 if args.device == "cuda" else 1
    args.frames = args.frames or scale * (12 if args.quick else 24)
    args.rounds = args.rounds or (2 if args.quick else 3)
    return args


def make_frames(folder: Path, size: tuple[int, int], count: int) -> str:
    """Generate `count` frames, rounded up to a multiple of 3 (one third per demo video
    sequence); returns a glob pattern of them, as inference.py's --input takes it."""
    root = folder / "cityscapes"
    per_sequence = math.ceil(count / SEQUENCES)
    generate_cityscapes(
        root,
        height=size[0],
        width=size[1],
        train_per_city=0,
        val_per_city=0,
        test_per_city=0,
        video_frames=per_sequence,
    )
    return str(root / "leftImg8bit" / "demoVideo" / "*" / "*.png")


def make_checkpoint(args: argparse.Namespace, size: tuple[int, int], path: Path) -> Path:
    """A checkpoint as train.py writes it, reduced to what inference needs."""
    config = config_from_dict({})
    config.data.image_size = size
    config.model.arch, config.model.backbone, config.model.pretrained = (
        args.arch,
        args.backbone,
        None,
    )
    scheme = scheme_for(config.data)
    torch.manual_seed(0)
    model = model_for(config, scheme)
    state = {
        "model": model.state_dict(),
        "config": config_to_dict(config),
        "class_names": list(scheme.class_names),
    }
    save_checkpoint(state, path)
    return path


def bare_forward(trained: TrainedModel, frames: list[torch.Tensor], batch_size: int):
    """The reference: forward only, on frames already decoded, normalized and on the device."""
    batches = [
        trained.normalize(torch.stack(frames[start : start + batch_size]))
        for start in range(0, len(frames), batch_size)
    ]

    def run(count: int | None = None) -> None:
        with torch.inference_mode():
            for batch in batches[:count]:
                trained.forward(batch)  # the model in the TrainedModel's autocast mode

    return run


def without_model(renderer: Renderer) -> Renderer:
    """The Renderer with its model taken out (class maps of zeros): decoding, overlays, PNG
    encoding and writing only, the floor that the CPU's share of the work sets."""

    def no_model(images: torch.Tensor, sink) -> list[FrameWork]:
        _, _, height, width = images.shape
        return [FrameWork(image, torch.zeros(height, width, dtype=torch.uint8)) for image in images]

    renderer._predict = no_model
    return renderer


def stage_breakdown(
    trained: TrainedModel, paths: list[Path], options: RenderOptions, folder: Path
) -> list[tuple[str, float]]:
    """Milliseconds per frame of each stage of rendering, each on its own, one frame at a time
    (the Renderer overlaps decoding and writing with the model; here nothing overlaps)."""
    stages: dict[str, list[float]] = {}
    device = trained.device
    colors = DeviceColors(trained.scheme, device)

    def clock(name: str, function: Callable[[], object]) -> object:
        synchronize(device)
        start = time.perf_counter()
        value = function()
        synchronize(device)
        stages.setdefault(name, []).append((time.perf_counter() - start) * 1e3)
        return value

    def post_process(logits: torch.Tensor) -> torch.Tensor:
        # predict_probabilities after the forward (tta none), then Renderer._predict's argmax.
        merger = ViewMerger(options.prediction.merge)
        merger.add(probabilities_from_logits(logits, trained.head))
        return merger.result().argmax(dim=1).to(torch.uint8).cpu()

    with torch.inference_mode():
        # Untimed: cudnn times its kernel choices on a new input shape first.
        first = torch.from_numpy(read_rgb(paths[0]).transpose(2, 0, 1).copy())[None]
        trained.model(trained.normalize(first))
        for index, path in enumerate(paths):
            image = clock("decode (read_rgb)", lambda p=path: read_rgb(p))
            tensor = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
            normalized = clock("normalize on the device", lambda t=tensor: trained.normalize(t))
            logits = clock("forward", lambda x=normalized: trained.model(x))
            classes = clock("probabilities, argmax, to host", lambda x=logits: post_process(x))
            class_map = classes[0].numpy()
            for kind in options.save:
                if kind != "overlay":
                    continue  # colour and labelIds maps are cheaper lookups than an overlay
                picture = clock(
                    "overlay (OpenCV, host)",
                    lambda i=image, c=class_map: overlay(i, c, trained.scheme, options.alpha),
                )
                # The GPU path's overlay, timed on this device (on a CPU: the CPU's tensors).
                clock(
                    f"overlay (tensor ops on {device.type}, to host)",
                    lambda t=tensor, c=classes: colors.overlay(
                        t.to(device), c.to(device), options.alpha
                    ).cpu(),
                )
                target = folder / f"{index}_{kind}.png"
                clock("PNG encode + write", lambda p=picture, t=target: write_png(t, p))
                clock("JPEG encode (q90, OpenCV)", lambda p=picture: encode_on_host(p, "jpg", 90))
    return [(name, statistics.mean(values)) for name, values in stages.items()]


def all_cpu_seconds() -> float:
    """CPU seconds of this process (all its threads) and of its ended children: the Renderer's
    DataLoader workers are joined when its loader is exhausted, so a finished run counts them."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timing_predict(renderer: Renderer, spent: list[float]) -> None:
    """Record the wall time of each Renderer._predict call (normalize, forward, argmax, to
    host) of this one instance into `spent`: how much of a run is the model's part."""
    predict = renderer._predict

    def timed_predict(images: torch.Tensor, sink):
        start = time.perf_counter()
        classes = predict(images, sink)
        spent.append(time.perf_counter() - start)
        return classes

    renderer._predict = timed_predict


def run(args: argparse.Namespace) -> dict:
    apply_threads(args.threads)
    device = resolve_device(args.device)
    size = parse_size(args.size, required_input_multiple(args.arch))
    options = RenderOptions(
        save=list(args.save),
        batch_size=args.batch_size,
        workers=args.workers,
        overwrite=True,
    )
    cpu: dict[str, list[float]] = {}
    predict_seconds: list[float] = []
    bf16, bf16_why = native_bf16(device)

    def with_cpu(name: str, function: Callable[[], object]) -> Callable[[], None]:
        def measured() -> None:
            start = all_cpu_seconds()
            function()
            cpu.setdefault(name, []).append(all_cpu_seconds() - start)

        return measured

    with tempfile.TemporaryDirectory(prefix="bench_inference_") as name:
        folder = Path(name)
        pattern = make_frames(folder, size, args.frames)
        paths = [frame.path for frame in find_frames(pattern)]
        checkpoint = make_checkpoint(args, size, folder / "model.pt")
        frames = [torch.from_numpy(read_rgb(p).transpose(2, 0, 1).copy()) for p in paths]
        sides = {}
        for precision in ("off", "bf16") if bf16 else ("off",):
            trained = load_trained_model(checkpoint, device, amp=precision)
            suffix = "" if precision == "off" else "_bf16"
            bare = bare_forward(trained, frames, args.batch_size)
            bare(1)  # warm up the model (kernel choices, allocator) once for both sides
            spent = predict_seconds if precision == "off" else []  # the float32 breakdown
            render = renderer_run(Renderer(trained, options), pattern, folder, spent)
            sides[f"renderer{suffix}"] = with_cpu(f"renderer{suffix}", render)
            sides[f"bare{suffix}"] = with_cpu(f"bare{suffix}", bare)
        # The float32 model's other outputs: JPEG frames, one video.
        for output in args.outputs:
            if output == "png":
                continue
            formats = {"image_format": "jpg"} if output == "jpg" else {}
            renderer = Renderer(trained_float32(trained, checkpoint), replace(options, **formats))
            target = "renders.mp4" if output == "mp4" else "renders_jpg"
            render = renderer_run(renderer, pattern, folder, [], target)
            sides[f"renderer_{output}"] = with_cpu(f"renderer_{output}", render)
        floor = without_model(Renderer(trained, options))
        sides["pipeline"] = with_cpu("pipeline", renderer_run(floor, pattern, folder, []))
        # A GPU's first batch of each size times cudnn's kernels: warm up there; a CPU has no
        # such cost, and a warm-up round would double its run.
        warmup = 1 if device.type == "cuda" else 0
        seconds = interleave(sides, args.rounds, device, warmup=warmup, clock="wall")
        sample = paths[: 3 if args.quick else 6]
        stages = stage_breakdown(
            load_trained_model(checkpoint, device), sample, options, folder / "stages"
        )
    rows = result_rows(args, len(paths), seconds, cpu if device.type == "cpu" else None)
    rows += output_rows(args, len(paths), seconds)
    rows += bf16_rows(args, len(paths), seconds) if bf16 else []
    if not bf16:
        print(f"bf16 rows skipped: {bf16_why} (bf16 would be emulated, slower than float32)\n")
    details = {
        "bf16": bf16_why,
        "decode_workers": decode_workers(args.workers),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "renderer_seconds_in_predict": predict_seconds,
        "stages_ms_per_frame": stages,
    }
    record = report("bench_inference", args, rows, details, "Inference")
    per_frame = {
        "renderer": 1e3 * statistics.median(seconds["renderer"]) / len(paths),
        "in_predict": 1e3 * statistics.median(predict_seconds) / len(paths),
        "bare": 1e3 * statistics.median(seconds["bare"]) / len(paths),
    }
    print_stages(stages, per_frame)
    return record


def trained_float32(trained: TrainedModel, checkpoint: Path) -> TrainedModel:
    """The float32 model: `trained` when it is, else loaded again."""
    if trained.amp == "off":
        return trained
    return load_trained_model(checkpoint, trained.device, amp="off")


def renderer_run(
    renderer: Renderer,
    pattern: str,
    folder: Path,
    predict_seconds: list,
    output: str = "renders",
):
    """One run of the Renderer over the frames into folder/output (a video when it ends in
    .mp4), recording its time in _predict."""
    spent: list[float] = []
    timing_predict(renderer, spent)

    def render() -> None:
        spent.clear()
        renderer.run(pattern, folder / output)
        predict_seconds.append(sum(spent))

    return render


def frames_row(
    name: str, seconds: dict, ours: str, reference: str, count: int, target: str, note: str
) -> Result:
    """Side `ours` against side `reference` in frames/s (medians over the rounds), their
    paired ratio, and the per-round spread at the end of `note`."""
    low, high = ratio_spread(seconds[reference], seconds[ours])
    return Result(
        name,
        count / statistics.median(seconds[ours]),
        count / statistics.median(seconds[reference]),
        "frames/s",
        target,
        note=f"{note}per-round ratio {low:.3f}..{high:.3f}",
        paired=paired_ratio(seconds[reference], seconds[ours]),
    )


def output_rows(args, count: int, seconds: dict) -> list[Result]:
    """The whole command writing JPEG frames or one mp4, against the bare float32 forward."""
    model = f"{args.arch.upper()}-{args.backbone}"
    rows = []
    for output in args.outputs:
        if output == "png":
            continue
        what = "JPEG frames (q90)" if output == "jpg" else f"one mp4 ({args.save[0]}, libx264)"
        target = VIDEO_TARGETS.get(args.device, "") if output == "mp4" else ""
        rows.append(
            frames_row(
                f"inference {model} {args.size} b{args.batch_size}: Renderer to {what} "
                "vs bare forward",
                seconds,
                f"renderer_{output}",
                "bare",
                count,
                target,
                "wall clock; ",
            )
        )
    return rows


def bf16_rows(args, count: int, seconds: dict) -> list[Result]:
    """inference.py in bf16 autocast against float32, and against a bare bf16 forward."""
    model = f"{args.arch.upper()}-{args.backbone}"
    label = f"inference {model} {args.size} b{args.batch_size} bf16"
    return [
        frames_row(
            f"{label}: {what}",
            seconds,
            "renderer_bf16",
            reference,
            count,
            judged_on(args.device, target, "cpu"),
            "wall clock; ",
        )
        for reference, what, target in (
            ("renderer", "Renderer --amp bf16 vs --amp off", BF16_SPEEDUP_TARGET),
            ("bare_bf16", "Renderer vs bare forward, both bf16", TARGET),
        )
    ]


def result_rows(args, count: int, seconds: dict, cpu: dict | None) -> list[Result]:
    model = f"{args.arch.upper()}-{args.backbone}"
    label = f"inference {model} {args.size} b{args.batch_size}: Renderer"
    rows = [
        frames_row(
            f"{label} vs bare forward",
            seconds,
            "renderer",
            "bare",
            count,
            judged_on(args.device, TARGET, "cpu"),
            f"{count} frames x {args.rounds} rounds, "
            f"{decode_workers(args.workers)} decode workers, "
            f"save {' '.join(args.save)}, wall clock; ",
        ),
        # Where the model is fast (a GPU), decoding and PNG encoding set the pace: the model's
        # work must hide behind them. On a CPU the model is most of the time.
        frames_row(
            f"{label} vs its pipeline without the model",
            seconds,
            "renderer",
            "pipeline",
            count,
            judged_on(args.device, PIPELINE_TARGET, "cuda"),
            "decode, overlay, PNG encode and write with class maps of zeros, no model; ",
        ),
    ]
    if cpu is not None:
        rows.append(
            Result(
                f"{label} vs bare forward, CPU work",
                count / statistics.median(cpu["renderer"]),
                count / statistics.median(cpu["bare"]),
                "frames/CPU-s",
                note="CPU seconds of every process and thread, not inflated by other jobs: "
                "the work the Renderer adds, whatever overlaps",
                paired=paired_ratio(cpu["bare"], cpu["renderer"]),
            )
        )
    return rows


def print_stages(stages: list[tuple[str, float]], per_frame: dict[str, float]) -> None:
    total = sum(ms for _, ms in stages)
    print("### Where a frame's time goes (ms per frame)\n")
    print("Each stage alone, one frame at a time:\n")
    print("| stage | ms | share of the sum |")
    print("|---|---:|---:|")
    for name, milliseconds in stages:
        print(f"| {name} | {milliseconds:.1f} | {milliseconds / total:.0%} |")
    print(f"| sum | {total:.1f} | 100% |\n")
    rest = per_frame["renderer"] - per_frame["in_predict"]
    print("In the timed runs (wall clock, medians):\n")
    print("| | ms per frame |")
    print("|---|---:|")
    print(f"| Renderer, whole run | {per_frame['renderer']:.1f} |")
    print(
        f"| of which in Renderer._predict (normalize, forward, argmax) | "
        f"{per_frame['in_predict']:.1f} |"
    )
    print(f"| of which elsewhere (setup, waiting for decode or writes) | {rest:.1f} |")
    print(f"| bare forward | {per_frame['bare']:.1f} |\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
