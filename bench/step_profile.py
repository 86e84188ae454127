"""What bounds a training step: a torch.profiler summary of some steps of it.

On CUDA: the 10 kernels that took the most GPU time, and the fraction of the profiled wall time
in which the GPU ran nothing (no kernel, copy or fill): a large idle fraction means the step is
launch-bound (the GPU waits for the host to issue work), a small one that the kernels listed are
what to make faster. On a CPU: the 10 operators with the most self time, and the fraction of the
wall time outside any operator (Python, the loop's own work).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from bench.common import synchronize

TOP = 10
IDLE_LAUNCH_BOUND = 0.3  # above it, the GPU waits on the host more than it computes


def _union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by (start, end) intervals that may overlap."""
    covered, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        covered += end - max(start, reach)
        reach = end
    return covered


def profile_step(run: Callable[[], None], device: torch.device, steps: int) -> dict:
    """Profile one call of `run` (`steps` training steps, already warm): {"device", "steps",
    "wall_ms", "busy_ms", "idle_fraction", "top": [{"name", "ms", "calls", "share"}]}, times
    summed over the steps, `share` of the busy time."""
    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    synchronize(device)
    with profile(activities=activities) as profiler:
        run()
        synchronize(device)
    events = list(profiler.events())
    if not events:
        raise RuntimeError("torch.profiler recorded no events")
    wall = max(e.time_range.end for e in events) - min(e.time_range.start for e in events)
    times: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    if on_gpu:
        work = [e for e in events if e.device_type != DeviceType.CPU]
        for event in work:
            times[event.name] += event.time_range.end - event.time_range.start
            calls[event.name] += 1
    else:
        work = [e for e in events if e.cpu_parent is None]  # top-level operators
        for event in events:
            times[event.name] += event.self_cpu_time_total
            calls[event.name] += 1
    busy = _union_length([(e.time_range.start, e.time_range.end) for e in work])
    top = sorted(times.items(), key=lambda item: item[1], reverse=True)[:TOP]
    total = sum(times.values()) or 1.0
    return {
        "device": "cuda" if on_gpu else "cpu",
        "steps": steps,
        "wall_ms": wall / 1e3,
        "busy_ms": busy / 1e3,
        "idle_fraction": max(0.0, 1.0 - busy / wall) if wall > 0 else 0.0,
        "top": [
            {"name": name, "ms": value / 1e3, "calls": calls[name], "share": value / total}
            for name, value in top
        ],
    }


def print_profile(key: str, summary: dict) -> None:
    """The summary as a markdown table, with what it says about the step."""
    on_gpu = summary["device"] == "cuda"
    what = "CUDA kernels by GPU time" if on_gpu else "CPU operators by self time"
    steps = summary["steps"]
    print(f"### {key}: engine step under torch.profiler, {steps} steps: top {TOP} {what}\n")
    print(
        "| kernel | ms per step | calls per step | share |"
        if on_gpu
        else "| operator | ms per step | calls per step | share |"
    )
    print("|---|---:|---:|---:|")
    for row in summary["top"]:
        name = row["name"] if len(row["name"]) <= 80 else row["name"][:77] + "..."
        name = name.replace("|", "\\|")
        print(
            f"| {name} | {row['ms'] / steps:.3f} | {row['calls'] / steps:g} | "
            f"{100 * row['share']:.1f}% |"
        )
    idle = summary["idle_fraction"]
    wall = summary["wall_ms"] / steps
    if on_gpu:
        verdict = (
            "launch-bound: the GPU waits for the host"
            if idle > IDLE_LAUNCH_BOUND
            else "kernel-bound: the kernels above take the time"
        )
        print(f"\nGPU idle {100 * idle:.1f}% of {wall:.2f} ms per step: {verdict}\n")
    else:
        print(f"\noutside any operator {100 * idle:.1f}% of {wall:.2f} ms per step\n")
