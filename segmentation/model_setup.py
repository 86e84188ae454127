"""The network a run's config describes, with one output per class of its label scheme.

Here, not in `segmentation.models`, because it reads the config: the models package builds from
plain names and numbers and imports nothing from `segmentation.config`. Training, inference,
export, the tests and the benchmarks all build their model through `model_for`.
"""

from __future__ import annotations

import os

from segmentation.config import Config
from segmentation.data.labels import LabelScheme
from segmentation.models import SegmentationModel, build_model


def model_for(
    config: Config, scheme: LabelScheme, pretrained: str | os.PathLike | None = None
) -> SegmentationModel:
    """The configured architecture and backbone with `scheme.num_outputs(head)` logit channels.

    pretrained: the encoder's starting weights, as `build_model` takes them; None (random) for
    a model whose weights come from a checkpoint next.
    """
    return build_model(
        config.model.arch,
        config.model.backbone,
        scheme.num_outputs(config.model.head),
        pretrained=pretrained,
        **config.model.options,
    )
