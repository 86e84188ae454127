"""Run the whole benchmark suite; print one combined table and write one combined JSON.

Each benchmark runs as its own process (python bench/NAME.py ... --json DIR/NAME.json), so that
none inherits another's allocator, threads or DataLoader workers; its own table and notes are
printed as it finishes. Then: the machine, the combined table (benchmark, ours, reference, ratio,
target, met?) and DIR/combined.json.

    python bench/run_all.py [--device cuda] [--quick] [--json-dir DIR] [--only data memory]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`

from bench.common import (
    REPO_ROOT,
    machine_info,
    machine_line,
    markdown_table,
    notes_text,
    write_json,
)
from segmentation.devices import resolve_device
from segmentation.errors import UserError

BENCHMARKS = {
    "data": "bench_data.py",
    "train_step": "bench_train_step.py",
    "inference": "bench_inference.py",
    "metrics": "bench_metrics.py",
    "memory": "bench_memory.py",
    "compile": "bench_compile.py",
    "end_to_end": "bench_end_to_end.py",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="the short suite (minutes on a CPU)")
    parser.add_argument(
        "--json-dir",
        type=Path,
        help="where each benchmark's JSON and combined.json go (default runs/bench/DATE-TIME)",
    )
    parser.add_argument("--only", nargs="+", choices=tuple(BENCHMARKS), metavar="NAME")
    parser.add_argument("--threads", type=int, help="passed on to every benchmark (default 1)")
    args = parser.parse_args(argv)
    if args.json_dir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.json_dir = REPO_ROOT / "runs" / "bench" / stamp
    return args


def run_one(name: str, args: argparse.Namespace) -> tuple[dict | None, float, int]:
    """Run bench/NAME.py in a subprocess; (its JSON record or None, seconds, exit code)."""
    path = args.json_dir / f"{name}.json"
    path.unlink(missing_ok=True)
    command = [sys.executable, str(REPO_ROOT / "bench" / BENCHMARKS[name])]
    command += ["--device", args.device, "--json", str(path)]
    if args.quick:
        command.append("--quick")
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    start = time.perf_counter()
    code = subprocess.run(command, cwd=REPO_ROOT).returncode
    seconds = time.perf_counter() - start
    record = json.loads(path.read_text()) if code == 0 and path.is_file() else None
    return record, seconds, code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        resolve_device(args.device)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.json_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    print(f"# Benchmark suite{' (quick)' if args.quick else ''} on {args.device}\n")
    print(f"{machine_line(machine)}\n", flush=True)
    start = time.perf_counter()
    records, timings, failed = {}, {}, []
    for name in args.only or BENCHMARKS:
        record, seconds, code = run_one(name, args)
        timings[name] = seconds
        if record is None:
            failed.append(f"{name} (exit code {code})")
        else:
            records[name] = record
        sys.stdout.flush()
    total = time.perf_counter() - start
    rows = [row for record in records.values() for row in record["results"]]
    print("# Combined results\n")
    print(f"{machine_line(machine)}\n")
    print(markdown_table(rows))
    notes = notes_text(rows)
    if notes:
        print(f"\n{notes}")
    judged = [row for row in rows if row["met"] is not None]
    met = sum(row["met"] for row in judged)
    times = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in timings.items())
    print(f"\ntargets met: {met} of {len(judged)}; wall time {total:.0f}s ({times})")
    for row in judged:
        if not row["met"]:
            print(f"missed: {row['benchmark']}: ratio {row['ratio']:.3f}, target {row['target']}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    combined = {
        "machine": machine,
        "options": {"device": args.device, "quick": args.quick, "threads": args.threads},
        "total_seconds": total,
        "seconds": timings,
        "failed": failed,
        "results": rows,
        "benchmarks": records,
    }
    write_json(args.json_dir / "combined.json", combined)
    print(f"wrote {args.json_dir / 'combined.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
