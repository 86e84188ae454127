"""The benchmark suite, `bench/run_all.py --quick` on the device, last: its timings need the
machine to itself. Its combined table is kept as OUT/bench_table.md; missed targets are
reported, a benchmark that fails fails the test."""

from __future__ import annotations

import importlib.util

import pytest
from gpu_runs import PYTHON

pytestmark = pytest.mark.gpu

VERDICTS = ("targets met", "missed:", "FAILED:")  # run_all.py's lines after its table


@pytest.mark.gpu(seconds=300, quick=False)
def test_benchmark_suite(device, script, out, record_property):
    if importlib.util.find_spec("segmentation_models_pytorch") is None:
        pytest.skip(
            "segmentation_models_pytorch is not installed: pip install -r requirements-dev.txt"
        )
    command = [PYTHON, "bench/run_all.py", "--device", device, "--quick"]
    run = script("bench", [*command, "--json-dir", str(out / "bench")], timeout=480)
    output = run.wait(expect_success=False)
    table = output[output.find("# Combined results") :] if "# Combined results" in output else ""
    if table:
        (out / "bench_table.md").write_text(table)
    verdicts = [line for line in table.splitlines() if line.startswith(VERDICTS)]
    record_property("detail", " | ".join(verdicts)[:600] or "no combined table")
    assert run.process.returncode == 0, f"run_all.py exit {run.process.returncode} (log {run.log})"
    assert (out / "bench" / "combined.json").is_file()
