"""The architecture's boundaries: training and inference never import each other, training
never needs the sample generator, and the report (used by both) imports neither."""

import os
import subprocess
import sys

import pytest

LOADED = "import sys, {module}; print(' '.join(sorted(sys.modules)))"


def modules_loaded_by(module: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", LOADED.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(result.stdout.split())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        # matplotlib too: training draws its charts only once an epoch, and imports it then.
        (
            "segmentation.engine.loop",
            ("segmentation.inference", "segmentation.sample", "matplotlib"),
        ),
        ("segmentation.inference.render", ("segmentation.engine",)),
        ("segmentation.inference.export", ("segmentation.engine",)),
        ("segmentation.evaluation.evaluator", ("segmentation.engine",)),
        # The report serves both sides, so it may import neither.
        ("segmentation.report.page", ("segmentation.engine", "segmentation.inference")),
        ("segmentation.report.images", ("segmentation.engine", "segmentation.inference")),
        ("segmentation.engine.run_logger", ("segmentation.inference",)),
    ],
)
def test_packages_keep_to_their_side(module, forbidden):
    loaded = modules_loaded_by(module)
    assert module in loaded
    crossing = sorted(name for name in loaded if name.startswith(forbidden))
    assert not crossing, f"{module} imports {crossing}"


# Counts the requests made while the package's albumentations import runs, and refuses them.
NO_NETWORK = """
import urllib.request
calls = []
def refuse(self, *args, **kwargs):
    calls.append(args)
    raise OSError("no network here")
urllib.request.OpenerDirector.open = refuse
import segmentation.data.transforms
print(len(calls))
"""


@pytest.mark.slow
def test_importing_the_package_asks_no_server_for_updates():
    """albumentations checks PyPI for a newer version at import, unless told not to: a cluster
    node without network would pay a timeout and print a warning at every job's start."""
    environment = dict(os.environ)
    environment.pop("NO_ALBUMENTATIONS_UPDATE", None)
    result = subprocess.run(
        [sys.executable, "-c", NO_NETWORK], capture_output=True, text=True, env=environment
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0"], result.stdout + result.stderr
    assert "version info" not in result.stderr
