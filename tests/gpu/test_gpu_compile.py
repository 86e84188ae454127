"""train.compile: a short compiled run under bf16."""

from __future__ import annotations

import pytest
from gpu_runs import PYTHON, epochs_logged, train_arguments

pytestmark = pytest.mark.gpu


@pytest.mark.gpu(seconds=90, quick=False)
def test_compiled_training(cityscapes_root, device, script, work, record_property):
    run_dir = work / "runs" / "compile"
    arguments = train_arguments(cityscapes_root, run_dir, device, "--epochs", "1", "--amp", "bf16")
    command = [PYTHON, "train.py", *arguments, "--set", "train.compile=true"]
    script("compile", command, timeout=300).wait()
    record_property("detail", epochs_logged(run_dir, 1))
