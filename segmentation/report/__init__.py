"""What evaluate.py --report writes, and the charts TensorBoard shows during training.

- `summary`: the numbers (row-normalized confusions, pixel shares, per-image mIoU, PR curves,
  the comparison with an earlier JSON), pure numpy.
- `charts`: matplotlib figures (Agg, no pyplot) as PNG bytes or RGB arrays.
- `images`: input | ground truth | prediction | error-map panels, and the worst and best
  images kept during the evaluation pass.
- `page`: the report folder, index.html and its PNG files.
- `folder`: which files of a report folder are ours (the page marks itself), what --overwrite
  may replace.
- `text`: class and image names as the page and the charts show them.

It imports neither the engine nor the inference package: both sides use it.
"""
