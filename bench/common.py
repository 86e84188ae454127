"""What every benchmark of the suite shares: options, interleaved timing, result rows, output.

Every benchmark compares "ours" against a reference measured in the same process, in turns
(A B, B A, ...), so that a busy machine or a drifting clock hits both sides alike; the ratio
that counts is ours / reference, taken per round and then the median over rounds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from segmentation.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_OPERATORS = {">=": lambda value, bound: value >= bound, "<=": lambda v, b: v <= b}


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """--device, --quick and --json, the options every benchmark takes."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes and fewer repeats (the whole suite in minutes on a laptop CPU)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and OpenCV threads of this process (default 1, as in a DataLoader worker; "
        "0: torch's default, one per core). On a shared machine more threads than idle cores "
        "spin-wait on each other: 2 threads on 2 busy cores made a training step 12x slower",
    )


def apply_threads(threads: int) -> None:
    """Set the CPU threads of torch and OpenCV (0 leaves both at their defaults)."""
    if threads < 0:
        raise UserError(f"--threads must be 0 or more, got {threads}")
    if threads:
        import cv2

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)


def parse_size(text: str, multiple: int = 1) -> tuple[int, int]:
    """A size "HxW" -> (H, W), both positive multiples of `multiple`."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UserError(f"a size must be HxW, e.g. 512x1024, got {text!r}") from None
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise UserError(f"size {text} must have positive sides that are multiples of {multiple}")
    return height, width


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def add_clock_option(parser: argparse.ArgumentParser) -> None:
    """--clock, for benchmarks whose every side runs in this process's own threads."""
    parser.add_argument(
        "--clock",
        choices=("auto", *CLOCKS),
        default="auto",
        help="wall: elapsed time; cpu: this process's CPU time, which a machine shared with "
        "other jobs does not inflate while they hold the cores. auto: cpu on the CPU with "
        "--threads 1, else wall",
    )


def resolve_clock(args: argparse.Namespace) -> str:
    if args.clock != "auto":
        return args.clock
    return "cpu" if args.device == "cpu" and args.threads == 1 else "wall"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    """Seconds of one call of `function` on `clock`, the device's queue drained before and
    after (a CUDA sync waits, so use the wall clock there)."""
    now = CLOCKS[clock]
    synchronize(device)
    start = now()
    function()
    synchronize(device)
    return now() - start


def interleave(
    functions: dict[str, Callable[[], object]],
    rounds: int,
    device: torch.device,
    warmup: int = 1,
    clock: str = "wall",
) -> dict[str, list[float]]:
    """Seconds of each function in each round, after `warmup` untimed rounds.

    The functions take turns, and the order reverses every round (A B C, C B A, ...), so that
    none of them always runs right after the same one.
    """
    order = list(functions)
    for _ in range(warmup):
        for name in order:
            functions[name]()
    synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in order}
    for _ in range(rounds):
        for name in order:
            seconds[name].append(timed(functions[name], device, clock))
        order.reverse()
    return seconds


def paired_ratio(ours: list[float], reference: list[float]) -> float:
    """Median over rounds of ours[i] / reference[i]: each round compares its own neighbours."""
    return statistics.median(a / b for a, b in zip(ours, reference, strict=True))


def ratio_spread(ours: list[float], reference: list[float]) -> tuple[float, float]:
    """(lowest, highest) per-round ratio: how far the rounds disagree, i.e. the noise."""
    ratios = [a / b for a, b in zip(ours, reference, strict=True)]
    return min(ratios), max(ratios)


@dataclass
class Result:
    """One row of a benchmark's table.

    ratio is always ours / reference in `unit`; `target` is "" (reported, not judged) or an
    operator and a bound on the ratio, e.g. ">= 0.80" for a throughput, "<= 1.05" for a time.
    paired: the median of per-round ratios (see `paired_ratio`), which then is the ratio
    rather than the ratio of the two medians shown in ours and reference (on a noisy machine
    the two differ a little; the paired one is the better estimate).
    """

    benchmark: str
    ours: float
    reference: float | None
    unit: str
    target: str = ""
    note: str = ""
    paired: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.paired is not None:
            return self.paired
        if self.reference is None or self.reference == 0:
            return None
        return self.ours / self.reference

    @property
    def met(self) -> bool | None:
        if not self.target or self.ratio is None:
            return None
        operator, bound = self.target.split()
        return TARGET_OPERATORS[operator](self.ratio, float(bound))

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


def format_number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    magnitude = abs(value)
    text = f"{value:.0f}" if magnitude >= 100 else f"{value:.1f}" if magnitude >= 10 else ""
    text = text or (f"{value:.2f}" if magnitude >= 0.1 else f"{value:.3g}")
    return f"{text} {unit}".strip()


def met_text(met: bool | None) -> str:
    return {True: "yes", False: "**NO**", None: "—"}[met]


def markdown_table(rows: list[dict]) -> str:
    """Rows as Result.to_dict() gives them -> a markdown table."""
    lines = [
        "| benchmark | ours | reference | ratio | target | met? |",
        "|---|---:|---:|---:|:---:|:---:|",
    ]
    for row in rows:
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.3f}"
        lines.append(
            f"| {row['benchmark']} | {format_number(row['ours'], row['unit'])} "
            f"| {format_number(row['reference'], row['unit'])} | {ratio} "
            f"| {row['target'] or '—'} | {met_text(row['met'])} |"
        )
    return "\n".join(lines)


def notes_text(rows: list[dict]) -> str:
    notes = [f"- {row['benchmark']}: {row['note']}" for row in rows if row.get("note")]
    return "\n".join(notes)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """What the numbers were measured on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def machine_line(info: dict) -> str:
    gpu = info["gpu"] or "no GPU"
    load = f", load {info['load_average_1min']}" if "load_average_1min" in info else ""
    return (
        f"{info['date']} | {info['cpu']}, {info['cores']} cores{load} | {gpu} | "
        f"torch {info['torch']} | Python {info['python']}"
    )


def report(
    name: str, args: argparse.Namespace, rows: list[Result], details: dict, title: str
) -> dict:
    """Print the benchmark's table (and notes), write its JSON if asked; return the record."""
    record = {
        "benchmark": name,
        "machine": machine_info(),
        "options": {key: str(value) for key, value in vars(args).items() if key != "json"},
        "results": [row.to_dict() for row in rows],
        "details": details,
    }
    print(f"## {title}\n")
    print(markdown_table(record["results"]))
    notes = notes_text(record["results"])
    if notes:
        print(f"\n{notes}")
    print()
    if args.json:
        write_json(args.json, record)
    return record


def write_json(path: Path, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")


# Dense (no sparsity) tensor-core peaks in TFLOP/s: (model, bf16, tf32), matched as a whole word
# in torch.cuda.get_device_name() ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"), the
# first match wins. Where NVIDIA's datasheets print only figures "with sparsity", these are half.
# - H100 SXM and H200 SXM: the "NVIDIA H100 Tensor Core GPU" datasheet and the "NVIDIA H200
#   Tensor Core GPU" datasheet, SXM columns: BF16 1,979, TF32 989 with sparsity. NVL columns of
#   both: BF16 1,671, TF32 835. H100 PCIe column: BF16 1,513, TF32 756.
# - A100 (SXM4 and PCIe alike): the "NVIDIA A100 Tensor Core GPU" datasheet: BF16 312, TF32 156
#   dense (624 and 312 with sparsity).
# - L40S: the "NVIDIA L40S GPU" datasheet: BF16 362.05 dense (733 with sparsity), TF32 183.
# - L4: the "NVIDIA L4 Tensor Core GPU" datasheet: BF16 242, TF32 120 with sparsity.
# fp16 peaks equal the bf16 ones on all of these. Other GPUs (L40, RTX, V100...): no peak.
DENSE_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0, 378.0),
    ("H100 NVL", 835.5, 417.5),
    ("H200 NVL", 835.5, 417.5),
    ("H100", 989.0, 494.5),
    ("H200", 989.0, 494.5),
    ("A100", 312.0, 156.0),
    ("L40S", 362.0, 183.0),
    ("L4", 121.0, 60.0),
)


def peak_tflops(device_name: str | None, amp: str) -> tuple[float, str] | None:
    """(dense tensor-core peak in TFLOP/s, what it is) of the named GPU under `amp` ("bf16",
    "fp16" or "off"), or None: a CPU, an unlisted GPU, or float32 with TF32 turned off.

    float32 runs are held against the TF32 peak: cuDNN computes float32 convolutions (nearly
    all of these models' FLOPs) in TF32 unless torch.backends.cudnn.allow_tf32 is off."""
    if not device_name:
        return None
    for model, bf16, tf32 in DENSE_PEAK_TFLOPS:
        if not re.search(rf"(?<![A-Za-z0-9]){re.escape(model)}(?![A-Za-z0-9])", device_name):
            continue
        if amp in ("bf16", "fp16"):
            return bf16, f"{model} dense {amp} peak"
        if torch.backends.cudnn.allow_tf32:
            return tf32, f"{model} dense TF32 peak (cuDNN's float32 convolutions)"
        return None
    return None
