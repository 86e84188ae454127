"""Host syncs per training step (torch.cuda.set_sync_debug_mode): none in the default
configuration nor under bf16; the other configurations are reported. On the CPU the default
configuration runs (its code path checked) and nothing is counted."""

from __future__ import annotations

import collections
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from segmentation.engine.state import Training

pytestmark = pytest.mark.gpu

# name: config sections over the defaults; the judged ones must make no host sync per step.
SCENARIOS: dict[str, dict] = {
    "default": {},
    "bf16": {"train": {"amp": "bf16"}},
    "fp16": {"train": {"amp": "fp16"}},
    "fp16-grad_clip": {"train": {"amp": "fp16", "grad_clip": 1.0}},
    "fp16-sgd": {"train": {"amp": "fp16"}, "optim": {"optimizer": "sgd"}},
    "poly-accumulate2-freeze2": {
        "optim": {"scheduler": "poly"},
        "train": {"accumulate": 2, "freeze_encoder_iters": 2},
    },
    "skip_nonfinite1": {"train": {"skip_nonfinite": 1}},
    "log_every1": {"train": {"log_every": 1}},
}
JUDGED = ("default", "bf16")
SHORT_EPOCH, LONG_EPOCH = 4, 12  # batches per counted epoch


def sync_training(device_name: str, sections: dict) -> Training:
    """The engine's Training for `sections` over the default config (FPN on resnet18, no
    download), built with the functions train.py uses, without a loader yet."""
    from segmentation.config import config_from_dict
    from segmentation.data.build import scheme_for
    from segmentation.engine.distributed import DistributedContext
    from segmentation.engine.run_logger import RunLogger
    from segmentation.engine.setup import StartingPoint, build_optimization, starting_model
    from segmentation.losses import build_loss

    values = {"model": {"backbone": "resnet18", "pretrained": None}}
    for section, keys in sections.items():
        values.setdefault(section, {}).update(keys)
    values.setdefault("train", {})["device"] = device_name
    config = config_from_dict(values)
    device = torch.device(device_name)
    scheme = scheme_for(config.data)
    model = starting_model(config, scheme, device, StartingPoint())
    loss_fn = build_loss(config.loss.name, scheme.num_classes, **config.loss.options).to(device)
    optimizer, scheduler, scaler = build_optimization(config, model, LONG_EPOCH, device)
    return Training(
        config=config,
        scheme=scheme,
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        train_loader=[],
        context=DistributedContext(0, 1, 0, device),
        run_logger=RunLogger(Path(config.output_dir), enabled=False),  # logs nothing
    )


def sync_batches(count: int, classes: int, size: tuple[int, int], cuda: bool) -> list[dict]:
    """Batches as train.py's DataLoader hands them over: uint8 (B, H, W, 3) images and uint8
    targets on the host, pinned for a GPU."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        image = torch.randint(0, 256, (2, *size, 3), generator=generator, dtype=torch.uint8)
        target = torch.randint(0, classes, (2, *size), generator=generator, dtype=torch.uint8)
        if cuda:
            image, target = image.pin_memory(), target.pin_memory()
        batches.append({"image": image, "target": target})
    return batches


def count_syncs(function: Callable[[], object], cuda: bool) -> tuple[int, collections.Counter]:
    """Synchronizing CUDA calls made by `function` (set_sync_debug_mode("warn") turns each
    into a warning), and the source lines that made them."""
    if cuda:
        torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            function()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
                torch.cuda.synchronize()
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    sites = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    return len(syncs), sites


def syncs_per_step(device_name: str, sections: dict) -> tuple[float, collections.Counter]:
    """Host syncs per optimizer step, (syncs of a long epoch - of a short one) / (steps more)
    so that the fixed end-of-epoch reads cancel out; and where the long epoch's came from."""
    from segmentation.engine.loop import train_one_epoch
    from segmentation.engine.state import TrainState

    cuda = device_name.startswith("cuda")
    training = sync_training(device_name, sections)
    size = (256, 512) if cuda else (64, 128)
    batches = sync_batches(LONG_EPOCH, training.scheme.num_classes, size, cuda)

    def epoch(count: int) -> Callable[[], object]:
        def run() -> object:
            training.state = TrainState()  # every epoch from step 0: the same log steps
            training.train_loader = batches[:count]
            return train_one_epoch(training)

        return run

    # Warm-up as long as the short epoch: whatever happens once (cudnn.benchmark's timing, the
    # allocator, lazy initialization) happens here, not in one counted epoch only.
    epoch(SHORT_EPOCH)()
    short, _ = count_syncs(epoch(SHORT_EPOCH), cuda)
    long, sites = count_syncs(epoch(LONG_EPOCH), cuda)
    steps = (LONG_EPOCH - SHORT_EPOCH) / training.config.train.accumulate
    return (long - short) / steps, sites


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_host_syncs_per_training_step(scenario, device, record_property):
    sections = SCENARIOS[scenario]
    if device == "cpu" and scenario != "default":
        pytest.skip("host syncs are counted on CUDA; on the CPU the default scenario runs")
    per_step, sites = syncs_per_step(device, sections)
    if device == "cpu":
        record_property("detail", "ran on the CPU; host syncs are counted on CUDA")
        return
    judged = "expected 0" if scenario in JUDGED else "reported"
    record_property(
        "detail", f"{per_step:.2f} syncs/step ({judged}); sites {dict(sites.most_common(4))}"
    )
    if scenario in JUDGED:
        assert per_step == 0, f"{per_step:.2f} host syncs per step from {dict(sites)}"
