"""Exporting a trained model to ONNX for deployment."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from segmentation.errors import UserError
from segmentation.model_setup import model_for
from segmentation.prediction.trained_model import TrainedModel

logger = logging.getLogger(__name__)

# The exporter's graph passes (onnxscript, onnx_ir) log every step at INFO: dozens of
# "Replaced initializer ..." lines that drown the console under our INFO logging.
_CHATTY_LOGGERS = ("onnxscript", "onnx_ir")


@contextlib.contextmanager
def quiet_exporter_logs() -> Iterator[None]:
    """Raise the exporter's loggers to WARNING while exporting, unless someone set their level:
    their warnings and errors still show, their INFO chatter does not."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    unset = [each for each in loggers if each.level == logging.NOTSET]
    for each in unset:
        each.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for each in unset:
            each.setLevel(logging.NOTSET)


def export_onnx(trained: TrainedModel, path: Path, opset: int = 18) -> Path:
    """Write the model as ONNX: input "images" (batch, 3, H, W) float32, normalized with the
    encoder's mean/std, at the training size H x W; output "logits" (batch, K, H, W).
    The batch axis is dynamic. The trained model itself is left as it was (device, layout):
    a CPU copy is exported."""
    path = Path(path)
    if path.exists():
        raise UserError(f"{path} already exists: choose another --export-onnx path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {path.parent} ({error.strerror})") from None
    model = model_for(trained.config, trained.scheme)
    model.load_state_dict({key: value.cpu() for key, value in trained.model.state_dict().items()})
    model = model.float().eval()
    height, width = trained.image_size
    example = torch.zeros(2, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with quiet_exporter_logs():
        program = torch.onnx.export(
            model,
            (example,),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            verbose=False,  # no "[torch.onnx] ..." progress prints; failures still raise
        )
        program.save(str(path))
    logger.info("wrote %s (input images: batch x 3 x %d x %d)", path, height, width)
    return path
