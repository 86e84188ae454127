"""The looks of the sample scenes (issue 16): natural colours by default, so the input is not the
label image and overlays of a model's predictions show; the labels do not depend on the looks."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from cityscapesscripts.helpers.labels import labels

import inference
import train
from segmentation.data.labels import get_scheme
from segmentation.sample.generate import generate_cityscapes
from segmentation.visualize import colorize, overlay

EVALUATED = [label for label in labels if 0 <= label.trainId < 19]


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image[..., ::-1] if image.ndim == 3 else image


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def chromaticity(rgb: np.ndarray) -> np.ndarray:
    """r, g, b / (r + g + b + 1): the colour without its brightness."""
    rgb = rgb.astype(np.float64)
    return rgb / (rgb.sum(axis=-1, keepdims=True) + 1.0)


def colour_lookup_accuracy(root: Path) -> float:
    """Pixel accuracy, over the val pixels of the 19 evaluated classes, of a lookup that gives
    each pixel the evaluated class whose Cityscapes colour is nearest in chromaticity."""
    ids = np.array([label.id for label in EVALUATED])
    colours = chromaticity(np.array([label.color for label in EVALUATED]))
    hits = total = 0
    for image_path in sorted(root.glob("leftImg8bit/val/*/*_leftImg8bit.png")):
        label_path = str(image_path).replace("leftImg8bit/", "gtFine/", 1)
        label_ids = read_rgb(Path(label_path.replace("_leftImg8bit.png", "_gtFine_labelIds.png")))
        evaluated = np.isin(label_ids, ids)
        pixels = chromaticity(read_rgb(image_path)[evaluated])
        distance = ((pixels[:, None, :] - colours[None, :, :]) ** 2).sum(axis=-1)
        hits += int((ids[distance.argmin(axis=1)] == label_ids[evaluated]).sum())
        total += int(evaluated.sum())
    assert total > 0
    return hits / total


@pytest.fixture(scope="module")
def val_trees(tmp_path_factory) -> dict[str, Path]:
    """The default val set (12 images of 128x256) in each looks, from the same seed."""
    trees = {}
    for looks in ("natural", "cityscapes"):
        root = tmp_path_factory.mktemp(f"val-{looks}")
        generate_cityscapes(
            root, train_per_city=0, test_per_city=0, video_frames=0, looks=looks, seed=0
        )
        trees[looks] = root
    return trees


def test_a_colour_lookup_predicts_natural_scenes_poorly(val_trees):
    natural = colour_lookup_accuracy(val_trees["natural"])
    label_coloured = colour_lookup_accuracy(val_trees["cityscapes"])
    print(f"colour lookup pixel accuracy: natural {natural:.3f}, cityscapes {label_coloured:.3f}")
    assert natural < 0.5
    assert label_coloured > 0.6  # the lookup works where it should: the test can fail


def true_overlay_difference(root: Path) -> float:
    """Mean absolute difference per channel between the val images and overlays of their own
    ground-truth categories, where painted: what a perfect model's overlays would show."""
    scheme = get_scheme("cityscapes", "categories")
    differences = []
    for image_path in sorted(root.glob("leftImg8bit/val/*/*_leftImg8bit.png")):
        label_path = str(image_path).replace("leftImg8bit/", "gtFine/", 1)
        label_ids = read_rgb(Path(label_path.replace("_leftImg8bit.png", "_gtFine_labelIds.png")))
        classes = scheme.encode(label_ids)
        image = np.ascontiguousarray(read_rgb(image_path))
        painted = colorize(classes, scheme).any(axis=-1)
        blended = overlay(image, classes, scheme).astype(np.float64)
        differences.append(np.abs(blended - image)[painted].mean())
    return float(np.mean(differences))


def test_perfect_overlays_show_on_natural_scenes_only(val_trees):
    """The 15-per-channel bar of the trained-model test below separates the looks: overlays of
    the true categories change natural scenes clearly, label-coloured ones hardly."""
    natural = true_overlay_difference(val_trees["natural"])
    label_coloured = true_overlay_difference(val_trees["cityscapes"])
    print(f"true-category overlay - image: natural {natural:.1f}, cityscapes {label_coloured:.1f}")
    assert natural > 20
    assert label_coloured < 17


def test_the_looks_change_the_images_not_the_labels(tmp_path):
    options = dict(
        height=48,
        width=96,
        train_per_city=1,
        val_per_city=1,
        test_per_city=1,
        video_frames=2,
        coarse=1,
        seed=7,
    )
    roots = {looks: tmp_path / looks for looks in ("natural", "cityscapes")}
    for looks, root in roots.items():
        generate_cityscapes(root, **options, looks=looks)
    names = files_under(roots["natural"])
    assert names == files_under(roots["cityscapes"])
    annotations = [n for n in names if n.startswith(("gtFine/", "gtCoarse/"))]
    images = [n for n in names if n.startswith("leftImg8bit/")]
    assert len(annotations) > 4 * len(images) // 2 and images
    for name in annotations:  # labelIds, instanceIds, color and polygons alike
        assert (roots["natural"] / name).read_bytes() == (roots["cityscapes"] / name).read_bytes()
    for name in images:
        natural, coloured = (read_rgb(roots[looks] / name).astype(int) for looks in roots)
        assert np.abs(natural - coloured).mean() > 10, name


def test_unknown_looks_are_refused(tmp_path):
    from segmentation.errors import UserError

    with pytest.raises(UserError, match="looks"):
        generate_cityscapes(tmp_path / "x", looks="pastel")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_overlays_of_a_trained_model_differ_from_their_frames(
    cityscapes_root, small_config, tmp_path
):
    """A small model trained a few epochs on the natural tree (the default), rendered over the
    demo frames: where it paints a class, the overlay must differ from the frame clearly."""
    config = small_config(
        cityscapes_root,
        tmp_path / "run",
        loss={"name": "ce"},
        optim={"optimizer": "adam", "lr": 0.003, "scheduler": "none"},
        train={"epochs": 4, "batch_size": 5, "log_images": 0},
    )
    config["model"]["channels_last"] = False  # a CPU gains nothing from it here
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    assert train.main(["--config", str(config_path)]) == 0
    frames = cityscapes_root / "leftImg8bit" / "demoVideo" / "stuttgart_00"
    output = tmp_path / "renders"
    argv = ["--checkpoint", str(tmp_path / "run" / "last.pt"), "--input", str(frames)]
    argv += ["--output", str(output), "--save", "overlay", "color", "--amp", "off"]
    assert inference.main(argv) == 0
    differences, painted_share = [], []
    for frame in sorted(frames.glob("*_leftImg8bit.png")):
        stem = frame.name[: -len("_leftImg8bit.png")]
        image = read_rgb(frame).astype(np.float64)
        blended = read_rgb(output / f"{stem}_overlay.png").astype(np.float64)
        painted = read_rgb(output / f"{stem}_color.png").any(axis=-1)  # void is left as it is
        painted_share.append(painted.mean())
        differences.append(np.abs(blended - image)[painted].mean())
    print(f"overlay - frame: {np.mean(differences):.1f} per channel where painted")
    assert np.mean(painted_share) > 0.5  # the model paints most of each frame
    assert np.mean(differences) > 15
