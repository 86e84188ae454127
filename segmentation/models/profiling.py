"""Model size and cost figures: true parameter count, forward FLOPs, measured peak memory."""

import threading
import time
import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakIdKeyDictionary


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
    CPU: the peak of the bytes held by tensor storages created during the step (TensorMemory).
    The process's resident set size is no measure here: an allocator that kept freed memory
    from earlier work serves the step without the RSS growing.
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
        with TensorMemory() as tracked:
            model(images).float().mean().backward()
        peak = tracked.peak_bytes
        method = "CPU peak of tensor storages allocated by the step"
    model.zero_grad(set_to_none=True)
    return peak / 2**20, method


class TensorMemory(TorchDispatchMode):
    """Context manager tracking the bytes of tensor storages that ops create inside it, as long as
    they live, and their peak: on the CPU, what torch.cuda.max_memory_allocated is on a GPU.
    Storages that existed before (parameters, inputs) do not count; views and in-place results
    share a storage already counted. Autograd's backward runs its ops through the same dispatch,
    so gradients and the buffers of the backward count too."""

    def __init__(self) -> None:
        super().__init__()
        self.current_bytes = self.peak_bytes = 0
        self._storages: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._finalizers: list[weakref.ref] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(result):
            if isinstance(leaf, torch.Tensor) and leaf.device.type != "meta":
                self._track(leaf.untyped_storage())
        return result

    def _track(self, storage: torch.UntypedStorage) -> None:
        if storage in self._storages:
            return
        size = storage.nbytes()
        self._storages[storage] = size
        self.current_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        # The storage's Python object lives as long as its memory, so its death is the free.
        self._finalizers.append(weakref.ref(storage, lambda _, size=size: self._free(size)))

    def _free(self, size: int) -> None:
        self.current_bytes -= size


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
