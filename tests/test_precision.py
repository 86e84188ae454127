"""Mixed precision and torch.compile: `auto` resolution, bf16 inference agreeing with float32,
and compiled evaluation agreeing with eager evaluation. (Compiled training against eager
training, and its checkpoints: tests/test_compile_modes.py.)"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import evaluate
import inference
import train
from segmentation.checkpoint import load_checkpoint
from segmentation.devices import native_bf16, resolve_amp
from segmentation.prediction.trained_model import load_trained_model

pytestmark = pytest.mark.usefixtures("one_thread")


def fake_cpu(monkeypatch, *, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


def test_auto_is_float32_on_a_cpu_without_bf16_units(monkeypatch):
    cpu = torch.device("cpu")
    fake_cpu(monkeypatch, amx=False, avx512_bf16=False)
    assert resolve_amp("auto", cpu) == "off"
    assert "without AMX or AVX512-BF16" in native_bf16(cpu)[1]
    fake_cpu(monkeypatch, amx=False, avx512_bf16=True)
    assert resolve_amp("auto", cpu) == "bf16"
    fake_cpu(monkeypatch, amx=True, avx512_bf16=False)
    assert resolve_amp("auto", cpu) == "bf16"
    assert resolve_amp("off", cpu) == "off" and resolve_amp("bf16", cpu) == "bf16"


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "off"), ((8, 0), "bf16")])
def test_auto_on_cuda_needs_compute_capability_8(monkeypatch, capability, expected):
    # is_bf16_supported() says yes on a T4 (7.5) too, through emulation: not what auto asks.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_amp("auto", torch.device("cuda", 0)) == expected


def test_training_auto_records_what_it_chose(monkeypatch, cityscapes_root, tmp_path, small_config):
    fake_cpu(monkeypatch, amx=False, avx512_bf16=False)
    config = small_config(cityscapes_root, tmp_path / "run", train={"amp": "auto"})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train.main(["--config", str(path)]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["train"]["amp"] == "off"


def label_ids(folder: Path) -> dict[str, np.ndarray]:
    import cv2

    return {
        path.name: cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        for path in sorted(folder.rglob("*_labelIds.png"))
    }


@pytest.fixture(scope="module")
def decided_checkpoint(cityscapes_root, tmp_path_factory, small_config) -> Path:
    """A model trained long enough to be decided about most pixels: a one-step model's
    near-ties would flip under any change of rounding, which says nothing about bf16."""
    run_dir = tmp_path_factory.mktemp("decided") / "run"
    config = small_config(
        cityscapes_root,
        run_dir,
        loss={"name": "ce"},
        optim={"optimizer": "adam", "lr": 0.003, "scheduler": "none"},
        train={"epochs": 12, "batch_size": 5, "log_images": 0},
    )
    config["data"]["labels"] = "classes"
    config["model"]["channels_last"] = False
    path = run_dir.parent / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train.main(["--config", str(path)]) == 0
    return run_dir / "last.pt"


@pytest.mark.slow
def test_bf16_evaluation_agrees_with_float32(decided_checkpoint, tmp_path):
    checkpoint = decided_checkpoint
    scores, maps = {}, {}
    for amp in ("off", "bf16"):
        out = tmp_path / amp
        args = ["--checkpoint", checkpoint, "--workers", "0", "--amp", amp]
        args += ["--export-dir", out / "export", "--output-json", out / "scores.json"]
        assert evaluate.main([str(arg) for arg in args]) == 0
        scores[amp] = json.loads((out / "scores.json").read_text())
        maps[amp] = label_ids(out / "export")
    assert scores["bf16"]["amp"] == "bf16" and scores["off"]["amp"] == "off"
    assert maps["off"].keys() == maps["bf16"].keys() and maps["off"]
    same = sum(int((maps["off"][k] == maps["bf16"][k]).sum()) for k in maps["off"])
    total = sum(m.size for m in maps["off"].values())
    assert same / total >= 0.995, f"{same / total:.4f} of the pixels agree"
    assert abs(scores["bf16"]["mIoU"] - scores["off"]["mIoU"]) <= 0.005


@pytest.mark.slow
def test_bf16_inference_agrees_with_float32(decided_checkpoint, cityscapes_root, tmp_path):
    checkpoint = decided_checkpoint
    frames = cityscapes_root / "leftImg8bit" / "demoVideo" / "stuttgart_00"
    maps = {}
    for amp in ("off", "bf16"):
        out = tmp_path / amp
        args = ["--checkpoint", checkpoint, "--input", frames, "--output", out]
        args += ["--save", "labelIds", "--workers", "0", "--amp", amp]
        assert inference.main([str(arg) for arg in args]) == 0
        maps[amp] = label_ids(out)
    assert len(maps["off"]) == 4
    same = sum(int((maps["off"][k] == maps["bf16"][k]).sum()) for k in maps["off"])
    total = sum(m.size for m in maps["off"].values())
    assert same / total >= 0.995, f"{same / total:.4f} of the pixels agree"


@pytest.mark.slow
def test_compiled_evaluation_gives_the_eager_scores(cxx_compiler, decided_checkpoint, tmp_path):
    scores = {}
    for mode, extra in (("eager", []), ("compiled", ["--compile"])):
        output = tmp_path / f"{mode}.json"
        args = ["--checkpoint", decided_checkpoint, "--workers", "0", "--amp", "off"]
        assert evaluate.main([str(a) for a in [*args, "--output-json", output, *extra]]) == 0
        scores[mode] = json.loads(output.read_text())
    assert scores["compiled"]["mIoU"] == pytest.approx(scores["eager"]["mIoU"], abs=1e-4)


def overflowing(model: torch.nn.Module) -> torch.nn.Module:
    """The same classes, logits past float16's 65504: the classifier scaled up 1e6 times."""
    with torch.no_grad():
        model.classifier.weight.mul_(1e6)
        model.classifier.bias.mul_(1e6)
    return model


def test_fp16_forward_in_range_recomputes_overflowing_logits_in_float32():
    from segmentation.devices import autocast, forward_in_range

    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        layer.weight.mul_(1e5)
    images = torch.randn(2, 3, 8, 8)

    def forward(amp: str) -> torch.Tensor:
        with autocast(torch.device("cpu"), amp):
            return layer(images)

    assert not torch.isfinite(forward("fp16")).all()  # the case this is about
    logits, again = forward_in_range(forward, "fp16")
    assert again and logits.dtype == torch.float32
    assert torch.equal(logits, layer(images))
    for amp in ("off", "bf16"):  # float32's range: never a second pass
        assert forward_in_range(forward, amp)[1] is False


def test_inference_in_fp16_never_returns_classes_of_overflowed_logits(trained_checkpoint, caplog):
    checkpoint = trained_checkpoint("cityscapes", "categories")
    cpu = torch.device("cpu")
    reference = load_trained_model(checkpoint, cpu)
    overflowing(reference.model)
    half = load_trained_model(checkpoint, cpu)
    overflowing(half.model)
    half.amp = "fp16"  # CPU autocast runs float16 too, and overflows as a GPU would
    images = torch.randint(0, 256, (2, 3, 32, 64), dtype=torch.uint8)
    with caplog.at_level("WARNING"):
        classes, probs = half.predict(images)
        half.predict(images)
    expected_classes, expected_probs = reference.predict(images)
    assert torch.equal(classes, expected_classes)
    assert torch.isfinite(probs).all() and torch.equal(probs, expected_probs)
    assert half.float32_batches == 2
    warnings = [r.message for r in caplog.records if "overflowed float16" in r.message]
    assert len(warnings) == 1, warnings  # said once, not per batch


def test_validation_in_fp16_scores_overflowed_batches_in_float32(
    cityscapes_root, tmp_path, small_config, caplog
):
    from segmentation.config import config_from_dict
    from segmentation.engine.distributed import DistributedContext
    from segmentation.engine.loop import validate
    from segmentation.engine.setup import build_training

    values = small_config(cityscapes_root, tmp_path / "run", train={"log_images": 0})
    config = config_from_dict(values)
    training = build_training(config, DistributedContext(0, 1, 0, torch.device("cpu")), None, None)
    overflowing(training.model)
    reference, _ = validate(training)
    training.config.train.amp = "fp16"  # train.py refuses it on a CPU; the CPU still runs it
    with caplog.at_level("WARNING"):
        metrics, _ = validate(training)
    assert np.isfinite(metrics["loss"]) and metrics["loss"] == reference["loss"]
    assert metrics["mIoU"] == reference["mIoU"]
    said = [r.getMessage() for r in caplog.records if "overflowed float16" in r.getMessage()]
    batches = len(training.val_loader)
    assert said and f"{batches} of {batches} batches" in said[0], said
