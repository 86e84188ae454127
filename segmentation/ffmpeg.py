"""Finding the ffmpeg binary, in the order make_video.sh looks: PATH, then imageio-ffmpeg's."""

from __future__ import annotations

import shutil

from segmentation.errors import UserError


def find_ffmpeg() -> str:
    """The path of an ffmpeg binary: the one on PATH (the system's, which the user chose),
    else the one the imageio-ffmpeg package ships (requirements.txt installs it)."""
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        raise UserError(
            "no ffmpeg found: install ffmpeg, or 'pip install imageio-ffmpeg' in the project's "
            "environment"
        ) from None
