"""Build the decoded-sample cache of a training config ahead of time (data.cache).

    python -m segmentation.data.cache --config configs/cityscapes_fpn_classes.yaml \\
        --set data.cache=/scratch/cityscapes-cache [--data-root DIR] [--rebuild]

A run whose data.cache is missing builds it the same way before it trains. An existing cache
is checked against the dataset's files; --rebuild replaces it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segmentation.cli import run_guarded, setup_logging
from segmentation.config import apply_overrides, load_config
from segmentation.errors import UserError
from segmentation.yaml_io import parse_yaml


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m segmentation.data.cache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, required=True, help="the run's YAML config")
    parser.add_argument("--data-root", help="dataset root folder (as train.py's)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set data.cache=/tmp/cache (repeatable)",
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="replace an existing cache (a stale one too)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    overrides = {"data.root": args.data_root} if args.data_root else {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set needs KEY=VALUE, got '{item}'")
        overrides[key.strip()] = parse_yaml(
            value, f"--set {key.strip()}: the value {value!r}", fix="put it in quotes"
        )
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def run() -> None:
        from segmentation.data.build import build_training_datasets, with_dataset_classes

        config = apply_overrides(load_config(args.config), _overrides(args))
        if config.data.cache is None:
            raise UserError(
                "data.cache is not set: add it to the config's data section or pass "
                "--set data.cache=FOLDER"
            )
        train, val = build_training_datasets(
            with_dataset_classes(config.data), rebuild_cache=args.rebuild
        )
        print(
            f"data.cache {config.data.cache} is ready: {len(train)} training and {len(val)} "
            f"validation frames at scale {config.data.cache_scale}"
        )

    return run_guarded(run, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
