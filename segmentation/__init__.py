"""Multiclass semantic segmentation of street scenes (Cityscapes, KITTI road)."""

__version__ = "0.1.0"
