"""A stop request during validation ends the run within the current validation batch, saves a
last.pt that validates that epoch again on --resume, and exits 128 + the signal; under DDP
every process stops after the same batch, shards of unequal length included."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

import train
from segmentation.checkpoint import load_checkpoint
from segmentation.engine import loop
from segmentation.engine.distributed import DistributedContext
from segmentation.engine.state import StopRequest

pytestmark = pytest.mark.usefixtures("one_thread")


def epoch_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_sigterm_in_validation_stops_at_its_batch_and_resume_validates_again(
    cityscapes_root, tmp_path, small_config, monkeypatch
):
    # 15 training images at batch 4: 3 steps an epoch; 6 validation images: 2 batches.
    settings = {"train": {"epochs": 2, "seed": 3, "log_images": 0}}
    straight = small_config(cityscapes_root, tmp_path / "straight", **settings)
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(straight))
    assert train.main(["--config", str(tmp_path / "a.yaml")]) == 0

    run_dir = tmp_path / "stopped"
    config = small_config(cityscapes_root, run_dir, **settings)
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(config))
    validated_batches = []
    real_evaluate = loop.evaluate

    def evaluate_with_sigterm_after_the_first_batch(predict, batches, matrix, **options):
        def counted(batch):
            validated_batches.append(len(batch["image"]))
            if len(validated_batches) == 1:
                os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler's pre-emption would
            return predict(batch)

        return real_evaluate(counted, batches, matrix, **options)

    monkeypatch.setattr(loop, "evaluate", evaluate_with_sigterm_after_the_first_batch)
    assert train.main(["--config", str(tmp_path / "b.yaml")]) == 128 + signal.SIGTERM
    monkeypatch.undo()

    assert validated_batches == [4]  # the first of 2 batches, not the rest
    saved = load_checkpoint(run_dir / "last.pt")["state"]
    assert saved["epoch"] == 0 and saved["step"] == 3 and saved["epoch_batches"] == 0
    assert saved["trained_epoch"] is not None
    assert not (run_dir / "metrics.jsonl").exists()  # no epoch was recorded half-validated
    assert not (run_dir / "best.pt").exists()

    assert train.main(["--resume", str(run_dir / "last.pt")]) == 0
    expected = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(run_dir / "last.pt")
    assert resumed["state"]["epoch"] == 2 and resumed["state"]["trained_epoch"] is None
    for key, tensor in expected["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    straight_records, resumed_records = epoch_records(tmp_path / "straight"), epoch_records(run_dir)
    assert [record["epoch"] for record in resumed_records] == [1, 2]
    for want, got in zip(straight_records, resumed_records):
        for key in ("step", "train_loss", "val_loss", "val_mIoU", "per_class"):
            assert want[key] == got[key], key


def _agreement_worker(rank: int, init_file: str, stop_after: dict, results) -> None:
    """One process of a 2-process gloo job: rank 0 has 3 validation batches, rank 1 has 2.
    `stop_after[rank]`: the batch after which this rank's stop request arrives."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        training = SimpleNamespace(
            context=DistributedContext(rank, 2, rank, torch.device("cpu"), dist.group.WORLD),
            stop=StopRequest(),
        )
        batches = loop.UntilStopAgreed(training, ["a", "b", "c"][: 3 - rank])
        seen = []
        for batch in batches:
            seen.append(batch)
            if stop_after.get(rank) == len(seen):
                training.stop.requested = True
        results.put((rank, seen, batches.stopped))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop_after", "expected"),
    [
        ({}, {0: (["a", "b", "c"], False), 1: (["a", "b"], False)}),
        # rank 1's request after batch 1: rank 0 stops there too, before its batches b and c
        ({1: 1}, {0: (["a"], True), 1: (["a"], True)}),
        # rank 0's request after batch 3, which rank 1 lacks: rank 1 agrees without a batch
        ({0: 3}, {0: (["a", "b", "c"], True), 1: (["a", "b"], True)}),
    ],
    ids=["no-stop", "stop-on-the-short-shard", "stop-past-the-short-shard"],
)
def test_processes_agree_on_the_validation_batch_to_stop_after(stop_after, expected, tmp_path):
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    init_file = tempfile.mktemp(dir=tmp_path)
    processes = [
        context.Process(target=_agreement_worker, args=(rank, init_file, stop_after, results))
        for rank in range(2)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join(timeout=120)
            assert process.exitcode == 0, "a process hung or failed"
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    found = {rank: (seen, stopped) for rank, seen, stopped in (results.get(), results.get())}
    assert found == expected
