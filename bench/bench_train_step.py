"""Training step: the engine's step against bare loops, and our FPN against smp's.

Per architecture (FPN and UNET on resnext50) and precision (float32, bf16 autocast), on the same
pre-made batches in the DataLoader's format (uint8 (B, H, W, 3) images, normalized and laid out
on the device by every loop alike, as the engine's to_device does) and in one process, these
take turns epoch by epoch (A B C, C B A, ...):
- engine: the engine's train_one_epoch, the loop of train.py (forward, loss, backward, optimizer
  step, on-device loss bookkeeping) with the default config's model, loss (bce_dice), optimizer
  (Adam) and memory format (channels_last), over an in-memory list of batches.
- bare: the same model, loss and optimizer in a plain five-line loop: what the engine adds.
- smp (FPN only): segmentation_models_pytorch.FPN("resnext50_32x4d", encoder_weights=None) with
  BCEWithLogits on one-hot targets and a plain torch.optim.Adam, in the bare loop; same batch,
  size, dtype and memory format.
- model only (FPN only): our model in smp's loop (BCEWithLogits, plain Adam): model against
  model, loss and optimizer set apart.
Targets: engine time per step <= 1.00x smp's (>= 1.0x its speed), <= 1.05x the bare loop's.
With --compile MODE the engine's model is compiled as train.compile MODE compiles it (the other
variants stay eager): its rows then say what compiling gains; a warmup epoch compiles it.

    python bench/bench_train_step.py [--device cuda] [--quick] [--size 512x1024 --batch 2]
        [--steps 10] [--rounds 5] [--archs fpn unet] [--precisions float32 bf16] [--json out]
        [--compile default|reduce-overhead|max-autotune]

--profile adds where the time goes: the phases of a bare-loop step, and a torch.profiler summary
of the engine's steps (bench/step_profile.py: top kernels, GPU idle fraction).

Note: the engine's train_one_epoch updates no confusion matrix (metrics are computed in evaluate);
bench_metrics.py measures that update.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from bench.common import (
    CLOCKS,
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
    synchronize,
)
from bench.step_profile import print_profile, profile_step
from segmentation.cli import run_guarded
from segmentation.config import COMPILE_MODES, Config, ModelConfig, config_from_dict
from segmentation.data.build import scheme_for
from segmentation.data.normalize import Normalizer
from segmentation.devices import AMP_DTYPES, autocast, resolve_device
from segmentation.engine.compile import compile_mode_for
from segmentation.engine.distributed import DistributedContext
from segmentation.engine.loop import train_one_epoch
from segmentation.engine.optim import build_optimizer
from segmentation.engine.setup import build_optimization, wrap_model
from segmentation.engine.state import Training, TrainState
from segmentation.losses import build_loss
from segmentation.model_setup import model_for
from segmentation.models import encoder_normalization

PRECISIONS = {"float32": "off", "bf16": "bf16"}  # -> train.amp
SMP_ENCODERS = {"resnext50": "resnext50_32x4d"}
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
# (ours, reference, target on the time ratio, what the row says)
COMPARISONS = (
    ("engine", "smp", "<= 1.00", "engine vs smp"),
    ("engine", "bare", "<= 1.05", "engine vs bare loop"),
    ("model_only", "smp", "", "our model vs smp's, same loop (BCE, plain Adam)"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_options(parser)
    add_clock_option(parser)
    parser.add_argument("--archs", nargs="+", choices=("fpn", "unet"), default=["fpn", "unet"])
    parser.add_argument("--backbone", default="resnext50")
    parser.add_argument(
        "--size", help="HxW (default: cuda 512x1024; cpu 128x256; cpu --quick 64x128)"
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, help="batches per timed epoch (cuda 20; cpu 2; cpu --quick 1)"
    )
    parser.add_argument("--rounds", type=int, help="timed epochs per variant (cuda 7, cpu 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per variant")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=tuple(PRECISIONS),
        help="default float32 and bf16; float32 only with --quick on the CPU",
    )
    parser.add_argument(
        "--bf16-size",
        help="HxW of the bf16 runs on the CPU, which has no bf16 instructions here (10-18x "
        "slower than float32): default 64x128, 1 step per epoch, 2 rounds",
    )
    parser.add_argument(
        "--memory-format",
        choices=("channels_last", "contiguous"),
        default="channels_last" if ModelConfig().channels_last else "contiguous",
        help="of models and inputs, all variants alike (default: the config's default)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="where the time goes: each phase of the bare loops' step (also shown when a "
        "target is missed), and torch.profiler over the engine's steps: top 10 CUDA kernels "
        "(CPU operators on a CPU) and the fraction of the time the GPU was idle",
    )
    parser.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        default="off",
        metavar="MODE",
        help="compile the engine's model as train.compile MODE does: default, reduce-overhead "
        "(CUDA graphs), max-autotune (default: off, eager)",
    )
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.size = args.size or ("512x1024" if cuda else "64x128" if args.quick else "128x256")
    # A GPU step takes milliseconds: many of them per round, or launch jitter is the result.
    args.steps = args.steps or (20 if cuda else 1 if args.quick else 2)
    args.rounds = args.rounds or (7 if cuda else 5)
    if args.precisions is None:
        args.precisions = ["float32"] if args.quick and not cuda else list(PRECISIONS)
    args.bf16_size = args.bf16_size or (args.size if cuda else "64x128")
    return args


def make_batches(
    count: int,
    batch: int,
    size: tuple[int, int],
    classes: int,
    device: torch.device,
    one_hot: bool = True,
) -> list[dict]:
    """Batches as train.py's DataLoader gives them: image (B, H, W, 3) uint8 and target
    (B, H, W) uint8 on the host (pinned for CUDA); with `one_hot`, also smp's float target
    (B, C, H, W), made ahead and already on the device (not charged to smp's step)."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        shape = (batch, *size, 3)
        image = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
        target = torch.randint(0, classes, (batch, *size), generator=generator, dtype=torch.uint8)
        if device.type == "cuda":
            image, target = image.pin_memory(), target.pin_memory()
        batches.append({"image": image, "target": target})
        if one_hot:
            encoded = F.one_hot(target.long(), classes).permute(0, 3, 1, 2).float()
            batches[-1]["one_hot"] = encoded.to(device)
    return batches


def images_to_device(
    batch: dict, normalize: Normalizer, device: torch.device, memory_format: torch.memory_format
) -> torch.Tensor:
    """The loader's uint8 (B, H, W, 3) images as the model's normalized float input, the way
    engine.loop.to_device makes it: copy, view as (B, 3, H, W), one normalizing kernel."""
    images = batch["image"].to(device, non_blocking=True).permute(0, 3, 1, 2)
    return normalize(images, memory_format)


def bare_loop(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, dict, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    batches: list[dict],
    amp: str,
    device: torch.device,
    memory_format: torch.memory_format,
    normalize: Normalizer,
) -> Callable[[], None]:
    """One epoch of the plainest training loop: what any of the variants has to do."""

    def epoch() -> None:
        model.train()
        for batch in batches:
            images = images_to_device(batch, normalize, device, memory_format)
            target = batch["target"].to(device, non_blocking=True).long()
            with autocast(device, amp):
                loss = loss_fn(model(images), batch, target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return epoch


def engine_epoch(
    config: Config, model, loss_fn, batches, device, compile_mode: str = "off"
) -> Callable[[], None]:
    """One epoch of the engine's train_one_epoch, its optimizer and input normalization built
    as train.py builds them, over the in-memory batches (no logging); the model compiled in
    `compile_mode` (as the device allows it, see engine.compile) unless off."""
    config.train.log_every = 10**9
    optimizer, scheduler, scaler = build_optimization(config, model, len(batches), device)
    context = DistributedContext(0, 1, 0, device)
    compile_mode = compile_mode_for(compile_mode, device)
    training = Training(
        config=config,
        scheme=scheme_for(config.data),
        model=wrap_model(model, config, context, TrainState(), compile_mode),
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        train_loader=batches,
        context=context,
        normalizer=Normalizer(*encoder_normalization(config.model.backbone)),
        compile_mode=compile_mode,
    )
    return lambda: train_one_epoch(training)


def variants(arch: str, args, precision: str, batches, device) -> tuple[dict, dict]:
    """The loops to compare for one architecture and precision (see the module docstring):
    ({name: one epoch}, {name: (model, loss, optimizer) of each bare loop})."""
    amp = PRECISIONS[precision]
    config = config_from_dict({})
    config.model.arch, config.model.backbone, config.model.pretrained = arch, args.backbone, None
    config.model.channels_last = args.memory_format == "channels_last"
    config.train.amp = amp
    memory_format = MEMORY_FORMATS[args.memory_format]
    scheme = scheme_for(config.data)
    torch.manual_seed(0)
    model = model_for(config, scheme).to(device)
    model.to(memory_format=memory_format)
    loss_fn = build_loss(config.loss.name, scheme.num_classes, **config.loss.options).to(device)
    bce = nn.BCEWithLogitsLoss()

    def our_loss(logits, batch, target):
        return loss_fn(logits, target)

    def smp_loss(logits, batch, target):
        return bce(logits.float(), batch["one_hot"])

    # The bare loop over our model gets the engine's optimizer (build_optimizer), so that it
    # isolates the loop; smp's gets the plain torch.optim.Adam a user of smp would write.
    parts = {"bare": (model, our_loss, build_optimizer(model, config.optim))}
    if arch == "fpn":
        encoder = SMP_ENCODERS.get(args.backbone, args.backbone)
        theirs = smp.FPN(encoder, encoder_weights=None, classes=scheme.num_classes)
        theirs = theirs.to(device, memory_format=memory_format)
        lr = config.optim.lr
        parts["smp"] = (theirs, smp_loss, torch.optim.Adam(theirs.parameters(), lr=lr))
        parts["model_only"] = (model, smp_loss, torch.optim.Adam(model.parameters(), lr=lr))
    loops = {"engine": engine_epoch(config, model, loss_fn, batches, device, args.compile)}
    normalize = Normalizer(*encoder_normalization(args.backbone))
    for name, (net, loss, optimizer) in parts.items():
        loops[name] = bare_loop(
            net, loss, optimizer, batches, amp, device, memory_format, normalize
        )
    return loops, parts


VARIANT_NAMES = {
    "bare": "ours (model + bce_dice)",
    "model_only": "our model + BCE",
    "smp": "smp FPN + BCE",
}
PHASES = ("to device", "forward", "loss", "backward", "optimizer step")


def step_phases(
    net, loss_fn, optimizer, batch, amp, device, memory_format, normalize, clock
) -> list[float]:
    """Milliseconds of each phase (PHASES) of one bare-loop step, the device synced between."""
    now = CLOCKS[clock]
    marks = []

    def mark() -> None:
        synchronize(device)
        marks.append(now())

    mark()
    images = images_to_device(batch, normalize, device, memory_format)
    target = batch["target"].to(device, non_blocking=True).long()
    mark()
    with autocast(device, amp):
        logits = net(images)
    mark()
    with autocast(device, amp):
        loss = loss_fn(logits, batch, target)
    mark()
    loss.backward()
    mark()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    mark()
    return [(b - a) * 1e3 for a, b in zip(marks, marks[1:])]


def profile_phases(parts: dict, batch: dict, args, precision: str, device, rounds: int) -> dict:
    """Median ms per phase of each bare loop's step, the loops taking turns."""
    memory_format = MEMORY_FORMATS[args.memory_format]
    amp, clock = PRECISIONS[precision], resolve_clock(args)
    normalize = Normalizer(*encoder_normalization(args.backbone))
    times: dict[str, list[list[float]]] = {name: [] for name in parts}
    order = list(parts)
    for _ in range(rounds):
        for name in order:
            net, loss, optimizer = parts[name]
            times[name].append(
                step_phases(
                    net, loss, optimizer, batch, amp, device, memory_format, normalize, clock
                )
            )
        order.reverse()
    return {
        name: {phase: statistics.median(r[i] for r in runs) for i, phase in enumerate(PHASES)}
        for name, runs in times.items()
    }


def bench(arch: str, precision: str, args, device) -> tuple[list[Result], dict]:
    cpu_bf16 = precision == "bf16" and device.type == "cpu"
    size_text = args.bf16_size if cpu_bf16 else args.size
    size = parse_size(size_text, 64 if arch == "unet" else 32)
    steps, rounds = (1, 2) if cpu_bf16 else (args.steps, args.rounds)
    classes = scheme_for(Config().data).num_classes
    batches = make_batches(steps, args.batch, size, classes, device)
    loops, parts = variants(arch, args, precision, batches, device)
    clock = resolve_clock(args)
    seconds = interleave(loops, rounds, device, warmup=args.warmup, clock=clock)
    ms = {name: [s * 1e3 / steps for s in values] for name, values in seconds.items()}
    median = {name: statistics.median(values) for name, values in ms.items()}
    label = f"train step {arch.upper()}-{args.backbone} {precision} {size_text} b{args.batch}"
    if args.compile != "off":  # the mode the device allows (reduce-overhead: CUDA only)
        label += f", engine compiled {compile_mode_for(args.compile, device, warn=False)}"
    note = f"{rounds} rounds x {steps} steps, {clock} clock"
    rows = []
    for ours, reference, target, what in COMPARISONS:
        if reference not in ms:
            continue
        low, high = ratio_spread(ms[ours], ms[reference])
        rows.append(
            Result(
                f"{label}: {what}",
                median[ours],
                median[reference],
                "ms/step",
                target,
                note=f"{note}; per-round ratio {low:.3f}..{high:.3f}",
                paired=paired_ratio(ms[ours], ms[reference]),
            )
        )
    details = {"size": size_text, "steps": steps, "rounds": rounds, "ms_per_step": ms}
    if args.profile or any(row.met is False for row in rows):
        details["phases_ms"] = profile_phases(parts, batches[0], args, precision, device, rounds)
    if args.profile:
        details["engine_profile"] = profile_step(loops["engine"], device, steps)
    return rows, details


def run(args: argparse.Namespace) -> dict:
    apply_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = Config().train.cudnn_benchmark
    rows, details = [], {}
    for precision in args.precisions:
        bf16 = AMP_DTYPES[PRECISIONS[precision]] is torch.bfloat16
        if bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            print(f"note: {torch.cuda.get_device_name()} has no bf16: bf16 skipped")
            continue
        for arch in args.archs:
            arch_rows, arch_details = bench(arch, precision, args, device)
            rows += arch_rows
            details[f"{arch}/{precision}"] = arch_details
    record = report("bench_train_step", args, rows, details, "Training step")
    for key, values in details.items():
        if "phases_ms" in values:
            print_phases(key, values["phases_ms"])
        if "engine_profile" in values:
            print_profile(key, values["engine_profile"])
    return record


def print_phases(key: str, phases: dict[str, dict[str, float]]) -> None:
    names = list(phases)
    print(f"### {key}: where a bare-loop step's time goes (ms, median, device synced)\n")
    print("| phase | " + " | ".join(VARIANT_NAMES[name] for name in names) + " |")
    print("|---|" + "---:|" * len(names))
    for phase in PHASES:
        cells = " | ".join(f"{phases[name][phase]:.1f}" for name in names)
        print(f"| {phase} | {cells} |")
    totals = " | ".join(f"{sum(phases[name].values()):.1f}" for name in names)
    print(f"| sum | {totals} |\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
