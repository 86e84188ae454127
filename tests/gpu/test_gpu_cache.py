"""data.cache on the GPU machine: the cache built ahead by its command, then short CUDA
trainings whose DataLoader workers read it (pinned memory, two workers); the second run
reuses the same files."""

from __future__ import annotations

import pytest
from gpu_runs import PYTHON, epochs_logged, train_arguments

pytestmark = pytest.mark.gpu

BUILDING = "building data.cache"  # the log line of a build


@pytest.mark.gpu(seconds=120)
def test_training_on_the_device_reads_the_cache_built_ahead(
    cityscapes_root, device, script, work, record_property
):
    cache = work / "cache"
    command = [PYTHON, "-m", "segmentation.data.cache", "--config", "configs/demo.yaml"]
    command += ["--data-root", str(cityscapes_root), "--set", f"data.cache={cache}"]
    built = script("cache_build", command, timeout=120).wait()
    assert BUILDING in built and "is ready" in built, built[-2000:]
    files = sorted(cache.iterdir())
    before = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in files}
    details = []
    for attempt in (1, 2):
        run_dir = work / "runs" / f"cache_{attempt}"
        arguments = train_arguments(cityscapes_root, run_dir, device, "--epochs", "1")
        arguments += ["--batch-size", "4", "--set", f"data.cache={cache}"]
        output = script(f"train_cache_{attempt}", [PYTHON, "train.py", *arguments]).wait()
        assert BUILDING not in output, f"run {attempt} built the cache again"
        details.append(f"run {attempt}: " + epochs_logged(run_dir, 1))
    after = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in files}
    assert after == before, "the cache's files changed between the runs"
    record_property("detail", "; ".join(details))
