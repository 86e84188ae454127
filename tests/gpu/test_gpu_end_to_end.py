"""train.py's own throughput on the GPU, end to end: bench/bench_end_to_end.py at 512x1024 crops
of 1024x2048 frames, FPN-ResNeXt50, bf16, batch 8, torch.compile, the host's cores as loader
workers. Its table is kept as OUT/end_to_end_table.md and its JSON as OUT/end_to_end.json. The
goal (>= 700 images/s, >= 0.90 of the bare step) is reported, not asserted: the test fails only
when the benchmark does not run through."""

from __future__ import annotations

import json
import os

import pytest
from gpu_runs import PYTHON

pytestmark = pytest.mark.gpu

GOAL_IMAGES_PER_SECOND = 700
GOAL_RATIO = 0.90


def loader_workers() -> int:
    """The host's cores but two (the training process, the pinning thread), 2 to 16."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, min(16, (cores or 4) - 2))


def benchmark_arguments(device: str) -> list[str]:
    if device == "cpu":  # SEGMENTATION_GPU_TESTS_ON_CPU: the test's code, on tiny sizes
        return ["--quick", "--skip", "3", "--steps", "4", "--unique-frames", "3"]
    return [
        *("--arch", "fpn", "--backbone", "resnext50", "--amp", "bf16", "--batch", "8"),
        *("--size", "512x1024", "--frame-size", "1024x2048", "--compile", "default"),
        *("--workers", str(loader_workers()), "--skip", "20", "--steps", "40"),
    ]


@pytest.mark.gpu(seconds=200, quick=False)
def test_end_to_end_throughput(device, script, out, work, record_property):
    result = out / "end_to_end.json"
    command = [PYTHON, "bench/bench_end_to_end.py", "--device", device]
    command += [*benchmark_arguments(device), "--work-dir", str(work / "end_to_end")]
    run = script("end_to_end", [*command, "--json", str(result)], timeout=420)
    output = run.wait()
    table = output[output.find("## End to end") :] if "## End to end" in output else output
    (out / "end_to_end_table.md").write_text(table)
    record = json.loads(result.read_text())
    steady, flops, loader = record["results"]
    rate, ratio = steady["ours"], steady["ratio"]
    utilization = f", {flops['ratio']:.1%} of peak" if flops["ratio"] is not None else ""
    goal = "met" if rate >= GOAL_IMAGES_PER_SECOND and ratio >= GOAL_RATIO else "not met"
    detail = (
        f"train.py {rate:.0f} img/s = {ratio:.2f} of the bare step ({steady['reference']:.0f}); "
        f"{flops['ours']:.1f} TFLOP/s{utilization}; loader {loader['ours']:.0f} img/s with "
        f"{record['options']['workers']} workers, needs {record['details']['workers_needed']}; "
        f"goal >= {GOAL_IMAGES_PER_SECOND} img/s and >= {GOAL_RATIO}: {goal}"
    )
    print(detail)
    record_property("detail", detail)
    assert rate > 0 and steady["reference"] > 0 and loader["ours"] > 0
