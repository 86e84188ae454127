"""Sample data: procedurally drawn street scenes written in the exact Cityscapes and KITTI road
layouts, and in the folder layout of your own data, for the tests, the demo and the benchmarks.
Training never imports this package.

The generators are `generate.generate_cityscapes`, `generate.generate_kitti` and
`folder.generate_folder`; the command line is `cli.main`. This file imports none of them, so
that importing one module of the package loads only what that module needs.

    python -m segmentation.sample cityscapes DIR [--height 128 --width 256 ...]
    python -m segmentation.sample kitti DIR [--scale 0.25 ...]
    python -m segmentation.sample folder DIR [--mask-format index|rgb ...]
"""
