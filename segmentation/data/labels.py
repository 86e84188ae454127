"""Label schemes: how stored label values become training targets, and back.

Every dataset stores labels its own way (Cityscapes: one label id per pixel; KITTI road: a
colour code). A `LabelScheme` turns those stored values into the training target through one
lookup table, and maps predicted classes back to colours (overlays) and, for Cityscapes, to the
official label ids (export for the official evaluator).

The training target is an index map: `target (H, W) uint8` (int64 once batched on the device)
holding class indices 0..C-1, or IGNORE_INDEX where a pixel counts for nothing. The same map
serves softmax cross-entropy, index-based metrics, and the original project's per-channel
sigmoid losses, which expand it to one-hot channels inside the loss. Binary schemes (one
selected Cityscapes class, KITTI road and lane) have C == 2 classes, background first, and a
sigmoid model gives them a single output channel: the logit of class 1.

Cityscapes label definitions come only from `cityscapesscripts.helpers.labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS
from cityscapesscripts.helpers.labels import name2label

from segmentation.errors import UserError

# The one value that means "no label here", used by the label lookup tables, padding,
# the losses and the confusion matrix alike.
IGNORE_INDEX = 255

CITYSCAPES_SCHEMES = ("categories", "classes", "official")
KITTI_SCHEMES = ("road", "lane")

# Label ids that can be stored in a Cityscapes labelIds PNG (license plate, id -1, never is).
_STORED_LABELS = [label for label in CITYSCAPES_LABELS if label.id >= 0]
NUM_CITYSCAPES_LABEL_IDS = max(label.id for label in _STORED_LABELS) + 1  # 34
_EVALUATED_LABELS = sorted(
    (label for label in _STORED_LABELS if not label.ignoreInEval), key=lambda label: label.trainId
)
_BLACK = (0, 0, 0)
# The "classes" scheme's class of every label id outside the 19 evaluated ones.
UNLABELED = "unlabeled"


@dataclass(frozen=True, eq=False)
class LabelScheme:
    """Classes of one training target and the maps to and from stored label values.

    lookup: (L,) uint8, stored value (Cityscapes label id, or KITTI colour code) -> class index
        or IGNORE_INDEX. Values beyond the table are out of the scheme.
    colors: (C, 3) uint8 RGB colour of each class, for colour masks and overlays.
    export_label_ids: (C,) uint8 Cityscapes label id written for each class when predictions
        are exported for the official evaluator; the class index itself for a folder dataset
        (index masks); None for KITTI.
    stored_values: stored values 0..stored_values-1 are the dataset's own; larger ones are
        counted as unknown (Cityscapes: the 34 label ids; KITTI: the 4 colour codes); None:
        the class indices themselves (a folder dataset's masks).
    stored_ignore: a stored value outside the classes that marks "no label here" on purpose
        (a folder dataset's ignore_index), so it is not counted as unknown.
    contains_evaluated_classes: the scheme predicts all 19 classes of the official Cityscapes
        benchmark.
    name_fixes_classes: its dataset and name alone fix its classes (not so for a folder
        dataset, whose scheme "all" is its classes file).
    stored_as_ignored: classes of other schemes whose pixels this one stores as ignored, by
        name: masks of the 19 Cityscapes train ids store "unlabeled" (every other label id,
        a class of the "classes" scheme) as their ignore value. A model of such a class can
        be scored in this scheme (evaluation/mapping.py): the class gets no score, and
        predicting it on a scored pixel is a miss, as the official evaluator counts
        predictions of ignored ids. Its predictions export as `stored_ignore`.
    """

    name: str
    dataset: str
    class_names: tuple[str, ...]
    colors: np.ndarray
    lookup: np.ndarray
    export_label_ids: np.ndarray | None
    stored_values: int | None = None
    stored_ignore: int | None = None
    contains_evaluated_classes: bool = False
    name_fixes_classes: bool = True
    stored_as_ignored: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_binary(self) -> bool:
        """Two classes, background first: a sigmoid head predicts them with one channel."""
        return self.num_classes == 2 and self.class_names[0] == "background"

    def num_outputs(self, head: str) -> int:
        """Output channels a model needs for this scheme under a "sigmoid" or "softmax" head."""
        return 1 if head == "sigmoid" and self.is_binary else self.num_classes

    def encode(self, stored: np.ndarray) -> np.ndarray:
        """Stored label values (H, W) uint8 -> target (H, W) uint8; unknown values -> ignore."""
        if len(self.lookup) == 256:
            return cv2.LUT(stored, self.lookup)
        return self.lookup[np.minimum(stored, len(self.lookup) - 1)]

    def count_unknown(self, stored: np.ndarray) -> int:
        """How many stored values lie outside the scheme's table (they become IGNORE_INDEX)."""
        known = self.known_values
        if int(stored.max(initial=0)) < known:
            return 0
        unknown = int(np.count_nonzero(stored >= known))
        if self.stored_ignore is not None and self.stored_ignore >= known:
            unknown -= int(np.count_nonzero(stored == self.stored_ignore))
        return unknown

    @property
    def known_values(self) -> int:
        return self.num_classes if self.stored_values is None else self.stored_values

    def to_label_ids(self, prediction: np.ndarray) -> np.ndarray:
        """Class indices (H, W) -> Cityscapes label ids (H, W) uint8 for the official evaluator."""
        if self.export_label_ids is None:
            raise UserError(
                f"label ids exist only for Cityscapes and folder schemes, not for the "
                f"{self.dataset} '{self.name}' scheme: save 'color' or 'overlay' instead"
            )
        return self.export_label_ids[prediction]


def _cityscapes_scheme(
    name: str, class_names: list[str], colors: list, export_ids: list[int], class_of_id: dict
) -> LabelScheme:
    lookup = np.full(256, IGNORE_INDEX, np.uint8)
    for label_id, class_index in class_of_id.items():
        lookup[label_id] = class_index
    return LabelScheme(
        name=name,
        dataset="cityscapes",
        class_names=tuple(class_names),
        colors=np.array(colors, np.uint8).reshape(-1, 3),
        lookup=lookup,
        export_label_ids=np.array(export_ids, np.uint8),
        stored_values=NUM_CITYSCAPES_LABEL_IDS,
        contains_evaluated_classes=name in ("classes", "official"),
    )


def _categories() -> LabelScheme:
    """The 8 Cityscapes categories (void included as a class), as the original project trained
    them."""
    by_category: dict[int, list] = {}
    for label in _STORED_LABELS:
        by_category.setdefault(label.categoryId, []).append(label)
    names, colors, export_ids = [], [], []
    for category_id in sorted(by_category):
        members = by_category[category_id]
        evaluated = [label for label in members if not label.ignoreInEval]
        # Export each category as one of its evaluated labels, so that the official evaluator
        # counts it in the right category; void has none and goes out as 'unlabeled'.
        representative = min(evaluated, key=lambda label: label.id) if evaluated else None
        names.append(members[0].category)
        colors.append(representative.color if representative else _BLACK)
        export_ids.append(representative.id if representative else name2label["unlabeled"].id)
    class_of_id = {label.id: label.categoryId for label in _STORED_LABELS}
    return _cityscapes_scheme("categories", names, colors, export_ids, class_of_id)


def _train_ids(with_unlabeled: bool) -> LabelScheme:
    """The 19 evaluated classes; `with_unlabeled` adds class 19 for every other label id."""
    names = [label.name for label in _EVALUATED_LABELS]
    colors = [label.color for label in _EVALUATED_LABELS]
    export_ids = [label.id for label in _EVALUATED_LABELS]
    class_of_id = {label.id: label.trainId for label in _EVALUATED_LABELS}
    if with_unlabeled:
        unlabeled = len(names)
        for label in _STORED_LABELS:
            class_of_id.setdefault(label.id, unlabeled)
        names.append(UNLABELED)
        colors.append(_BLACK)
        export_ids.append(name2label["unlabeled"].id)
    name = "classes" if with_unlabeled else "official"
    return _cityscapes_scheme(name, names, colors, export_ids, class_of_id)


def cityscapes_train_id_scheme(dataset: str) -> LabelScheme:
    """The 19 evaluated Cityscapes classes, for a dataset whose masks store their train ids
    (0..18, 255 = ignore; BDD100K): a stored train id is its class index, and predictions go
    out as train ids again."""
    count = len(_EVALUATED_LABELS)
    lookup = np.full(256, IGNORE_INDEX, np.uint8)
    lookup[:count] = np.arange(count)
    return LabelScheme(
        name="classes",
        dataset=dataset,
        class_names=tuple(label.name for label in _EVALUATED_LABELS),
        colors=np.array([label.color for label in _EVALUATED_LABELS], np.uint8),
        lookup=lookup,
        export_label_ids=np.arange(count, dtype=np.uint8),
        stored_values=count,
        stored_ignore=IGNORE_INDEX,
        contains_evaluated_classes=True,
        stored_as_ignored=(UNLABELED,),
    )


def _selected(class_names: Sequence[str]) -> LabelScheme:
    """Chosen Cityscapes labels plus a background class (first) for every other label id."""
    unknown = [name for name in class_names if name not in name2label or name2label[name].id < 0]
    if unknown:
        valid = ", ".join(label.name for label in _STORED_LABELS)
        raise UserError(
            f"unknown Cityscapes label name(s) {unknown}: use categories, classes, official, "
            f"or label names among: {valid}"
        )
    if len(set(class_names)) != len(class_names):
        raise UserError(f"label names repeat in {list(class_names)}: name each class once")
    chosen = [name2label[name] for name in class_names]
    class_of_id = {label.id: 0 for label in _STORED_LABELS}
    for index, label in enumerate(chosen, start=1):
        class_of_id[label.id] = index
    return _cityscapes_scheme(
        ",".join(class_names),
        ["background", *class_names],
        [_BLACK, *(label.color for label in chosen)],
        [name2label["unlabeled"].id, *(label.id for label in chosen)],
        class_of_id,
    )


# KITTI road ground truth is a colour image; the dataset turns it into a 2-bit code per pixel,
# kitti_code = 2 * (red > 0) + (blue > 0): red marks the valid area and blue the road (or the
# ego-lane), exactly as the official devkit reads them. Outside the valid area: ignore.
KITTI_CODE_LOOKUP = np.array([IGNORE_INDEX, IGNORE_INDEX, 0, 1], np.uint8)


def _kitti(name: str) -> LabelScheme:
    positive = {"road": "road", "lane": "ego-lane"}[name]
    return LabelScheme(
        name=name,
        dataset="kitti",
        class_names=("background", positive),
        colors=np.array([_BLACK, (255, 0, 255)], np.uint8),
        lookup=KITTI_CODE_LOOKUP,
        export_label_ids=None,
        stored_values=len(KITTI_CODE_LOOKUP),
    )


def kitti_codes(gt_rgb: np.ndarray) -> np.ndarray:
    """KITTI ground-truth colours (H, W, 3) RGB uint8 -> codes (H, W) uint8 in 0..3."""
    valid = gt_rgb[..., 0] > 0
    road = gt_rgb[..., 2] > 0
    return (valid.view(np.uint8) << 1) | road.view(np.uint8)


def get_scheme(dataset: str, labels: str | Sequence[str]) -> LabelScheme:
    """The label scheme named `labels` for `dataset`, as its kind (data/kinds/) offers it."""
    from segmentation.data.kinds.catalog import kind_named  # the kinds build on this module

    return kind_named(dataset).scheme_named(labels)


def kitti_scheme(names: list[str]) -> LabelScheme:
    """KITTI road: "road" or "lane"."""
    if len(names) != 1 or names[0] not in KITTI_SCHEMES:
        raise UserError(
            f"unknown KITTI label scheme '{','.join(names)}': use one of {', '.join(KITTI_SCHEMES)}"
        )
    return _kitti(names[0])


def cityscapes_scheme(names: list[str]) -> LabelScheme:
    """Cityscapes: "categories" (8), "classes" (19 + unlabeled), "official" (19, others
    ignored), or Cityscapes label names plus a background class."""
    schemes = [name for name in names if name in CITYSCAPES_SCHEMES]
    if schemes and len(names) > 1:
        others = [name for name in names if name not in CITYSCAPES_SCHEMES]
        raise UserError(
            f"label scheme '{schemes[0]}' cannot be combined with label names or other schemes "
            f"(got {','.join(names)}): use one scheme ({', '.join(CITYSCAPES_SCHEMES)}) alone, "
            f"or label names only, e.g. {','.join(others) or 'road,car'}"
        )
    if len(names) == 1 and names[0] in CITYSCAPES_SCHEMES:
        return {
            "categories": _categories,
            "classes": lambda: _train_ids(with_unlabeled=True),
            "official": lambda: _train_ids(with_unlabeled=False),
        }[names[0]]()
    return _selected(names)
