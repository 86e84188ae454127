"""Model size and cost figures: true parameter count, forward FLOPs, measured peak memory."""

import threading
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements, each parameter counted once (nn.Module dedups shared ones)."""
    return sum(p.numel() for p in model.parameters())


def forward_gflops(model: nn.Module, images: torch.Tensor) -> float:
    """GFLOPs of one forward on `images` (B, C, H, W), as torch's FlopCounterMode counts them:
    2 FLOPs per multiply-add of convolutions and matrix products; element-wise ops, norms and
    interpolation are not counted."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(images)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def peak_training_memory_mb(model: nn.Module, images: torch.Tensor) -> tuple[float, str]:
    """Peak memory in MiB of one training forward + backward on `images` (B, C, H, W), and how
    it was measured. Grad buffers of the parameters, allocated by the first backward, count.

    CUDA: torch.cuda.max_memory_allocated above what was allocated before (tensors only).
    CPU: the peak increase of the process's resident set size, sampled by a thread every
    millisecond; activations live from the forward into the backward, far longer than that.
    """
    model.train()
    model.zero_grad(set_to_none=True)
    if images.device.type == "cuda":
        torch.cuda.synchronize(images.device)
        torch.cuda.reset_peak_memory_stats(images.device)
        before = torch.cuda.memory_allocated(images.device)
        model(images).float().mean().backward()
        torch.cuda.synchronize(images.device)
        peak = torch.cuda.max_memory_allocated(images.device) - before
        method = "CUDA max_memory_allocated increase"
    else:
        sampler = RssSampler()
        with sampler:
            model(images).float().mean().backward()
        peak = sampler.peak - sampler.baseline
        method = "CPU peak RSS increase, psutil sampled every 1 ms"
    model.zero_grad(set_to_none=True)
    return peak / 2**20, method


class RssSampler:
    """Context manager recording the baseline and the peak resident set size of this process,
    read by a thread every `interval_s` seconds."""

    def __init__(self, interval_s: float = 0.001) -> None:
        import psutil  # a development dependency: imported only when measuring on the CPU

        self.interval_s = interval_s
        self.process = psutil.Process()
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval_s)

    def __enter__(self) -> "RssSampler":
        self.baseline = self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
