"""The command-line flags that evaluate.py and inference.py share: the checkpoint, how
predictions are made, and how the work runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from segmentation.devices import AMP_CHOICES
from segmentation.errors import UserError
from segmentation.prediction.predict import MERGES, TTA_MODES, PredictionOptions, parse_scales


def worker_count(text: str) -> int | None:
    """--workers: a number, or "auto" (None: the command picks)."""
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or auto, got '{text}'") from None


def height_width(text: str) -> tuple[int, int]:
    """--window, --stride: HEIGHTxWIDTH, each side 1 or more."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(part) for part in parts)
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"HEIGHTxWIDTH such as 512x1024, got '{text}'")
    return size


def add_prediction_arguments(
    parser: argparse.ArgumentParser, *, batch_size: int, workers: str = "2"
) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="a .pt file of train.py")
    parser.add_argument("--tta", choices=TTA_MODES, default="none")
    parser.add_argument("--scales", default="0.75,1.0,1.25", help="for --tta multiscale")
    parser.add_argument("--merge", choices=MERGES, default="mean", help="how TTA views merge")
    parser.add_argument(
        "--sliding-window",
        action="store_true",
        help="predict at full resolution in windows of the training size",
    )
    parser.add_argument(
        "--window",
        type=height_width,
        metavar="HxW",
        help="with --sliding-window: the window size (default: the training size)",
    )
    parser.add_argument(
        "--stride",
        type=height_width,
        metavar="HxW",
        help="with --sliding-window: the step between windows (default: 2/3 of the window's "
        "sides, rounded down)",
    )
    parser.add_argument(
        "--drop-clusters",
        type=int,
        default=0,
        metavar="N",
        help="give regions smaller than NxN pixels their next most likely class",
    )
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument(
        "--workers",
        type=worker_count if workers == "auto" else int,
        default=worker_count(workers),
        help="image-decoding processes (default auto: every core but two, at least 1)"
        if workers == "auto"
        else f"image-decoding processes (default {workers})",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--amp",
        choices=AMP_CHOICES,
        default="auto",
        help="autocast precision; auto (default): bf16 where the device computes it natively",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model (pays off on long runs)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def prediction_options(args: argparse.Namespace) -> PredictionOptions:
    """The parsed flags as prediction options, after checking the numbers they carry."""
    workers = 0 if args.workers is None else args.workers  # None: auto
    if args.batch_size < 1 or workers < 0 or args.drop_clusters < 0:
        raise UserError("--batch-size must be 1 or more, --workers and --drop-clusters 0 or more")
    window, stride = getattr(args, "window", None), getattr(args, "stride", None)
    if (window or stride) and not args.sliding_window:
        raise UserError("--window and --stride set the windows of --sliding-window: add it")
    if window and stride and (stride[0] > window[0] or stride[1] > window[1]):
        raise UserError(
            f"--stride {stride[0]}x{stride[1]} is larger than --window {window[0]}x{window[1]}: "
            "windows would leave gaps; use a stride of at most the window"
        )
    return PredictionOptions(
        window=window,
        stride=stride,
        tta=args.tta,
        scales=tuple(parse_scales(args.scales)),
        merge=args.merge,
        sliding_window=args.sliding_window,
        drop_clusters=args.drop_clusters,
    )
