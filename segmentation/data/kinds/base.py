"""What a dataset kind is: its options, its label schemes, how its files are found, read,
checked and scored, and how predictions on it are exported. Each kind is one module that
subclasses DatasetKind and is named in catalog.KINDS; the rest of the toolkit asks the kind of
a config (catalog.kind_of) instead of testing the dataset's name.

A kind module imports torch, the evaluation code and the sample generator only inside the
methods that need them: the config (which validates each kind's options) and training import
the kinds without them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from segmentation.config import DataConfig
from segmentation.errors import UserError

if TYPE_CHECKING:
    import argparse

    import torch

    from segmentation.data.dataset import Sample
    from segmentation.data.headers import LabelFormat
    from segmentation.data.inventory import Inventory
    from segmentation.data.labels import LabelScheme

# A label file -> its stored values (H, W) uint8, which a LabelScheme turns into classes.
LabelReader = Callable[[Path], np.ndarray]


class Scorer(Protocol):
    """A dataset's own scores beside the confusion matrix's (official protocols)."""

    def update(
        self,
        classes: torch.Tensor,
        probs: torch.Tensor,
        stored: torch.Tensor,
        samples: list[Sample],
    ) -> None:
        """Count a group of predictions (B, H, W) classes, (B, C, H, W) probabilities, against
        the stored label values (B, H, W) of `samples`."""

    def add_results(self, results: dict) -> None:
        """Add the scores to an evaluation's results (and replace its headline where the
        protocol defines it)."""

    def report_histograms(self) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        """{group: (positive, negative) level histograms} for the report's curves, or None."""


class DatasetKind:
    """One dataset layout. Subclasses set the class attributes and override the methods their
    layout needs; the defaults are those of a layout without an official protocol."""

    name: ClassVar[str]
    options: ClassVar[type[DataConfig]]  # the data section's keys for this kind
    layout: ClassVar[str]  # one line: where the images and labels lie under ROOT
    # The label schemes it offers by name (a later kind can map its classes onto another
    # kind's scheme), and in words, with what else `labels` may name.
    schemes: ClassVar[tuple[str, ...]]
    labels_help: ClassVar[str]
    default_labels: ClassVar[list[str]]
    # data.check: what to do about label values outside the scheme, "" where the lines say it
    outside_advice: ClassVar[str] = ""
    # Training logs the positive class's precision-recall curve (binary schemes).
    precision_recall_curve: ClassVar[bool] = False

    # ------------------------------------------------------------------ labels

    def scheme_named(self, labels: str | list[str]) -> LabelScheme:
        """The label scheme `labels` names; UserError listing the valid ones."""
        raise NotImplementedError

    def scheme(self, config: DataConfig) -> LabelScheme:
        return self.scheme_named(config.labels or self.default_labels)

    def offered_schemes(self, config: DataConfig) -> list[LabelScheme]:
        """The schemes a dataset of this kind at `config` can be scored in, in the kind's order
        of preference: what a model trained elsewhere is matched against (evaluate.py
        --dataset, evaluation/mapping.py)."""
        return [self.scheme_named(name) for name in self.schemes]

    def label_reader(self, config: DataConfig | None) -> LabelReader:
        """How a label file becomes stored values; `config` is None where only the kind is
        known (kinds whose reader depends on the config refuse that)."""
        raise NotImplementedError

    def label_format(self, config: DataConfig) -> LabelFormat:
        """What the start-up header check expects of a label file."""
        raise NotImplementedError

    def reader_identity(self, config: DataConfig) -> dict:
        """How label files become stored values, as a cache's manifest records it."""
        return {"dataset": self.name, "reader": self.label_reader(config).__name__}

    def resolved(self, config: DataConfig) -> DataConfig:
        """The config a run saves: with whatever the dataset's files add (a folder dataset's
        classes), checked against what it carries already."""
        return config

    # ------------------------------------------------------------------ files

    def find_samples(self, config: DataConfig, split: str) -> list[Sample]:
        """Samples of a split: "train" / "val" resolve through the options; other names are
        the layout's own splits. UserError on a missing or broken layout."""
        raise NotImplementedError

    def detect(self, root: Path) -> bool:
        """Whether ROOT looks like this layout (data.check without --dataset)."""
        return False

    def inventory(self, root: Path, labels: str | None) -> Inventory:
        """data.check's discovery: the samples of each split and every pairing problem,
        reported instead of raised."""
        raise NotImplementedError

    def check_scored_split(self, split: str) -> None:
        """Refuse a split whose labels cannot be scored (UserError)."""

    # ------------------------------------------------------------------ scores and exports

    def scorer(self, scheme: LabelScheme, device: torch.device) -> Scorer | None:
        """The official protocol's scorer, or None: the confusion matrix alone."""
        return None

    def export(
        self,
        root: Path,
        classes: torch.Tensor,
        probs: torch.Tensor,
        samples: list[Sample],
        scheme: LabelScheme,
    ) -> None:
        """Write predictions under `root` (evaluate.py --export-dir) in the format of the
        dataset's own evaluator; default: index masks named after the samples."""
        from segmentation.data.io import write_png

        for class_map, sample in zip(classes.byte().cpu().numpy(), samples):
            write_png(root / "masks" / f"{sample.name}.png", class_map)

    def color_path(self, root: Path, sample: Sample) -> Path:
        """Where --export-color writes a sample's colour mask."""
        return root / "color" / sample.group / f"{sample.name}_color.png"

    def export_note(self, export_dir: Path) -> str | None:
        """What to tell the user about an export, once it is written."""
        return None

    # ------------------------------------------------------------------ extras

    def demo_frames(self, config: DataConfig) -> Path | None:
        """A folder of video frames under the data root that inference.py can render."""
        return None

    def add_sample_command(self, subcommands: argparse._SubParsersAction) -> None:
        """Add `python -m segmentation.sample NAME DIR` where the kind has a sample-tree
        generator: a subparser whose defaults hold `generate(args) -> summary`."""


def label_names(labels: str | list[str] | Any) -> list[str]:
    """Scheme or label names given as a list or comma-separated text, stripped."""
    names = [labels] if isinstance(labels, str) else list(labels)
    names = [part.strip() for name in names for part in str(name).split(",") if part.strip()]
    if not names:
        raise UserError("no label scheme given: name one, e.g. categories")
    return names


def write_named_like_inputs(
    folder: Path, classes: torch.Tensor, samples: list[Sample], scheme: LabelScheme
) -> None:
    """Predictions (B, H, W) as PNGs of the dataset's stored values, FOLDER/NAME.png for each
    input image NAME: the result format of benchmarks that name results after their inputs."""
    from segmentation.data.io import write_png

    for class_map, sample in zip(classes.byte().cpu().numpy(), samples):
        write_png(folder / f"{sample.name}.png", scheme.to_label_ids(class_map))
