"""inference.py --export-onnx: a model with a dynamic batch axis that onnxruntime runs as torch
does, exported without the exporter's INFO flood."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import inference
from segmentation.prediction.trained_model import load_trained_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint) -> Path:
    return trained_checkpoint("cityscapes", "classes")


def dims(value_info) -> list:
    """Shape of a graph input/output: ints for fixed axes, names for dynamic ones."""
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.slow
def test_export_runs_in_onnxruntime_like_torch(checkpoint, tmp_path, capsys, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    export = torch.onnx.export

    def export_and_warn(*args, **kwargs):
        # A warning of the exporter's passes must still reach the log; their INFO lines not.
        logging.getLogger("onnxscript.optimizer").warning("exporter warning")
        logging.getLogger("onnx_ir.passes").info("exporter chatter")
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export_and_warn)
    path = tmp_path / "model.onnx"
    assert inference.main(["--checkpoint", str(checkpoint), "--export-onnx", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {path}"
    exporter_records = [
        record for record in caplog.records if record.name.startswith(("onnxscript", "onnx_ir"))
    ]
    assert [record.getMessage() for record in exporter_records] == ["exporter warning"]
    assert logging.getLogger("onnxscript").level == logging.NOTSET  # restored afterwards

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    (images,), (logits,) = model.graph.input, model.graph.output
    trained = load_trained_model(checkpoint, torch.device("cpu"))
    height, width = trained.image_size
    assert images.name == "images" and logits.name == "logits"
    assert isinstance(dims(images)[0], str) and dims(images)[1:] == [3, height, width]
    assert isinstance(dims(logits)[0], str) and dims(logits)[1:] == [20, height, width]

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 3):
        inputs = torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = trained.model(inputs).numpy()
        (found,) = session.run(["logits"], {"images": inputs.numpy()})
        assert found.shape == expected.shape == (batch, 20, height, width)
        np.testing.assert_allclose(found, expected, atol=1e-4, rtol=0)


def test_an_existing_file_is_not_overwritten(checkpoint, tmp_path, capsys):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"keep")
    assert inference.main(["--checkpoint", str(checkpoint), "--export-onnx", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert path.read_bytes() == b"keep"


def test_input_without_output_is_refused(checkpoint, tmp_path, capsys):
    args = ["--checkpoint", str(checkpoint), "--export-onnx", str(tmp_path / "m.onnx")]
    assert inference.main([*args, "--input", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: give --input and --output")
    assert not (tmp_path / "m.onnx").exists()
