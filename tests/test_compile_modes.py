"""train.compile modes: the old true/false values, --compile's optional mode, the CPU's
fallbacks (each one warning that says why), and the gradient handling CUDA graphs need."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import train
from segmentation.checkpoint import load_checkpoint
from segmentation.config import COMPILE_MODES, config_from_dict, load_config
from segmentation.engine.compile import clear_gradients, reporting_cuda_graph_skips
from segmentation.errors import UserError

CUDA = torch.device("cuda")  # a device name only: nothing here runs on a GPU


def compile_warnings(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and "train.compile" in record.getMessage()
    ]


def sgd_config(small_config, data_root: Path, run_dir: Path, **train_section) -> dict:
    """One optimizer step an epoch over the 6 val images (3 micro-batches of 2), plain SGD and
    no dropout, so that compiled and eager weights compare closely. (After more steps they
    drift apart: with 2 images a batch, the BatchNorm of the last blocks sees 16 values a
    channel, and the compiled kernels' rounding grows step by step.)"""
    config = small_config(
        data_root,
        run_dir,
        data={"train_split": "val", "image_size": [64, 128]},
        train={"batch_size": 2, "accumulate": 3, "log_images": 0, **train_section},
    )
    config["optim"] = {"optimizer": "sgd", "momentum": 0.0, "lr": 0.01}
    config["model"]["channels_last"] = False
    config["model"]["options"]["dropout"] = 0.0  # compiled code draws other random numbers
    return config


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("given", "expected"),
    [(True, "default"), (False, "off"), (None, "off"), ("off", "off")]
    + [(mode, mode) for mode in COMPILE_MODES],
)
def test_old_true_false_values_still_load(given, expected):
    assert config_from_dict({"train": {"compile": given}}).train.compile == expected


def test_a_checkpoints_old_config_yaml_loads(tmp_path):
    # YAML 1.1: `compile: on` / `yes` are true, `compile: off` is false.
    for word, expected in (("true", "default"), ("on", "default"), ("false", "off")):
        path = tmp_path / f"{word}.yaml"
        path.write_text(f"train:\n  compile: {word}\n")
        assert load_config(path).train.compile == expected


def test_an_unknown_mode_names_the_valid_ones():
    with pytest.raises(UserError) as raised:
        config_from_dict({"train": {"compile": "fast"}})
    assert "train.compile" in str(raised.value)
    assert "reduce-overhead" in str(raised.value)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], None),
        (["--compile"], "default"),
        (["--compile", "reduce-overhead"], "reduce-overhead"),
        (["--compile", "max-autotune", "--epochs", "2"], "max-autotune"),
        (["--compile", "off"], "off"),
    ],
)
def test_compile_flag_takes_an_optional_mode(flags, expected):
    args = train.build_parser().parse_args(flags)
    assert args.compile == expected


def test_gradients_stay_allocated_under_cuda_graphs():
    """Under CUDA graphs a backward adds into the gradients the step began with (the same
    storage), instead of making its own output the gradient; frozen parameters get none."""
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    model[1].weight.requires_grad_(False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    clear_gradients(optimizer, "reduce-overhead", CUDA)
    first = model[0].weight.grad
    assert first is not None and torch.count_nonzero(first) == 0
    assert model[1].weight.grad is None
    for _ in range(2):  # two accumulated micro-batches
        model(torch.ones(1, 3)).sum().backward()
    assert model[0].weight.grad is first  # added into, not replaced
    expected = 2 * model[1].weight.detach().t().expand(2, 3)
    torch.testing.assert_close(first, expected)
    clear_gradients(optimizer, "default", CUDA)  # no CUDA graphs: dropped as usual
    assert model[0].weight.grad is None


def test_a_step_left_out_of_cuda_graphs_warns_once(caplog):
    from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

    with (
        caplog.at_level(logging.WARNING),
        reporting_cuda_graph_skips("max-autotune", CUDA, warn=True),
    ):
        log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to cpu device (primals_1)")
        log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to mutated inputs (2)")
    said = compile_warnings(caplog)
    assert len(said) == 1, said
    assert "max-autotune" in said[0] and "cpu device (primals_1)" in said[0]
    caplog.clear()  # another process of the job: silent
    with (
        caplog.at_level(logging.WARNING),
        reporting_cuda_graph_skips("max-autotune", CUDA, warn=False),
    ):
        log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to cpu device (primals_1)")
    assert caplog.records == []


def test_a_failing_first_step_falls_back_to_default(
    cityscapes_root, tmp_path, small_config, monkeypatch, caplog
):
    """A mode whose compiled step raises on its first call: one warning with the error, then
    the run compiles in the default mode and redoes the step, ending on the weights of a run
    that never compiled (torch.compile stood in for: `default` gives the model back as is)."""
    asked = []

    class FailsToCapture(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self._orig_mod = model  # where Training.bare_model finds the model

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("this step cannot be captured\nand a long traceback")

    def stand_in(model: nn.Module, mode: str | None = None) -> nn.Module:
        asked.append(mode)
        return model if mode == "default" else FailsToCapture(model)

    monkeypatch.setattr(torch, "compile", stand_in)
    runs = {}
    for name, flags in (("eager", []), ("fallback", ["--compile", "max-autotune"])):
        config = write(
            tmp_path / f"{name}.yaml", sgd_config(small_config, cityscapes_root, tmp_path / name)
        )
        with caplog.at_level(logging.WARNING):
            assert train.main(["--config", str(config), *flags]) == 0
        runs[name] = load_checkpoint(tmp_path / name / "last.pt")
    assert asked == ["max-autotune-no-cudagraphs", "default"]  # no CUDA graphs on a CPU
    said = compile_warnings(caplog)
    assert said == [
        "train.compile max-autotune: the first step failed (RuntimeError: this step cannot be "
        "captured): compiling in the default mode"
    ]
    assert runs["fallback"]["state"]["step"] == 1
    for key, value in runs["eager"]["model"].items():
        assert torch.equal(runs["fallback"]["model"][key], value), key
    losses = [
        json.loads((tmp_path / name / "metrics.jsonl").read_text())["train_loss"] for name in runs
    ]
    assert losses[0] == losses[1]  # the failed attempt's losses were not counted


@pytest.mark.slow
def test_reduce_overhead_on_the_cpu_trains_compiled_in_default_mode(
    cxx_compiler, cityscapes_root, tmp_path, small_config, caplog
):
    """The one warning, then a compiled run with gradient accumulation that ends on the eager
    run's weights, saves them under their plain names, and resumes in the mode it was asked
    for; its checkpoint also resumes eagerly and seeds another run (--init-from)."""
    runs = {}
    for name, flags in (("eager", []), ("compiled", ["--compile", "reduce-overhead"])):
        config = write(
            tmp_path / f"{name}.yaml", sgd_config(small_config, cityscapes_root, tmp_path / name)
        )
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="segmentation"):
            assert train.main(["--config", str(config), *flags]) == 0
        runs[name] = load_checkpoint(tmp_path / name / "last.pt")
    said = compile_warnings(caplog)
    assert len(said) == 1, said
    assert "reduce-overhead needs CUDA graphs, which the CPU lacks" in said[0]
    assert "default mode" in said[0]
    assert any("torch.compile (default): the first step" in r.getMessage() for r in caplog.records)
    compiled = runs["compiled"]
    assert compiled["config"]["train"]["compile"] == "reduce-overhead"  # what was asked
    assert compiled["state"]["step"] == 1
    assert list(compiled["model"]) == list(runs["eager"]["model"])  # no "_orig_mod." prefix
    for key, value in runs["eager"]["model"].items():
        torch.testing.assert_close(compiled["model"][key], value, rtol=1e-3, atol=1e-4, msg=key)
    last = tmp_path / "compiled" / "last.pt"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert train.main(["--resume", str(last), "--epochs", "2"]) == 0
    assert len(compile_warnings(caplog)) == 1
    resumed = load_checkpoint(last)
    assert (resumed["state"]["epoch"], resumed["state"]["step"]) == (2, 2)
    # A compiled run's checkpoint resumes eagerly, and seeds a new run with --init-from.
    eager_resume = ["--resume", str(last), "--epochs", "3", "--set", "train.compile=off"]
    assert train.main(eager_resume) == 0
    assert load_checkpoint(last)["state"]["epoch"] == 3
    init = ["--config", str(tmp_path / "eager.yaml"), "--output-dir", str(tmp_path / "init")]
    assert train.main([*init, "--init-from", str(last)]) == 0


@pytest.mark.slow
def test_max_autotune_on_the_cpu_trains_without_a_warning(
    cxx_compiler, cityscapes_root, tmp_path, small_config, caplog
):
    """max-autotune keeps its kernel tuning on a CPU (no CUDA graphs there): no fallback."""
    config = write(
        tmp_path / "run.yaml", sgd_config(small_config, cityscapes_root, tmp_path / "run")
    )
    with caplog.at_level(logging.INFO, logger="segmentation"):
        assert train.main(["--config", str(config), "--compile", "max-autotune"]) == 0
    assert compile_warnings(caplog) == []
    assert any(
        "torch.compile (max-autotune): the first step" in r.getMessage() for r in caplog.records
    )
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint["state"]["step"] == 1
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values())


def test_the_gpu_configs_ask_for_a_step_that_fills_a_gpu():
    paths = sorted((Path(train.__file__).parent / "configs").glob("*_gpu*.yaml"))
    configs = {path.name: load_config(path) for path in paths}
    assert {config.model.arch for config in configs.values()} == {"fpn", "unet"}
    for name, config in configs.items():
        assert config.train.compile in ("reduce-overhead", "max-autotune"), name
        assert config.train.amp == "bf16" and config.model.channels_last, name
        assert config.data.image_size == (512, 1024), name
        assert 8 <= config.train.batch_size <= 16, name
