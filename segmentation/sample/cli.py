"""The command line of the sample generators: python -m segmentation.sample KIND DIR [...].

A subcommand per dataset kind that has a sample-tree generator: each kind adds its own
(data/kinds/*.py, add_sample_command). On its own module so that the generators import nothing
from each other's command lines: folder.py builds on generate.py, and this module on both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segmentation.cli import run_guarded
from segmentation.sample.generate import (
    BDD100K_LAYOUTS,
    MAPILLARY_VERSIONS,
    generate_bdd100k,
    generate_cityscapes,
    generate_kitti,
    generate_kitti_semantics,
    generate_mapillary,
)
from segmentation.sample.world import LOOKS


class _Parser(argparse.ArgumentParser):
    """Argument errors on one line, like the other mistakes a user can fix."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty folder, replacing files of the same name",
    )


def add_cityscapes_parser(subcommands) -> None:
    """The `cityscapes` subcommand (kinds/cityscapes.py adds it)."""
    city = subcommands.add_parser(
        "cityscapes", help="a Cityscapes tree: leftImg8bit/, gtFine/, ..."
    )
    city.add_argument("root", type=Path, metavar="DIR", help="output folder (new or empty)")
    city.add_argument("--height", type=int, default=128, help="image height (default 128)")
    city.add_argument("--width", type=int, default=256, help="image width (default 256)")
    city.add_argument("--train-per-city", type=int, default=8, help="default 8 (5 cities)")
    city.add_argument("--val-per-city", type=int, default=4, help="default 4 (3 cities)")
    city.add_argument("--test-per-city", type=int, default=2, help="default 2 (2 cities)")
    city.add_argument(
        "--video-frames",
        type=int,
        default=12,
        help="frames per demoVideo sequence (3 sequences; default 12)",
    )
    city.add_argument(
        "--coarse",
        type=int,
        default=0,
        metavar="N",
        help="add gtCoarse/ and N train_extra images per city (default 0: none)",
    )
    city.add_argument(
        "--looks",
        choices=LOOKS,
        default="natural",
        help="natural colours (default), or each class in its Cityscapes label colour: an easy "
        "task a colour lookup largely solves; the labels are the same",
    )
    _add_common(city)
    city.set_defaults(
        generate=lambda args: generate_cityscapes(
            args.root,
            height=args.height,
            width=args.width,
            train_per_city=args.train_per_city,
            val_per_city=args.val_per_city,
            test_per_city=args.test_per_city,
            video_frames=args.video_frames,
            coarse=args.coarse,
            seed=args.seed,
            looks=args.looks,
            overwrite=args.overwrite,
        )
    )


def add_kitti_parser(subcommands) -> None:
    """The `kitti` subcommand (kinds/kitti.py adds it)."""
    kitti = subcommands.add_parser(
        "kitti", help="a KITTI road tree: data_road/training, data_road/testing"
    )
    kitti.add_argument("root", type=Path, metavar="DIR", help="output folder (new or empty)")
    kitti.add_argument(
        "--scale",
        type=float,
        default=0.25,
        help="size relative to the real ~375x1242 images (default 0.25)",
    )
    kitti.add_argument("--train-per-category", type=int, default=6, help="um, umm, uu (default 6)")
    kitti.add_argument("--test-per-category", type=int, default=2, help="default 2")
    _add_common(kitti)
    kitti.set_defaults(
        generate=lambda args: generate_kitti(
            args.root,
            scale=args.scale,
            train_per_category=args.train_per_category,
            test_per_category=args.test_per_category,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    )


def add_kitti_semantics_parser(subcommands) -> None:
    """The `kitti_semantics` subcommand (kinds/kitti_semantics.py adds it)."""
    semantics = subcommands.add_parser(
        "kitti_semantics", help="a KITTI semantics tree: training/{image_2,semantic}, testing"
    )
    semantics.add_argument("root", type=Path, metavar="DIR", help="output folder (new or empty)")
    semantics.add_argument(
        "--scale",
        type=float,
        default=0.25,
        help="size relative to the real ~375x1242 images (default 0.25)",
    )
    semantics.add_argument("--train", type=int, default=12, help="training images (default 12)")
    semantics.add_argument("--test", type=int, default=4, help="testing images (default 4)")
    _add_common(semantics)
    semantics.set_defaults(
        generate=lambda args: generate_kitti_semantics(
            args.root,
            scale=args.scale,
            train=args.train,
            test=args.test,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    )


def add_bdd100k_parser(subcommands) -> None:
    """The `bdd100k` subcommand (kinds/bdd100k.py adds it)."""
    bdd = subcommands.add_parser(
        "bdd100k", help="a BDD100K semantic segmentation tree: JPEG images, train-id masks"
    )
    bdd.add_argument("root", type=Path, metavar="DIR", help="output folder (new or empty)")
    bdd.add_argument(
        "--layout",
        choices=BDD100K_LAYOUTS,
        default="current",
        help="current: images/10k + labels/sem_seg/masks; original: seg/images + seg/labels "
        "(default current)",
    )
    bdd.add_argument(
        "--scale",
        type=float,
        default=0.1,
        help="size relative to the real 720x1280 images (default 0.1)",
    )
    bdd.add_argument("--train", type=int, default=8, help="train images (default 8)")
    bdd.add_argument("--val", type=int, default=4, help="val images (default 4)")
    bdd.add_argument("--test", type=int, default=2, help="test images (default 2)")
    _add_common(bdd)
    bdd.set_defaults(
        generate=lambda args: generate_bdd100k(
            args.root,
            layout=args.layout,
            scale=args.scale,
            train=args.train,
            val=args.val,
            test=args.test,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    )


def add_mapillary_parser(subcommands) -> None:
    """The `mapillary` subcommand (kinds/mapillary.py adds it)."""
    vistas = subcommands.add_parser(
        "mapillary",
        help="a Mapillary Vistas tree: config JSONs, JPEG images, palette-PNG labels",
    )
    vistas.add_argument("root", type=Path, metavar="DIR", help="output folder (new or empty)")
    vistas.add_argument(
        "--version",
        choices=MAPILLARY_VERSIONS,
        default="both",
        help="the labels to write: v1.2, v2.0 or both, as the download holds (default both)",
    )
    vistas.add_argument(
        "--scale",
        type=float,
        default=0.05,
        help="size relative to the real images, 1080x1920 to 3000x4000 (default 0.05)",
    )
    vistas.add_argument("--train", type=int, default=8, help="training images (default 8)")
    vistas.add_argument("--val", type=int, default=4, help="validation images (default 4)")
    vistas.add_argument("--test", type=int, default=2, help="testing images (default 2)")
    _add_common(vistas)
    vistas.set_defaults(
        generate=lambda args: generate_mapillary(
            args.root,
            version=args.version,
            scale=args.scale,
            train=args.train,
            val=args.val,
            test=args.test,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    """A subcommand for each dataset kind that has a sample-tree generator."""
    from segmentation.data.kinds.catalog import KINDS

    parser = _Parser(
        prog="python -m segmentation.sample",
        description="Write small synthetic street scenes in the layout of a dataset kind.",
    )
    sub = parser.add_subparsers(dest="dataset", required=True)
    for kind in KINDS.values():
        kind.add_sample_command(sub)
    sub.metavar = "{" + ",".join(sub.choices) + "}"
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2 for a user mistake)."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        print(args.generate(args))

    return run_guarded(run)
