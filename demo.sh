#!/usr/bin/env bash
# The demo, from a fresh checkout: a virtual environment with the requirements, the sample
# Cityscapes tree (generated, no download), and a training run of configs/demo.yaml in a new
# run directory under runs/. Safe to run again: nothing existing is overwritten.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -r requirements.txt
if [ ! -d data/sample_cityscapes ]; then
    .venv/bin/python -m segmentation.sample cityscapes data/sample_cityscapes \
        --train-per-city 32
fi
run_dir="runs/demo-$(date +%Y%m%d-%H%M%S)"
.venv/bin/python train.py --config configs/demo.yaml --output-dir "$run_dir"
echo "(the commands above run inside the environment: source .venv/bin/activate)"
