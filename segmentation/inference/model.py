"""Rebuilding a trained model from a checkpoint alone (its config travels inside it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from segmentation.checkpoint import load_checkpoint
from segmentation.config import Config, config_from_dict
from segmentation.data.build import scheme_for
from segmentation.data.labels import LabelScheme
from segmentation.data.normalize import Normalizer
from segmentation.errors import UserError
from segmentation.inference.predict import (
    PredictionOptions,
    drop_small_clusters_in_batch,
    predict_probabilities,
)
from segmentation.models import encoder_normalization, model_from_config, required_input_multiple

DEFAULT_PREDICTION = PredictionOptions()


@dataclass
class TrainedModel:
    """A model rebuilt from its checkpoint, in eval mode on its device, with what it needs."""

    model: nn.Module
    config: Config
    scheme: LabelScheme
    head: str  # "sigmoid" | "softmax"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    divisor: int  # input sides must be multiples of it
    checkpoint: Path
    device: torch.device
    _normalizer: Normalizer | None = field(default=None, init=False, repr=False)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.config.data.image_size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) on any device -> normalized float32 on the model's device."""
        # The training engine's normalization (data/normalize.py): one multiply-add.
        if self._normalizer is None:
            self._normalizer = Normalizer(self.mean, self.std)
        channels_last = self.config.model.channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        return self._normalizer(images.to(self.device, non_blocking=True), memory_format)

    def predict(
        self, images: torch.Tensor, options: PredictionOptions = DEFAULT_PREDICTION
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, 3, H, W) -> class maps (B, H, W) int64 and probabilities
        (B, C, H, W), on the model's device at the images' size (see predict_probabilities);
        with options.drop_clusters the maps are cleaned of regions under N x N pixels."""
        probs = predict_probabilities(
            self.model,
            self.normalize(images),
            self.head,
            base_size=self.image_size,
            divisor=self.divisor,
            tta=options.tta,
            scales=options.scales,
            merge=options.merge,
            sliding_window=options.sliding_window,
        )
        classes = probs.argmax(dim=1)
        if options.drop_clusters:
            classes = drop_small_clusters_in_batch(classes, probs, options.drop_clusters)
            classes = classes.to(self.device)
        return classes, probs


def load_trained_model(path: Path, device: torch.device) -> TrainedModel:
    """Rebuild the model of a checkpoint written by train.py."""
    state = load_checkpoint(path)
    config = config_from_dict(state["config"])
    scheme = scheme_for(config.data)
    if list(scheme.class_names) != list(state["class_names"]):
        raise UserError(
            f"checkpoint {path} names classes {state['class_names']} but its config gives "
            f"{list(scheme.class_names)}: the file is inconsistent, use another checkpoint"
        )
    model = model_from_config(config.model, scheme.num_outputs(config.model.head), None)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    if config.model.channels_last:
        model.to(memory_format=torch.channels_last)
    mean, std = encoder_normalization(config.model.backbone)
    return TrainedModel(
        model=model,
        config=config,
        scheme=scheme,
        head=config.model.head,
        mean=tuple(mean),
        std=tuple(std),
        divisor=required_input_multiple(config.model.arch),
        checkpoint=Path(path),
        device=device,
    )
