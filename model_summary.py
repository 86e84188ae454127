"""Print a model's torchsummary table, true parameter count, forward GFLOPs and peak memory.

python model_summary.py --model_type fpn --backbone resnext50 --input_size 3,512,1024
"""

import argparse
import sys

import torch
from torchsummary import summary

from segmentation.cli import run_guarded
from segmentation.errors import UserError
from segmentation.models import build_model, check_input_size, required_input_multiple
from segmentation.models.profiling import count_parameters, forward_gflops, peak_training_memory_mb


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_type", choices=["unet", "fpn"], required=True)
    parser.add_argument("--backbone", default="resnext50")
    parser.add_argument("--num_classes", type=int, default=8)
    parser.add_argument(
        "--unet_res_blocks", type=int, choices=[0, 1], default=0, help="residual decoder (unet)"
    )
    parser.add_argument("--input_size", default="3,512,1024", help="C,H,W of one image")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--batch-size", type=int, default=1, help="batch for the GFLOPs and memory figures"
    )
    return parser.parse_args(argv)


def parse_input_size(text: str, arch: str) -> tuple[int, int, int]:
    """'3,512,1024' -> (3, 512, 1024), checked against the architecture's input multiple."""
    try:
        size = tuple(int(part) for part in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise UserError(f"--input_size must be three positive integers C,H,W, got {text!r}")
    channels, height, width = size
    check_input_size(height, width, required_input_multiple(arch), arch)
    return channels, height, width


def run(args: argparse.Namespace) -> None:
    input_size = parse_input_size(args.input_size, args.model_type)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is available: use --device cpu")
    options = {"residual_decoder": bool(args.unet_res_blocks)} if args.model_type == "unet" else {}
    model = build_model(
        args.model_type,
        args.backbone,
        args.num_classes,
        pretrained=None,  # sizes and costs do not depend on the weights: never download
        in_channels=input_size[0],
        **options,
    ).to(args.device)
    images = torch.rand(args.batch_size, *input_size, device=args.device)
    memory_mb, memory_method = peak_training_memory_mb(model, images)
    gflops = forward_gflops(model, images)
    with torch.no_grad():  # the table needs shapes only; no graph of a batch of 2 to keep
        summary(model, input_size, device=args.device)
    what = f"batch {args.batch_size}, {'x'.join(map(str, input_size))}"
    print(f"True parameter count: {count_parameters(model):,}")
    print(f"Forward GFLOPs: {gflops:,.2f} ({what}, FlopCounterMode, 2 FLOPs per multiply-add)")
    print(f"Peak memory of forward+backward (MB): {memory_mb:,.1f} ({what}, {memory_method})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
