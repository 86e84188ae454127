"""bench/bench_end_to_end.py: the steady-state window read from a run's step events, the peak
table, the tree it trains on, and (slow) one whole quick run of it against train.py."""

from __future__ import annotations

import json
import math
import os
import statistics

import pytest
import torch

from bench import bench_end_to_end as e2e
from bench.common import peak_tflops
from segmentation.config import config_from_dict
from segmentation.data.cityscapes import find_cityscapes
from segmentation.errors import UserError


def test_steady_rate_counts_only_windows_inside_an_epoch_after_the_skipped_steps():
    # 2 epochs of 5 steps; step n's event at these wall times; 100 s of validation and
    # checkpointing lie between step 5 and step 6.
    times = {1: 10.0, 2: 12.0, 3: 12.5, 4: 13.5, 5: 14.0, 6: 115.0, 7: 116.0, 8: 116.25}
    times |= {9: 117.25, 10: 117.75}
    events = sorted(times.items())
    rate = e2e.steady_rate(events, skip=2, steps_per_epoch=5)
    # Steps 3..5 (from 12.0 to 14.0) and 7..10 (from 115.0 to 117.75): 7 steps in 4.75 s.
    assert (rate.steps, rate.first_step, rate.last_step) == (7, 3, 10)
    assert rate.seconds == pytest.approx(2.0 + 2.75)
    assert rate.images_per_second(images_per_step=4) == pytest.approx(7 * 4 / 4.75)

    second = e2e.steady_rate(events, skip=2, steps_per_epoch=5, first_epoch=1)
    assert (second.steps, second.first_step, second.last_step) == (4, 7, 10)
    assert second.seconds == pytest.approx(2.75)


def test_steady_rate_with_logging_every_few_steps():
    # Events every 2 steps (train.log_every=2) in one epoch of 8: windows 4->6->8 count.
    events = [(2, 1.0), (4, 3.0), (6, 4.0), (8, 6.0)]
    rate = e2e.steady_rate(events, skip=3, steps_per_epoch=8)
    assert (rate.steps, rate.seconds, rate.first_step, rate.last_step) == (4, 3.0, 5, 8)


def test_steady_rate_refuses_a_run_with_nothing_past_the_skipped_steps():
    with pytest.raises(UserError, match="raise --steps"):
        e2e.steady_rate([(1, 0.0), (2, 1.0), (3, 2.0)], skip=3, steps_per_epoch=3)


@pytest.mark.parametrize(
    ("name", "amp", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.0),
        ("NVIDIA H100 PCIe", "bf16", 756.0),
        ("NVIDIA H200", "bf16", 989.0),
        ("NVIDIA H200 NVL", "fp16", 835.5),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("NVIDIA A100 80GB PCIe", "off", 156.0),
        ("NVIDIA L40S", "bf16", 362.0),
        ("NVIDIA L4", "bf16", 121.0),
        ("NVIDIA L40", "bf16", None),  # not L4, not L40S: unlisted
        ("NVIDIA GeForce RTX 4090", "bf16", None),
        (None, "bf16", None),  # the CPU
    ],
)
def test_peak_tflops_matches_whole_model_names(name, amp, expected):
    peak = peak_tflops(name, amp)
    assert (peak[0] if peak else None) == expected


def test_float32_has_no_peak_when_tf32_is_off(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert peak_tflops("NVIDIA H100 80GB HBM3", "off") is None


def test_workers_needed_rounds_up():
    assert e2e.workers_needed(100.0, 30.0) == 4
    assert e2e.workers_needed(90.0, 30.0) == 3
    assert e2e.workers_needed(5.0, 60.0) == 1


def test_compile_setting_follows_what_train_compile_takes():
    takes_modes = True
    try:
        config_from_dict({"train": {"compile": "max-autotune"}})
    except UserError:
        takes_modes = False
    assert e2e.compile_setting("off") is None
    assert e2e.compile_setting("default") == ("default" if takes_modes else True)
    if not takes_modes:
        with pytest.raises(UserError, match="use --compile default"):
            e2e.compile_setting("reduce-overhead")


def test_make_tree_links_frames_up_to_the_count(tmp_path):
    root = tmp_path / "tree"
    e2e.make_tree(root, (64, 128), frames=13, unique=5)
    samples = find_cityscapes(root, "train")
    assert len(samples) == 13
    assert len(find_cityscapes(root, "val")) == 3
    drawn = sorted(root.glob("leftImg8bit/train/*/*_000000_000019_leftImg8bit.png"))
    assert len(drawn) == 5
    linked = sorted(root.glob("leftImg8bit/train/*/*_1000??_000019_leftImg8bit.png"))
    assert len(linked) == 8
    # Frame 5 repeats drawn frame 0 (aachen), image and labels alike.
    image = root / "leftImg8bit/train/aachen/aachen_100005_000019_leftImg8bit.png"
    labels = root / "gtFine/train/aachen/aachen_100005_000019_gtFine_labelIds.png"
    source = root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    assert image.is_file() and labels.read_bytes() == source.read_bytes()
    assert os.stat(labels).st_ino == os.stat(source).st_ino


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")  # the benchmark sets this process's threads
def test_quick_run_measures_train_py_and_its_loader(tmp_path):
    """The whole benchmark, tiny: train.py runs 1 epoch of 7 steps; steps 4..7 are measured."""
    out = tmp_path / "e2e.json"
    arguments = ["--quick", "--skip", "3", "--steps", "4", "--unique-frames", "3"]
    code = e2e.main([*arguments, "--work-dir", str(tmp_path / "work"), "--json", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    steady, flops, loader = record["results"]
    details = record["details"]
    assert details["train_events"] == 7  # one event per optimizer step
    assert details["train_window"]["steps"] == 4
    assert steady["unit"] == loader["unit"] == "images/s" and flops["unit"] == "TFLOP/s"
    assert steady["ours"] == pytest.approx(details["train_images_per_second"])
    bare = statistics.median(details["bare_images_per_second_rounds"])
    assert steady["reference"] == pytest.approx(bare) == pytest.approx(loader["reference"])
    # TFLOP/s = 3 x forward GFLOP per image x images/s / 1000; no peak on a CPU.
    expected = 3 * details["forward_gflops_per_image"] * steady["ours"] / 1e3
    assert flops["ours"] == pytest.approx(expected) and flops["reference"] is None
    per_worker = details["loader_samples_per_second_per_worker"]
    assert per_worker == pytest.approx(loader["ours"] / 2)  # --quick: 2 workers
    assert details["workers_needed"] == max(1, math.ceil(bare / per_worker))
    assert (tmp_path / "work" / "run" / "last.pt").is_file()  # train.py finished its run
