"""Score a checkpoint with the official protocols, at the labels' full resolution.

    python evaluate.py --checkpoint runs/demo/best.pt
    python evaluate.py --checkpoint best.pt --data-root /data/cityscapes --tta multiscale \\
        --export-dir preds --output-json val.json

The checkpoint carries its config (dataset, labels, model): no config file is needed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from segmentation.cli import run_guarded, setup_logging
from segmentation.errors import UserError
from segmentation.files import check_new_file, check_new_folder, write_atomically
from segmentation.inference.arguments import add_prediction_arguments, prediction_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_prediction_arguments(parser, batch_size=2)
    parser.add_argument("--data-root", help="dataset root (default: the one trained on)")
    parser.add_argument("--split", default="val", help="val (default), train or test")
    parser.add_argument("--export-dir", type=Path, help="write predictions here (must be new)")
    parser.add_argument("--export-color", action="store_true", help="also export colour PNGs")
    parser.add_argument("--output-json", type=Path, help="write the scores as JSON")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output-json file"
    )
    return parser


def format_table(results: dict) -> str:
    """The per-class table, the means, and the official scores of the protocol."""
    lines = [f"{'class':<20} {'IoU':>7} {'Dice':>7}"]

    def number(value) -> str:
        return f"{value:7.4f}" if value is not None else f"{'-':>7}"

    for name, scores in results["per_class"].items():
        lines.append(f"{name:<20} {number(scores['iou'])} {number(scores['dice'])}")
    lines.append(f"{'mean':<20} {number(results['mIoU'])} {number(results['mDice'])}")
    lines.append(f"{'pixel accuracy':<20} {number(results['pixel_accuracy'])}")
    official = results.get("cityscapes")
    if official:
        # The class score means something only for schemes that predict the 19 classes.
        if results["labels"] in ("classes", "official"):
            lines.append(
                f"Cityscapes official IoU class    {number(official['averageScoreClasses'])}"
            )
        lines.append(
            f"Cityscapes official IoU category {number(official['averageScoreCategories'])}"
        )
    road = results.get("kitti_road")
    if road:
        keys = ["MaxF", "AP", "PRE", "REC", "FPR", "FNR"]
        lines.append(f"{'KITTI road':<10} " + " ".join(f"{key:>7}" for key in keys))
        for category, scores in road.items():
            lines.append(f"{category:<10} " + " ".join(number(scores[key]) for key in keys))
    return "\n".join(lines)


def check_outputs(args: argparse.Namespace) -> None:
    """Output paths are checked before the evaluation: a failure after it loses its work."""
    if args.output_json:
        if args.output_json.resolve() == args.checkpoint.resolve():
            raise UserError(
                f"--output-json {args.output_json} is the checkpoint being evaluated: "
                "give another file name, e.g. scores.json"
            )
        check_new_file(args.output_json, "--output-json", overwrite=args.overwrite)
    if args.export_dir:
        check_new_folder(args.export_dir, "--export-dir")
        if args.export_dir.exists() and any(args.export_dir.iterdir()):
            raise UserError(
                f"export directory {args.export_dir} is not empty: choose a new --export-dir "
                "(old predictions there would be scored too)"
            )


def write_scores(results: dict, path: Path, overwrite: bool) -> None:
    check_new_file(path, "--output-json", overwrite=overwrite)  # it may have appeared since
    text = json.dumps(results, indent=2) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda handle: handle.write(text.encode()))
    except OSError as error:
        raise UserError(
            f"cannot write {path} ({error.strerror or error}): free disk space or choose "
            "another --output-json"
        ) from None
    print(f"scores written to {path}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def run() -> None:
        from segmentation.data.build import find_samples, label_reader
        from segmentation.devices import resolve_device
        from segmentation.evaluation.evaluator import EvaluationOptions, Evaluator
        from segmentation.inference.model import load_trained_model

        prediction = prediction_options(args)
        check_outputs(args)
        trained = load_trained_model(
            args.checkpoint, resolve_device(args.device), amp=args.amp, compile=args.compile
        )
        data_config = trained.config.data
        if args.data_root:
            data_config = data_config.model_copy(update={"root": args.data_root})
        if data_config.dataset == "cityscapes" and args.split == "test":
            raise UserError(
                "the Cityscapes test labels are dummies (all 'unlabeled'): score the val split, "
                "or render the test images with inference.py for the benchmark server"
            )
        samples = find_samples(data_config, args.split)
        if all(sample.label_path is None for sample in samples):
            raise UserError(f"the {args.split} split has no labels to score: use inference.py")
        options = EvaluationOptions(
            prediction=prediction,
            export_dir=args.export_dir,
            export_color=args.export_color,
            batch_size=args.batch_size,
            workers=args.workers,
        )
        results = Evaluator(trained, options).run(samples, label_reader(data_config))
        results["split"] = args.split
        print(format_table(results))
        if args.output_json:
            write_scores(results, args.output_json, args.overwrite)
        if args.export_dir and trained.scheme.dataset == "cityscapes":
            print(
                f"label-id predictions in {args.export_dir / 'labelIds'}: the official evaluator "
                f"reads them with CITYSCAPES_RESULTS={args.export_dir / 'labelIds'}"
            )

    return run_guarded(run, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
