"""Render a model's predictions over frames: overlays, colour masks, label-id PNGs.

    python inference.py --checkpoint runs/demo/best.pt \\
        --input data/sample_cityscapes/leftImg8bit/demoVideo/stuttgart_00 --output renders/s00
    python inference.py --checkpoint best.pt --input 'frames/*.png' --output out --save color
    python inference.py --checkpoint best.pt --input drive.mp4 --output out
    python inference.py --checkpoint best.pt --input drive.mp4 --output drive_overlay.mp4
    python inference.py --checkpoint best.pt --input frames --output out --image-format jpg
    python inference.py --checkpoint best.pt --export-onnx model.onnx

One PNG (or JPEG: --image-format jpg) per frame and kind, named after the input
(stuttgart_00_000000_000001_leftImg8bit.png -> stuttgart_00_000000_000001_overlay.png); frames
already rendered are skipped. An --output ending in .mp4 or .mkv is one H.264 video of one
kind instead (the overlay, or --save color), at the input video's frame rate or --fps.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segmentation.cli import run_guarded, setup_logging
from segmentation.errors import UserError
from segmentation.inference.arguments import add_prediction_arguments, prediction_options
from segmentation.inference.encode import IMAGE_FORMATS
from segmentation.inference.render import SAVE_KINDS
from segmentation.inference.video_writer import DEFAULT_FPS

logger = logging.getLogger("segmentation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_prediction_arguments(parser, batch_size=4, workers="auto")
    parser.add_argument(
        "--input", help="a folder of frames, a quoted glob pattern, an image, or a video"
    )
    parser.add_argument(
        "--output", type=Path, help="folder for the rendered frames, or a video: NAME.mp4/.mkv"
    )
    parser.add_argument("--save", nargs="+", choices=SAVE_KINDS, default=["overlay"])
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the mask")
    parser.add_argument(
        "--overwrite", action="store_true", help="render frames already done; replace a video"
    )
    parser.add_argument(
        "--image-format",
        choices=IMAGE_FORMATS,
        default="png",
        help="file format of overlays and colour masks (labelIds stay PNG: lossless ids)",
    )
    parser.add_argument("--jpeg-quality", type=int, default=90, help="1 to 100, for jpg")
    parser.add_argument(
        "--fps",
        type=float,
        help=f"frame rate of a video --output (default: the input video's, else {DEFAULT_FPS:g})",
    )
    parser.add_argument("--crf", type=int, default=18, help="H.264 quality: 0 lossless .. 51")
    parser.add_argument(
        "--preset", default="veryfast", help="libx264 preset: ultrafast .. veryslow"
    )
    parser.add_argument("--export-onnx", type=Path, metavar="FILE", help="write an ONNX model")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def run() -> None:
        from segmentation.devices import resolve_device
        from segmentation.inference.render import Renderer, RenderOptions
        from segmentation.inference.video_writer import VideoOptions
        from segmentation.prediction.trained_model import load_trained_model

        if bool(args.input) != bool(args.output) or not (args.input or args.export_onnx):
            raise UserError(
                "give --input and --output to render frames, --export-onnx FILE, or both"
            )
        prediction = prediction_options(args)
        # The export works on a CPU copy: a render that follows keeps the chosen device.
        only_export = args.export_onnx and not args.input
        trained = load_trained_model(
            args.checkpoint,
            resolve_device("cpu" if only_export else args.device),
            amp="off" if only_export else args.amp,
            compile=args.compile and not only_export,
        )
        renderer = None
        if args.input:  # options are checked before a long export
            options = RenderOptions(
                save=args.save,
                alpha=args.alpha,
                prediction=prediction,
                batch_size=args.batch_size,
                workers=args.workers,
                overwrite=args.overwrite,
                image_format=args.image_format,
                jpeg_quality=args.jpeg_quality,
                video=VideoOptions(fps=args.fps, crf=args.crf, preset=args.preset),
            )
            renderer = Renderer(trained, options)
            renderer.frames(args.input, args.output)
        if args.export_onnx:
            from segmentation.inference.export import export_onnx

            export_onnx(trained, args.export_onnx)
            print(f"wrote {args.export_onnx}")
        if renderer is None:
            return
        report = renderer.run(args.input, args.output)
        print(
            f"rendered {report.rendered} frames to {args.output} "
            f"({report.frames_per_second:.1f} frames/s); {report.skipped_done} already done"
        )
        if report.unreadable:
            print(f"{len(report.unreadable)} unreadable frame(s) skipped:")
            for line in report.unreadable:
                print(f"  {line}")

    return run_guarded(run, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
