"""The report folder: index.html and the PNG files it shows, side by side.

The page is self-contained: inline CSS, no script, no font or file from the network, images by
relative name, so the folder opens from disk anywhere and can be copied as a whole. Every
number it shows that evaluate.py's JSON holds carries `data-key="a/b/c"`, its path in that
JSON, so that tests (and scripts) can read the page back. Names from the user's files (classes,
images) show through `text.visible`: a control character is written as its escape.

A generator tag marks the page as ours (folder.py): an --overwrite of an earlier report
replaces and removes only the files that page names, never a file of the user's.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import re
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import cv2
import numpy as np

from segmentation.data.labels import LabelScheme
from segmentation.evaluation.mapping import describe_mapping
from segmentation.files import write_atomically
from segmentation.report import charts
from segmentation.report.folder import IMAGE_LIST, MARKER, PAGE, files_of_report
from segmentation.report.images import Shown
from segmentation.report.summary import (
    iou_deltas,
    pixel_shares,
    precision_recall,
    row_normalized,
    top_confusions,
)
from segmentation.report.text import visible

HEADLINE = (("mIoU", "mIoU"), ("mDice", "mDice"), ("pixel_accuracy", "pixel accuracy"))
KITTI_KEYS = ("MaxF", "AP", "PRE", "REC")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1360px; color: #222; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { padding: 3px 10px; text-align: left; border-bottom: 1px solid #eee; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.headline { display: flex; gap: 16px; margin: 12px 0; }
.headline div { border: 1px solid #ddd; border-radius: 6px; padding: 8px 16px; }
.headline .n { font-size: 28px; font-weight: 600; display: block; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #888;
          vertical-align: middle; margin-right: 6px; }
img { max-width: 100%; }
.samples img { width: 100%; }
figure.sample { margin: 0 0 14px 0; }
figure.sample figcaption { font-family: monospace; margin-bottom: 2px; }
td.name { max-width: 28em; }
td.name, li, figcaption, h2 { overflow-wrap: anywhere; }  /* a long name wraps, not widens */
.tiles { display: grid; grid-template-columns: repeat(4, 1fr); font-size: 13px; color: #555; }
.note { color: #555; font-size: 14px; }
.row { display: flex; gap: 28px; align-items: flex-start; flex-wrap: wrap; }
.row > * { flex: 0 1 auto; min-width: 0; }
"""


@dataclass
class ReportInputs:
    """What the page shows. results: evaluate.py's JSON (with "split"); confusion (C, C) of
    the scheme's classes, rows ground truth; road_histograms: {category: (road, non-road)}
    level histograms (KITTI); compare: an earlier evaluate.py JSON."""

    results: dict
    scheme: LabelScheme
    confusion: np.ndarray
    worst: list[Shown] = field(default_factory=list)
    best: list[Shown] = field(default_factory=list)
    road_histograms: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    compare: dict | None = None
    compare_name: str = ""
    created: str = ""
    image_scores: list[tuple[str, float]] = field(default_factory=list)  # every image's mIoU


def write_report(folder: Path, inputs: ReportInputs) -> Path:
    """Write the PNG files, then index.html (last, so that a page never names a missing
    picture); returns the page's path. An earlier report of ours in `folder` is replaced: its
    files that the new page does not name are removed (evaluate.py checked the folder first,
    folder.check_report_folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    earlier = files_of_report(folder)
    sections = [
        _header(inputs),
        _class_section(folder, inputs),
        _confusion_section(folder, inputs),
        _road_section(folder, inputs),
        _compare_section(folder, inputs),
        _images_section(folder, "worst", inputs.worst, earlier),
        _images_section(folder, "best", inputs.best, earlier),
        _image_list(folder, inputs.image_scores),
    ]
    title = f"Evaluation of {Path(inputs.results['checkpoint']).name}"
    page = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n{MARKER}\n'
        f"<title>{escape(visible(title))}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(section for section in sections if section)
        + "\n</body>\n</html>\n"
    )
    path = folder / PAGE
    _write(path, page.encode())
    # An --overwrite of an earlier report: its files that this page no longer names go (a file
    # the earlier page did not name, the user's own, stays).
    for name in sorted(earlier - files_of_report(folder)):
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    return path


def _write(path: Path, data: bytes) -> None:
    write_atomically(path, lambda handle: handle.write(data), sync=False)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"PNG encoding of {path.name} failed")
    _write(path, encoded.tobytes())


def _chart(folder: Path, name: str, figure, alt: str) -> str:
    _write(folder / name, charts.png_bytes(figure))
    return f'<img src="{escape(name)}" alt="{escape(alt)}">'


def _number(value: float | None, key: str = "", digits: int = 4, of: str = "key") -> str:
    """A number as the page shows it; `key`, its path in the JSON, goes in data-key (data-
    compare-key with of="compare-key": a number of the --compare JSON)."""
    text = "&ndash;" if value is None or math.isnan(value) else f"{value:.{digits}f}"
    attribute = f' data-{of}="{escape(visible(key))}"' if key else ""
    return f'<span class="n"{attribute}>{text}</span>'


def _swatch(color) -> str:
    red, green, blue = (int(channel) for channel in color)
    return f'<span class="swatch" style="background: rgb({red}, {green}, {blue})"></span>'


def _header(inputs: ReportInputs) -> str:
    results = inputs.results
    facts = [
        ("checkpoint", results["checkpoint"]),
        ("dataset", results["dataset"]),
        ("split", results.get("split", "")),
        ("label scheme", f"{results['labels']} ({inputs.scheme.num_classes} classes)"),
        ("images", str(results["images"])),
        ("TTA", results["tta"]),
        ("autocast", results.get("amp", "")),
        ("date", inputs.created),
    ]
    if results.get("mapping"):  # scored on another dataset than the one trained on
        facts.insert(2, ("class mapping", describe_mapping(results["mapping"])))
    rows = "".join(
        f"<tr><th>{name}</th><td>{escape(visible(str(value)))}</td></tr>" for name, value in facts
    )
    boxes = "".join(
        f"<div>{label}{_number(results[key], key)}</div>" for key, label in HEADLINE
    ) + _official_boxes(results)
    return (
        f"<h1>Evaluation report</h1>\n<table>{rows}</table>\n"
        f'<div class="headline">{boxes}</div>\n{_kitti_table(results)}'
    )


def _official_boxes(results: dict) -> str:
    official = results.get("cityscapes")
    if not official:
        return ""
    boxes = ""
    # The class score means something only for schemes that predict the 19 classes.
    if results["labels"] in ("classes", "official"):
        value = official["averageScoreClasses"]
        boxes += f"<div>official IoU class{_number(value, 'cityscapes/averageScoreClasses')}</div>"
    value = official["averageScoreCategories"]
    key = "cityscapes/averageScoreCategories"
    return boxes + f"<div>official IoU category{_number(value, key)}</div>"


def _kitti_table(results: dict) -> str:
    road = results.get("kitti_road")
    if not road:
        return ""
    head = "".join(f'<th class="n">{key}</th>' for key in KITTI_KEYS)
    rows = "".join(
        f"<tr><th>{escape(category)}</th>"
        + "".join(
            f'<td class="n">{_number(scores[key], f"kitti_road/{category}/{key}")}</td>'
            for key in KITTI_KEYS
        )
        + "</tr>"
        for category, scores in road.items()
    )
    return (
        f"<h2>KITTI road (devkit, image plane)</h2>\n<table><tr><th>category</th>{head}</tr>"
        f"{rows}</table>"
    )


def _class_section(folder: Path, inputs: ReportInputs) -> str:
    scheme, per_class = inputs.scheme, inputs.results["per_class"]
    names = list(per_class)
    share = pixel_shares(inputs.confusion)
    figure = charts.class_scores_figure(
        names,
        [per_class[name]["iou"] for name in names],
        [per_class[name]["dice"] for name in names],
        share,
        scheme.colors,
    )
    image = _chart(folder, "class_scores.png", figure, "per-class IoU and Dice")
    rows = "".join(
        f'<tr><td class="name">{_swatch(color)}{escape(visible(name))}</td>'
        f'<td class="n">{_number(per_class[name]["iou"], f"per_class/{name}/iou")}</td>'
        f'<td class="n">{_number(per_class[name]["dice"], f"per_class/{name}/dice")}</td>'
        f'<td class="n">{_number(100 * share[i], digits=2)}%</td></tr>'
        for i, (name, color) in enumerate(zip(names, scheme.colors))
    )
    table = (
        '<table><tr><th>class</th><th class="n">IoU</th><th class="n">Dice</th>'
        f'<th class="n">ground-truth pixels</th></tr>{rows}</table>'
    )
    return (
        f'<h2 id="classes">Per-class scores</h2>\n<div class="row"><div>{image}</div>{table}</div>'
    )


def _confusion_section(folder: Path, inputs: ReportInputs) -> str:
    names = list(inputs.scheme.class_names)
    normalized = row_normalized(inputs.confusion)
    figure = charts.confusion_figure(normalized, names, inputs.scheme.colors)
    image = _chart(folder, "confusion.png", figure, "row-normalized confusion matrix")
    confusions = top_confusions(inputs.confusion, [visible(name) for name in names])
    items = "".join(f"<li>{escape(str(confusion))}</li>" for confusion in confusions)
    listing = f"<ol>{items}</ol>" if items else '<p class="note">no confusion above 1%</p>'
    return (
        '<h2 id="confusion">Confusion matrix</h2>\n<p class="note">Rows: ground truth; columns: '
        "prediction; each row is divided by its pixels (counted at full resolution).</p>\n"
        f'<div class="row"><div>{image}</div><div><h3>Top confusions</h3>\n{listing}</div></div>'
    )


def _road_section(folder: Path, inputs: ReportInputs) -> str:
    if not inputs.road_histograms:
        return ""
    curves = {
        name: curve
        for name, (road, other) in inputs.road_histograms.items()
        if (curve := precision_recall(road, other)) is not None
    }
    if not curves:
        return ""
    image = _chart(folder, "pr_curves.png", charts.pr_curves_figure(curves), "precision-recall")
    return f'<h2 id="pr">Precision-recall (KITTI road)</h2>\n{image}'


def _compare_section(folder: Path, inputs: ReportInputs) -> str:
    other, results = inputs.compare, inputs.results
    if other is None:
        return ""
    deltas = iou_deltas(results, other)
    names = list(deltas)
    scheme = inputs.scheme
    figure = charts.compare_figure(
        names, [deltas[name] for name in names], scheme.colors, inputs.compare_name
    )
    image = _chart(folder, "compare.png", figure, "per-class IoU change")
    rows = "".join(
        f"<tr><th>{label}</th><td class='n'>{_number(results[key], key)}</td>"
        f"<td class='n'>{_number(other.get(key), key, of='compare-key')}</td></tr>"
        for key, label in HEADLINE
    )
    table = (
        f"<table><tr><th></th><th class='n'>this run</th><th class='n'>"
        f"{escape(visible(inputs.compare_name))}</th></tr>{rows}</table>"
    )
    source = escape(visible(str(other.get("checkpoint", ""))))
    if other.get("dataset") != results["dataset"]:  # the same model, another dataset's pixels
        datasets = f"scored on {other.get('dataset')}, this run on {results['dataset']}"
        source += f" ({escape(visible(datasets))})"
    return (
        f'<h2 id="compare">Against {escape(visible(inputs.compare_name))}</h2>\n'
        f'<p class="note">{source}</p>\n<div class="row">{table}<div>{image}</div></div>'
    )


def _images_section(folder: Path, which: str, shown: list[Shown], earlier: set[str]) -> str:
    """The panels of one list; `earlier`: the files of the report this one replaces."""
    if not shown:
        return ""
    figures = []
    for rank, item in enumerate(shown, start=1):
        name = _panel_name(folder, f"{which}_{rank:02d}_{_file_part(item.name)}", earlier)
        _write_png(folder / name, item.pixels)
        shown_name = escape(visible(item.name))
        figures.append(
            f'<figure class="sample" data-list="{which}" data-name="{shown_name}" '
            f'data-miou="{item.miou!r}"><figcaption>{rank}. {shown_name} &nbsp; mIoU '
            f'{item.miou:.4f}</figcaption><img src="{escape(name)}" alt="{shown_name}">'
            "</figure>"
        )
    title = f"{which.capitalize()} {len(shown)} image{'s' if len(shown) > 1 else ''} by mIoU"
    legend = (
        '<div class="tiles"><span>input</span><span>ground truth</span><span>prediction</span>'
        "<span>errors: wrong red, ignored grey</span></div>"
    )
    # As wide as the panels at most, so that the legend's four columns sit over the tiles.
    width = max(item.pixels.shape[1] for item in shown)
    return (
        f'<h2 id="{which}">{title}</h2>\n<div class="samples" style="max-width: {width}px">'
        f"{legend}\n" + "\n".join(figures) + "</div>"
    )


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80]


def _panel_name(folder: Path, stem: str, earlier: set[str]) -> str:
    """`stem`.png, or `stem`_2.png, ... where a file of that name is the user's (one that the
    earlier report did not write): a panel never replaces it."""
    name, number = f"{stem}.png", 2
    while name not in earlier and (folder / name).exists():
        name, number = f"{stem}_{number}.png", number + 1
    return name


def csv_text(text: str) -> str:
    """`text` as a CSV cell that a spreadsheet shows as text: one starting with = + - @ (or a
    tab or carriage return) would be run as a formula, so it gets a leading apostrophe."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _image_list(folder: Path, scores: list[tuple[str, float]]) -> str:
    """images.csv: every image's mIoU, worst first, for a look beyond the pictures. Written by
    the csv module: a name with a comma, quote or line break stays one cell."""
    if not scores:
        return ""
    ranked = sorted(scores, key=lambda item: (math.isnan(item[1]), item[1], item[0]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "mIoU"])
    writer.writerows(
        (csv_text(name), "" if math.isnan(miou) else f"{miou:.6f}") for name, miou in ranked
    )
    _write(folder / IMAGE_LIST, buffer.getvalue().encode())
    return (
        f'<p class="note">Every image\'s mIoU, worst first: <a href="{IMAGE_LIST}">images.csv</a>. '
        "An image's mIoU is the mean IoU over the classes in its ground truth or prediction, "
        "from its own confusion matrix, ignored pixels left out.</p>"
    )
