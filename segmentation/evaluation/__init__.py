"""Official evaluation protocols, computed from counts accumulated on the device.

- `segmentation.evaluation.cityscapes`: Cityscapes "pixel-level semantic labeling" (class and
  category IoU over label ids), as `cityscapesscripts`' evaluator computes it, plus a wrapper
  that runs that evaluator on PNG files for a cross-check.
- `segmentation.evaluation.kitti_road`: the KITTI road devkit's MaxF, AP, PRE, REC, FPR, FNR in
  the image plane, per category (um, umm, uu) and overall.
"""
