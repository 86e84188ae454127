"""Scoring a model on another dataset kind (evaluate.py --dataset): a Cityscapes 19-class model
on generated BDD100K, KITTI semantics and Mapillary Vistas trees, checked against IoU counted
here from the exported predictions and the dataset's own label files; a model that predicts
one class everywhere, against IoU counted by hand (with TTA and the sliding window too); the
matching rule on schemes alone; and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import id2label
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS
from PIL import Image

import evaluate
from segmentation.config import config_from_dict
from segmentation.data.build import scheme_for
from segmentation.data.kinds.catalog import kind_named
from segmentation.data.labels import IGNORE_INDEX, LabelScheme, cityscapes_scheme, get_scheme
from segmentation.errors import UserError
from segmentation.evaluation.mapping import map_classes
from segmentation.sample.generate import (
    generate_bdd100k,
    generate_kitti_semantics,
    generate_mapillary,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# The 19 evaluated Cityscapes classes in train-id order, from the official definitions.
NINETEEN = [
    label.name
    for label in sorted(CITYSCAPES_LABELS, key=lambda label: label.trainId)
    if 0 <= label.trainId < 19
]
CAR = NINETEEN.index("car")


@pytest.fixture(scope="module")
def bdd_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bdd100k")
    generate_bdd100k(root, layout="current", scale=0.1, train=2, val=3, test=1, seed=3)
    return root


@pytest.fixture(scope="module")
def semantics_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kitti_semantics")
    generate_kitti_semantics(root, scale=0.1, train=10, test=1, seed=3)
    return root


def run_evaluate(checkpoint: Path, *extra) -> int:
    args = ["--checkpoint", checkpoint, "--workers", 0, "--amp", "off", *extra]
    return evaluate.main([str(arg) for arg in args])


def score_on(checkpoint: Path, kind: str, root: Path, tmp_path: Path, *extra) -> tuple[dict, Path]:
    """evaluate.py --dataset KIND --data-root ROOT with --export-dir: (its results JSON, the
    export folder)."""
    scores, export = tmp_path / "s.json", tmp_path / "export"
    code = run_evaluate(
        checkpoint,
        *("--dataset", kind, "--data-root", root),
        *("--output-json", scores, "--export-dir", export, *extra),
    )
    assert code == 0
    return json.loads(scores.read_text()), export


def one_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def read_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.ndim == 2, path
    return image


def train_ids_of_label_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids -> train ids (255 for the ids the benchmark ignores)."""
    table = np.full(256, 255, np.uint8)
    for label_id, label in id2label.items():
        if label_id >= 0 and 0 <= label.trainId < 19:
            table[label_id] = label.trainId
    return table[label_ids]


def reference_iou(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[float | None]:
    """Per-class IoU of (prediction, ground truth) train-id maps, ground truth 255 left out, a
    prediction of 255 a miss; None for a class absent from both."""
    matrix = np.zeros((19, 20), np.int64)  # column 19: predicted as no class of the 19
    for prediction, truth in pairs:
        assert prediction.shape == truth.shape  # scored at the labels' resolution
        keep = truth < 19
        np.add.at(matrix, (truth[keep], np.minimum(prediction[keep], 19)), 1)
    tp = np.diag(matrix[:, :19])
    union = matrix[:, :19].sum(0) + matrix.sum(1) - tp
    return [float(t / u) if u else None for t, u in zip(tp, union)]


def assert_scores_equal(per_class: dict, expected: list[float | None]) -> None:
    assert list(per_class)[:19] == NINETEEN
    for name, value in zip(NINETEEN, expected):
        shown = per_class[name]["iou"]
        assert (shown is None) == (value is None), name
        if value is not None:
            assert shown == pytest.approx(value, abs=1e-6), name


# --------------------------------------------------------------------------- scored elsewhere


@pytest.mark.slow
def test_a_cityscapes_model_on_bdd100k(trained_checkpoint, bdd_root, tmp_path):
    report = tmp_path / "report"
    checkpoint = trained_checkpoint("cityscapes", "official")
    extra = ("--report", report, "--report-images", 1)
    results, export = score_on(checkpoint, "bdd100k", bdd_root, tmp_path, *extra)
    assert results["dataset"] == "bdd100k" and results["labels"] == "official"
    assert results["mapping"] == {
        "trained_on": {"dataset": "cityscapes", "labels": "official"},
        "scored_on": {"dataset": "bdd100k", "labels": "classes"},
        "classes_matched": 19,
        "dataset_classes": 19,
        "unscored": [],
        "model_classes_unscored": [],
    }
    # The export is BDD100K's own format: train-id masks named like the images.
    masks = sorted((bdd_root / "labels" / "sem_seg" / "masks" / "val").glob("*.png"))
    assert sorted(p.name for p in (export / "masks").iterdir()) == [p.name for p in masks]
    pairs = [(read_grey(export / "masks" / mask.name), read_grey(mask)) for mask in masks]
    assert_scores_equal(results["per_class"], reference_iou(pairs))
    page = (report / "index.html").read_text(encoding="utf-8")
    assert (
        "trained on cityscapes &#x27;official&#x27;, scored on bdd100k &#x27;classes&#x27;" in page
    )
    assert "19 of its 19 classes matched by name" in page


def test_a_cityscapes_model_on_kitti_semantics(trained_checkpoint, semantics_root, tmp_path):
    checkpoint = trained_checkpoint("cityscapes", "official")
    results, export = score_on(checkpoint, "kitti_semantics", semantics_root, tmp_path)
    # The dataset scored, not the dataset whose label ids it stores.
    assert results["dataset"] == "kitti_semantics"
    assert results["mapping"]["scored_on"] == {"dataset": "kitti_semantics", "labels": "official"}
    exported = sorted((export / "semantic").iterdir())
    assert exported, "no predictions exported"
    truth = semantics_root / "training" / "semantic"
    pairs = [
        (train_ids_of_label_ids(read_grey(p)), train_ids_of_label_ids(read_grey(truth / p.name)))
        for p in exported
    ]
    assert_scores_equal(results["per_class"], reference_iou(pairs))
    assert results["cityscapes"]["averageScoreClasses"] == pytest.approx(results["mIoU"])


@pytest.mark.slow
def test_a_cityscapes_model_on_mapillary_vistas(trained_checkpoint, tmp_path):
    """Mapillary's 65 scored labels read as the 19 Cityscapes classes (the kind's cityscapes
    scheme, whose table test_mapillary checks by hand); images of several sizes; predictions
    exported as the version's palette PNGs of label indices, named like the ground truth."""
    root = tmp_path / "vistas"
    generate_mapillary(root, version="v1.2", scale=0.03, train=1, val=3, test=1, seed=3)
    checkpoint = trained_checkpoint("cityscapes", "official")
    results, export = score_on(checkpoint, "mapillary", root, tmp_path)
    assert results["dataset"] == "mapillary"
    assert results["mapping"]["scored_on"] == {"dataset": "mapillary", "labels": "cityscapes"}
    assert results["mapping"]["classes_matched"] == 19
    data = {"dataset": "mapillary", "root": str(root), "labels": "cityscapes"}
    to_train_ids = scheme_for(config_from_dict({"data": data}).data).lookup
    truths = sorted((root / "validation" / "v1.2" / "labels").glob("*.png"))
    assert sorted(p.name for p in (export / "labels").iterdir()) == [p.name for p in truths]
    pairs = []
    for truth in truths:
        predicted = Image.open(export / "labels" / truth.name)
        assert predicted.mode == "P"  # the dataset's own format: indices with its palette
        pairs.append((to_train_ids[np.array(predicted)], to_train_ids[np.array(Image.open(truth))]))
    assert len({truth.shape for _, truth in pairs}) > 1, "the sample's images differ in size"
    assert_scores_equal(results["per_class"], reference_iou(pairs))


@pytest.mark.slow
def test_unlabeled_of_a_20_class_model_is_a_miss_on_bdd100k(trained_checkpoint, bdd_root, tmp_path):
    """BDD100K stores Cityscapes' "unlabeled" as its ignore value: the class gets no score, and
    predicting it on a labelled pixel misses that pixel's class (it exports as 255)."""
    checkpoint = trained_checkpoint("cityscapes", "classes")
    results, export = score_on(checkpoint, "bdd100k", bdd_root, tmp_path)
    mapping = results["mapping"]
    assert mapping["scored_on"]["labels"] == "classes" and mapping["classes_matched"] == 19
    assert mapping["model_classes_unscored"] == ["unlabeled"]
    assert list(results["per_class"]) == [*NINETEEN, "unlabeled"]
    assert results["per_class"]["unlabeled"] == {"iou": None, "dice": None}
    masks = sorted((bdd_root / "labels" / "sem_seg" / "masks" / "val").glob("*.png"))
    pairs = [(read_grey(export / "masks" / mask.name), read_grey(mask)) for mask in masks]
    expected = reference_iou(pairs)
    assert_scores_equal(results["per_class"], expected)
    present = [value for value in expected if value is not None]
    assert results["mIoU"] == pytest.approx(sum(present) / len(present))


@pytest.fixture(scope="module")
def car_everywhere(trained_checkpoint, tmp_path_factory) -> Path:
    """The 19-class checkpoint with a head that predicts 'car' at every pixel: zero weights and
    a bias that only car's channel has."""
    state = torch.load(trained_checkpoint("cityscapes", "official"), weights_only=True)
    weights = state["model"]
    assert weights["classifier.weight"].shape[0] == 19
    weights["classifier.weight"].zero_()
    weights["classifier.bias"].fill_(-5.0)
    weights["classifier.bias"][CAR] = 5.0
    path = tmp_path_factory.mktemp("car") / "car.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("flags", [[], ["--tta", "hflip"], ["--sliding-window"]])
def test_a_model_that_predicts_car_everywhere_scores_what_counting_by_hand_gives(
    car_everywhere, bdd_root, tmp_path, flags
):
    scores = tmp_path / "s.json"
    code = run_evaluate(
        car_everywhere,
        *("--dataset", "bdd100k", "--data-root", bdd_root, "--output-json", scores, *flags),
    )
    assert code == 0
    results = json.loads(scores.read_text())
    masks = sorted((bdd_root / "labels" / "sem_seg" / "masks" / "val").glob("*.png"))
    truth = np.concatenate([read_grey(mask).ravel() for mask in masks])
    labelled = truth[truth != IGNORE_INDEX]
    cars = int(np.count_nonzero(labelled == CAR))
    assert 0 < cars < labelled.size, "the generated masks should hold cars and other classes"
    # Car: every labelled pixel predicted car, so TP = car pixels, union = all labelled pixels.
    # Every other class present: TP 0, IoU 0. Absent classes: no score.
    present = set(labelled.tolist())
    expected = [
        cars / labelled.size if index == CAR else (0.0 if index in present else None)
        for index in range(19)
    ]
    assert_scores_equal(results["per_class"], expected)
    assert results["mIoU"] == pytest.approx(cars / labelled.size / len(present))
    assert results["pixel_accuracy"] == pytest.approx(cars / labelled.size)


# --------------------------------------------------------------------------- the matching rule


def test_the_scheme_with_the_same_classes_is_chosen():
    kind = kind_named("kitti_semantics")
    config = kind.options(root="unused")
    for labels in ("official", "classes", "categories"):
        mapped = map_classes(cityscapes_scheme([labels]), "cityscapes", kind, config)
        assert mapped.dataset_scheme.name == labels and mapped.unscored == ()


def test_a_model_of_some_of_the_classes_ignores_the_others():
    """A model of car and road (in that order) on BDD100K: the stored train ids of car (13)
    and road (0) become its classes 0 and 1, every other train id and 255 are ignored."""
    model = LabelScheme(
        name="mine",
        dataset="folder",
        class_names=("car", "road"),
        colors=np.zeros((2, 3), np.uint8),
        lookup=np.arange(2, dtype=np.uint8),
        export_label_ids=np.arange(2, dtype=np.uint8),
        stored_values=None,
        name_fixes_classes=False,
    )
    kind = kind_named("bdd100k")
    mapped = map_classes(model, "folder", kind, kind.options(root="unused"))
    expected = np.full(256, IGNORE_INDEX, np.uint8)
    expected[NINETEEN.index("car")], expected[NINETEEN.index("road")] = 0, 1
    assert np.array_equal(mapped.scheme.lookup, expected)
    assert list(mapped.scheme.export_label_ids) == [NINETEEN.index("car"), NINETEEN.index("road")]
    assert mapped.unscored == tuple(name for name in NINETEEN if name not in ("car", "road"))
    assert not mapped.scheme.contains_evaluated_classes
    assert mapped.describe()["classes_matched"] == 2


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "trained, missing",
    [
        (("kitti", "road"), ["background"]),
        (
            ("cityscapes", "categories"),
            ["void", "flat", "construction", "object", "nature", "human", "vehicle"],
        ),
    ],
)
def test_a_model_without_counterparts_is_refused_in_one_line(
    trained_checkpoint, bdd_root, tmp_path, capsys, trained, missing
):
    checkpoint = trained_checkpoint(*trained)
    scores = tmp_path / "s.json"
    capsys.readouterr()
    code = run_evaluate(
        checkpoint, "--dataset", "bdd100k", "--data-root", bdd_root, "--output-json", scores
    )
    error = one_error(capsys)
    assert code == 2 and not scores.exists()
    named = error.split("its classes ")[1].split(" have no counterpart")[0]
    assert named.split(", ") == missing, error
    assert "bdd100k offers 'classes': road, sidewalk" in error, error


def test_dataset_without_data_root_and_an_unknown_kind_are_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.pt"  # refused before the checkpoint is read
    assert run_evaluate(missing, "--dataset", "bdd100k") == 2
    assert "--dataset bdd100k needs --data-root" in one_error(capsys)
    assert run_evaluate(missing, "--dataset", "mars", "--data-root", tmp_path) == 2
    error = one_error(capsys)
    assert "unknown dataset 'mars'" in error and "bdd100k" in error


def test_compare_refuses_a_scheme_of_the_same_name_with_other_classes(tmp_path):
    """Mapillary's 'classes' (its own labels) share only the name with Cityscapes' 'classes'."""
    from segmentation.report.summary import check_same_scheme

    ours = get_scheme("cityscapes", "classes")
    theirs = {"dataset": "mapillary", "labels": "classes", "per_class": {"Road": {}, "Sky": {}}}
    with pytest.raises(UserError, match="scores other classes than this checkpoint"):
        check_same_scheme(theirs, ours, tmp_path / "vistas.json")
    same = {"dataset": "bdd100k", "labels": "classes", "per_class": dict.fromkeys(ours.class_names)}
    check_same_scheme(same, ours, tmp_path / "bdd.json")  # the same classes elsewhere: allowed


@pytest.mark.slow
def test_compare_across_datasets_names_both(trained_checkpoint, bdd_root, tmp_path):
    checkpoint = trained_checkpoint("cityscapes", "official")
    own = tmp_path / "own.json"
    assert run_evaluate(checkpoint, "--output-json", own, "--report-images", 0) == 0
    report = tmp_path / "report"
    code = run_evaluate(
        checkpoint,
        *("--dataset", "bdd100k", "--data-root", bdd_root),
        *("--report", report, "--report-images", 0, "--compare", own),
    )
    assert code == 0
    page = (report / "index.html").read_text(encoding="utf-8")
    assert "scored on cityscapes, this run on bdd100k" in page
