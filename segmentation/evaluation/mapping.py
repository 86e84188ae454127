"""Which classes an evaluation scores: a model's own dataset, or another dataset kind whose
classes map onto the model's (evaluate.py --dataset).

The rule, matching by class name only (docs/evaluation.md, "Scoring on another dataset"):

- A label scheme that the dataset's kind offers fits when every class the model predicts has a
  class of the same name there, or is one that the scheme stores as ignored
  (LabelScheme.stored_as_ignored: Cityscapes' "unlabeled" in BDD100K's train-id masks). The
  dataset's classes that the model lacks are not scored: their pixels are ignored, since the
  model never learned them (as the 16 classes shared by SYNTHIA and Cityscapes score SYNTHIA
  models on Cityscapes). A model's class stored as ignored gets no score either, and
  predicting it on a scored pixel is a miss of that pixel's class.
- Of the schemes that fit, the one with exactly the model's classes wins, then the one with
  the fewest classes left unscored on either side, then the kind's own order of its schemes.
- When none fits, the model is refused in one line naming its classes that have no
  counterpart in the closest scheme, and what the dataset offers. Nothing is mapped many to
  one: Cityscapes categories are not assembled from another dataset's classes, nor a binary
  model's "background" from every class but one (it would hide the false positives there).

The scheme scored has the model's classes, in the model's order, so the confusion matrix,
the report and the colours read as they do on the model's own dataset; its lookup turns the
dataset's stored values into the model's class indices through the dataset's scheme, and its
export ids are the dataset's, so --export-dir writes the dataset's own format.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from segmentation.config import DataConfig
from segmentation.data.kinds.base import DatasetKind
from segmentation.data.labels import IGNORE_INDEX, LabelScheme
from segmentation.errors import UserError


@dataclass(frozen=True)
class ScoredOn:
    """What an evaluation scores: the dataset kind read, and the scheme counted (the model's
    classes, the dataset's stored values)."""

    kind: DatasetKind
    scheme: LabelScheme
    trained_dataset: str  # the kind the model was trained on
    model_scheme: LabelScheme  # the classes the model predicts
    dataset_scheme: LabelScheme  # the scheme of the scored dataset the model's classes matched
    unscored: tuple[str, ...] = ()  # the dataset's classes the model lacks (ignored pixels)
    model_unscored: tuple[str, ...] = ()  # the model's classes the dataset stores as ignored

    @property
    def crosses(self) -> bool:
        return self.kind.name != self.trained_dataset

    def describe(self) -> dict:
        """The mapping, as the results JSON records it."""
        return {
            "trained_on": {"dataset": self.trained_dataset, "labels": self.model_scheme.name},
            "scored_on": {"dataset": self.kind.name, "labels": self.dataset_scheme.name},
            "classes_matched": self.model_scheme.num_classes - len(self.model_unscored),
            "dataset_classes": self.dataset_scheme.num_classes,
            "unscored": list(self.unscored),
            "model_classes_unscored": list(self.model_unscored),
        }

    def drop_unscored(self, results: dict) -> None:
        """The model's classes that the dataset stores as ignored have no score: their IoU
        would be 0 wherever they are predicted. The means are taken over the other classes."""
        if not self.model_unscored:
            return
        per_class = results["per_class"]
        for name in self.model_unscored:
            per_class[name] = {"iou": None, "dice": None}
        for key, score in (("mIoU", "iou"), ("mDice", "dice")):
            values = [scores[score] for scores in per_class.values() if scores[score] is not None]
            results[key] = sum(values) / len(values) if values else None


def describe_mapping(mapping: dict) -> str:
    """One line for a results JSON's "mapping": trained on X's S, scored on Y's T, N matched."""
    trained, scored = mapping["trained_on"], mapping["scored_on"]
    line = (
        f"trained on {trained['dataset']} '{trained['labels']}', scored on {scored['dataset']} "
        f"'{scored['labels']}': {mapping['classes_matched']} of its "
        f"{mapping['dataset_classes']} classes matched by name"
    )
    unscored = mapping["unscored"] + mapping.get("model_classes_unscored", [])
    if unscored:
        line += f" (not scored: {', '.join(unscored)})"
    return line


def own_dataset(kind: DatasetKind, scheme: LabelScheme) -> ScoredOn:
    """A model scored on a dataset of the kind it was trained on: its own scheme."""
    return ScoredOn(kind, scheme, kind.name, scheme, scheme)


def map_classes(
    model: LabelScheme, trained_dataset: str, kind: DatasetKind, config: DataConfig
) -> ScoredOn:
    """The scheme of `kind` (a dataset of it at `config`) that the model's classes map onto,
    by the rule above; UserError in one line when none does."""
    offered = kind.offered_schemes(config)
    wanted = set(model.class_names)
    fitting = [
        scheme
        for scheme in offered
        if wanted <= set(scheme.class_names) | set(scheme.stored_as_ignored)
    ]
    if not fitting:
        raise UserError(_refusal(model, trained_dataset, kind, offered))

    def left_unscored(scheme: LabelScheme) -> int:
        return len(wanted ^ set(scheme.class_names))

    # min keeps the first of equals: the kind's own order breaks ties.
    best = min(fitting, key=left_unscored)
    unscored = tuple(name for name in best.class_names if name not in wanted)
    model_unscored = tuple(name for name in model.class_names if name not in best.class_names)
    scheme = _scored_scheme(model, best, kind.name)
    return ScoredOn(kind, scheme, trained_dataset, model, best, unscored, model_unscored)


def _refusal(
    model: LabelScheme, trained_dataset: str, kind: DatasetKind, offered: list[LabelScheme]
) -> str:
    closest = max(offered, key=lambda scheme: len(set(model.class_names) & set(scheme.class_names)))
    known = set(closest.class_names) | set(closest.stored_as_ignored)
    missing = [name for name in model.class_names if name not in known]
    offers = "; ".join(f"'{scheme.name}': {', '.join(scheme.class_names)}" for scheme in offered)
    return (
        f"the {trained_dataset} '{model.name}' model cannot be scored on {kind.name}: its "
        f"classes {', '.join(missing)} have no counterpart there ({kind.name} offers {offers}); "
        "score it on a dataset whose classes include all of its own"
    )


def _scored_scheme(model: LabelScheme, dataset: LabelScheme, dataset_name: str) -> LabelScheme:
    """The model's classes, read from the dataset's stored values through `dataset`."""
    position = {name: index for index, name in enumerate(dataset.class_names)}
    # dataset class -> model class; the dataset's other classes and its ignore value: ignored
    to_model = np.full(256, IGNORE_INDEX, np.uint8)
    for index, name in enumerate(model.class_names):
        if name in position:
            to_model[position[name]] = index
    export = dataset.export_label_ids
    if export is not None:
        # A class the dataset stores as ignored goes out as its ignore value.
        ignored = IGNORE_INDEX if dataset.stored_ignore is None else dataset.stored_ignore
        export = np.array(
            [export[position[name]] if name in position else ignored for name in model.class_names],
            np.uint8,
        )
    # Built on the dataset's scheme, so that what a kind adds to its schemes (Mapillary's
    # palette, for its exports) comes along; the classes and their colours are the model's.
    return replace(
        dataset,
        name=model.name,
        class_names=model.class_names,
        colors=model.colors,
        name_fixes_classes=model.name_fixes_classes,
        dataset=dataset_name,
        lookup=to_model[dataset.lookup],
        export_label_ids=export,
        # The dataset's official class score applies when the model predicts all its classes.
        contains_evaluated_classes=(
            dataset.contains_evaluated_classes and set(position) <= set(model.class_names)
        ),
    )
