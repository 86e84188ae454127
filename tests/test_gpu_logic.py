"""The logic of GPU-only code paths, run on the CPU with fakes: which GPU a torchrun process
takes, which stream a copy's event is recorded on, how ranks agree on a stop, and how the
DDP wrapper changes when the encoder is unfrozen."""

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from segmentation.engine import distributed
from segmentation.engine.distributed import DistributedContext, any_process
from segmentation.errors import UserError
from segmentation.inference import render


def fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_each_torchrun_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    fake_gpus(monkeypatch, 4)
    # --device cuda / auto resolve to cuda:LOCAL_RANK first (devices.resolve_device).
    assert distributed.resolve_device("cuda", 2) == torch.device("cuda", 2)
    assert distributed._rank_device(torch.device("cuda", 2), 2) == torch.device("cuda", 2)
    assert distributed._rank_device(torch.device("cuda"), 3) == torch.device("cuda", 3)


def test_a_fixed_gpu_under_torchrun_is_one_line(monkeypatch):
    fake_gpus(monkeypatch, 4)
    with pytest.raises(UserError, match="every process on one GPU.*LOCAL_RANK"):
        distributed._rank_device(torch.device("cuda", 0), 1)


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    fake_gpus(monkeypatch, 2)
    with pytest.raises(UserError, match="local rank 2 has no GPU.*shows 2"):
        distributed._rank_device(torch.device("cuda"), 2)


def test_the_copy_event_is_recorded_on_the_stream_of_the_tensors_gpu(monkeypatch):
    asked, recorded = [], []

    class FakeEvent:
        def record(self, stream=None):
            recorded.append(stream)

    def current_stream(device=None):
        asked.append(device)
        return f"stream of {device}"

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    render.copy_finished_event(torch.device("cuda", 1))
    assert asked == [torch.device("cuda", 1)]
    assert recorded == ["stream of cuda:1"]  # not the current device's (cuda:0) stream


@pytest.fixture
def one_process_group(tmp_path):
    """A real gloo process group of one process (DDP and collectives work as in a job)."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield dist.group.WORLD
    dist.destroy_process_group()


def test_ranks_agree_on_a_stop_on_cpu_tensors_of_the_control_group(one_process_group, monkeypatch):
    seen = []
    real_all_reduce = dist.all_reduce

    def all_reduce(tensor, *args, **kwargs):
        seen.append((tensor.device.type, kwargs.get("group")))
        return real_all_reduce(tensor, *args, **kwargs)

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    context = DistributedContext(0, 2, 0, torch.device("cpu"), one_process_group)
    assert any_process(True, context) is True and any_process(False, context) is False
    assert seen == [("cpu", one_process_group)] * 2
    # A single process needs no agreement at all.
    seen.clear()
    assert any_process(True, DistributedContext(0, 1, 0, torch.device("cpu"))) is True
    assert seen == []


def test_ddp_stops_looking_for_unused_parameters_once_the_encoder_is_unfrozen(
    one_process_group,
):
    from segmentation.engine.loop import optimizer_step
    from segmentation.engine.setup import wrap_model
    from segmentation.engine.state import TrainState
    from segmentation.models import build_model

    model = build_model("fpn", "resnet18", 2, pyramid_channels=32, segmentation_channels=32)
    config = SimpleNamespace(
        train=SimpleNamespace(freeze_encoder_iters=2, compile="off", grad_clip=None)
    )
    context = DistributedContext(0, 2, 0, torch.device("cpu"), one_process_group)
    state = TrainState()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    training = SimpleNamespace(
        config=config,
        context=context,
        state=state,
        model=wrap_model(model, config, context, state),
        bare_model=model,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        compile_mode="off",
        device=context.device,
    )
    assert training.model.find_unused_parameters
    optimizer_step(training)
    assert training.model.find_unused_parameters  # step 1 of 2: still frozen
    optimizer_step(training)
    assert not training.model.find_unused_parameters
    assert training.model.module is model
