"""evaluate.py --report: the page parses, its pictures exist, its numbers are the JSON's, the
worst images are really the worst, the confusion matrix is in the scheme's order, a browser
shows it whole; and the report's bad inputs are one line each, found before the evaluation."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import id2label

import evaluate
from segmentation.data.labels import get_scheme

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGES_SHOWN = 2
CATEGORIES = get_scheme("cityscapes", "categories")

pytestmark = pytest.mark.usefixtures("one_thread")


def run_evaluate(checkpoint: Path, *extra) -> int:
    args = ["--checkpoint", checkpoint, "--workers", 0, "--amp", "off", *extra]
    return evaluate.main([str(arg) for arg in args])


@pytest.fixture(scope="module")
def cityscapes_report(trained_checkpoint, tmp_path_factory) -> Path:
    """A report of the categories checkpoint on the 6 val images, with the scores' JSON and
    the exported labelIds beside it (for the independent per-image check)."""
    folder = tmp_path_factory.mktemp("cityscapes-report")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = run_evaluate(
            trained_checkpoint("cityscapes", "categories"),
            *("--report", folder / "report", "--report-images", IMAGES_SHOWN),
            *("--output-json", folder / "scores.json", "--export-dir", folder / "export"),
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return folder


class Page(HTMLParser):
    """What the tests read of a page: tags that stay open, images, numbers, image lists."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"}

    def __init__(self, text: str) -> None:
        super().__init__()
        self.open: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.numbers: dict[str, str] = {}
        self.compare_numbers: dict[str, str] = {}
        self.samples: list[dict] = []
        self.tags: set[str] = set()
        self._number: tuple[dict, str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(attributes["src"])
        if tag == "a":
            self.links.append(attributes.get("href", ""))
        if tag == "figure" and attributes.get("class") == "sample":
            self.samples.append(attributes)
        for key, target in (("data-key", self.numbers), ("data-compare-key", self.compare_numbers)):
            if key in attributes:
                self._number = (target, attributes[key])
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.open[-1] if self.open else None}>")
        else:
            self.open.pop()

    def handle_data(self, data):
        if self._number is not None:
            target, key = self._number
            target[key] = data.strip()
            self._number = None


def read_page(report: Path) -> Page:
    return Page((report / "index.html").read_text(encoding="utf-8"))


def json_value(results: dict, key: str):
    value = results
    for part in key.split("/"):
        value = value[part]
    return value


def assert_numbers_equal(shown: dict[str, str], results: dict) -> None:
    for key, text in shown.items():
        value = json_value(results, key)
        if value is None:
            assert text == "\u2013", key  # &ndash;
        else:
            assert float(text) == pytest.approx(value, abs=5.1e-5), key


def test_the_page_parses_and_needs_no_network(cityscapes_report):
    text = (cityscapes_report / "report" / "index.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    page = Page(text)
    assert not page.errors and not page.open
    assert {"html", "head", "body", "title", "table", "img", "h2"} <= page.tags
    assert "script" not in page.tags and "link" not in page.tags
    assert "http://" not in text and "https://" not in text and "url(" not in text
    assert all("/" not in link and not link.startswith(("/", "file:")) for link in page.links)


def test_every_referenced_image_is_a_png_beside_the_page(cityscapes_report):
    report = cityscapes_report / "report"
    page = read_page(report)
    assert {"class_scores.png", "confusion.png"} <= set(page.images)
    assert len([name for name in page.images if name.startswith(("worst_", "best_"))]) == 4
    for name in page.images:
        path = report / name
        assert path.parent == report and path.is_file(), name
        data = path.read_bytes()
        assert len(data) > 0 and data.startswith(PNG_SIGNATURE), name
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert pixels is not None and min(pixels.shape[:2]) > 8, name


def test_the_numbers_of_the_page_are_the_json_ones(cityscapes_report):
    results = json.loads((cityscapes_report / "scores.json").read_text())
    page = read_page(cityscapes_report / "report")
    expected = {"mIoU", "mDice", "pixel_accuracy", "cityscapes/averageScoreCategories"}
    expected |= {
        f"per_class/{name}/{score}" for name in results["per_class"] for score in ("iou", "dice")
    }
    assert set(page.numbers) == expected
    assert_numbers_equal(page.numbers, results)


def independent_image_miou(export: Path, gt_root: Path) -> dict[str, float]:
    """Per-image mIoU of the categories scheme, from the exported labelIds and the ground truth,
    with cityscapesscripts' label table and a plain numpy confusion matrix."""
    category = np.array([id2label[i].categoryId for i in range(34)] + [0] * 222, np.int64)
    scores = {}
    for prediction_path in sorted(export.rglob("*_labelIds.png")):
        name = prediction_path.name.removesuffix("_labelIds.png")
        city = name.split("_")[0]
        gt_path = gt_root / city / f"{name}_gtFine_labelIds.png"
        prediction = category[cv2.imread(str(prediction_path), cv2.IMREAD_UNCHANGED)]
        truth = category[cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED)]
        cm = np.bincount((truth * 8 + prediction).ravel(), minlength=64).reshape(8, 8)
        ious = [
            cm[c, c] / (cm[c].sum() + cm[:, c].sum() - cm[c, c])
            for c in range(8)
            if cm[c].sum() + cm[:, c].sum() > 0
        ]
        scores[name] = float(np.mean(ious))
    return scores


def test_the_worst_images_are_the_worst_by_independent_counts(cityscapes_report, cityscapes_root):
    page = read_page(cityscapes_report / "report")
    scores = independent_image_miou(
        cityscapes_report / "export" / "labelIds", cityscapes_root / "gtFine" / "val"
    )
    assert len(scores) == 6
    worst = [sample for sample in page.samples if sample["data-list"] == "worst"]
    best = [sample for sample in page.samples if sample["data-list"] == "best"]
    assert len(worst) == len(best) == IMAGES_SHOWN
    for sample in worst + best:
        assert float(sample["data-miou"]) == pytest.approx(scores[sample["data-name"]], abs=1e-9)
    shown = [float(sample["data-miou"]) for sample in worst]
    assert shown == sorted(shown)
    assert all(value >= shown[-1] - 1e-12 for name, value in scores.items()
               if name not in {sample["data-name"] for sample in worst})  # fmt: skip
    best_scores = [float(sample["data-miou"]) for sample in best]
    assert best_scores == sorted(best_scores, reverse=True)
    assert best_scores[0] == pytest.approx(max(scores.values()), abs=1e-9)
    csv = (cityscapes_report / "report" / "images.csv").read_text().splitlines()
    assert csv[0] == "name,mIoU" and len(csv) == 7
    assert [line.split(",")[0] for line in csv[1 : 1 + IMAGES_SHOWN]] == [
        sample["data-name"] for sample in worst
    ]


def colour_runs(line: np.ndarray, codes: np.ndarray) -> list[int]:
    """The class colours met along a line of RGB pixels, in order, repeats merged."""
    packed = (line[:, 0].astype(np.int64) << 16) | (line[:, 1].astype(np.int64) << 8) | line[:, 2]
    found = [int(np.flatnonzero(codes == code)[0]) for code in packed if code in codes]
    return [
        index
        for position, index in enumerate(found)
        if position == 0 or found[position - 1] != index
    ]


def find_strip(image: np.ndarray, codes: np.ndarray) -> list[int] | None:
    """The first pixel column holding every class colour: the strip of swatches."""
    for x in range(image.shape[1]):
        runs = colour_runs(image[:, x], codes)
        if len(set(runs)) == len(codes):
            return runs
    return None


def test_the_confusion_matrix_is_in_the_schemes_class_order(cityscapes_report):
    image = cv2.imread(str(cityscapes_report / "report" / "confusion.png"))[..., ::-1]
    colors = CATEGORIES.colors.astype(np.int64)
    drawn = [i for i, color in enumerate(colors) if color.any()]  # void is black, like text
    codes = np.array([(c[0] << 16) | (c[1] << 8) | c[2] for c in colors[drawn]])
    assert len(set(codes.tolist())) == len(drawn)
    rows = find_strip(image, codes)  # down the strip left of the rows
    columns = find_strip(image.transpose(1, 0, 2), codes)  # along the strip above the columns
    assert rows == list(range(len(drawn))), rows
    assert columns == list(range(len(drawn))), columns


def test_kitti_report_has_the_pr_curves_and_the_devkit_numbers(
    trained_checkpoint, kitti_root, tmp_path
):
    report, scores = tmp_path / "report", tmp_path / "scores.json"
    code = run_evaluate(
        trained_checkpoint("kitti", "road"),
        *("--report", report, "--report-images", 1, "--output-json", scores),
    )
    assert code == 0
    results = json.loads(scores.read_text())
    page = read_page(report)
    assert "pr_curves.png" in page.images and (report / "pr_curves.png").stat().st_size > 0
    kitti_keys = {key for key in page.numbers if key.startswith("kitti_road/")}
    categories = set(results["kitti_road"])
    assert {"overall", "um"} <= categories
    assert kitti_keys == {
        f"kitti_road/{c}/{k}" for c in categories for k in ("MaxF", "AP", "PRE", "REC")
    }
    assert_numbers_equal(page.numbers, results)
    assert [sample["data-list"] for sample in page.samples] == ["worst", "best"]


def test_compare_shows_both_runs_and_refuses_another_scheme(
    trained_checkpoint, cityscapes_report, tmp_path, capsys
):
    checkpoint = trained_checkpoint("cityscapes", "categories")
    earlier = json.loads((cityscapes_report / "scores.json").read_text())
    earlier["mIoU"], earlier["per_class"]["flat"]["iou"] = 0.123456, 0.5
    other = tmp_path / "earlier.json"
    other.write_text(json.dumps(earlier))
    report = tmp_path / "report"
    assert (
        run_evaluate(checkpoint, "--report", report, "--report-images", 0, "--compare", other) == 0
    )
    page = read_page(report)
    assert "compare.png" in page.images and (report / "compare.png").stat().st_size > 0
    assert page.compare_numbers["mIoU"] == "0.1235"
    assert_numbers_equal(page.compare_numbers, earlier)
    assert not page.samples

    earlier["labels"] = "classes"
    other.write_text(json.dumps(earlier))
    capsys.readouterr()
    code = run_evaluate(checkpoint, "--report", tmp_path / "new", "--compare", other)
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(error) == 1, error
    assert "'classes'" in error[0] and "'categories'" in error[0]
    assert not (tmp_path / "new").exists()


def test_bad_report_folders_are_one_line_before_the_evaluation(
    trained_checkpoint, tmp_path, capsys
):
    checkpoint = trained_checkpoint("cityscapes", "categories")
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    missing = tmp_path / "missing.pt"
    cases = [
        ([checkpoint, "--report", used], ["is not empty", "--overwrite"]),
        ([missing, "--report", blocker / "report"], ["cannot create --report", "a_file"]),
        ([missing, "--report", blocker], ["--report", "is a file"]),
        ([checkpoint, "--compare", blocker], ["--report"]),
        (
            [missing, "--report", tmp_path / "r", "--compare", tmp_path / "none.json"],
            ["cannot read"],
        ),
        ([checkpoint, "--report", tmp_path / "r", "--report-images", -1], ["--report-images"]),
    ]
    for args, fragments in cases:
        capsys.readouterr()
        code = evaluate.main([str(arg) for arg in ["--checkpoint", *args, "--workers", "0"]])
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (args, lines)
        assert all(fragment in lines[0] for fragment in fragments), lines[0]
        # The checkpoint is missing in some cases: the folder was checked before loading it.
        assert "does not exist" not in lines[0] and captured.out == ""
    assert [path.name for path in used.iterdir()] == ["notes.txt"]

    assert run_evaluate(checkpoint, "--report", used, "--overwrite", "--report-images", 2) == 0
    panels = sorted(path.name for path in used.glob("worst_*.png"))
    assert len(panels) == 2
    (used / "worst_99_mine.png").write_bytes(b"not the report's")  # named by no page
    # Again with no image panels: the earlier page's panels go, nothing else does.
    assert run_evaluate(checkpoint, "--report", used, "--overwrite", "--report-images", 0) == 0
    assert (used / "index.html").is_file() and (used / "notes.txt").read_text() == "mine"
    assert not any((used / name).exists() for name in panels)
    assert (used / "worst_99_mine.png").read_bytes() == b"not the report's"
    shown = set(re.findall(r'<img src="([^"]+)"', (used / "index.html").read_text()))
    assert shown and all((used / name).is_file() for name in shown)


# --- a real browser ---

LOAD_CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((image) => !image.complete || image.naturalWidth === 0);
  document.body.setAttribute("data-images", String(images.length));
  const names = broken.map((image) => image.getAttribute("src"));
  document.body.setAttribute("data-broken", names.join(" "));
});
</script>"""


def run_chromium(
    chromium: str, page: Path, profile: Path, *options: str
) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", *options, page.resolve().as_uri()]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def broken_images(chromium: str, report: Path, tmp_path: Path) -> tuple[int, list[str]]:
    """Loads the page with a tiny script that records each image's naturalWidth once loaded
    (in a copy: the report itself has no script), and reads the DOM back."""
    page = report / "check.html"
    text = (report / "index.html").read_text(encoding="utf-8")
    page.write_text(text.replace("</body>", LOAD_CHECK + "</body>"), encoding="utf-8")
    options = ("--virtual-time-budget=10000", "--dump-dom")
    result = run_chromium(chromium, page, tmp_path / "profile", *options)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    start = dom.index("<body")
    tag = dom[start : dom.index(">", start)]
    images = int(tag.split('data-images="')[1].split('"')[0])
    broken = tag.split('data-broken="')[1].split('"')[0].split()
    return images, broken


@pytest.mark.slow
def test_a_browser_shows_the_page_whole(chromium, cityscapes_report, tmp_path):
    report = Path(shutil.copytree(cityscapes_report / "report", tmp_path / "report"))
    shot = tmp_path / "shot.png"
    result = run_chromium(
        chromium,
        report / "index.html",
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1400,3000",
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = cv2.imread(str(shot))
    assert pixels.shape[:2] == (3000, 1400)
    assert pixels.std() > 20 and (pixels.min(axis=2) < 200).mean() > 0.05, "a blank screenshot"

    count, broken = broken_images(chromium, report, tmp_path)
    assert count == len(read_page(report).images) and broken == []
    (report / "confusion.png").unlink()  # the check must see a missing picture
    count, broken = broken_images(chromium, report, tmp_path)
    assert broken == ["confusion.png"]


def test_image_mious_follow_the_toolkits_rule():
    from segmentation.report.summary import image_miou

    cm = np.array([[[3, 1], [0, 0]], [[0, 0], [0, 0]], [[2, 0], [0, 2]]])
    scores = image_miou(cm)
    assert scores[0] == pytest.approx((3 / 4 + 0.0) / 2)  # class 1 only predicted: IoU 0
    assert math.isnan(scores[1]) and scores[2] == 1.0
