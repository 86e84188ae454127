"""The architecture's boundaries: training and inference never import each other, and training
never needs the sample generator."""

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


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("segmentation.engine.loop", ("segmentation.inference", "segmentation.sample")),
        ("segmentation.inference.render", ("segmentation.engine",)),
        ("segmentation.inference.export", ("segmentation.engine",)),
        ("segmentation.evaluation.evaluator", ("segmentation.engine",)),
    ],
)
def test_packages_keep_to_their_side(module, forbidden):
    loaded = modules_loaded_by(module)
    assert module in loaded
    crossing = sorted(name for name in loaded if name.startswith(forbidden))
    assert not crossing, f"{module} imports {crossing}"
