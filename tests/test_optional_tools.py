"""A test that needs a tool the machine lacks skips, saying how to get it; where CI asks for the
tool (SEGMENTATION_REQUIRE_...=1), its absence fails instead. The suite runs here in a child
pytest with the tool hidden; the tool's fixture decides before any training starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each case is a child pytest: a few seconds of imports

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def path_without_browsers() -> str:
    """$PATH without the folders that hold a browser (python runs by its full path)."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    kept = [f for f in folders if not any((Path(f) / name).exists() for name in BROWSERS)]
    return os.pathsep.join(kept)


CASES = {
    "browser": (
        "tests/test_report.py::test_a_browser_shows_the_page_whole",
        {"PATH": path_without_browsers()},
        "SEGMENTATION_REQUIRE_BROWSER",
        "apt-get install chromium",
    ),
    "compiler": (
        "tests/test_precision.py::test_compiled_evaluation_gives_the_eager_scores",
        {"CXX": "no-such-compiler++"},
        "SEGMENTATION_REQUIRE_COMPILER",
        "apt-get install g++",
    ),
}


def run_pytest(test_id: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "-rsf",
        test_id,
    ]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("tool", list(CASES))
def test_a_missing_tool_skips_saying_how_to_get_it(tool):
    test_id, hidden, variable, how = CASES[tool]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **hidden}
    env.pop(variable, None)
    result = run_pytest(test_id, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and "1 skipped" in result.stdout, result.stdout[-3000:]
    assert "is missing" in skipped[0] and how in skipped[0], skipped[0]


@pytest.mark.parametrize("tool", list(CASES))
def test_a_missing_tool_fails_where_it_is_required(tool):
    test_id, hidden, variable, how = CASES[tool]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **hidden, variable: "1"}
    result = run_pytest(test_id, env)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    # pytest.fail in a fixture: an error at set-up, red like a failure.
    assert "1 error" in result.stdout and "skipped" not in result.stdout, result.stdout[-3000:]
    assert f"{variable}=1 makes it required" in result.stdout and how in result.stdout
