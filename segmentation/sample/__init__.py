"""Sample data: procedurally drawn street scenes written in the exact Cityscapes and KITTI road
layouts, and in the folder layout of your own data, for the tests, the demo and the benchmarks.
Training never imports this package.

    python -m segmentation.sample cityscapes DIR [--height 128 --width 256 ...]
    python -m segmentation.sample kitti DIR [--scale 0.25 ...]
    python -m segmentation.sample folder DIR [--mask-format index|rgb ...]
"""

from segmentation.sample.generate import generate_cityscapes, generate_kitti, main

__all__ = ["generate_cityscapes", "generate_kitti", "main"]
