"""The names a config may give the model, as plain data: architectures with their options and
defaults, backbones and their short names.

Torch-free on purpose: the config checks `model.*` against it without importing torch, and
`segmentation.models` builds from the same names. It sits outside `segmentation/models/`
because importing anything in that package runs its `__init__`, which imports torch.
tests/test_models.py checks that this table matches the model classes' signatures and the
encoder specs.
"""

from __future__ import annotations

# Each architecture's keyword options with their defaults, as the model class declares them.
ARCHITECTURE_OPTIONS: dict[str, dict[str, object]] = {
    "fpn": {
        "pyramid_channels": 256,
        "segmentation_channels": 128,
        "merge": "add",
        "dropout": 0.2,
        "final_upsampling": 4,
        "pyramid_smoothing": False,
        "branch_norm": "group",
        "align_corners": True,
    },
    "unet": {"num_filters": 32, "residual_decoder": False, "dropout": 0.2},
}

ARCHITECTURES: tuple[str, ...] = tuple(ARCHITECTURE_OPTIONS)

# The torchvision ResNet and ResNeXt backbones an encoder can be built from.
BACKBONES: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnext50_32x4d",
    "resnext101_32x8d",
)

# Short names used by the original project's command line and configs.
BACKBONE_ALIASES: dict[str, str] = {
    "resnext50": "resnext50_32x4d",
    "resnext101": "resnext101_32x8d",
}


def is_backbone(name: str) -> bool:
    """Whether `name` is a backbone or one of their short names."""
    return name in BACKBONES or name in BACKBONE_ALIASES


def backbone_names() -> list[str]:
    """Every name a config may give as its backbone: the full names, then the short ones."""
    return [*BACKBONES, *BACKBONE_ALIASES]


def architecture_options(arch: str) -> dict[str, object]:
    """The keyword options of a known architecture, with their defaults (a copy)."""
    return dict(ARCHITECTURE_OPTIONS[arch])
