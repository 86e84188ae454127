"""Multiclass semantic segmentation of street scenes (Cityscapes, KITTI road)."""

import os

# albumentations asks PyPI for a newer version when it is imported: on a cluster node without
# network that is a warning, and up to 2 s, at the start of every job. A user's own setting wins.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
