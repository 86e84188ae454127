"""Input normalization on the model's device: uint8 RGB in, the encoder's float32 input out.

Datasets ship uint8 images (a quarter of float32's bytes through the DataLoader's shared
memory and the host-to-device copy); training, validation and inference all normalize them
here, on the device, in one kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Normalizer:
    """(x / 255 - mean) / std of uint8 images, per channel, as one multiply-add
    x * scale + shift with scale = 1 / (255 std) and shift = -mean / std.

    The one kernel also converts uint8 to float32 and writes the output in the memory layout
    asked for, whatever the input's strides: a (B, H, W, 3) batch viewed as (B, 3, H, W) by
    `permute(0, 3, 1, 2)` is already channels_last, so neither layout costs an extra copy.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 channels, got {mean} and {std}")
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)
        # Folded in float64, rounded once to float32: within float32 rounding of
        # albumentations' Normalize, which the datasets used to apply on the CPU.
        self._scale = tuple(1.0 / (255.0 * s) for s in self.std)
        self._shift = tuple(-m / s for m, s in zip(self.mean, self.std))
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(
        self, images: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format
    ) -> torch.Tensor:
        """uint8 (B, 3, H, W), any strides, on any device -> normalized float32 (B, 3, H, W)
        on the same device, laid out in `memory_format`."""
        scale, shift = self._on(images.device)
        out = torch.empty_like(images, dtype=torch.float32, memory_format=memory_format)
        # addcmul promotes the uint8 input to float32 inside the kernel (on CUDA: no
        # intermediate float32 copy of the batch).
        return torch.addcmul(shift, images, scale, out=out)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) as (1, 3, 1, 1) float32 tensors on `device`, made once per device:
        a fresh host-to-device copy every batch would cost a transfer each."""
        if device not in self._constants:
            self._constants[device] = tuple(
                torch.tensor(values, dtype=torch.float32, device=device).view(1, 3, 1, 1)
                for values in (self._scale, self._shift)
            )
        return self._constants[device]

    def __repr__(self) -> str:
        return f"Normalizer(mean={self.mean}, std={self.std})"
