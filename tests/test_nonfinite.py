"""NaN and infinite values: a NaN loss stops training naming the step, skipped batches stop
past their allowance, DDP ranks skip a bad step together, and a NaN prediction in evaluation
names the image."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from command_line import ENV, REPO, assert_one_line_error, run_script, write_yaml

from segmentation.checkpoint import load_checkpoint


@pytest.mark.slow
def test_a_nan_loss_stops_naming_the_step_and_saves_nothing(
    cityscapes_root, tmp_path, small_config
):
    # A learning-rate typo: the weights overflow after the first step.
    config = small_config(cityscapes_root, tmp_path / "run", optim={"lr": 1.0e30})
    result = run_script("train.py", "--config", write_yaml(tmp_path / "c.yaml", config))
    assert_one_line_error(result, "NaN or infinite at step 2", "train.grad_clip")
    assert not (tmp_path / "run" / "last.pt").exists()
    assert not (tmp_path / "run" / "best.pt").exists()


@pytest.mark.slow
def test_skipping_bad_batches_stops_past_the_allowance(cityscapes_root, tmp_path, small_config):
    config = small_config(
        cityscapes_root, tmp_path / "run", optim={"lr": 1.0e30}, train={"skip_nonfinite": 1}
    )
    result = run_script("train.py", "--config", write_yaml(tmp_path / "c.yaml", config))
    assert_one_line_error(result, "2 batches had a NaN or infinite loss", "skip_nonfinite=1")
    assert "skipped a batch with a NaN or infinite loss" in result.stderr


NAN_ON_RANK_1 = """
import os, sys
sys.path.insert(0, {repo!r})
from segmentation.engine import setup

real_build_loss = setup.build_loss


def build_loss(*args, **kwargs):
    loss = real_build_loss(*args, **kwargs)
    if os.environ["RANK"] == "1":
        forward, calls = loss.forward, []

        def nan_on_the_second_step(logits, target):
            calls.append(1)
            value = forward(logits, target)
            return value * float("nan") if len(calls) == 2 else value

        loss.forward = nan_on_the_second_step
    return loss


setup.build_loss = build_loss
import train
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_ddp_ranks_skip_a_nonfinite_step_together(cityscapes_root, tmp_path, small_config):
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1.format(repo=str(REPO)))
    run_dir = tmp_path / "run"
    settings = {"train": {"epochs": 1, "batch_size": 2, "skip_nonfinite": 1}}
    config = write_yaml(tmp_path / "c.yaml", small_config(cityscapes_root, run_dir, **settings))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        str(script), "--config", str(config),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=ENV, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("the ranks fell out of step: the run hung")
    assert process.returncode == 0, stderr[-3000:]
    state = load_checkpoint(run_dir / "last.pt")["state"]
    # 15 images: 8 per rank, 4 steps of 2; the second was skipped on both ranks.
    assert state["skipped_batches"] == 1 and state["step"] == 3, state


def test_a_nan_prediction_is_an_error_naming_the_image(
    trained_checkpoint, tmp_path, monkeypatch, capsys, one_thread
):
    import evaluate
    from segmentation.prediction import trained_model as model_module

    load = model_module.load_trained_model

    def nan_model(*args, **kwargs):
        trained = load(*args, **kwargs)
        forward = trained.model.forward
        trained.model.forward = lambda images: forward(images) * float("nan")
        return trained

    monkeypatch.setattr(model_module, "load_trained_model", nan_model)
    checkpoint = trained_checkpoint("kitti", "road")
    export = tmp_path / "export"
    for extra in ([], ["--export-dir", str(export)]):
        assert evaluate.main(["--checkpoint", str(checkpoint), "--workers", "0", *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1, lines
        assert "NaN" in errors[0] and "_0000" in errors[0], errors[0]
    assert not list(export.rglob("*.png"))
