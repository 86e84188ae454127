import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import model_summary

REPO_ROOT = Path(__file__).resolve().parents[1]


# Tiny inputs gain nothing from intra-op threads; on a shared CPU they only spin.
pytestmark = pytest.mark.usefixtures("one_thread")


def figure(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in output:\n{text}"
    return match.group(1)


@pytest.mark.parametrize(
    "model_type, res_blocks, expected",
    [("fpn", "0", "25,588,808"), ("unet", "0", "58,111,560"), ("unet", "1", "69,034,568")],
)
def test_seed_configurations_give_the_models_md_counts(model_type, res_blocks, expected, capsys):
    argv = ["--model_type", model_type, "--unet_res_blocks", res_blocks, "--input_size", "3,64,128"]
    assert model_summary.main(argv) == 0
    out = capsys.readouterr().out
    assert figure(r"Total params: ([\d,]+)", out) == expected
    assert figure(r"True parameter count: ([\d,]+)", out) == expected
    assert float(figure(r"Forward GFLOPs: ([\d.,]+)", out).replace(",", "")) > 0
    assert float(figure(r"forward\+backward \(MB\): ([\d.,]+)", out).replace(",", "")) > 0


@pytest.mark.slow
def test_runs_as_a_script():
    command = [sys.executable, "model_summary.py", "--model_type", "fpn", "--backbone", "resnet18"]
    command += ["--num_classes", "2", "--input_size", "4,64,64", "--batch-size", "2"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, env=environment, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # resnet18 FPN, 8 classes: 13,048,136; 2 classes: -6 x 129; 4 channels: +15 (channel tuner)
    assert "Total params: 13,047,377" in done.stdout
    assert "Forward GFLOPs:" in done.stdout


@pytest.mark.parametrize(
    "input_size, message",
    [
        ("3,100,200", "use 64x192 or 128x256"),
        ("3,512", "three positive integers"),
        ("3,512,x", "three positive integers"),
    ],
)
def test_bad_input_size_is_one_line_and_exit_code_2(input_size, message, capsys):
    argv = ["--model_type", "unet", "--backbone", "resnet18", "--input_size", input_size]
    assert model_summary.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1
