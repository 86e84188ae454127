"""Rebuilding a trained model from a checkpoint alone (its config travels inside it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from segmentation.checkpoint import USE_ENTRIES, load_checkpoint, load_model_weights
from segmentation.config import Config, saved_config_from_dict
from segmentation.data.build import scheme_for
from segmentation.data.labels import LabelScheme
from segmentation.data.normalize import Normalizer
from segmentation.devices import autocast, forward_in_range, resolve_amp
from segmentation.errors import UserError
from segmentation.metrics import predictions_from_logits
from segmentation.model_setup import model_for
from segmentation.models import encoder_normalization, required_input_multiple
from segmentation.prediction.predict import (
    PredictionOptions,
    drop_small_clusters_in_batch,
    predict_probabilities,
    valid_size,
)

DEFAULT_PREDICTION = PredictionOptions()
logger = logging.getLogger(__name__)


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
    amp: str = "off"  # the autocast mode the forward runs in: off | bf16 | fp16
    compiled: nn.Module | None = None  # torch.compile of `model`, when asked for
    float32_batches: int = 0  # fp16 forwards that overflowed and were computed again
    _normalizer: Normalizer | None = field(default=None, init=False, repr=False)

    @property
    def image_size(self) -> tuple[int, int]:
        """The size frames are resized to (data.image_size)."""
        return tuple(self.config.data.image_size)

    @property
    def training_size(self) -> tuple[int, int]:
        """The size of the training samples: a sliding window's default."""
        return tuple(self.config.data.train_input_size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) on any device -> normalized float32 on the model's device."""
        # The training engine's normalization (data/normalize.py): one multiply-add.
        if self._normalizer is None:
            self._normalizer = Normalizer(self.mean, self.std)
        channels_last = self.config.model.channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        return self._normalizer(images.to(self.device, non_blocking=True), memory_format)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of normalized images, in the chosen precision (probabilities are computed
        from them in float32); an fp16 forward that overflows is computed again in float32."""
        logits, again = forward_in_range(lambda amp: self._forward(images, amp), self.amp)
        if again:
            self.float32_batches += 1
            if self.float32_batches == 1:
                logger.warning(
                    "logits overflowed float16 (--amp fp16): such batches are computed again "
                    "in float32; --amp bf16 (GPUs of compute capability 8.0 and newer) or off "
                    "avoids the second pass"
                )
        return logits

    def _forward(self, images: torch.Tensor, amp: str) -> torch.Tensor:
        with autocast(self.device, amp):
            model = self.model if self.compiled is None else self.compiled
            return model(images)

    def predict(
        self,
        images: torch.Tensor,
        options: PredictionOptions = DEFAULT_PREDICTION,
        *,
        probabilities: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 images (B, 3, H, W) -> class maps (B, H, W) int64 and probabilities
        (B, C, H, W), on the model's device at the images' size (see predict_probabilities);
        with options.drop_clusters the maps are cleaned of regions under N x N pixels.

        probabilities=False: the caller needs the classes only (the second item may be None).
        A plain prediction (one view, images at the model's input size, no clean-up) then
        takes the classes straight from the logits: softmax and sigmoid keep the order of a
        pixel's scores, so the classes are the same, without the passes over (B, C, H, W)
        that computing and merging probabilities costs.
        """
        if not probabilities:
            logits = self.plain_logits(images, options)
            if logits is not None:
                return predictions_from_logits(logits), None
        normalized = self.normalize(images)
        probs = predict_probabilities(
            self.forward,
            normalized,
            self.head,
            # Sliding windows default to the training crops; resized views to image_size.
            base_size=self.training_size if options.sliding_window else self.image_size,
            divisor=self.divisor,
            tta=options.tta,
            scales=options.scales,
            merge=options.merge,
            sliding_window=options.sliding_window,
            window=options.window,
            stride=options.stride,
            whole_frame=options.whole_frame,
        )
        classes = probs.argmax(dim=1)
        if options.drop_clusters:
            classes = drop_small_clusters_in_batch(classes, probs, options.drop_clusters)
            classes = classes.to(self.device)
        return classes, probs

    def plain_logits(
        self, images: torch.Tensor, options: PredictionOptions = DEFAULT_PREDICTION
    ) -> torch.Tensor | None:
        """Logits (B, K, H, W) of uint8 images (B, 3, H, W) when `options` ask for a plain
        prediction (one view at the model's input size, no clean-up): their classes are
        `predictions_from_logits` of them. None for any other prediction (use `predict`)."""
        if not self._is_plain(options, images):
            return None
        return self.forward(self.normalize(images))

    def _is_plain(self, options: PredictionOptions, images: torch.Tensor) -> bool:
        """One view at the model's own input size: predict_probabilities would resize
        nothing and merge nothing."""
        one_view = options.tta == "none" and not (options.sliding_window or options.whole_frame)
        input_size = valid_size(*self.image_size, self.divisor)
        return one_view and not options.drop_clusters and tuple(images.shape[-2:]) == input_size


def load_trained_model(
    path: Path, device: torch.device, *, amp: str = "off", compile: bool = False
) -> TrainedModel:
    """Rebuild the model of a checkpoint written by train.py, for inference on `device` in the
    autocast mode `amp` (off | bf16 | fp16 | auto: bf16 where the device computes it natively),
    compiled with torch.compile if asked."""
    state = load_checkpoint(path, needs=USE_ENTRIES)
    config = saved_config_from_dict(state["config"], f"checkpoint {path}")
    scheme = scheme_for(config.data)
    if list(scheme.class_names) != list(state["class_names"]):
        raise UserError(
            f"checkpoint {path} names classes {state['class_names']} but its config gives "
            f"{list(scheme.class_names)}: the file is inconsistent, use another checkpoint"
        )
    amp = resolve_amp(amp, device)
    if amp == "fp16" and device.type != "cuda":
        raise UserError("--amp fp16 needs a CUDA GPU: use --amp bf16 or off on the CPU")
    model = model_for(config, scheme)
    load_model_weights(model, state["model"], path)
    model.to(device).eval()
    if config.model.channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        # Frames of one size, over and over: cudnn's timed choice of kernels pays off.
        torch.backends.cudnn.benchmark = True
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
        amp=amp,
        compiled=torch.compile(model) if compile else None,
    )
