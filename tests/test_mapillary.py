"""The Mapillary Vistas kind: its generated tree (both label versions, as the download holds
them), discovery and detection, palette labels read as indices, the schemes read from the
config JSON (the Cityscapes mapping checked by hand), data.check, the refusals, and a tiny run
scored by the confusion matrix and exported as palette PNGs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

import evaluate
import train
from segmentation.config import config_from_dict
from segmentation.data import check
from segmentation.data.build import scheme_for
from segmentation.data.kinds.catalog import detect_kind, kind_named
from segmentation.data.labels import IGNORE_INDEX, cityscapes_train_id_scheme
from segmentation.data.mapillary import find_mapillary, read_class_indices
from segmentation.errors import UserError
from segmentation.sample.generate import generate_mapillary

TRAIN, VAL, TEST = 6, 2, 2
SIZES = {"v1.2": (66, 65), "v2.0": (124, 116)}  # labels in the config, labels scored


@pytest.fixture(scope="module")
def vistas_root(tmp_path_factory) -> Path:
    """A tiny tree of both versions (32 to 121 rows), shared: copy it before changing it."""
    root = tmp_path_factory.mktemp("mapillary")
    generate_mapillary(root, scale=0.03, train=TRAIN, val=VAL, test=TEST, seed=1)
    return root


def data_config(root: Path, version: str, labels: str) -> object:
    data = {"dataset": "mapillary", "root": str(root), "version": version, "labels": labels}
    return config_from_dict({"data": data}).data


def config_labels(root: Path, version: str) -> list[dict]:
    return json.loads((root / f"config_{version}.json").read_text())["labels"]


def index_of(root: Path, version: str, name: str) -> int:
    return [label["name"] for label in config_labels(root, version)].index(name)


def test_the_generated_tree_has_the_download_layout(vistas_root):
    for version, (count, scored) in SIZES.items():
        labels = config_labels(vistas_root, version)
        assert len(labels) == count and sum(label["evaluate"] for label in labels) == scored
        assert set(labels[0]) == {"name", "readable", "color", "instances", "evaluate"}
        assert labels[-1]["name"] == "void--unlabeled" and not labels[-1]["evaluate"]
    shapes = set()
    for folder, count in (("training", TRAIN), ("validation", VAL), ("testing", TEST)):
        jpgs = sorted((vistas_root / folder / "images").iterdir())
        assert len(jpgs) == count and all(p.read_bytes()[:2] == b"\xff\xd8" for p in jpgs)
        assert all(len(p.stem) == 22 for p in jpgs)  # Mapillary's image keys
        shapes |= {cv2.imread(str(p)).shape[:2] for p in jpgs}
        for version in SIZES:
            labels = vistas_root / folder / version / "labels"
            if folder == "testing":
                assert not labels.exists()
                continue
            assert sorted(p.name for p in labels.iterdir()) == [f"{p.stem}.png" for p in jpgs]
            with Image.open(labels / f"{jpgs[0].stem}.png") as label:
                assert label.mode == "P"  # palette PNGs, as released
                assert label.size == Image.open(jpgs[0]).size
    assert len({h / w for h, w in shapes}) >= 3  # varied aspect ratios, some upright
    assert any(h > w for h, w in shapes)


def test_labels_are_read_as_indices_not_colours(vistas_root):
    sample = find_mapillary(vistas_root, "train", "v1.2")[0]
    indices = read_class_indices(sample.label_path)
    with Image.open(sample.label_path) as label:
        palette = np.array(label.getpalette()[: 3 * 66], np.uint8).reshape(-1, 3)
    road = index_of(vistas_root, "v1.2", "construction--flat--road")
    assert indices.dtype == np.uint8 and indices.ndim == 2 and (indices == road).any()
    assert indices.max() < 66
    # The palette draws each index in its config colour: road is Cityscapes' purple.
    assert tuple(palette[road]) == (128, 64, 128)
    colours = cv2.imread(str(sample.label_path))[..., ::-1]  # what OpenCV would read
    assert (colours[indices == road] == (128, 64, 128)).all()


@pytest.mark.parametrize("version", SIZES)
def test_discovery_pairs_each_image_with_its_label(vistas_root, version):
    assert detect_kind(vistas_root).name == "mapillary"
    for split, folder, count in (("train", "training", TRAIN), ("val", "validation", VAL)):
        samples = find_mapillary(vistas_root, split, version)
        assert len(samples) == count
        for sample in samples:
            assert sample.image_path == vistas_root / folder / "images" / f"{sample.name}.jpg"
            assert sample.label_path == vistas_root / folder / version / "labels" / (
                f"{sample.name}.png"
            )
    test = find_mapillary(vistas_root, "test", version)
    assert len(test) == TEST and all(s.label_path is None for s in test)


@pytest.mark.parametrize("version", SIZES)
def test_the_classes_scheme_is_the_configs_scored_labels(vistas_root, version):
    scheme = scheme_for(data_config(vistas_root, version, "classes"))
    labels = config_labels(vistas_root, version)
    scored = [i for i, label in enumerate(labels) if label["evaluate"]]
    assert scheme.num_classes == SIZES[version][1]
    assert scheme.class_names == tuple(labels[i]["readable"] for i in scored)
    unlabeled = len(labels) - 1
    stored = np.array([[scored[0], scored[5], unlabeled, len(labels)]], np.uint8)
    assert scheme.encode(stored).tolist() == [[0, 5, IGNORE_INDEX, IGNORE_INDEX]]
    assert scheme.count_unknown(stored) == 1  # past the config's labels
    # Predictions go out as the config's indices again.
    assert scheme.to_label_ids(np.array([[0, 5]], np.uint8)).tolist() == [[scored[0], scored[5]]]


def test_the_cityscapes_scheme_maps_labels_by_hand(vistas_root):
    cityscapes = cityscapes_train_id_scheme("cityscapes")
    train_id = {name: i for i, name in enumerate(cityscapes.class_names)}
    hand = {  # Mapillary label -> Cityscapes class (None: ignored), checked by hand
        "v1.2": {
            "construction--flat--road": "road",
            "marking--general": "road",
            "construction--barrier--curb": "sidewalk",
            "nature--sky": "sky",
            "human--person": "person",
            "human--rider--motorcyclist": "rider",
            "object--traffic-light": "traffic light",
            "object--traffic-sign--front": "traffic sign",
            "object--traffic-sign--back": None,
            "object--vehicle--on-rails": "train",
            "construction--flat--parking": None,
            "object--vehicle--caravan": None,
            "void--unlabeled": None,
        },
        "v2.0": {
            "construction--flat--road": "road",
            "nature--sky": "sky",
            "human--person--individual": "person",
            "human--person--person-group": None,  # not evaluated
            "object--traffic-light--pedestrians": "traffic light",
            "marking--continuous--dashed": None,
            "object--vehicle--vehicle-group": None,
            "void--static": None,
        },
    }
    for version, mapping in hand.items():
        scheme = scheme_for(data_config(vistas_root, version, "cityscapes"))
        assert scheme.class_names == cityscapes.class_names  # matched by name across kinds
        assert (scheme.colors == cityscapes.colors).all()
        for name, city in mapping.items():
            stored = np.array([[index_of(vistas_root, version, name)]], np.uint8)
            expected = IGNORE_INDEX if city is None else train_id[city]
            assert scheme.encode(stored).item() == expected, (version, name)
        # Exported as the label of the class's own name where there is one.
        exported = scheme.to_label_ids(np.array([[train_id["road"], train_id["rider"]]], np.uint8))
        road = index_of(vistas_root, version, "construction--flat--road")
        bicyclist = index_of(vistas_root, version, "human--rider--bicyclist")
        assert exported.tolist() == [[road, bicyclist]]


def test_its_options_are_its_own(vistas_root):
    data = config_from_dict({"data": {"dataset": "mapillary"}}).data
    assert data.labels == ["classes"] and data.version == "v1.2"
    with pytest.raises(UserError, match="data.version"):
        config_from_dict({"data": {"dataset": "mapillary", "version": "v3.0"}})
    with pytest.raises(UserError, match="unknown config key.*holdout_cities"):
        config_from_dict({"data": {"dataset": "mapillary", "holdout_cities": ["ulm"]}})
    with pytest.raises(UserError, match="unknown Mapillary Vistas label scheme 'official'"):
        scheme_for(data_config(vistas_root, "v1.2", "official"))
    with pytest.raises(UserError, match="config_VERSION.json"):
        kind_named("mapillary").scheme_named("classes")


def test_a_run_carries_the_labels_and_checks_them_against_the_dataset(vistas_root, tmp_path):
    kind = kind_named("mapillary")
    root = shutil.copytree(vistas_root, tmp_path / "tree")
    carried = kind.resolved(data_config(root, "v1.2", "classes"))
    assert [entry.readable for entry in carried.label_list][:3] == ["Bird", "Ground Animal", "Curb"]
    assert len(kind.find_samples(carried, "train")) == TRAIN
    path = root / "config_v1.2.json"
    config = json.loads(path.read_text())
    config["labels"][13]["evaluate"] = False  # Road no longer scored: other classes
    path.write_text(json.dumps(config))
    with pytest.raises(UserError, match="config_v1.2.json is not the class list this model"):
        kind.find_samples(carried, "train")
    assert scheme_for(carried).num_classes == 65  # the carried list, not the file's


def test_bad_layouts_are_refused_in_one_line(vistas_root, tmp_path):
    with pytest.raises(UserError, match="no folder .*training/images") as error:
        find_mapillary(tmp_path, "train", "v1.2")
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="unknown Mapillary Vistas version 'v1.1'"):
        find_mapillary(vistas_root, "train", "v1.1")
    with pytest.raises(UserError, match="unknown Mapillary Vistas split 'training'"):
        find_mapillary(vistas_root, "training", "v1.2")
    root = shutil.copytree(vistas_root, tmp_path / "tree")
    shutil.rmtree(root / "validation" / "v2.0")
    with pytest.raises(UserError, match="v2.0 labels are missing.*data.version"):
        find_mapillary(root, "val", "v2.0")
    victim = sorted((root / "training" / "v1.2" / "labels").iterdir())[2]
    victim.unlink()
    with pytest.raises(UserError, match=f"1 Mapillary Vistas train image.*{victim.name}"):
        find_mapillary(root, "train", "v1.2")
    assert len(find_mapillary(root, "train", "v1.2", skip_missing_labels=True)) == TRAIN - 1
    (root / "config_v1.2.json").unlink()
    with pytest.raises(UserError, match="config_v1.2.json"):
        scheme_for(data_config(root, "v1.2", "classes"))


def test_data_check_finds_it_and_reports_its_problems(vistas_root, tmp_path, capsys):
    assert check.main([str(vistas_root), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "Mapillary Vistas" in out and "(v1.2 labels)" in out and "no problems found" in out
    assert check.main([str(vistas_root), "--labels", "cityscapes,v2.0", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "(v2.0 labels): the 'cityscapes' scheme, 19 classes" in out
    root = shutil.copytree(vistas_root, tmp_path / "tree")
    labels = root / "training" / "v1.2" / "labels"
    images = root / "training" / "images"
    first, second, third = sorted(images.iterdir())[:3]
    (labels / f"{first.stem}.png").unlink()
    second.unlink()
    # A colour render in place of the palette label: refused, naming the files to use.
    with Image.open(labels / f"{third.stem}.png") as label:
        label.convert("RGB").save(labels / f"{third.stem}.png")
    assert check.main([str(root), "--dataset", "mapillary", "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert f"{first.stem}.png" in out and f"{second.stem}.png: its image is missing" in out
    assert f"{third.stem}.png is not a palette PNG of label indices" in out
    assert "use the files of {training,validation}/VERSION/labels" in out
    with pytest.raises(UserError, match="is a RGB image, not a palette PNG"):
        read_class_indices(labels / f"{third.stem}.png")


@pytest.mark.slow
def test_a_tiny_run_trains_evaluates_and_exports_palette_pngs(vistas_root, tmp_path, small_config):
    config = small_config(
        vistas_root,
        tmp_path / "run",
        data={"dataset": "mapillary", "labels": "cityscapes", "version": "v2.0"},
        loss={"name": "ce"},
        train={"batch_size": 3, "log_images": 0},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train.main(["--config", str(path)]) == 0

    export = tmp_path / "export"
    scores = tmp_path / "scores.json"
    argv = ["--checkpoint", str(tmp_path / "run" / "last.pt"), "--device", "cpu"]
    assert evaluate.main([*argv, "--output-json", str(scores), "--export-dir", str(export)]) == 0
    results = json.loads(scores.read_text())
    val = sorted(find_mapillary(vistas_root, "val", "v2.0"), key=lambda s: s.name)
    assert results["images"] == VAL
    predictions = sorted((export / "labels").iterdir())
    assert [p.name for p in predictions] == [f"{s.name}.png" for s in val]
    labels = config_labels(vistas_root, "v2.0")
    for prediction, sample in zip(predictions, val):
        with Image.open(prediction) as image, Image.open(sample.image_path) as source:
            assert image.mode == "P" and image.size == source.size
            palette = np.array(image.getpalette()[: 3 * len(labels)]).reshape(-1, 3)
        assert (palette == [label["color"] for label in labels]).all()
    # The confusion matrix's mIoU, counted again by hand from the exported indices, both
    # sides through the Cityscapes mapping (unmapped labels ignored).
    scheme = scheme_for(data_config(vistas_root, "v2.0", "cityscapes"))
    pred = np.concatenate([scheme.encode(read_class_indices(p)).ravel() for p in predictions])
    gt = np.concatenate([scheme.encode(read_class_indices(s.label_path)).ravel() for s in val])
    assert pred.max() < 19
    valid = gt != IGNORE_INDEX
    ious = []
    for c in range(19):
        union = np.sum(((pred == c) | (gt == c)) & valid)
        if union:
            ious.append(np.sum((pred == c) & (gt == c) & valid) / union)
    assert results["mIoU"] == pytest.approx(float(np.mean(ious)), abs=1e-4)
    assert evaluate.main([*argv, "--split", "test"]) == 2
    # The run's config carries the class list: the scheme needs no dataset root any more.
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert [entry["name"] for entry in saved["label_list"]] == [x["name"] for x in labels]
    elsewhere = config_from_dict({"data": {**saved, "root": str(tmp_path / "gone")}}).data
    assert scheme_for(elsewhere).class_names == scheme.class_names


def test_the_sample_command_writes_one_version_or_both(tmp_path, capsys):
    from segmentation.sample.cli import main

    tiny = ["--scale", "0.03", "--train", "1", "--val", "1", "--test", "0"]
    assert main(["mapillary", str(tmp_path / "v2"), "--version", "v2.0", *tiny]) == 0
    assert "Mapillary Vistas" in capsys.readouterr().out
    written = sorted(
        p.relative_to(tmp_path / "v2").as_posix() for p in (tmp_path / "v2").rglob("*")
    )
    assert "config_v2.0.json" in written and "config_v1.2.json" not in written
    assert not any("v1.2" in path for path in written)
    assert detect_kind(tmp_path / "v2").name == "mapillary"
    with pytest.raises(SystemExit):  # argparse's choices
        main(["mapillary", str(tmp_path / "bad"), "--version", "v3.0"])
    assert main(["mapillary", str(tmp_path / "small"), "--scale", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "--scale must be between 0.03 and 1" in err and not (tmp_path / "small").exists()


@pytest.mark.parametrize("version", SIZES)
def test_the_sample_labels_mean_to_a_cityscapes_model_what_cityscapes_labels_do(
    vistas_root, version
):
    """The generator writes each drawn Cityscapes label as a Mapillary label; read back
    through the cityscapes scheme, each of the 19 classes is the train id a model trained on
    the Cityscapes sample learned for it (so such a model can score on this tree)."""
    from cityscapesscripts.helpers.labels import labels as cityscapes_labels

    from segmentation.sample.generate import mapillary_label_indices
    from segmentation.sample.mapillary_classes import config_labels

    scheme = scheme_for(data_config(vistas_root, version, "cityscapes"))
    written = mapillary_label_indices(config_labels(version), version)
    for label in cityscapes_labels:
        if label.id >= 0 and 0 <= label.trainId < 19:
            assert scheme.lookup[written[label.id]] == label.trainId, label.name
