"""Score a checkpoint with the official protocols, at the labels' full resolution.

    python evaluate.py --checkpoint runs/demo/best.pt
    python evaluate.py --checkpoint best.pt --data-root /data/cityscapes --tta multiscale \\
        --export-dir preds --output-json val.json
    python evaluate.py --checkpoint best.pt --report report --compare old.json   # report/index.html
    python evaluate.py --checkpoint best.pt --dataset bdd100k --data-root /data/bdd100k

The checkpoint carries its config (dataset, labels, model): no config file is needed. With
--dataset it is scored on another dataset kind whose classes include its own, matched by name
(docs/evaluation.md, "Scoring on another dataset").
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from segmentation.cli import run_guarded, setup_logging
from segmentation.errors import UserError
from segmentation.evaluation.mapping import describe_mapping
from segmentation.evaluation.outputs import Output, check_apart, check_outside_dataset
from segmentation.files import check_new_file, check_new_folder, write_atomically
from segmentation.inference.arguments import add_prediction_arguments, prediction_options
from segmentation.report.folder import check_report_folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_prediction_arguments(parser, batch_size=2)
    parser.add_argument(
        "--data-root", help="dataset root (default: the one trained on, unless --dataset is given)"
    )
    parser.add_argument(
        "--dataset",
        metavar="KIND",
        help="score on a dataset of this kind at --data-root (default: the kind trained on); "
        "its classes are matched to the model's by name",
    )
    parser.add_argument(
        "--split",
        default="val",
        help="val (default), train or test; a folder dataset's split: a folder of ROOT/images",
    )
    parser.add_argument("--export-dir", type=Path, help="write predictions here (must be new)")
    parser.add_argument("--export-color", action="store_true", help="also export colour PNGs")
    parser.add_argument("--output-json", type=Path, help="write the scores as JSON")
    parser.add_argument(
        "--report", type=Path, metavar="DIR", help="write an HTML report, DIR/index.html"
    )
    parser.add_argument(
        "--report-images",
        type=int,
        default=8,
        metavar="N",
        help="the report shows the N worst and N best images by mIoU (default 8)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="OTHER.json",
        help="an earlier evaluate.py JSON: the report adds per-class IoU deltas against it",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output-json file; write into a non-empty --report folder, "
        "replacing an earlier report there (only the files that report wrote)",
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
    if results.get("mapping"):
        lines.append(describe_mapping(results["mapping"]))
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


def check_split(split: str) -> None:
    """A split is a name that the dataset's layout resolves (ROOT/images/SPLIT and
    ROOT/masks/SPLIT): a path would pick other files, e.g. ../masks/val scores masks as images."""
    if split in ("", ".", "..") or "/" in split or "\\" in split:
        raise UserError(
            f"--split {split!r} is not a split name: give val, train or test (a folder "
            "dataset's splits are the folders of ROOT/images), not a path"
        )


def output_paths(args: argparse.Namespace) -> list[Output]:
    """Where this run writes."""
    outputs = [
        Output("--output-json", args.output_json, folder=False),
        Output("--export-dir", args.export_dir, folder=True),
        Output("--report", args.report, folder=True),
    ]
    return [output for output in outputs if output.path is not None]


def check_outputs(args: argparse.Namespace) -> None:
    """Output paths are checked before the evaluation: a failure after it loses its work."""
    check_apart(output_paths(args))
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
    check_report_arguments(args)


def check_report_arguments(args: argparse.Namespace) -> None:
    if args.compare and not args.report:
        raise UserError("--compare belongs to the report: add --report DIR")
    if not args.report:
        return
    if args.report_images < 0:
        raise UserError(f"--report-images must be 0 or more, got {args.report_images}")
    check_new_folder(args.report, "--report")
    check_report_folder(args.report, args.overwrite)


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


def write_report(args: argparse.Namespace, evaluator, keeper, results: dict, other) -> None:
    """The report folder from the pass's counts and the images the keeper chose."""
    from segmentation.report.page import ReportInputs
    from segmentation.report.page import write_report as write_page
    from segmentation.report.summary import image_miou

    histograms = evaluator.scorer.report_histograms() if evaluator.scorer else None
    names, per_image = keeper.per_image()
    worst, best = keeper.chosen()
    inputs = ReportInputs(
        results=results,
        scheme=evaluator.scheme,
        confusion=evaluator.matrix.matrix.cpu().numpy(),
        worst=worst,
        best=best,
        road_histograms=histograms,
        compare=other,
        compare_name=args.compare.name if args.compare else "",
        created=datetime.now().astimezone().isoformat(sep=" ", timespec="seconds"),
        image_scores=list(zip(names, image_miou(per_image).tolist())) if names else [],
    )
    try:
        path = write_page(args.report, inputs)
    except OSError as error:
        raise UserError(
            f"cannot write the report in {args.report} ({error.strerror or error}): free disk "
            "space or choose another --report"
        ) from None
    print(f"report written to {path}")


def check_dataset_arguments(args: argparse.Namespace) -> None:
    """--dataset names another dataset, which lies elsewhere than the one trained on."""
    from segmentation.data.kinds.catalog import kind_named

    if args.dataset:
        kind_named(args.dataset)  # an unknown name: refused before the model loads
    if args.dataset and not args.data_root:
        raise UserError(
            f"--dataset {args.dataset} needs --data-root: give the folder of the {args.dataset} "
            "dataset to score on"
        )


def scored_dataset(args: argparse.Namespace, trained) -> tuple:
    """(ScoredOn, the scored dataset's data config): the model's own dataset (at --data-root),
    or a dataset of the kind --dataset names, whose scheme the model's classes map onto."""
    from segmentation.config import DataConfig
    from segmentation.data.kinds.catalog import kind_named, kind_of
    from segmentation.evaluation.mapping import map_classes, own_dataset

    trained_config = trained.config.data
    trained_kind = kind_of(trained_config)
    if not args.dataset or args.dataset == trained_kind.name:
        data_config = trained_config
        if args.data_root:
            data_config = data_config.model_copy(update={"root": args.data_root})
        return own_dataset(trained_kind, trained.scheme), data_config
    kind = kind_named(args.dataset)
    # The kind's own defaults: its layout is found under the root (e.g. BDD100K's release).
    data_config = DataConfig(dataset=kind.name, root=args.data_root)
    scored = map_classes(trained.scheme, trained_kind.name, kind, data_config)
    data_config = data_config.model_copy(update={"labels": [scored.dataset_scheme.name]})
    return scored, data_config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def run() -> None:
        from segmentation.data.build import find_samples, label_reader
        from segmentation.devices import resolve_device
        from segmentation.evaluation.evaluator import EvaluationOptions, Evaluator
        from segmentation.prediction.trained_model import load_trained_model
        from segmentation.report.images import ImageKeeper
        from segmentation.report.summary import check_same_scheme, read_comparison

        prediction = prediction_options(args)
        check_split(args.split)
        check_dataset_arguments(args)
        check_outputs(args)
        other = read_comparison(args.compare) if args.compare else None
        trained = load_trained_model(
            args.checkpoint, resolve_device(args.device), amp=args.amp, compile=args.compile
        )
        scored, data_config = scored_dataset(args, trained)
        if other is not None:
            check_same_scheme(other, scored.scheme, args.compare)
        check_outside_dataset(output_paths(args), Path(data_config.root))
        kind = scored.kind
        kind.check_scored_split(args.split)
        samples = find_samples(data_config, args.split)
        if all(sample.label_path is None for sample in samples):
            raise UserError(f"the {args.split} split has no labels to score: use inference.py")
        keeper = ImageKeeper(scored.scheme, args.report_images) if args.report else None
        options = EvaluationOptions(
            prediction=prediction,
            export_dir=args.export_dir,
            export_color=args.export_color,
            batch_size=args.batch_size,
            workers=args.workers,
            image_hook=keeper.add_batch if keeper else None,
        )
        evaluator = Evaluator(trained, options, scored)
        results = evaluator.run(samples, label_reader(data_config))
        results["split"] = args.split
        print(format_table(results))
        if args.output_json:
            write_scores(results, args.output_json, args.overwrite)
        if keeper is not None:
            write_report(args, evaluator, keeper, results, other)
        note = kind.export_note(args.export_dir) if args.export_dir else None
        if note:
            print(note)

    return run_guarded(run, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
