import torch
from torch import nn

from segmentation.models.profiling import TensorMemory, peak_training_memory_mb


def test_tensor_memory_counts_storages_while_they_live():
    existing = torch.ones(1000)
    with TensorMemory() as tracked:
        first = torch.empty(1000)  # 4,000 bytes
        view = first.view(10, 100)  # the same storage: counted once
        second = existing + 1  # 4,000 bytes; `existing` was there before and does not count
        second.add_(1)  # in place: nothing new
        del first, view, second
        third = torch.empty(250, dtype=torch.float64)  # 2,000 bytes, after 8,000 were freed
    assert tracked.peak_bytes == 8000
    assert tracked.current_bytes == 2000
    del third


def test_the_cpu_peak_does_not_depend_on_what_the_process_freed_before():
    # The CPU figure once was the increase of the process's RSS, which an allocator holding
    # freed memory from earlier work serves without growing: 0.0 MB in a busy test worker.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 1))
    images = torch.rand(2, 3, 64, 64)
    fresh, method = peak_training_memory_mb(model, images)
    freed = torch.empty(64 * 2**20, dtype=torch.uint8).fill_(1)
    del freed
    again, _ = peak_training_memory_mb(model, images)
    assert again == fresh
    # A lower bound counted by hand: the gradients of all parameters, and the two activations
    # the backward needs (the first convolution's output, 2x16x64x64 floats, and the ReLU's).
    parameter_bytes = sum(p.numel() * 4 for p in model.parameters())
    activation_bytes = 2 * (2 * 16 * 64 * 64 * 4)
    assert fresh * 2**20 >= parameter_bytes + activation_bytes
    # ... and an upper bound: nothing in this step holds more than three times that.
    assert fresh * 2**20 <= 3 * (parameter_bytes + activation_bytes + 2 * 4 * 64 * 64 * 4)
    assert "tensor storages" in method
