"""The config reference: every key with its help, type, default and allowed values, printed by
`train.py --print-config` and kept in docs/config.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import Field

import train
from segmentation import config_doc
from segmentation.config import Config, _Section, config_from_dict, config_to_dict

REPO = Path(__file__).resolve().parents[1]


def reference_keys(config: Config | None = None) -> dict[str, config_doc.KeyDoc]:
    """The keys of the reference by name; a key two dataset kinds share is listed under each."""
    return {key.key: key for key in reference_list(config)}


def reference_list(config: Config | None = None) -> list[config_doc.KeyDoc]:
    return [key for section in config_doc.config_reference(config) for key in section.keys]


SECTIONS = ("data", "augment", "model", "loss", "optim", "train")  # mappings of keys


def leaf_keys(values: dict, prefix: str = "") -> list[str]:
    """Dotted keys of plain config data, the sections opened (options stay one key)."""
    keys = []
    for name, value in values.items():
        if name in SECTIONS:
            keys += leaf_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_docs_config_md_is_what_the_code_makes():
    on_disk = (REPO / "docs" / "config.md").read_text()
    assert on_disk == config_doc.reference_markdown(), (
        f"docs/config.md is out of date with segmentation/config.py: regenerate it with "
        f"`{config_doc.REGENERATE}`"
    )


@pytest.mark.parametrize("dataset", ["cityscapes", "kitti", "folder"])
def test_every_key_is_in_the_reference_with_a_one_line_help(dataset):
    config = config_from_dict({"data": {"dataset": dataset}})
    saved = leaf_keys(config_to_dict(config))
    # With a config: the keys of its dataset kind alone, each once.
    assert sorted(key.key for key in reference_list(config)) == sorted(saved)
    assert set(saved) <= set(reference_keys())  # without one: every kind's keys
    for key in reference_list():
        assert key.help.strip() and "\n" not in key.help, key.key


def test_a_key_of_one_dataset_kind_is_documented_under_that_kind():
    sections = {section.dataset: section for section in config_doc.config_reference()}
    assert [key.key for key in sections["kitti"].keys] == ["data.val_fraction"]
    assert "data.holdout_cities" in [key.key for key in sections["cityscapes"].keys]
    assert "data.holdout_cities" not in [key.key for key in sections[""].keys]


def test_a_key_without_help_is_named_with_the_fix():
    class Section(_Section):
        documented: int = Field(1, description="has one")
        bare: int = 2

    with pytest.raises(ValueError, match=r"extra\.bare has no help: give it Field"):
        config_doc._sections(Section, "extra.", None)


# key -> (type, default, allowed), written out by hand from segmentation/config.py.
EXPECTED = {
    "output_dir": ("text", "runs/run", ""),
    "data.dataset": (
        "choice",
        "cityscapes",
        "cityscapes, kitti, kitti_semantics, bdd100k, mapillary, folder",
    ),
    "data.image_size": (
        "[integer, integer]",
        "[256, 512]",
        "HEIGHTxWIDTH (e.g. 256x512) or [height, width], each >= 1",
    ),
    "data.holdout_cities": ("list of text", "[]", "city names: a list, or one string ulm,bremen"),
    "data.val_fraction": ("number", "0.1", "0 < x < 1"),
    "data.augment.hflip": ("number", "0.5", "0 <= x <= 1"),
    "data.augment.weather": ("true/false", "false", ""),
    "model.head": ("choice or null", "null", "sigmoid, softmax or null"),
    "model.options": ("mapping", "{}", None),
    "optim.momentum": ("number", "0.9", "0 <= x < 1"),
    "optim.scheduler": ("choice", "plateau", "plateau, poly, cosine, none"),
    "data.workers": ("integer", "4", "x >= 0"),
    "train.epochs": ("integer", "40", "x >= 1"),
    "train.grad_clip": ("number or null", "null", "x > 0 or null"),
    "train.seed": ("integer", "0", "0 <= x < 4294967296"),
    "train.amp": ("choice", "off", "off, bf16, fp16, auto"),
}


@pytest.mark.parametrize("key", EXPECTED)
def test_type_default_and_allowed_values(key):
    documented = reference_keys()[key]
    kind, default, allowed = EXPECTED[key]
    assert (documented.type, documented.default) == (kind, default)
    if allowed is not None:
        assert documented.allowed == allowed


def test_names_kept_in_other_modules_are_listed():
    keys = reference_keys()
    assert keys["model.backbone"].allowed.split(", ")[:2] == ["resnet18", "resnet34"]
    assert "resnext50_32x4d (resnext50)" in keys["model.backbone"].allowed
    assert "fpn: pyramid_channels=256" in keys["model.options"].allowed
    assert "residual_decoder=false" in keys["model.options"].allowed
    assert "bce_dice: bce_weight=0.8" in keys["loss.options"].allowed


# --------------------------------------------------------------------------- train.py


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "run"),
                "data": {"root": str(tmp_path / "nowhere"), "image_size": "64x128"},
                "model": {"backbone": "resnet18"},
                "train": {"epochs": 3},
            }
        )
    )
    return path


def block(out: str, key: str) -> list[str]:
    """The lines printed for one key: `key = value` and its indented lines."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = "))
    end = start + 1
    while end < len(lines) and lines[end].startswith("    "):
        end += 1
    return lines[start:end]


def test_print_config_shows_resolved_values_and_defaults_and_trains_nothing(tmp_path, capsys):
    path = write_config(tmp_path)
    code = train.main(
        ["--print-config", "--config", str(path), "--set", "train.epochs=7", "--lr", "0.02"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert block(out, "train.epochs") == [
        "train.epochs = 7",
        "    passes over the training set (--epochs); excludes train.iters",
        "    type integer, default 40",
        "    allowed: x >= 1",
    ]
    assert block(out, "optim.lr")[0] == "optim.lr = 0.02"
    assert block(out, "data.image_size")[0] == "data.image_size = [64, 128]"
    assert block(out, "model.backbone")[0] == "model.backbone = resnet18"
    assert "    type text, default resnext50" in block(out, "model.backbone")
    assert not (tmp_path / "run").exists()


def test_print_config_without_a_config_shows_the_defaults(capsys):
    assert train.main(["--print-config"]) == 0
    out = capsys.readouterr().out
    assert block(out, "train.epochs")[0] == "train.epochs = 40"
    assert block(out, "data.root")[0] == "data.root = data/cityscapes"
    assert len([line for line in out.splitlines() if " = " in line and line[0] != " "]) == len(
        reference_list()
    )


def test_print_config_shows_a_config_for_another_machine(tmp_path, capsys):
    # fp16 needs a CUDA GPU to train, not to be shown.
    code = train.main(["--print-config", "--config", str(write_config(tmp_path)), "--amp", "fp16"])
    assert code == 0
    assert block(capsys.readouterr().out, "train.amp")[0] == "train.amp = fp16"


def test_print_config_refuses_a_bad_value_in_one_line(tmp_path, capsys):
    code = train.main(["--print-config", "--set", "train.epochs=0"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: train.epochs=0 is not valid"), err


@pytest.mark.slow
def test_the_real_command_prints_and_exits_0(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "--print-config", "--config", "configs/demo.yaml"],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "output_dir = runs/demo" in result.stdout.splitlines()


@pytest.mark.slow
def test_a_reader_that_leaves_early_gets_no_traceback():
    """`train.py --print-config | head -1`: the pipe closes while the reference is printed."""
    process = subprocess.Popen(
        [sys.executable, "train.py", "--print-config"],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, stderr
    assert "Traceback" not in stderr, stderr
