#!/usr/bin/env bash
# Stitch rendered frames into an H.264 video, as the original project did:
#   ./make_video.sh FRAMES_DIR OUT.mp4 [FPS=20] [GLOB='*.png']
# e.g. ./make_video.sh renders/stuttgart_00 stuttgart_00.mp4 20 '*_overlay.png'
# Uses ffmpeg from PATH, else the binary that the imageio-ffmpeg package ships.
set -euo pipefail

usage="usage: $0 FRAMES_DIR OUT.mp4 [FPS=20] [GLOB='*.png']"
if [ $# -lt 2 ] || [ $# -gt 4 ]; then
    echo "error: $usage" >&2
    exit 2
fi
frames_dir=$1
output=$2
fps=${3:-20}
pattern=${4:-*.png}

if [ ! -d "$frames_dir" ]; then
    echo "error: frames folder $frames_dir does not exist: render frames with inference.py first" >&2
    exit 2
fi
if ! [[ $fps =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "error: FPS must be a number, got '$fps'" >&2
    exit 2
fi
shopt -s nullglob
# The pattern globs but must not split at spaces: no IFS while it expands.
saved_ifs=$IFS
IFS=
# shellcheck disable=SC2206
matches=("$frames_dir"/$pattern)
IFS=$saved_ifs
if [ ${#matches[@]} -eq 0 ]; then
    echo "error: no frame in $frames_dir matches '$pattern': check the folder and the pattern" >&2
    exit 2
fi
if [ -e "$output" ]; then
    echo "error: $output already exists: choose another name (nothing is overwritten)" >&2
    exit 2
fi

ffmpeg_bin=$(command -v ffmpeg || true)
if [ -z "$ffmpeg_bin" ]; then
    here=$(cd "$(dirname "$0")" && pwd)
    for python in "${PYTHON:-}" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" "$here/.venv/bin/python" python3 python; do
        [ -n "$python" ] || continue
        ffmpeg_bin=$("$python" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())' 2>/dev/null) && break
        ffmpeg_bin=""
    done
fi
if [ -z "$ffmpeg_bin" ]; then
    echo "error: no ffmpeg found: install ffmpeg, or 'pip install imageio-ffmpeg' in the project's environment" >&2
    exit 2
fi

mkdir -p "$(dirname "$output")"
# The pad filter makes odd frame sizes (KITTI's 375 rows) even, as yuv420p requires.
"$ffmpeg_bin" -hide_banner -loglevel error -n \
    -f image2 -framerate "$fps" -pattern_type glob -i "$frames_dir/$pattern" \
    -vf "pad=ceil(iw/2)*2:ceil(ih/2)*2" \
    -c:v libx264 -pix_fmt yuv420p "$output"
echo "wrote $output (${#matches[@]} frames at $fps fps)"
