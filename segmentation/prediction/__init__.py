"""A trained model predicting: what evaluate.py, inference.py and training's validation share.

- `trained_model`: the model, its config and label scheme, rebuilt from a checkpoint alone;
  `TrainedModel.predict` runs it on a batch in the chosen precision.
- `predict`: from images to class probabilities: test-time augmentation, sliding windows,
  small-cluster clean-up.

It imports neither the engine (training) nor the inference side (rendering, video), so that
both can use it. Nothing is imported here, so that a script loads only the modules it uses.
"""
