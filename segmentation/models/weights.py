"""Pretrained encoder weights: torchvision's ImageNet checkpoints or a local state_dict file."""

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from segmentation.errors import UserError
from segmentation.models.encoders import ENCODERS, ResNetEncoder

# Keys of a torchvision classification checkpoint that the encoder does not have.
CLASSIFIER_PREFIXES = ("fc.",)
# Wrappers that training scripts commonly put around a state_dict.
WRAPPER_KEYS = ("state_dict", "model")
MAX_LISTED = 3  # mismatches named per kind in an error message


def hub_checkpoint_dir() -> str:
    """The folder where torch.hub (and so torchvision) caches downloaded checkpoints."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def load_encoder_weights(encoder: ResNetEncoder, pretrained: str | os.PathLike | None) -> None:
    """Fill `encoder` in place from `pretrained`.

    pretrained: None keeps the random initialization; "imagenet" loads torchvision's DEFAULT
    weights of the backbone (downloaded once into the torch hub checkpoint folder); anything
    else is the path of a local file holding a torchvision state_dict of that backbone.
    """
    if pretrained is None:
        return
    if not isinstance(pretrained, (str, os.PathLike)):
        raise UserError(
            f"pretrained must be null, 'imagenet' or a weights file path, got {pretrained!r}"
        )
    if pretrained == "imagenet":
        state_dict = _imagenet_state_dict(encoder.name)
        source = f"ImageNet weights of {encoder.name}"
    else:
        state_dict = _local_state_dict(Path(pretrained))
        source = str(pretrained)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    _check_fits(encoder, state_dict, source)
    encoder.load_state_dict(state_dict)


def _imagenet_state_dict(name: str) -> Mapping[str, torch.Tensor]:
    weights = ENCODERS[name].weights.DEFAULT
    try:
        return weights.get_state_dict(progress=True)
    except Exception as error:
        # The download goes through urllib, hub's hash check and torch.load: any of them can
        # fail (offline, proxy, truncated file). The fix is the same for all of them.
        file_name = os.path.basename(weights.url)
        raise UserError(
            f"could not get the ImageNet weights of {name} ({_describe(error)}): "
            f"download {weights.url} and place it as {file_name} in {hub_checkpoint_dir()}, "
            "or set pretrained: null (random init) or a local weights file path to run "
            "without a download"
        ) from error


def _describe(error: Exception) -> str:
    """The exception as one line, for a one-line UserError message."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    # torch.load's unpickling errors run to whole paragraphs; the start says what failed.
    return text if len(text) <= 200 else text[:197] + "..."


def _local_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(
            f"pretrained weights file {path} does not exist: give an existing file, "
            "'imagenet' or null"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(
            f"could not read pretrained weights file {path} ({_describe(error)}): "
            "it must be a state_dict saved with torch.save"
        ) from error
    for key in WRAPPER_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise UserError(
            f"pretrained weights file {path} does not hold a state_dict (a dict of tensors)"
        )
    return loaded


def _check_fits(encoder: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise UserError naming the first mismatches if `state_dict` does not fit `encoder`."""
    expected = encoder.state_dict()
    # Checkpoints older than PyTorch 0.4.1 (some of torchvision's own) lack BatchNorm's
    # num_batches_tracked; BatchNorm fills it in when loading, so it is not a mismatch.
    missing = [
        k for k in expected if k not in state_dict and not k.endswith(".num_batches_tracked")
    ]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k} expected {tuple(v.shape)} found {tuple(state_dict[k].shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    for kind, keys in (
        ("shape mismatch", wrong_shape),
        ("missing keys", missing),
        ("unexpected keys", unexpected),
    ):
        if keys:
            more = f" (+{len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
            problems.append(f"{kind}: {', '.join(keys[:MAX_LISTED])}{more}")
    if problems:
        raise UserError(
            f"{source} does not fit the {encoder.name} encoder; {'; '.join(problems)}: "
            f"give a torchvision {encoder.name} state_dict"
        )
