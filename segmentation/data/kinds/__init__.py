"""Dataset kinds: one module per dataset layout (cityscapes.py, kitti.py, folder.py), each
holding everything the toolkit knows about it (base.DatasetKind), and catalog.py, the one dict
that names them. Nothing outside these modules branches on a dataset's name."""
