"""A schedule of train.iters optimizer steps: validation every train.val_every steps and at the
last, across epoch boundaries; a run stopped mid-schedule resumes exactly; the poly schedule
with optim.min_lr follows its closed form at every iteration."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from segmentation.checkpoint import load_checkpoint
from segmentation.config import OptimConfig, config_from_dict
from segmentation.engine import loop
from segmentation.engine.optim import build_optimizer, build_scheduler
from segmentation.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

LR, MIN_LR, POWER, ITERS = 0.01, 1e-4, 0.9, 50


def poly(t: int, total: int) -> float:
    """mmsegmentation's PolyLR (eta_min): (lr - min_lr) * (1 - t / T) ** power + min_lr."""
    return (LR - MIN_LR) * (1 - t / total) ** POWER + MIN_LR


def test_poly_with_min_lr_is_the_closed_form_at_every_iteration():
    config = OptimConfig(optimizer="sgd", lr=LR, scheduler="poly", poly_power=POWER, min_lr=MIN_LR)
    optimizer = build_optimizer(torch.nn.Linear(2, 1), config)
    scheduler = build_scheduler(optimizer, config, total_iters=ITERS)
    for t in range(ITERS + 1):  # the rate of the step t + 1; after the last: min_lr
        assert optimizer.param_groups[0]["lr"] == pytest.approx(poly(t, ITERS), rel=1e-12), t
        optimizer.step()
        scheduler.step()


def test_poly_after_warmup_decays_over_the_remaining_steps():
    warmup = 10
    config = OptimConfig(optimizer="sgd", lr=LR, scheduler="poly", poly_power=POWER,
                         min_lr=MIN_LR, warmup_iters=warmup)  # fmt: skip
    optimizer = build_optimizer(torch.nn.Linear(2, 1), config)
    scheduler = build_scheduler(optimizer, config, total_iters=ITERS)
    for t in range(ITERS + 1):
        # mmsegmentation's LinearLR (steps 0..W) then PolyLR (begin=W, end=T)
        expected = LR * (t + 1) / warmup if t < warmup else poly(t - warmup, ITERS - warmup)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12), t
        optimizer.step()
        scheduler.step()


def test_validation_and_save_steps_of_a_schedule():
    from types import SimpleNamespace

    from segmentation.engine.loop import next_stop, validates_at

    config = SimpleNamespace(iters=50, val_every=20, save_every=15)
    stops, step = [], 0
    while step < config.iters:
        step = next_stop(step, config)
        stops.append((step, validates_at(step, config)))
    assert stops == [(15, False), (20, True), (30, False), (40, True), (45, False), (50, True)]


def schedule_config(small_config, root: Path, run_dir: Path) -> dict:
    config = small_config(
        root,
        run_dir,
        optim={"optimizer": "sgd", "lr": LR, "scheduler": "poly", "min_lr": MIN_LR},
        # 15 training images at batch 1: 50 steps cross 3 epoch boundaries.
        train={"iters": ITERS, "val_every": 20, "batch_size": 1, "seed": 3, "log_every": 10,
               "device": "cpu", "log_images": 0},
    )  # fmt: skip
    del config["train"]["epochs"]
    return config


def scalar_steps(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in ("train/loss", "train/lr", "val/mIoU")
    }


@pytest.mark.slow
def test_iters_validate_every_val_every_and_at_the_end_and_resume_exactly(
    cityscapes_root, tmp_path, small_config, monkeypatch
):
    def run_config(name: str) -> Path:
        config = schedule_config(small_config, cityscapes_root, tmp_path / name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    assert train.main(["--config", str(run_config("straight"))]) == 0
    straight = tmp_path / "straight"
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [20, 40, 50]
    scalars = scalar_steps(straight)
    assert [step for step, _ in scalars["val/mIoU"]] == [20, 40, 50]
    assert [step for step, _ in scalars["train/loss"]] == [10, 20, 30, 40, 50]
    # The rate logged after step s is the one step s + 1 uses: the closed form at t = s.
    for step, value in scalars["train/lr"]:
        assert value == pytest.approx(poly(step, ITERS), rel=1e-6), step
    state = load_checkpoint(straight / "last.pt")["state"]
    assert (state["step"], state["epoch"], state["epoch_batches"]) == (50, 3, 5)

    # The same run, stopped after step 30 (as a scheduler's SIGTERM would), then resumed. Step
    # 30 ends the second epoch: the resumed run starts from an epoch with no batch left.
    real_step = loop.optimizer_step

    def step_then_sigterm_at_30(training):
        real_step(training)
        if training.state.step == 30:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(loop, "optimizer_step", step_then_sigterm_at_30)
    stopped = tmp_path / "stopped"
    assert train.main(["--config", str(run_config("stopped"))]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    assert load_checkpoint(stopped / "last.pt")["state"]["step"] == 30
    assert train.main(["--resume", str(stopped / "last.pt")]) == 0

    expected, found = load_checkpoint(straight / "last.pt"), load_checkpoint(stopped / "last.pt")
    for key, tensor in expected["model"].items():
        assert torch.equal(tensor, found["model"][key]), key
    assert found["state"] == expected["state"]
    assert scalar_steps(stopped) == scalars
    resumed = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert [record["val_mIoU"] for record in resumed] == [record["val_mIoU"] for record in records]


@pytest.mark.parametrize(
    ("train_section", "message"),
    [
        ({"iters": 50, "epochs": 40}, "train.iters=50 and train.epochs=40 are both given"),
        (
            {"epochs": 2, "val_every": 20},
            "train.val_every=20 counts optimizer steps of train.iters",
        ),
        (
            {"epochs": 2, "save_every": 5},
            "train.save_every=5 counts optimizer steps of train.iters",
        ),
    ],
)
def test_a_length_in_both_units_is_refused_in_one_line(train_section, message):
    with pytest.raises(UserError) as error:
        config_from_dict({"train": train_section})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_iters_alone_survives_the_saved_config_and_overrides():
    config = config_from_dict({"train": {"iters": 50, "val_every": 20}})
    saved = config.model_dump(mode="json")
    assert "epochs" not in saved["train"]  # else the saved run would give both
    assert config_from_dict(saved).train.iters == 50
    from segmentation.config import apply_overrides

    with pytest.raises(UserError, match="both given"):
        apply_overrides(config, {"train.epochs": 3})
    epochs_file = config_from_dict({"train": {"epochs": 3}})
    switched = apply_overrides(epochs_file, {"train.epochs": None, "train.iters": 9})
    assert switched.train.iters == 9


@pytest.mark.slow
def test_a_stop_in_a_validation_mid_schedule_validates_it_again_on_resume(
    cityscapes_root, tmp_path, small_config, monkeypatch
):
    def run_config(name: str) -> Path:
        config = small_config(
            cityscapes_root,
            tmp_path / name,
            optim={"scheduler": "poly"},
            train={"iters": 6, "val_every": 3, "batch_size": 4, "seed": 1, "log_images": 0},
        )
        del config["train"]["epochs"]
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        return tmp_path / f"{name}.yaml"

    assert train.main(["--config", str(run_config("straight"))]) == 0
    real_evaluate = loop.evaluate

    def evaluate_with_sigterm(predict, batches, matrix, **options):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives before the first validation batch ends
        return real_evaluate(predict, batches, matrix, **options)

    monkeypatch.setattr(loop, "evaluate", evaluate_with_sigterm)
    stopped = tmp_path / "stopped"
    assert train.main(["--config", str(run_config("stopped"))]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    saved = load_checkpoint(stopped / "last.pt")["state"]
    assert saved["step"] == 3 and saved["trained_epoch"] is not None
    assert not (stopped / "metrics.jsonl").exists()
    assert train.main(["--resume", str(stopped / "last.pt")]) == 0

    expected, found = (
        load_checkpoint(tmp_path / "straight" / "last.pt"),
        load_checkpoint(stopped / "last.pt"),
    )
    for key, tensor in expected["model"].items():
        assert torch.equal(tensor, found["model"][key]), key
    records = [(tmp_path / "straight" / "metrics.jsonl"), (stopped / "metrics.jsonl")]
    straight_lines, resumed_lines = (
        [json.loads(line) for line in path.read_text().splitlines()] for path in records
    )
    assert [r["step"] for r in resumed_lines] == [r["step"] for r in straight_lines] == [3, 6]
    assert [r["val_mIoU"] for r in resumed_lines] == [r["val_mIoU"] for r in straight_lines]
