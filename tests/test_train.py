import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

import train
from segmentation.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, config: dict, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def run_train(*args) -> int:
    return train.main([str(arg) for arg in args])


@pytest.mark.parametrize(
    ("arch", "loss"), [("fpn", "bce_dice"), ("unet", "bce_dice"), ("fpn", "ce")]
)
def test_one_epoch_leaves_a_complete_run_directory(
    cityscapes_root, tmp_path, arch, loss, small_config
):
    run_dir = tmp_path / "run"
    config = small_config(
        cityscapes_root,
        run_dir,
        loss={"name": loss},
        optim={"scheduler": "poly", "warmup_iters": 1},
    )
    if arch == "unet":
        config["model"].update(arch="unet", options={"num_filters": 8})
        config["data"]["image_size"] = [64, 64]
    assert run_train("--config", write_config(tmp_path, config)) == 0
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    state = torch.load(run_dir / "last.pt", weights_only=True)
    assert state["class_names"][0] == "void" and len(state["class_names"]) == 8
    assert state["config"]["model"]["arch"] == arch
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "state"} <= set(state)
    assert state["state"]["epoch"] == 1 and state["state"]["step"] == 3
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert record["epoch"] == 1 and 0.0 <= record["val_mIoU"] <= 1.0
    assert set(record["per_class"]) == set(state["class_names"])
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["arch"] == arch


def test_tensorboard_holds_scalars_and_the_image_panel(cityscapes_root, tmp_path, small_config):
    run_dir = tmp_path / "run"
    config = small_config(cityscapes_root, run_dir, train={"epochs": 2, "log_images": 2})
    assert run_train("--config", write_config(tmp_path, config), "--set", "train.seed=3") == 0
    (events,) = (run_dir / "tensorboard").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    assert {"val/loss", "val/mIoU", "val/mDice", "train/epoch_loss"} <= scalars
    assert {"val_IoU/flat", "val_Dice/vehicle", "train/epoch_images_per_second"} <= scalars
    assert [event.step for event in accumulator.Scalars("val/mIoU")] == [1, 2]
    images = {"val/input_truth_prediction", "val/confusion_matrix", "val/class_scores"}
    assert set(accumulator.Tags()["images"]) == images
    panel = accumulator.Images("val/input_truth_prediction")[-1]
    # one row per image: input, truth and prediction side by side
    assert panel.width == 3 * 64 and panel.height == 2 * 32
    for tag in ("val/confusion_matrix", "val/class_scores"):
        charts = accumulator.Images(tag)
        assert [chart.step for chart in charts] == [1, 2]
        assert charts[-1].width > 300 and charts[-1].height > 100
        assert charts[-1].encoded_image_string.startswith(b"\x89PNG")


def test_kitti_validation_logs_the_road_pr_curve(kitti_root, tmp_path, small_config):
    run_dir = tmp_path / "run"
    data = {"dataset": "kitti", "labels": "road", "image_size": [32, 96]}
    config = small_config(kitti_root, run_dir, data=data, train={"log_images": 0})
    assert run_train("--config", write_config(tmp_path, config)) == 0
    (events,) = (run_dir / "tensorboard").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0, "images": 0})
    accumulator.Reload()
    assert "val/pr_road" in accumulator.Tags()["tensors"]
    (event,) = accumulator.Tensors("val/pr_road")
    # TensorBoard's PR data: rows TP, FP, TN, FN, precision, recall; one column a threshold.
    curve = tensor_util.make_ndarray(event.tensor_proto)
    assert curve.shape == (6, 256) and event.step == 1
    tp, fp, tn, fn, precision, recall = curve
    positives, pixels = tp[0] + fn[0], tp[0] + fp[0] + tn[0] + fn[0]
    assert positives > 0 and np.all(tp + fn == positives) and np.all(tp + fp + tn + fn == pixels)
    assert recall[0] == 1.0 and np.all(np.diff(recall) <= 0)  # threshold 0: everything is road
    assert {"val/confusion_matrix", "val/class_scores"} <= set(accumulator.Tags()["images"])


def test_per_step_scalars_are_logged(cityscapes_root, tmp_path, small_config):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, small_config(cityscapes_root, run_dir))
    assert run_train("--config", config, "--set", "train.log_every=1") == 0
    (events,) = (run_dir / "tensorboard").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert [event.step for event in accumulator.Scalars("train/loss")] == [1, 2, 3]
    assert {"train/lr", "train/images_per_second"} <= set(accumulator.Tags()["scalars"])


@pytest.mark.slow
def test_resume_is_exact(cityscapes_root, tmp_path, small_config):
    """2 epochs, then --resume for 2 more, ends on the weights of 4 epochs straight, also with
    DataLoader workers in one run and not the other."""
    common = {"train": {"epochs": 4, "seed": 5}}
    straight = small_config(cityscapes_root, tmp_path / "straight", **common)
    assert run_train("--config", write_config(tmp_path, straight, "a.yaml")) == 0
    split = small_config(cityscapes_root, tmp_path / "split", **common)
    config = write_config(tmp_path, split, "b.yaml")
    assert run_train("--config", config, "--epochs", 2, "--workers", 2) == 0
    assert run_train("--resume", tmp_path / "split" / "last.pt", "--epochs", 4) == 0
    expected = load_checkpoint(tmp_path / "straight" / "last.pt")
    found = load_checkpoint(tmp_path / "split" / "last.pt")
    assert found["state"]["epoch"] == 4
    for key, tensor in expected["model"].items():
        assert torch.equal(tensor, found["model"][key]), key
    assert expected["state"]["best_metric"] == found["state"]["best_metric"]
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_a_frozen_encoder_keeps_its_weights_and_statistics(cityscapes_root, tmp_path, small_config):
    from segmentation.config import config_from_dict
    from segmentation.data.build import scheme_for
    from segmentation.model_setup import model_for

    config = small_config(cityscapes_root, tmp_path / "run", train={"freeze_encoder_iters": 99})
    assert run_train("--config", write_config(tmp_path, config)) == 0
    trained = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    torch.manual_seed(0)  # the run's seed: the same initial weights
    resolved = config_from_dict(config)
    initial = model_for(resolved, scheme_for(resolved.data)).state_dict()
    encoder = [key for key in initial if key.startswith("encoder.")]
    assert any("running_mean" in key for key in encoder)
    for key in encoder:
        assert torch.equal(initial[key], trained[key]), key
    decoder = [key for key in initial if not key.startswith("encoder.") and "weight" in key]
    assert any(not torch.equal(initial[key], trained[key]) for key in decoder)


def test_the_last_step_of_an_epoch_takes_the_odd_batch(cityscapes_root, tmp_path, small_config):
    # 15 images, batch 4: 3 batches, 2 optimizer steps with accumulation over 2 (the last
    # step takes the odd batch).
    config = small_config(cityscapes_root, tmp_path / "run", train={"accumulate": 2})
    assert run_train("--config", write_config(tmp_path, config)) == 0
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["state"]["step"] == 2


def accumulation_run(small_config, cityscapes_root, run_dir: Path, lr: float, **train) -> dict:
    """A run of one optimizer step over the 6 val images in 6 micro-batches of one image each
    (accumulate=6): the step is the same whatever order the sampler draws them in. No
    augmentation, no dropout, plain SGD without momentum: a step is -lr x the gradient."""
    no_augmentation = {"crop_scale": [1.0, 1.0], "hflip": 0.0, "color": 0.0}
    config = small_config(
        cityscapes_root,
        run_dir,
        data={"train_split": "val", "augment": no_augmentation},
        optim={"optimizer": "sgd", "momentum": 0.0, "lr": lr, "scheduler": "none"},
        train={"batch_size": 1, "accumulate": 6, "log_images": 0, **train},
    )
    config["model"]["options"]["dropout"] = 0.0
    config["model"]["channels_last"] = False
    return config


def mean_gradient(config: dict) -> tuple[dict, dict]:
    """The run's initial parameters and, by a bare loop here, the gradient of the mean of the
    per-image losses, each image in its own forward in training mode (so BatchNorm normalizes
    each with its own statistics, as in the run's micro-batches)."""
    from segmentation.config import config_from_dict
    from segmentation.data.build import build_training_datasets, scheme_for
    from segmentation.data.normalize import Normalizer
    from segmentation.losses import build_loss
    from segmentation.model_setup import model_for
    from segmentation.models import encoder_normalization

    resolved = config_from_dict(config)
    scheme = scheme_for(resolved.data)
    torch.manual_seed(resolved.train.seed)  # the run's seed: its initial weights
    model = model_for(resolved, scheme)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    images, _ = build_training_datasets(resolved.data)
    assert len(images) == 6
    normalize = Normalizer(*encoder_normalization(resolved.model.backbone))
    loss_fn = build_loss(resolved.loss.name, scheme.num_classes)
    model.train()
    for index in range(len(images)):
        item = images[index]
        logits = model(normalize(item["image"][None].permute(0, 3, 1, 2)))
        (loss_fn(logits, item["target"][None].long()) / len(images)).backward()
    return initial, {name: p.grad.double() for name, p in model.named_parameters()}


def norm(tensors) -> float:
    return math.sqrt(sum(tensor.double().square().sum().item() for tensor in tensors))


def test_accumulation_and_clipping(cityscapes_root, tmp_path, small_config, one_thread):
    """accumulate=6 over 6 micro-batches is one step on the mean of their gradients (each from
    its own forward), checked against a bare loop here; grad_clip scales that gradient to its
    norm, so a plain SGD step is at most lr x grad_clip."""
    lr, clip_lr, clip = 1e-4, 0.1, 1.0
    configs, runs = {}, {}
    for name, rate, options in (("plain", lr, {}), ("clipped", clip_lr, {"grad_clip": clip})):
        config = accumulation_run(small_config, cityscapes_root, tmp_path / name, rate, **options)
        assert run_train("--config", write_config(tmp_path, config, f"{name}.yaml")) == 0
        state = load_checkpoint(tmp_path / name / "last.pt")
        assert state["state"]["step"] == 1
        configs[name], runs[name] = config, state["model"]
    initial, gradient = mean_gradient(configs["plain"])  # the same model, data and loss
    gradient_norm = norm(gradient.values())
    assert gradient_norm > 10 * clip  # the clip binds

    def steps(run: dict) -> list[torch.Tensor]:
        return [run[name].double() - initial[name].double() for name in initial]

    # Accumulation: one step of -lr x the mean gradient (float32 weights round the steps to
    # ~1e-5 of their norms here).
    expected = [-lr * gradient[name] for name in initial]
    found = steps(runs["plain"])
    difference = norm(a - b for a, b in zip(found, expected))
    assert difference <= 1e-3 * norm(expected), (difference, norm(expected))
    # Clipping: the same direction, scaled to a norm of clip; the step is at most lr x clip.
    scale = clip / (gradient_norm + 1e-6)
    expected = [-clip_lr * scale * gradient[name] for name in initial]
    found = steps(runs["clipped"])
    assert norm(found) <= clip_lr * clip * (1 + 1e-3)
    difference = norm(a - b for a, b in zip(found, expected))
    assert difference <= 1e-3 * clip_lr * clip, (difference, norm(found))


def test_init_from_loads_weights_into_a_new_run(
    cityscapes_root, tmp_path, small_config, trained_checkpoint
):
    first = small_config(cityscapes_root, tmp_path / "first")
    assert (
        run_train(
            "--config",
            write_config(tmp_path, first),
            "--init-from",
            trained_checkpoint("cityscapes", "categories").parent / "best.pt",
            "--output-dir",
            tmp_path / "second",
            "--image-size",
            "64x128",
        )
        == 0
    )
    state = load_checkpoint(tmp_path / "second" / "last.pt")
    assert state["config"]["data"]["image_size"] == [64, 128]
    assert state["state"]["epoch"] == 1


def test_init_from_another_class_count_says_expected_and_found(
    cityscapes_root, tmp_path, capsys, small_config, trained_checkpoint
):
    first = small_config(cityscapes_root, tmp_path / "first")
    code = run_train(
        "--config",
        write_config(tmp_path, first),
        "--labels",
        "road",
        "--init-from",
        trained_checkpoint("cityscapes", "categories"),
        "--output-dir",
        tmp_path / "second",
    )
    assert code == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0
    assert "expected ['background', 'road']" in message and "found ['void'" in message


def test_an_existing_run_directory_is_never_overwritten(
    cityscapes_root, tmp_path, capsys, small_config
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    config = write_config(tmp_path, small_config(cityscapes_root, run_dir))
    assert run_train("--config", config) == 2
    error = capsys.readouterr().err
    assert "notes.txt" in error and "new --output-dir" in error
    assert "--resume" not in error  # there is no checkpoint to resume from
    assert (run_dir / "notes.txt").read_text() == "mine"
    assert not (run_dir / "last.pt").exists()


def test_unknown_config_keys_are_named_with_the_valid_ones(
    cityscapes_root, tmp_path, capsys, small_config
):
    config = small_config(cityscapes_root, tmp_path / "run")
    config["train"]["epoch"] = 3
    assert run_train("--config", write_config(tmp_path, config)) == 2
    error = capsys.readouterr().err
    assert "epoch" in error and "valid keys are epochs, iters" in error and "batch_size" in error


def test_a_checkpoint_that_needs_pickle_is_refused(tmp_path):
    from segmentation.errors import UserError

    path = tmp_path / "evil.pt"
    torch.save({"format": "segmentation-checkpoint", "payload": Path("x")}, path)
    with pytest.raises(UserError, match="pickle"):
        load_checkpoint(path)


@pytest.mark.slow
def test_two_process_ddp_with_gloo(cityscapes_root, tmp_path, small_config):
    run_dir = tmp_path / "ddp"
    config = small_config(cityscapes_root, run_dir, train={"epochs": 2, "batch_size": 2})
    config["model"]["sync_batchnorm"] = True
    path = write_config(tmp_path, config)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(REPO / "train.py"),
        "--config",
        str(path),
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.terminate()  # torchrun passes SIGTERM on to its workers, which exit
        _, stderr = process.communicate(timeout=120)
        pytest.fail(f"the DDP run hung: {stderr[-3000:]}")
    assert process.returncode == 0, stderr[-3000:]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # rank 0 alone writes
    state = load_checkpoint(run_dir / "last.pt")
    # 15 training images: 8 per process (one padded), 2 a batch: 4 steps an epoch.
    assert state["state"]["step"] == 8
    recorded = json.loads(lines[-1])
    # The validation scores were reduced over both shards: one process scoring the whole split
    # with the saved weights finds the same (up to float noise from other batch layouts), and
    # either shard alone would not.
    loss, miou, shard_losses = single_process_validation(state)
    assert recorded["val_loss"] == pytest.approx(loss, rel=1e-4)
    assert recorded["val_mIoU"] == pytest.approx(miou, abs=5e-3)
    assert all(abs(shard - loss) > 1e-3 for shard in shard_losses)


def single_process_validation(state: dict) -> tuple[float, float, list[float]]:
    from segmentation.config import config_from_dict
    from segmentation.data.build import build_training_datasets, scheme_for
    from segmentation.data.normalize import Normalizer
    from segmentation.losses import build_loss
    from segmentation.metrics import ConfusionMatrix, predictions_from_logits
    from segmentation.model_setup import model_for
    from segmentation.models import encoder_normalization

    config = config_from_dict(state["config"])
    scheme = scheme_for(config.data)
    model = model_for(config, scheme)
    model.load_state_dict(state["model"])
    model.eval().to(memory_format=torch.channels_last)
    _, val = build_training_datasets(config.data)
    normalize = Normalizer(*encoder_normalization(config.model.backbone))
    matrix = ConfusionMatrix(scheme.num_classes, "cpu")
    loss_fn = build_loss(config.loss.name, scheme.num_classes)
    # The shards and batches of the run: rank r scores images r, r + 2, ... two at a time.
    shard_losses = []
    with torch.no_grad():
        for rank in range(2):
            indices = list(range(rank, len(val), 2))
            total, count = 0.0, 0
            for start in range(0, len(indices), 2):
                items = [val[i] for i in indices[start : start + 2]]
                images = torch.stack([item["image"] for item in items]).permute(0, 3, 1, 2)
                target = torch.stack([item["target"] for item in items]).long()
                logits = model(normalize(images, torch.channels_last))
                total += loss_fn(logits, target).item() * len(items)
                count += len(items)
                matrix.update(predictions_from_logits(logits), target)
            shard_losses.append((total, count))
    loss = sum(total for total, _ in shard_losses) / sum(count for _, count in shard_losses)
    shards = [total / count for total, count in shard_losses]
    return loss, matrix.compute(scheme.class_names)["mIoU"], shards
