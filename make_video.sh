#!/usr/bin/env bash
# Stitch rendered frames into an H.264 video, as the original project did:
#   ./make_video.sh FRAMES_DIR OUT.mp4 [FPS=20] [GLOB='*.png']
# e.g. ./make_video.sh renders/stuttgart_00 stuttgart_00.mp4 20 '*_overlay.png'
# Uses ffmpeg from PATH, else the binary that the imageio-ffmpeg package ships.
# The frames bash matches reach ffmpeg as a numbered sequence of links in a temporary folder:
# ffmpeg's own glob would read brackets, braces or % in the folder's name as patterns.
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
if [[ $fps =~ ^0+([.]0+)?$ ]]; then
    echo "error: FPS must be more than 0, got '$fps'" >&2
    exit 2
fi
shopt -s nullglob
# Frames in byte order, as ffmpeg's glob sorted them, whatever the locale.
LC_COLLATE=C
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

if ! mkdir -p -- "$(dirname -- "$output")" 2>/dev/null; then
    echo "error: cannot create the folder of $output: choose another output path" >&2
    exit 2
fi
output_path=$(cd -- "$(dirname -- "$output")" && pwd -P)/$(basename -- "$output")
frames_path=$(cd -- "$frames_dir" && pwd -P)
if ! sequence=$(mktemp -d "${TMPDIR:-/tmp}/make_video.XXXXXX" 2>/dev/null); then
    echo "error: cannot create a temporary folder in ${TMPDIR:-/tmp}: set TMPDIR to a writable folder" >&2
    exit 1
fi
trap 'rm -rf -- "$sequence"' EXIT
name=${matches[0]##*/}
extension=${name##*.}
[[ $name == *.* && $extension =~ ^[A-Za-z0-9]+$ ]] || extension=png
index=0
for match in "${matches[@]}"; do
    printf -v link '%s/%08d.%s' "$sequence" "$index" "$extension"
    ln -s -- "$frames_path/${match#"$frames_dir"/}" "$link"
    index=$((index + 1))
done

# The pad filter makes odd frame sizes (KITTI's 375 rows) even, as yuv420p requires.
if ! "$ffmpeg_bin" -hide_banner -loglevel error -n \
    -f image2 -framerate "$fps" -start_number 0 -i "$sequence/%08d.$extension" \
    -vf "pad=ceil(iw/2)*2:ceil(ih/2)*2" \
    -c:v libx264 -pix_fmt yuv420p "$output_path" 2>"$sequence/ffmpeg.log"; then
    # The first line ffmpeg logs is the cause; the lines after it follow from it.
    reason=$(grep -m 1 -v '^[[:space:]]*$' "$sequence/ffmpeg.log" || true)
    rm -f -- "$output_path"  # checked absent above: a partial video of this run
    echo "error: ffmpeg could not make $output from ${#matches[@]} frame(s): ${reason:-no message}" >&2
    exit 1
fi
echo "wrote $output (${#matches[@]} frames at $fps fps)"
