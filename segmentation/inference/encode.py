"""Encoding rendered frames as image files: PNG or JPEG on the host, JPEG on a GPU.

Label ids stay PNG whatever the format: JPEG's loss turns ids into other ids.
"""

from __future__ import annotations

import functools
import warnings

import cv2
import numpy as np
import torch

from segmentation.data.io import encode_png
from segmentation.errors import UserError

IMAGE_FORMATS = ("png", "jpg")
LOSSLESS_KINDS = ("labelIds",)  # written as PNG whatever --image-format says


def file_suffix(kind: str, image_format: str) -> str:
    return ".png" if kind in LOSSLESS_KINDS else f".{image_format}"


def encode_on_host(picture: np.ndarray, image_format: str, quality: int) -> bytes:
    """(H, W) or (H, W, 3) RGB uint8 -> the bytes of a PNG or JPEG file. JPEG through OpenCV:
    as fast as torchvision's CPU encoder (1.9 against 1.7 ms a 512x1024 frame), and not
    deprecated."""
    if image_format == "png":
        return encode_png(picture)
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise UserError(f"cannot encode an array of shape {picture.shape} as JPEG")
    return encoded.tobytes()


@functools.cache
def device_jpeg_available(device: torch.device) -> bool:
    """Whether JPEGs can be encoded on `device`: torchvision's nvJPEG encoder, CUDA only, and
    only in builds that have it (tried once on a tiny picture; elsewhere OpenCV encodes)."""
    if device.type != "cuda":
        return False
    try:
        encode_jpeg_on_device(torch.zeros((8, 8, 3), dtype=torch.uint8, device=device), 90)
    except (ImportError, RuntimeError):
        return False
    return True


def encode_jpeg_on_device(picture: torch.Tensor, quality: int) -> bytes:
    """(H, W, 3) uint8 RGB on a CUDA device -> a JPEG file's bytes, encoded there by nvJPEG:
    only the small file crosses to the host. The call blocks until the file is there (nvJPEG
    waits for its stream per image, also when given a list), so the writing threads make it,
    not the thread that runs the model."""
    from torchvision.io import encode_jpeg

    # A stream of this call's own: waiting for it does not wait for the model's next batch on
    # the default stream. `picture` is finished already (the caller waited for its event).
    stream = torch.cuda.Stream(picture.device)
    with torch.cuda.stream(stream):
        planes = picture.permute(2, 0, 1).contiguous()  # nvJPEG takes planar RGB
    # torchvision's encoder runs on a stream of its own, which does not wait for the caller's:
    # the planes must be finished before it starts.
    stream.synchronize()
    with warnings.catch_warnings():
        # torchvision 0.29 marks its image codecs deprecated (for TorchCodec); they still work.
        warnings.simplefilter("ignore")
        encoded = encode_jpeg(planes, quality=quality)
    return encoded.cpu().numpy().tobytes()
