"""train.compile on CUDA: a short compiled run under bf16 (`true`, the old spelling of
`default`); each CUDA-graph mode with gradient accumulation, a thawing encoder, validation and a
resume, without a fallback; CUDA graphs keeping accumulation exact; DDP under CUDA graphs."""

from __future__ import annotations

import pytest
import torch
from gpu_runs import PYTHON, epochs_logged, train_arguments

from segmentation.checkpoint import load_checkpoint
from segmentation.config import config_from_dict
from segmentation.data.build import scheme_for
from segmentation.model_setup import model_for

pytestmark = pytest.mark.gpu

TORCHRUN = (PYTHON, "-m", "torch.distributed.run", "--standalone")
FALLBACKS = ("train.compile", "skipping cudagraphs")  # our warning, inductor's own note


def needs_cuda(device: str) -> None:
    if device != "cuda":
        pytest.skip("CUDA graphs: needs CUDA")


def no_fallback(output: str, mode: str) -> str:
    """Assert the run compiled in `mode` without falling back; the log line of its first step."""
    fallbacks = [line for line in output.splitlines() if any(w in line for w in FALLBACKS)]
    assert not fallbacks, fallbacks[0]
    first = [line for line in output.splitlines() if f"torch.compile ({mode})" in line]
    assert first, f"no 'torch.compile ({mode})' line"
    return first[0].split("INFO ", 1)[-1]


@pytest.mark.gpu(seconds=90, quick=False)
def test_compiled_training(cityscapes_root, device, script, work, record_property):
    run_dir = work / "runs" / "compile"
    arguments = train_arguments(cityscapes_root, run_dir, device, "--epochs", "1", "--amp", "bf16")
    command = [PYTHON, "train.py", *arguments, "--set", "train.compile=true"]
    script("compile", command, timeout=300).wait()
    record_property("detail", epochs_logged(run_dir, 1))


@pytest.mark.gpu(seconds=240, quick=False)
@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graph_modes_train_and_resume(
    mode, cityscapes_root, device, script, work, record_property
):
    """bf16, batches of 2 with accumulate=2 (3 steps an epoch), the encoder thawing after the
    first step (a recompile), a validation between epochs, then a resume."""
    needs_cuda(device)
    run_dir = work / "runs" / f"compile_{mode}"
    arguments = train_arguments(
        cityscapes_root, run_dir, device, "--epochs", "2", "--amp", "bf16", "--batch-size", "2",
        *("--compile", mode, "--set", "train.accumulate=2"),
        *("--set", "train.freeze_encoder_iters=1"),
    )  # fmt: skip
    first = no_fallback(script(f"compile_{mode}", [PYTHON, "train.py", *arguments]).wait(), mode)
    resume = [PYTHON, "train.py", "--resume", str(run_dir / "last.pt"), "--epochs", "3"]
    no_fallback(script(f"compile_{mode}_resume", resume).wait(), mode)
    record_property("detail", f"{epochs_logged(run_dir, 3)}; {first}")


def weights_update(run_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """(final weights, their change from the initial ones) of a run, flattened: the initial
    weights made again from the run's config and seed, as train.py makes them."""
    checkpoint = load_checkpoint(run_dir / "last.pt")
    config = config_from_dict(checkpoint["config"])
    torch.manual_seed(config.train.seed)
    initial = model_for(config, scheme_for(config.data)).state_dict()
    keys = [key for key, value in initial.items() if value.is_floating_point()]
    final = torch.cat([checkpoint["model"][key].float().flatten() for key in keys])
    start = torch.cat([initial[key].float().flatten() for key in keys])
    return final, final - start


@pytest.mark.gpu(seconds=180, quick=False)
def test_cuda_graphs_keep_gradient_accumulation_exact(
    cityscapes_root, device, script, work, record_property
):
    """float32 SGD, one step over 7 micro-batches of 2 (accumulate=7): reduce-overhead moves the
    weights as default does. A CUDA-graph output made into a .grad and overwritten by the next
    replay would lose most of the step's gradient (pytorch/pytorch#169545). One step only:
    over several, batches of 2 make the two runs drift apart whatever the mode."""
    needs_cuda(device)
    updates = {}
    for mode in ("default", "reduce-overhead"):
        run_dir = work / "runs" / f"accumulate_{mode}"
        arguments = train_arguments(
            cityscapes_root, run_dir, device, "--epochs", "1", "--amp", "off",
            *("--batch-size", "2", "--compile", mode, "--set", "train.accumulate=7"),
            *("--set", "optim.optimizer=sgd", "--set", "optim.momentum=0.0"),
            *("--set", "optim.lr=0.05"),
        )  # fmt: skip
        no_fallback(script(f"accumulate_{mode}", [PYTHON, "train.py", *arguments]).wait(), mode)
        updates[mode] = weights_update(run_dir)[1]
    gap = float((updates["reduce-overhead"] - updates["default"]).norm())
    size = float(updates["default"].norm())
    assert gap <= 0.02 * size, f"updates differ by {gap:.3g}, {gap / size:.1%} of {size:.3g}"
    record_property("detail", f"update gap {gap / size:.2%} of the default mode's update")


@pytest.mark.gpu(seconds=120, quick=False)
def test_ddp_under_cuda_graphs(cityscapes_root, device, script, work, record_property):
    """Two ranks (NCCL on two GPUs, else both on cuda:0 through gloo) in reduce-overhead with
    accumulation (no_sync) and bf16."""
    needs_cuda(device)
    nccl = torch.cuda.device_count() >= 2
    entry = "train.py" if nccl else "tests/gpu/ddp_shared_gpu.py"
    run_dir = work / "runs" / "ddp_cuda_graphs"
    arguments = train_arguments(
        cityscapes_root, run_dir, device, "--epochs", "2", "--batch-size", "2", "--amp", "bf16",
        *("--compile", "reduce-overhead", "--set", "train.accumulate=2"),
    )  # fmt: skip
    command = [*TORCHRUN, "--nproc_per_node=2", entry, *arguments]
    first = no_fallback(script("ddp_cuda_graphs", command, timeout=420).wait(), "reduce-overhead")
    mode = "NCCL" if nccl else "1 GPU through gloo"
    record_property("detail", f"{epochs_logged(run_dir, 2)}; {mode}; {first}")
