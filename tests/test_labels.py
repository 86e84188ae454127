import numpy as np
import pytest
from cityscapesscripts.helpers.labels import category2labels, id2label, labels, name2label

from segmentation.data.labels import IGNORE_INDEX, get_scheme, kitti_codes
from segmentation.errors import UserError
from segmentation.visualize import colorize

STORED_IDS = [label.id for label in labels if label.id >= 0]


def encode_all_ids(scheme):
    stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
    return scheme.encode(stored).reshape(-1)


def test_categories_match_cityscapesscripts_for_every_id():
    scheme = get_scheme("cityscapes", "categories")
    encoded = encode_all_ids(scheme)
    assert scheme.num_classes == 8
    for label_id in STORED_IDS:
        assert encoded[label_id] == id2label[label_id].categoryId
    for category_id, name in enumerate(scheme.class_names):
        assert category2labels[name][0].categoryId == category_id
    assert (encoded[max(STORED_IDS) + 1 :] == IGNORE_INDEX).all()


def test_categories_export_as_an_evaluated_label_of_the_same_category():
    scheme = get_scheme("cityscapes", "categories")
    for category_id, label_id in enumerate(scheme.export_label_ids):
        label = id2label[int(label_id)]
        assert label.categoryId == category_id
        assert label.ignoreInEval == (scheme.class_names[category_id] == "void")


def test_official_scheme_is_the_19_train_ids_with_everything_else_ignored():
    scheme = get_scheme("cityscapes", "official")
    encoded = encode_all_ids(scheme)
    assert scheme.num_classes == 19
    for label_id in STORED_IDS:
        train_id = id2label[label_id].trainId
        assert encoded[label_id] == (train_id if 0 <= train_id < 19 else IGNORE_INDEX)
    for train_id, name in enumerate(scheme.class_names):
        label = name2label[name]
        assert label.trainId == train_id
        assert tuple(scheme.colors[train_id]) == label.color
        assert scheme.export_label_ids[train_id] == label.id
    assert scheme.contains_evaluated_classes


def test_classes_scheme_adds_unlabeled_for_every_other_id():
    scheme = get_scheme("cityscapes", "classes")
    encoded = encode_all_ids(scheme)
    assert scheme.num_classes == 20 and scheme.class_names[19] == "unlabeled"
    for label_id in STORED_IDS:
        train_id = id2label[label_id].trainId
        assert encoded[label_id] == (train_id if 0 <= train_id < 19 else 19)
    assert id2label[int(scheme.export_label_ids[19])].ignoreInEval
    assert (encoded[34:] == IGNORE_INDEX).all()


@pytest.mark.parametrize("name", ["categories", "classes", "official"])
def test_export_then_encode_gives_back_the_class(name):
    scheme = get_scheme("cityscapes", name)
    classes = np.arange(scheme.num_classes, dtype=np.uint8)[None, :]
    assert (scheme.encode(scheme.to_label_ids(classes)) == classes).all()


def test_one_selected_class_is_a_binary_scheme():
    scheme = get_scheme("cityscapes", "road")
    encoded = encode_all_ids(scheme)
    assert scheme.class_names == ("background", "road")
    assert scheme.is_binary
    assert scheme.num_outputs("sigmoid") == 1 and scheme.num_outputs("softmax") == 2
    for label_id in STORED_IDS:
        assert encoded[label_id] == (1 if label_id == name2label["road"].id else 0)


def test_selected_classes_get_a_background_class():
    scheme = get_scheme("cityscapes", ["road", "traffic sign"])
    assert get_scheme("cityscapes", "road,traffic sign").class_names == scheme.class_names
    encoded = encode_all_ids(scheme)
    assert scheme.class_names == ("background", "road", "traffic sign")
    assert not scheme.is_binary and scheme.num_outputs("sigmoid") == 3
    assert encoded[name2label["traffic sign"].id] == 2
    assert encoded[name2label["car"].id] == 0
    assert list(scheme.export_label_ids) == [0, 7, 20]


def test_unknown_values_are_counted():
    scheme = get_scheme("cityscapes", "categories")
    stored = np.array([[0, 7, 40], [200, 33, 34]], np.uint8)
    assert scheme.count_unknown(stored) == 3
    assert scheme.count_unknown(np.zeros((2, 2), np.uint8)) == 0
    assert (scheme.encode(stored)[[0, 1, 1], [2, 0, 2]] == IGNORE_INDEX).all()


def test_kitti_colours_follow_the_devkit():
    magenta, red, black, blue_only = (255, 0, 255), (255, 0, 0), (0, 0, 0), (0, 0, 255)
    gt = np.array([[magenta, red, black, blue_only]], np.uint8)
    for mode in ("road", "lane"):
        scheme = get_scheme("kitti", mode)
        assert scheme.is_binary
        target = scheme.encode(kitti_codes(gt))
        assert target.tolist() == [[1, 0, IGNORE_INDEX, IGNORE_INDEX]]


def test_colorize_uses_the_class_colours():
    scheme = get_scheme("cityscapes", "official")
    prediction = np.array([[0, 10, IGNORE_INDEX]], np.uint8)
    colors = colorize(prediction, scheme)
    assert colors.tolist() == [
        [list(name2label["road"].color), list(name2label["sky"].color), [0, 0, 0]]
    ]


@pytest.mark.parametrize(
    ("dataset", "labels", "hint"),
    [
        ("cityscapes", "roads", "categories"),
        ("cityscapes", "road,road", "once"),
        ("kitti", "categories", "road, lane"),
        ("ade20k", "road", "cityscapes, kitti"),
        ("cityscapes", "", "categories"),
    ],
)
def test_bad_scheme_names_say_what_is_valid(dataset, labels, hint):
    with pytest.raises(UserError, match=hint):
        get_scheme(dataset, labels)


def test_kitti_schemes_have_no_label_ids():
    with pytest.raises(UserError, match="color"):
        get_scheme("kitti", "road").to_label_ids(np.zeros((1, 1), np.uint8))
