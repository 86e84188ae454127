"""Train a UNET or FPN segmentation model.

    python train.py --config configs/demo.yaml
    python train.py --config configs/cityscapes_fpn_categories.yaml --data-root /data/cityscapes
    python train.py --resume runs/demo/last.pt --epochs 20
    python train.py --print-config --config configs/demo.yaml    (every key, its value, its help)
    torchrun --nproc_per_node=4 train.py --config configs/cityscapes_fpn_classes.yaml

Flags override the config file; `--set section.key=value` overrides any other key.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from pathlib import Path

from segmentation.cli import run_guarded, setup_logging
from segmentation.config import (
    COMPILE_MODES,
    Config,
    apply_overrides,
    check_amp_device,
    config_from_dict,
    load_config,
    saved_config_from_dict,
)
from segmentation.config_doc import reference_text
from segmentation.errors import UserError
from segmentation.yaml_io import parse_yaml

logger = logging.getLogger("segmentation")

# flag destination -> dotted config key
FLAG_KEYS = {
    "data_root": "data.root",
    "output_dir": "output_dir",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "image_size": "data.image_size",
    "model": "model.arch",
    "backbone": "model.backbone",
    "labels": "data.labels",
    "lr": "optim.lr",
    "device": "train.device",
    "workers": "data.workers",
    "seed": "train.seed",
    "amp": "train.amp",
    "compile": "train.compile",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="YAML config (see configs/)")
    parser.add_argument("--data-root", help="dataset root folder")
    parser.add_argument("--output-dir", help="run directory for checkpoints and logs (must be new)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="per process")
    parser.add_argument("--image-size", help="training size HxW, e.g. 256x512")
    parser.add_argument("--model", choices=["unet", "fpn"])
    parser.add_argument(
        "--backbone", help="resnet18/34/50/101, resnext50(_32x4d), resnext101(_32x8d)"
    )
    parser.add_argument(
        "--labels",
        help="label scheme: categories, classes, official, road[,car...]; KITTI: road, lane; "
        "folder: all (its classes.yaml)",
    )
    parser.add_argument("--lr", type=float)
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, help="DataLoader workers per process")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--amp",
        choices=["off", "bf16", "fp16", "auto"],
        help="mixed precision; auto: bf16 where the device computes it natively",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=COMPILE_MODES,
        metavar="MODE",
        help="torch.compile the model: default (bare --compile), reduce-overhead (CUDA graphs), "
        "max-autotune or off; the first steps take longer: they compile",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set train.grad_clip=1.0 (repeatable)",
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--resume",
        type=Path,
        metavar="CKPT",
        help="continue a run from its checkpoint: weights, optimizer, schedule, RNG",
    )
    start.add_argument(
        "--init-from",
        type=Path,
        metavar="CKPT",
        help="start a new run from a checkpoint's weights only (e.g. 256x512 then 512x1024)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print every config key (type, allowed values, default, meaning) with the value "
        "this run would use (from --config or --resume, then the flags), and exit",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    """Dotted key -> value of the flags given (flags left out are not in it), then --set's,
    whose values are YAML: `--set model.pretrained=null` sets None."""
    overrides = {
        key: getattr(args, dest)
        for dest, key in FLAG_KEYS.items()
        if getattr(args, dest) is not None
    }
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set needs KEY=VALUE, got '{item}'")
        overrides[key.strip()] = parse_yaml(
            value, f"--set {key.strip()}: the value {value!r}", fix="put it in quotes"
        )
    return overrides


def resolve_config(args: argparse.Namespace) -> Config:
    """The run's config: the file (or the resumed checkpoint's), then the flags on top."""
    config = _resolved_config(args)
    check_amp_device(config)
    return config


def _resolved_config(args: argparse.Namespace) -> Config:
    from segmentation.checkpoint import USE_ENTRIES, load_checkpoint

    if args.resume:
        if args.config:
            raise UserError(
                "--resume takes its config from the checkpoint: drop --config (flags do override)"
            )
        state = load_checkpoint(args.resume, needs=USE_ENTRIES)
        config = saved_config_from_dict(state["config"], f"checkpoint {args.resume}")
        run_dir = str(args.resume.parent)
        if args.output_dir and Path(args.output_dir).resolve() != args.resume.parent.resolve():
            raise UserError(
                f"--resume continues the run in {run_dir}: drop --output-dir, or use --init-from "
                "to start a new run from these weights"
            )
        args.output_dir = run_dir
    elif args.config:
        config = load_config(args.config)
    else:
        raise UserError("give --config FILE (see configs/), or --resume CKPT to continue a run")
    return apply_overrides(config, _overrides(args))


def _config_to_print(args: argparse.Namespace) -> Config | None:
    """--print-config's values: the resolved config, the defaults with the flags given, or
    None (the defaults alone). Not checked against this machine: the run may be elsewhere."""
    if args.config or args.resume:
        return _resolved_config(args)
    overrides = _overrides(args)
    return apply_overrides(config_from_dict({}), overrides) if overrides else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def run() -> None:
        if args.print_config:
            print(reference_text(_config_to_print(args)))
            return
        config = resolve_config(args)
        from segmentation.engine.loop import train  # slow to import: after config checks

        metrics = train(config, resume=args.resume, init_from=args.init_from)
        if int(os.environ.get("RANK", "0")) == 0 and metrics:
            _print_next_steps(Path(config.output_dir), config)

    return run_guarded(run, debug=args.debug)


def _print_next_steps(run_dir: Path, config: Config) -> None:
    """The journey's next commands, ready to copy: quoted, naming files that exist."""
    from segmentation.data.kinds.catalog import kind_of

    best = run_dir / "best.pt"
    checkpoint = best if best.is_file() else run_dir / "last.pt"
    rendered = run_dir / "frames"
    frames = kind_of(config.data).demo_frames(config.data)
    q = shlex.quote
    lines = [
        f"done: checkpoints and logs in {run_dir}",
        "next:",
        f"  tensorboard --logdir {q(str(run_dir / 'tensorboard'))}",
        f"  python evaluate.py --checkpoint {q(str(checkpoint))} --data-root {q(config.data.root)}",
    ]
    if frames is not None:
        lines += [
            f"  python inference.py --checkpoint {q(str(checkpoint))} --input {q(str(frames))} "
            f"--output {q(str(rendered))}",
            f"  ./make_video.sh {q(str(rendered))} {q(str(run_dir / (frames.name + '.mp4')))} 20 "
            "'*_overlay.png'",
        ]
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
