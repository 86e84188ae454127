"""Small checks that bench/gpu_check.py runs as steps of its own, each in its own process.

    python bench/gpu_probes.py syncs {cuda,cpu} [--json PATH] [--scenarios NAME ...]
    python bench/gpu_probes.py checkpoint-state RUN/last.pt [--cuda]
    python bench/gpu_probes.py weights-diff A.pt B.pt [--exact]
    python bench/gpu_probes.py compare-scores CPU.json GPU.json
    python bench/gpu_probes.py compare-labels CPU_DIR GPU_DIR
    python bench/gpu_probes.py expect-refusal TEXT [--timeout S] -- COMMAND ...

Each prints what it found, ends with one line "DETAIL ..." (the step's summary) and exits 0 if
the check holds, 1 if not.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segmentation.engine.state import Training

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`

# (name, config sections over the defaults): the default training configuration first. The
# default and its bf16 variant are judged (no host sync per step); the rest are reported.
SYNC_SCENARIOS: dict[str, dict] = {
    "default": {},
    "bf16": {"train": {"amp": "bf16"}},
    "fp16": {"train": {"amp": "fp16"}},
    "fp16 grad_clip": {"train": {"amp": "fp16", "grad_clip": 1.0}},
    "fp16 sgd": {"train": {"amp": "fp16"}, "optim": {"optimizer": "sgd"}},
    "poly accumulate=2 freeze=2": {
        "optim": {"scheduler": "poly"},
        "train": {"accumulate": 2, "freeze_encoder_iters": 2},
    },
    "skip_nonfinite=1": {"train": {"skip_nonfinite": 1}},
    "log_every=1": {"train": {"log_every": 1}},
}
JUDGED_SCENARIOS = ("default", "bf16")
SHORT_EPOCH, LONG_EPOCH = 4, 12  # batches per counted epoch


def detail(text: str) -> None:
    print(f"DETAIL {text}", flush=True)


# --------------------------------------------------------------------------- host syncs


def sync_training(device_name: str, sections: dict) -> Training:
    """The engine's Training for `sections` over the default config (FPN on resnet18, no
    download), built with the functions train.py uses, over in-memory batches."""
    import torch

    from segmentation.config import config_from_dict
    from segmentation.data.build import scheme_for
    from segmentation.engine.distributed import DistributedContext
    from segmentation.engine.run_logger import RunLogger
    from segmentation.engine.setup import StartingPoint, build_model, build_optimization
    from segmentation.engine.state import Training
    from segmentation.losses import build_loss

    values = {"model": {"backbone": "resnet18", "pretrained": None}}
    for section, keys in sections.items():
        values.setdefault(section, {}).update(keys)
    values.setdefault("train", {})["device"] = device_name
    config = config_from_dict(values)
    device = torch.device(device_name)
    scheme = scheme_for(config.data)
    model = build_model(config, scheme, device, StartingPoint())
    loss_fn = build_loss(config.loss.name, scheme.num_classes, **config.loss.options).to(device)
    optimizer, scheduler, scaler = build_optimization(config, model, LONG_EPOCH, device)
    return Training(
        config=config,
        scheme=scheme,
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        train_loader=[],
        context=DistributedContext(0, 1, 0, device),
        run_logger=RunLogger(Path(config.output_dir), enabled=False),  # logs nothing
    )


def sync_batches(count: int, classes: int, size: tuple[int, int], cuda: bool) -> list[dict]:
    """Batches as train.py's DataLoader hands them over: uint8 (B, H, W, 3) images and uint8
    targets on the host, pinned for a GPU."""
    import torch

    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        image = torch.randint(0, 256, (2, *size, 3), generator=generator, dtype=torch.uint8)
        target = torch.randint(0, classes, (2, *size), generator=generator, dtype=torch.uint8)
        if cuda:
            image, target = image.pin_memory(), target.pin_memory()
        batches.append({"image": image, "target": target})
    return batches


def count_syncs(function: Callable[[], object], cuda: bool) -> tuple[int, collections.Counter]:
    """Synchronizing CUDA calls made by `function` (torch.cuda.set_sync_debug_mode("warn")
    turns each into a warning), and the source lines that made them."""
    import torch

    if cuda:
        torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            function()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
                torch.cuda.synchronize()
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    sites = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    return len(syncs), sites


def syncs_per_step(device_name: str, sections: dict) -> dict:
    """Host syncs per optimizer step: (syncs of a long epoch - of a short one) / (steps more),
    so that the fixed end-of-epoch reads cancel out."""
    from segmentation.engine.loop import train_one_epoch
    from segmentation.engine.state import TrainState

    cuda = device_name.startswith("cuda")
    training = sync_training(device_name, sections)
    size = (256, 512) if cuda else (64, 128)
    batches = sync_batches(LONG_EPOCH, training.scheme.num_classes, size, cuda)
    accumulate = training.config.train.accumulate

    def epoch(count: int) -> Callable[[], object]:
        def run() -> object:
            training.state = TrainState()  # every epoch from step 0: the same log steps
            training.train_loader = batches[:count]
            return train_one_epoch(training)

        return run

    # Warm-up as long as the short epoch: whatever happens once (cudnn.benchmark's timing, the
    # allocator, lazy initialization) happens here, not in one counted epoch only.
    epoch(SHORT_EPOCH)()
    short, _ = count_syncs(epoch(SHORT_EPOCH), cuda)
    long, sites = count_syncs(epoch(LONG_EPOCH), cuda)
    steps = (LONG_EPOCH - SHORT_EPOCH) / accumulate
    return {"per_step": (long - short) / steps, "short": short, "long": long, "sites": sites}


def syncs(args: argparse.Namespace) -> int:
    cuda = args.device.startswith("cuda")
    results, judged = {}, []
    for name in args.scenarios or SYNC_SCENARIOS:
        sections = SYNC_SCENARIOS[name]
        if not cuda and sections.get("train", {}).get("amp") == "fp16":
            continue  # fp16 autocast is a CUDA mode
        try:
            result = syncs_per_step(args.device, sections)
        except Exception as error:  # one scenario's failure must not hide the others
            results[name] = {"error": repr(error)}
            print(f"SYNC {name:28s} ERROR {error!r}", flush=True)
            continue
        sites = dict(result["sites"].most_common(4))
        print(
            f"SYNC {name:28s} {result['per_step']:5.2f}/step (epoch of {SHORT_EPOCH}: "
            f"{result['short']}, of {LONG_EPOCH}: {result['long']}) sites {sites}",
            flush=True,
        )
        results[name] = {**result, "sites": dict(result["sites"])}
        if name in JUDGED_SCENARIOS:
            judged.append(f"{name} {result['per_step']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    errors = [name for name, result in results.items() if "error" in result]
    if not cuda:  # the scenarios ran (their code paths checked); there is nothing to count
        said = f"; failed: {', '.join(errors)}" if errors else ""
        detail(f"{len(results)} scenario(s) ran on the CPU{said}; host syncs are counted on CUDA")
        return 1 if errors else 0
    bad = [
        name
        for name in JUDGED_SCENARIOS
        if name in results and ("error" in results[name] or results[name]["per_step"] > 0)
    ]
    said = f"; failed: {', '.join(errors)}" if errors else ""
    detail(f"syncs per step: {', '.join(judged) or 'none measured'} (expected 0){said}")
    return 1 if bad or errors or not judged else 0


# --------------------------------------------------------------------------- checkpoints


def checkpoint_state(args: argparse.Namespace) -> int:
    """An fp16 run's checkpoint keeps its GradScaler (scale > 0) and, from a GPU, the CUDA
    RNG state."""
    from segmentation.checkpoint import load_checkpoint

    state = load_checkpoint(args.checkpoint)
    scaler, rng = state.get("scaler") or {}, state.get("rng") or {}
    print(f"scaler {scaler}")
    print(f"rng {sorted(rng)}; step {state['state']['step']}; amp {state['config']['train']}")
    problems = []
    if not scaler or not scaler.get("scale", 0) > 0:
        problems.append("no GradScaler state with a positive scale")
    if args.cuda and "cuda" not in rng:
        problems.append("no CUDA RNG state")
    if problems:
        detail("; ".join(problems))
        return 1
    detail(
        f"GradScaler scale {scaler['scale']:g}, growth tracker {scaler.get('_growth_tracker')}"
        f"{', CUDA RNG state saved' if 'cuda' in rng else ''}"
    )
    return 0


def weights_diff(args: argparse.Namespace) -> int:
    """How far two checkpoints' weights are apart (a resumed run against a straight one)."""
    import torch

    from segmentation.checkpoint import load_checkpoint

    a, b = load_checkpoint(args.first), load_checkpoint(args.second)
    # Relative to each tensor's largest value: BatchNorm's running variances reach thousands in
    # an untrained network, where an absolute gap says nothing.
    worst, worst_key, unequal = 0.0, "", 0
    for key, tensor in a["model"].items():
        other = b["model"][key]
        if not torch.equal(tensor, other):
            unequal += 1
            if tensor.is_floating_point():
                gap = (tensor.float() - other.float()).abs().max()
                scale = tensor.float().abs().max().clamp_min(1e-12)
                if (gap / scale).item() > worst:
                    worst, worst_key = (gap / scale).item(), key
    total = len(a["model"])
    where = f" ({worst_key})" if worst_key else ""
    detail(
        f"{unequal} of {total} weight tensors differ, largest gap {worst:.2%} of the tensor's "
        f"largest value{where}; steps {a['state']['step']} and {b['state']['step']}"
    )
    same_step = a["state"]["step"] == b["state"]["step"]
    return 1 if args.exact and (unequal or not same_step) else 0


# --------------------------------------------------------------------------- CPU vs GPU

SCORE_TOLERANCE = 0.01  # mIoU and pixel accuracy, absolute
PIXEL_AGREEMENT = 0.99  # share of pixels with the same class in rendered label maps


def compare_scores(args: argparse.Namespace) -> int:
    """evaluate.py's JSON from the CPU and from the GPU: the same images, close scores."""
    cpu, gpu = (json.loads(Path(path).read_text()) for path in (args.cpu, args.gpu))
    if cpu["images"] != gpu["images"]:
        detail(f"scored {cpu['images']} images on the CPU but {gpu['images']} on the GPU")
        return 1
    gaps = {key: abs((cpu[key] or 0) - (gpu[key] or 0)) for key in ("mIoU", "pixel_accuracy")}
    per_class = [
        abs(scores["iou"] - gpu["per_class"][name]["iou"])
        for name, scores in cpu["per_class"].items()
        if scores["iou"] is not None and gpu["per_class"][name]["iou"] is not None
    ]
    detail(
        f"mIoU cpu {cpu['mIoU']:.5f} gpu {gpu['mIoU']:.5f}; pixel accuracy cpu "
        f"{cpu['pixel_accuracy']:.5f} gpu {gpu['pixel_accuracy']:.5f}; largest per-class IoU "
        f"gap {max(per_class, default=0.0):.4f} ({cpu['images']} images, tolerance "
        f"{SCORE_TOLERANCE})"
    )
    return 1 if max(gaps.values()) > SCORE_TOLERANCE else 0


def compare_labels(args: argparse.Namespace) -> int:
    """inference.py's label-id PNGs from the CPU and from the GPU: the same files, nearly the
    same pixels."""
    import cv2
    import numpy as np

    cpu = {path.name: path for path in Path(args.cpu).rglob("*_labelIds.png")}
    gpu = {path.name: path for path in Path(args.gpu).rglob("*_labelIds.png")}
    if not cpu or cpu.keys() != gpu.keys():
        detail(f"label maps differ in number or names: {len(cpu)} on the CPU, {len(gpu)} on GPU")
        return 1
    same = total = 0
    for name in sorted(cpu):
        a = cv2.imread(str(cpu[name]), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(gpu[name]), cv2.IMREAD_UNCHANGED)
        if a is None or b is None or a.shape != b.shape:
            detail(f"{name}: unreadable or of different sizes")
            return 1
        same += int(np.count_nonzero(a == b))
        total += a.size
    agreement = same / total
    detail(f"{len(cpu)} frames: {agreement:.4%} of pixels agree (at least {PIXEL_AGREEMENT:.0%})")
    return 0 if agreement >= PIXEL_AGREEMENT else 1


# --------------------------------------------------------------------------- refusals


def expect_refusal(args: argparse.Namespace) -> int:
    """Run a command that must fail: a non-zero exit with `expected` in its output (the one
    line a user should get), and no traceback of the project's own code."""
    import subprocess

    result = subprocess.run(
        args.command, capture_output=True, text=True, timeout=args.timeout, check=False
    )
    output = result.stdout + result.stderr
    print(output)
    said = next((line.strip() for line in output.splitlines() if args.expected in line), None)
    # torchrun prints its own traceback when a rank fails; the project's files must not appear.
    ours = [line for line in output.splitlines() if 'File "' in line and "/segmentation/" in line]
    if result.returncode == 0 or said is None or ours:
        why = "exit 0" if result.returncode == 0 else f"exit {result.returncode}"
        why += "" if said else f", no line with {args.expected!r}"
        why += f", a traceback through {ours[0].strip()}" if ours else ""
        detail(f"expected a refusal: {why}")
        return 1
    detail(f"exit {result.returncode}: {said[:200]}")
    return 0


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="probe", required=True)
    probe = sub.add_parser("syncs", help="host syncs per training step")
    probe.add_argument("device", help="cuda, cuda:N or cpu")
    probe.add_argument("--json", type=Path, help="write the counts and their source lines here")
    probe.add_argument(
        "--scenarios", nargs="+", choices=tuple(SYNC_SCENARIOS), metavar="NAME", help="default: all"
    )
    probe.set_defaults(run=syncs)
    probe = sub.add_parser("checkpoint-state", help="an fp16 checkpoint's GradScaler and RNG")
    probe.add_argument("checkpoint", type=Path)
    probe.add_argument("--cuda", action="store_true", help="expect a CUDA RNG state")
    probe.set_defaults(run=checkpoint_state)
    probe = sub.add_parser("weights-diff", help="how far two checkpoints' weights differ")
    probe.add_argument("first", type=Path)
    probe.add_argument("second", type=Path)
    probe.add_argument("--exact", action="store_true", help="fail unless they are equal")
    probe.set_defaults(run=weights_diff)
    probe = sub.add_parser("expect-refusal", help=expect_refusal.__doc__.splitlines()[0])
    probe.add_argument("expected", help="text of the line the command must print")
    probe.add_argument("command", nargs=argparse.REMAINDER, help="after --")
    probe.add_argument("--timeout", type=float, default=240)
    probe.set_defaults(run=expect_refusal)
    for name, run in (("compare-scores", compare_scores), ("compare-labels", compare_labels)):
        probe = sub.add_parser(name, help=(run.__doc__ or "").splitlines()[0])
        probe.add_argument("cpu", type=Path)
        probe.add_argument("gpu", type=Path)
        probe.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) and args.command[0] == "--":
        args.command = args.command[1:]
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
