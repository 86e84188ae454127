"""Check a dataset before training on it, in one pass over its files.

    python -m segmentation.data.check ROOT [--dataset NAME] [--plot FILE.png]
        [--overwrite]

Reports the images and masks of each split; missing or empty split folders; images without
masks and masks without images; unreadable, non-PNG and wrongly formatted masks; masks of
another size than their image as read (turned by its EXIF orientation, which is named); mask
values outside the classes (a problem; an rgb mask's colours of no class are unlabelled by the
format's rule: a warning); and the share of each class's pixels per split. Images are checked
from their headers (format, size, EXIF orientation, a PNG's end), masks are decoded in full:
their values are what is counted. Exit status 0 with the summary when nothing is wrong, 1 with
each problem listed (the first 20 of each kind, then a count), 2 when the dataset cannot be
read at all (no such layout, a broken classes.yaml) or --plot names a file it may not write
(inside the dataset, an existing file without --overwrite, no chart suffix), before the pass.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from segmentation.cli import run_guarded
from segmentation.data.dataset import Sample
from segmentation.data.folder import RgbMaskReader
from segmentation.data.headers import ORIENTATIONS, LabelFormat, check_pair
from segmentation.data.inventory import Inventory, discover
from segmentation.data.io import limit_opencv_threads
from segmentation.data.kinds.catalog import KINDS
from segmentation.data.labels import IGNORE_INDEX, LabelScheme
from segmentation.data.loading import progress_bar
from segmentation.errors import UserError
from segmentation.files import check_new_file, write_atomically

PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")  # what the chart is written as
LISTED = 20  # problems shown of each kind; the rest are counted
NAME_WIDTH = 40  # class names longer than this are shortened in the table and the chart
# Problem kinds, in the order they are listed, and their headings.
PROBLEMS = {
    "split": "missing split folders",
    "empty": "split folders without images",
    "clash": "images that would share one mask",
    "missing": "images without masks",
    "orphan": "masks without images",
    "not_png": "masks that are not PNG",
    "unreadable": "unreadable files",
    "format": "masks of the wrong pixel format",
    "size": "masks of another size than their image",
    "outside": "masks with values outside the classes",
}
# --------------------------------------------------------------------------- the pass


@dataclass
class PairResult:
    split: str
    problem: tuple[str, str] | None = None
    classes: np.ndarray | None = None  # (256,) int64 pixels per target value (255: ignored)
    unknown: int = 0  # pixels of values or colours outside the classes
    examples: str = ""  # which values or colours those were
    orientation: int = 1  # the image's EXIF orientation (1: none)
    turn_unverified: bool = False  # see headers.PairCheck


_WORKER: dict = {}


def _set_up_worker(scheme: LabelScheme, label_format: LabelFormat, reader: Callable) -> None:
    _WORKER.update(scheme=scheme, label_format=label_format, reader=reader)


def _histogram(values: np.ndarray) -> np.ndarray:
    """(256,) int64 counts of uint8 values; OpenCV's histogram is 5x numpy's bincount, and
    exact while a bin stays under 2**24 (its float32 counts)."""
    if values.size >= 1 << 24:
        return np.bincount(values.reshape(-1), minlength=256).astype(np.int64)
    hist = cv2.calcHist([np.ascontiguousarray(values)], [0], None, [256], [0, 256])
    return hist.reshape(-1).astype(np.int64)


def _rgb_counts(reader: RgbMaskReader, path: Path, result: PairResult) -> None:
    codes = reader.codes(path)
    classes = np.take(reader.table(), codes)
    result.classes = _histogram(classes)
    result.unknown = int(result.classes[IGNORE_INDEX])
    if result.unknown:
        colours, counts = np.unique(codes[classes == IGNORE_INDEX], return_counts=True)
        top = np.argsort(-counts)[:3]
        rgb = [[int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255] for c in colours[top]]
        result.examples = ", ".join(f"{c} x {int(n)}" for c, n in zip(rgb, counts[top]))


def _index_counts(scheme: LabelScheme, stored: np.ndarray, result: PairResult) -> None:
    stored_hist = _histogram(stored)
    lookup = np.full(256, IGNORE_INDEX, np.int64)
    lookup[: min(256, len(scheme.lookup))] = scheme.lookup[:256]
    result.classes = np.bincount(lookup, weights=stored_hist, minlength=256).astype(np.int64)
    outside = [
        value
        for value in range(scheme.known_values, 256)
        if stored_hist[value] and value != scheme.stored_ignore
    ]
    result.unknown = int(stored_hist[outside].sum())
    by_count = sorted(outside, key=lambda value: -stored_hist[value])[:3]
    result.examples = ", ".join(f"value {v} x {int(stored_hist[v])}" for v in by_count)
    if len(outside) > len(by_count):
        result.examples += f" and {len(outside) - len(by_count)} more values"


def _check_pair(split: str, sample: Sample) -> PairResult:
    """One image/mask pair: headers, then the mask's values. Runs in a worker process."""
    scheme, reader = _WORKER["scheme"], _WORKER["reader"]
    headers = check_pair(sample, _WORKER["label_format"])
    result = PairResult(split, headers.problem)
    result.orientation, result.turn_unverified = headers.orientation, headers.turn_unverified
    if sample.label_path is None:
        return result
    try:
        if isinstance(reader, RgbMaskReader):
            _rgb_counts(reader, sample.label_path, result)
        else:
            _index_counts(scheme, reader(sample.label_path), result)
    except UserError as error:
        # A header already named: keep that line. Otherwise the pixel data is damaged.
        result.problem = result.problem or ("unreadable", str(error))
        result.classes = None
    return result


def run_pass(inventory: Inventory, workers: int) -> list[PairResult]:
    """Check every sample, in `workers` processes (0: in this one), with a progress bar."""
    tasks = [(split, sample) for split, samples in inventory.splits.items() for sample in samples]
    setup = (inventory.scheme, inventory.label_format, inventory.reader)
    progress = progress_bar(len(tasks), "check", unit="pair")
    results = []
    if workers == 0:
        _set_up_worker(*setup)
        for task in tasks:
            results.append(_check_pair(*task))
            progress.update()
    else:
        # fork: the workers inherit the reader (and an rgb lookup table) instead of a copy each.
        # OpenCV's thread pool must be stopped in this process first: a child forked while it
        # runs deadlocks on its first OpenCV call (after any earlier OpenCV work here).
        threads = cv2.getNumThreads()
        limit_opencv_threads()
        try:
            context = get_context("fork")
            with ProcessPoolExecutor(workers, context, _set_up_worker, setup) as pool:
                splits, samples = zip(*tasks) if tasks else ((), ())
                for result in pool.map(_check_pair, splits, samples, chunksize=4):
                    results.append(result)
                    progress.update()
        finally:
            cv2.setNumThreads(threads)
    progress.close()
    return results


# --------------------------------------------------------------------------- the report


@dataclass
class SplitTally:
    images: int = 0
    masks: int = 0
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    unknown: int = 0


def tally(inventory: Inventory, results: list[PairResult]) -> dict[str, SplitTally]:
    """Per split counts; pair problems and per-file unknown pixels go into the inventory
    (problems) and the returned "unknown" lines."""
    tallies = {}
    for split, samples in inventory.splits.items():
        masks = sum(sample.label_path is not None for sample in samples)
        tallies[split] = SplitTally(images=len(samples), masks=masks)
    for result in results:
        split = tallies[result.split]
        if result.problem is not None:
            inventory.problem(*result.problem)
        if result.classes is not None:
            split.pixels += result.classes
            split.unknown += result.unknown
    return tallies


def unknown_lines(inventory: Inventory, results: list[PairResult]) -> list[str]:
    """One line per mask with pixels outside the classes: the file, their count and share of
    its pixels, and the commonest values or colours."""
    samples = [sample for s in inventory.splits.values() for sample in s]
    return [
        f"{sample.label_path}: {result.unknown} px, "
        f"{100 * result.unknown / max(1, int(result.classes.sum())):.2f}% of the mask "
        f"({result.examples})"
        for sample, result in zip(samples, results)
        if result.unknown
    ]


def turned_lines(inventory: Inventory, results: list[PairResult]) -> list[str]:
    """One line per image that its EXIF orientation turns without changing its size (a
    half turn, a mirror, a square image): its mask may follow it as shown or as stored, and
    only the first is right. (A turn that swaps width and height shows in the mask's size.)"""
    samples = [sample for s in inventory.splits.values() for sample in s]
    return [
        f"{sample.image_path}: EXIF orientation {result.orientation}, "
        f"{ORIENTATIONS[result.orientation]}"
        for sample, result in zip(samples, results)
        if result.turn_unverified
    ]


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """A class name of at most `width` characters for the table and the chart: a longer one
    keeps its start and its end, where names of one family usually differ."""
    if len(name) <= width:
        return name
    tail = (width - 3) // 3
    return f"{name[: width - 3 - tail]}...{name[-tail:]}"


def _listing(heading: str, lines: list[str]) -> list[str]:
    shown = [f"  {line}" for line in lines[:LISTED]]
    if len(lines) > LISTED:
        shown.append(f"  ... and {len(lines) - LISTED} more")
    return [f"{heading} ({len(lines)}):", *shown]


def format_summary(inventory: Inventory, tallies: dict[str, SplitTally]) -> str:
    """Counts per split, then each class's share of each split's mask pixels."""
    splits = list(tallies)
    lines = [inventory.description, f"{'split':<12} {'images':>8} {'masks':>8}"]
    lines += [f"{s:<12} {tallies[s].images:>8} {tallies[s].masks:>8}" for s in splits]
    labelled = [s for s in splits if tallies[s].pixels.sum()]
    if not labelled:
        return "\n".join(lines)
    names = [*map(short_name, inventory.scheme.class_names), "(ignored)", "(outside the classes)"]
    width = max(22, *(len(name) for name in names))
    lines += ["", "class pixel frequencies (% of each split's mask pixels)"]
    lines.append(f"{'class':<{width}} " + " ".join(f"{s:>11}" for s in labelled))
    shares = {s: _shares(inventory.scheme, tallies[s]) for s in labelled}
    for row, name in enumerate(names):
        cells = " ".join(f"{100 * shares[s][row]:>10.2f}%" for s in labelled)
        lines.append(f"{name:<{width}} {cells}")
    return "\n".join(lines)


def _shares(scheme: LabelScheme, split: SplitTally) -> np.ndarray:
    """Each class's share of the split's pixels, then the ignored and the unknown ones."""
    counts = split.pixels[: scheme.num_classes]
    ignored = split.pixels[IGNORE_INDEX] - split.unknown
    total = max(1, int(split.pixels.sum()))
    return np.array([*counts, ignored, split.unknown], np.float64) / total


def format_problems(problems: dict[str, list[str]], advice: dict[str, str] | None = None) -> str:
    """Each kind's listing under its heading, followed by `advice` for that kind, if any."""
    lines = ["problems:"]
    for kind, heading in PROBLEMS.items():
        if problems.get(kind):
            lines += _listing(heading, problems[kind])
            if advice and advice.get(kind):
                lines.append(f"({advice[kind]})")
    return "\n".join(lines)


def plot_frequencies(inventory: Inventory, tallies: dict[str, SplitTally], path: Path) -> None:
    """A bar chart of the class shares per split, each class in its colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scheme = inventory.scheme
    labelled = [s for s in tallies if tallies[s].pixels.sum()]
    names = [short_name(name) for name in scheme.class_names]
    figure, axis = plt.subplots(figsize=(max(6.0, 0.5 * len(names) * max(1, len(labelled))), 4))
    step = 0.8 / max(1, len(labelled))
    colours = [tuple(c / 255 for c in colour) for colour in scheme.colors]
    for position, split in enumerate(labelled):
        shares = 100 * _shares(scheme, tallies[split])[: len(names)]
        x = np.arange(len(names)) + (position - (len(labelled) - 1) / 2) * step
        hatch = ["", "//", "..", "xx"][position % 4]
        axis.bar(x, shares, step, color=colours, edgecolor="black", hatch=hatch)
    axis.set_xticks(np.arange(len(names)), names, rotation=45, ha="right")
    axis.set_ylabel("% of the split's mask pixels")
    axis.set_title(inventory.description, fontsize=9)
    from matplotlib.patches import Patch

    hatches = [
        Patch(facecolor="white", edgecolor="black", hatch=["", "//", "..", "xx"][i % 4])
        for i in range(len(labelled))
    ]
    axis.legend(hatches, labelled, title="split")
    figure.tight_layout()
    chart_format = path.suffix.lower().removeprefix(".")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # check_plot_path found it creatable
        # Through a temporary file: a failed write leaves a file replaced with --overwrite whole.
        write_atomically(path, lambda handle: figure.savefig(handle, format=chart_format, dpi=100))
    except OSError as error:
        raise UserError(f"cannot write --plot {path} ({error.strerror or error})") from None
    finally:
        plt.close(figure)


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_plot_path(plot: Path, root: Path, overwrite: bool) -> None:
    """Refuse, before the pass, a --plot that cannot be a chart file or would replace a file
    without --overwrite, and always one inside the dataset: a chart there could replace an
    image or a mask, or be taken for one."""
    target = plot.resolve()
    if _is_within(target, Path(root).resolve()):
        raise UserError(
            f"--plot {plot} is inside the dataset {root}: the chart could replace or join its "
            "images and masks; write it outside ROOT"
        )
    if plot.suffix.lower() not in PLOT_SUFFIXES:
        raise UserError(
            f"--plot {plot}: the chart is written as {', '.join(PLOT_SUFFIXES)}; give a file "
            "name ending in one of them, e.g. classes.png"
        )
    check_new_file(plot, "--plot", overwrite=overwrite)


def check_plot_outside_files(plot: Path, inventory: Inventory) -> None:
    """Refuse a --plot in a folder that holds the dataset's files through a symlink (a city
    folder linked in from elsewhere), which the check of ROOT alone cannot see."""
    target = plot.resolve()
    paths = [
        path
        for samples in inventory.splits.values()
        for sample in samples
        for path in (sample.image_path, sample.label_path)
        if path is not None
    ]
    for folder in sorted({path.resolve().parent for path in paths}):
        if _is_within(target, folder):
            raise UserError(
                f"--plot {plot} is inside {folder}, which holds files of the dataset "
                f"{inventory.root}: write the chart outside the dataset's folders"
            )


# --------------------------------------------------------------------------- command line


def check(
    root: Path,
    dataset: str | None,
    labels: str | None,
    plot: Path | None,
    workers: int,
    overwrite: bool = False,
) -> int:
    """Run the check and print its report; returns the exit status (0 fine, 1 problems)."""
    if plot is not None:
        check_plot_path(plot, root, overwrite)
    inventory = discover(root, dataset, labels)
    if plot is not None:
        check_plot_outside_files(plot, inventory)
    results = run_pass(inventory, workers)
    tallies = tally(inventory, results)
    print(format_summary(inventory, tallies))
    if plot is not None:
        plot_frequencies(inventory, tallies, plot)
        print(f"class frequencies plotted in {plot}")
    unknown = unknown_lines(inventory, results)
    if unknown and inventory.unknown_is_unlabelled:
        # Values outside the classes are unlabelled by the format's rule: only a warning.
        total = sum(tally.unknown for tally in tallies.values())
        heading = (
            f"warning: {total} pixels in {len(unknown)} masks hold colours of no class; "
            "training ignores them. Per file"
        )
        print("\n".join(["", *_listing(heading, unknown)]))
    else:
        for line in unknown:
            inventory.problem("outside", line)
    turned = turned_lines(inventory, results)
    if turned:
        heading = (
            f"warning: {len(turned)} images are turned by their EXIF orientation when read, as "
            "viewers show them; check that their masks match them as shown, not as stored. "
            "Per image"
        )
        print("\n".join(["", *_listing(heading, turned)]))
    if any(inventory.problems.values()):
        advice = {"outside": inventory.outside_advice}
        print("\n" + format_problems(inventory.problems, advice))
        return 1
    print("\nno problems found")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m segmentation.data.check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", type=Path, metavar="ROOT", help="the dataset's root folder")
    parser.add_argument(
        "--dataset",
        choices=list(KINDS),
        help="its layout (default: found from ROOT, e.g. folder where ROOT/classes.yaml is)",
    )
    parser.add_argument(
        "--labels",
        help="the label scheme to count classes in (Cityscapes: default classes; KITTI: road "
        "or lane, default road)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help=f"bar chart of the classes ({', '.join(PLOT_SUFFIXES)}), outside ROOT",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="let --plot replace an existing file"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes decoding masks (default: the CPUs, at most 8; 0: this process)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status = []

    def run() -> None:
        if args.workers < 0:
            raise UserError(f"--workers must be 0 or more, got {args.workers}")
        status.append(
            check(args.root, args.dataset, args.labels, args.plot, args.workers, args.overwrite)
        )

    return run_guarded(run, debug=args.debug) or status[0]


if __name__ == "__main__":
    raise SystemExit(main())
