# Training, evaluation and inference on a CUDA GPU.
#   docker build -t segmentation .
#   docker run --gpus all --shm-size=8g -v /data/cityscapes:/data/cityscapes \
#       -v "$PWD/runs:/app/runs" segmentation python train.py --config configs/...
# PyTorch (with torchvision) and CUDA come from the base image; the rest from requirements.txt.
FROM pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ffmpeg for make_video.sh; a C compiler for --compile (inductor and triton build small
# launchers at run time). The distribution's current versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, so that code changes do not reinstall them. The constraint keeps the
# base image's CUDA build of torch: pip fails instead of replacing it with another build.
COPY requirements.txt .
RUN python -c "import torch; print('torch==' + torch.__version__)" > /tmp/constraints.txt \
    && pip install --no-cache-dir -c /tmp/constraints.txt -r requirements.txt \
    && python -c "import cv2, torch, torchvision; print(torch.__version__, torch.version.cuda, torchvision.__version__, cv2.__version__)"

COPY . .
ENV PYTHONPATH=/app

CMD ["python", "train.py", "--help"]
