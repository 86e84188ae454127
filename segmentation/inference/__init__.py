"""Using a trained model on frames: rendering, exporting, the scripts' shared flags.

The model itself, rebuilt from its checkpoint and predicting, is `segmentation.prediction`,
which evaluation and training's validation use too.

- `render`: predictions for a sequence of frames as overlays, colour masks or label ids;
  `sinks` sends each frame to image files or a video, `encode` makes the image files and
  `video_writer` the H.264 video (through ffmpeg).
- `export`: the model as ONNX.
- `arguments`: the command-line flags that evaluate.py and inference.py share.

It never imports the engine (training): what both need (`segmentation.prediction`) sits
below them. Nothing is imported here, so that a script loads only the modules it uses.
"""
