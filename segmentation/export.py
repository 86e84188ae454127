"""Exporting a trained model to ONNX for deployment."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from segmentation.engine.restore import TrainedModel
from segmentation.errors import UserError

logger = logging.getLogger(__name__)


def export_onnx(trained: TrainedModel, path: Path, opset: int = 18) -> Path:
    """Write the model as ONNX: input "images" (batch, 3, H, W) float32, normalized with the
    encoder's mean/std, at the training size H x W; output "logits" (batch, K, H, W).
    The batch axis is dynamic."""
    path = Path(path)
    if path.exists():
        raise UserError(f"{path} already exists: choose another --export-onnx path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {path.parent} ({error.strerror})") from None
    model = trained.model.float().eval().to("cpu").to(memory_format=torch.contiguous_format)
    height, width = trained.image_size
    example = torch.zeros(2, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(
        model,
        (example,),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        opset_version=opset,
        dynamo=True,
    )
    program.save(str(path))
    logger.info("wrote %s (input images: batch x 3 x %d x %d)", path, height, width)
    return path
