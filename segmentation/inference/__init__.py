"""Using a trained model: rebuilt from its checkpoint, predicting, rendering, exporting.

- `model`: the model, its config and label scheme, rebuilt from a checkpoint alone;
  `TrainedModel.predict` runs it on a batch in the chosen precision.
- `predict`: from images to class probabilities: test-time augmentation, sliding windows,
  small-cluster clean-up.
- `render`: predictions for a sequence of frames as overlays, colour masks or label ids;
  `sinks` sends each frame to image files or a video, `encode` makes the image files and
  `video_writer` the H.264 video (through ffmpeg).
- `export`: the model as ONNX.
- `arguments`: the command-line flags that evaluate.py and inference.py share.

It never imports the engine (training): what both need sits below them. Nothing is imported
here, so that a script loads only the modules it uses.
"""
