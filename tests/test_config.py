"""The run configuration: what a user writes means what they mean, and every mistake is one
line naming the key, the value given and what is allowed, before any data is read."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import train
from segmentation.config import (
    Config,
    DataConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from segmentation.errors import UserError

REPO = Path(__file__).resolve().parents[1]
# Refusals come before any data is read: the data root need not exist.
NO_DATA = "/nonexistent/cityscapes"


def tiny_config(run_dir: Path, **sections) -> dict:
    """A small run config; sections update it."""
    config = {
        "output_dir": str(run_dir),
        "data": {"root": NO_DATA, "labels": "categories", "image_size": [32, 64], "workers": 0},
        "model": {"arch": "fpn", "backbone": "resnet18", "pretrained": "imagenet"},
        "loss": {"name": "bce_dice"},
        "optim": {"optimizer": "adam", "lr": 0.001, "scheduler": "plateau"},
        "train": {"epochs": 1, "batch_size": 4, "device": "cpu"},
    }
    for section, values in sections.items():
        config[section].update(values)
    return config


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def resolve(*args) -> Config:
    return train.resolve_config(train.build_parser().parse_args([str(arg) for arg in args]))


def refused(capsys, *args) -> str:
    """Run train.py's main, which must exit 2 with one error line and no traceback."""
    code = train.main([str(arg) for arg in args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- accepted


def test_yaml_off_means_off_for_amp(tmp_path):
    path = tmp_path / "c.yaml"
    text = yaml.safe_dump(tiny_config(tmp_path / "run"))
    path.write_text(text.replace("train:\n", "train:\n  amp: off\n"))
    assert yaml.safe_load(path.read_text())["train"]["amp"] is False  # what YAML 1.1 reads
    assert resolve("--config", path).train.amp == "off"


def test_set_amp_off_and_pretrained_null_are_accepted(tmp_path):
    config_path = write_config(tmp_path, tiny_config(tmp_path / "run", train={"amp": "bf16"}))
    config = resolve(
        "--config", config_path, "--set", "train.amp=off", "--set", "model.pretrained=null"
    )
    assert config.train.amp == "off"
    assert config.model.pretrained is None


def test_flags_left_out_change_nothing(tmp_path):
    config_path = write_config(tmp_path, tiny_config(tmp_path / "run", train={"epochs": 3}))
    config = resolve("--config", config_path)
    assert config.train.epochs == 3 and config.optim.lr == 0.001
    assert resolve("--config", config_path, "--epochs", "5").train.epochs == 5


def test_changing_the_loss_refills_a_head_that_came_from_the_loss(tmp_path):
    config_path = write_config(tmp_path, tiny_config(tmp_path / "run"))
    assert resolve("--config", config_path).model.head == "sigmoid"
    assert resolve("--config", config_path, "--set", "loss.name=ce").model.head == "softmax"


# --------------------------------------------------------------------------- refused


# Flags on top of a valid config file -> fragments of the one error line.
BAD_FLAGS = {
    "lr nan": (["--lr", "nan"], ["optim.lr=nan", "finite number"]),
    "lr inf": (["--lr", "inf"], ["optim.lr=inf", "finite number"]),
    "key below a value": (
        ["--set", "train.epochs.foo=1"],
        ["train.epochs.foo", "train.epochs holds a value (1)"],
    ),
    "loss option type": (
        ["--set", "loss.options.bce_weight=abc"],
        ["loss.options.bce_weight='abc'", "number"],
    ),
    "loss option range": (
        ["--set", "loss.options.bce_weight=2"],
        ["loss.options", "bce_weight must lie in [0, 1]"],
    ),
    "plateau factor": (
        ["--set", "optim.plateau_factor=2"],
        ["optim.plateau_factor=2", "less than 1"],
    ),
    "weight decay": (
        ["--set", "optim.weight_decay=-1"],
        ["optim.weight_decay=-1", "greater than or equal to 0"],
    ),
    "hflip": (["--set", "data.augment.hflip=5"], ["data.augment.hflip=5", "less than or equal"]),
    "crop scale": (
        ["--set", "data.augment.crop_scale=[2,3]"],
        ["data.augment.crop_scale=[2, 3]", "0 < min <= max <= 1"],
    ),
    "unknown model option": (
        ["--set", "model.options.filters=8"],
        ["model.options has unknown option(s) filters", "valid options are pyramid_channels"],
    ),
    "unknown loss option": (
        ["--set", "loss.options.weight=0.5"],
        ["loss.options has unknown option(s) weight", "valid options are bce_weight"],
    ),
    "unknown key": (
        ["--set", "unknown.key=1"],
        ["unknown config key(s) unknown", "valid keys are output_dir, data"],
    ),
    "amp choice": (
        ["--set", "train.amp=fp32"],
        ["train.amp='fp32'", "'off', 'bf16', 'fp16' or 'auto'"],
    ),
    "fp16 on a cpu": (
        ["--amp", "fp16", "--device", "cpu"],
        ["train.amp='fp16' needs a CUDA GPU", "bf16"],
    ),
    "warmup with plateau": (
        ["--set", "optim.warmup_iters=10"],
        ["optim.warmup_iters=10", "plateau"],
    ),
    "head against loss": (
        ["--set", "model.head=softmax"],
        ["model.head 'softmax' does not fit loss.name 'bce_dice'"],
    ),
    "image size": (["--image-size", "256by512"], ["data.image_size='256by512'", "256x512"]),
    "grad clip": (["--set", "train.grad_clip=0"], ["train.grad_clip=0", "greater than 0"]),
    "bad --set yaml": (["--set", "data.root=[x"], ["--set data.root", "not valid YAML"]),
}


@pytest.mark.parametrize("case", BAD_FLAGS)
def test_a_bad_value_is_one_line_before_any_work(case, tmp_path, capsys):
    flags, fragments = BAD_FLAGS[case]
    config_path = write_config(tmp_path, tiny_config(tmp_path / "run"))
    line = refused(capsys, "--config", config_path, *flags)
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_real_command_exits_2_with_one_line(tmp_path):
    config_path = write_config(tmp_path, tiny_config(tmp_path / "run"))
    result = subprocess.run(
        [sys.executable, "train.py", "--config", config_path, "--set", "train.epochs.foo=1"],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error: config key 'train.epochs.foo' does not exist: train.epochs holds a value (1), "
        "not keys; set it as train.epochs=VALUE"
    ]


# A config file's text -> fragments of the one error line.
BAD_FILES = {
    "not utf-8": ("data:\n  root: /données\n".encode("latin-1"), ["bad.yaml", "not UTF-8"]),
    "not yaml": (
        b"data:\n  root: [unclosed\ntrain: {epochs: 1\n",
        ["bad.yaml", "not valid YAML", "line"],
    ),
    "not a mapping": (b"- data\n- model\n", ["bad.yaml", "mapping of sections"]),
    "a section not a mapping": (b"train: 3\n", ["train=3 is not valid", "mapping"]),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_config_file_is_one_line(case, tmp_path, capsys):
    content, fragments = BAD_FILES[case]
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    line = refused(capsys, "--config", path)
    for fragment in fragments:
        assert fragment in line, line


# --------------------------------------------------------------------------- the module


def test_every_shipped_config_loads():
    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        config = load_config(path)
        assert config.model.head in ("sigmoid", "softmax"), path


@pytest.mark.parametrize(
    "name", ["cityscapes_fpn_r50_80k", "cityscapes_fpn_r101_80k", "cityscapes_unet_r50_80k"]
)
def test_the_protocol_configs_say_what_the_published_runs_did(name):
    """mmsegmentation's Cityscapes 512x1024 80k recipe (configs/_base_: cityscapes.py,
    schedule_80k.py; 4 GPUs x 2 images), as docs/reproducing.md lists it."""
    config = load_config(REPO / "configs" / f"{name}.yaml")
    data, optim, train = config.data, config.optim, config.train
    assert data.dataset == "cityscapes" and data.labels == ["official"]
    assert data.base_size == (1024, 2048) and data.crop_size == (512, 1024)
    assert data.augment.scale == (0.5, 2.0) and data.augment.cat_max_ratio == 0.75
    assert data.augment.hflip == 0.5 and data.augment.photometric
    assert config.model.head == "softmax" and config.loss.name == "ce"
    assert config.model.pretrained == "imagenet" and config.model.sync_batchnorm
    assert (optim.optimizer, optim.lr, optim.momentum, optim.weight_decay) == (
        "sgd",
        0.01,
        0.9,
        0.0005,
    )
    assert (optim.scheduler, optim.poly_power, optim.min_lr) == ("poly", 0.9, 0.0001)
    assert (train.iters, train.val_every, train.save_every) == (80000, 8000, 8000)
    assert train.batch_size * train.accumulate == 8 and train.val_mode == "whole"
    assert train.amp == "off"


FLOAT_KEYS = [
    ("optim", "lr"),
    ("optim", "weight_decay"),
    ("optim", "momentum"),
    ("optim", "plateau_factor"),
    ("optim", "poly_power"),
    ("optim", "min_lr"),
    ("train", "grad_clip"),
]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_no_float_takes_nan_or_inf(bad):
    cases = [({section: {key: bad}}, f"{section}.{key}") for section, key in FLOAT_KEYS]
    cases.append(({"data": {"dataset": "kitti", "val_fraction": bad}}, "data.val_fraction"))
    cases += [
        ({"data": {"augment": {"hflip": bad}}}, "data.augment.hflip"),
        ({"data": {"augment": {"color": bad}}}, "data.augment.color"),
        ({"data": {"augment": {"crop_scale": [0.5, bad]}}}, "data.augment.crop_scale"),
        ({"loss": {"class_weights": [1.0, bad]}}, "loss.class_weights"),
        ({"loss": {"options": {"bce_weight": bad}}}, "loss.options.bce_weight"),
        ({"model": {"options": {"dropout": bad}}}, "model.options.dropout"),
    ]
    for values, key in cases:
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            config_from_dict(values)


def test_sizes_labels_and_booleans_in_their_usual_spellings():
    as_text = config_from_dict({"data": {"image_size": "128x256", "labels": "road,car"}})
    as_list = config_from_dict({"data": {"image_size": [128, 256], "labels": ["road", "car"]}})
    assert as_text.data.image_size == as_list.data.image_size == (128, 256)
    assert as_text.data.labels == ["road,car"] and as_list.data.labels == ["road", "car"]
    switched = config_from_dict({"data": {"coarse": "on"}, "model": {"channels_last": "no"}})
    assert switched.data.coarse is True and switched.model.channels_last is False
    assert config_from_dict({"optim": {"lr": "1e-3"}}).optim.lr == 0.001  # YAML 1.1: a string
    assert config_from_dict({"optim": {"scheduler": False}}).optim.scheduler == "none"


def test_saved_dicts_are_plain_and_load_back():
    config = config_from_dict(
        {"loss": {"class_weights": [1, 2]}, "model": {"options": {"dropout": 0.1}}}
    )
    saved = config_to_dict(config)
    assert saved["data"]["image_size"] == [256, 512]
    assert saved["data"]["augment"]["crop_scale"] == [0.81, 1.0]
    assert saved["loss"]["class_weights"] == [1.0, 2.0]
    assert yaml.safe_load(yaml.safe_dump(saved)) == saved
    assert config_from_dict(saved) == config


def test_an_old_checkpoint_dict_without_a_head_still_loads():
    saved = config_to_dict(config_from_dict({"loss": {"name": "ce"}}))
    del saved["model"]["head"]
    assert config_from_dict(saved).model.head == "softmax"


def test_overrides_set_null_and_keep_the_original():
    config = config_from_dict({})
    changed = apply_overrides(config, {"model.pretrained": None, "train.epochs": 2})
    assert changed.model.pretrained is None and changed.train.epochs == 2
    assert config.model.pretrained == "imagenet" and config.train.epochs == 40


def test_sections_are_built_and_copied_the_pydantic_way():
    data = DataConfig(root="somewhere", image_size=(32, 64))
    moved = data.model_copy(update={"root": "elsewhere"})
    assert (moved.root, moved.image_size, data.root) == ("elsewhere", (32, 64), "somewhere")
    assert config_from_dict({}).optim.model_dump()["lr"] == 0.001


# --------------------------------------------------------------------------- YAML keys


def test_a_key_twice_in_a_config_file_is_refused_naming_it_and_its_lines(tmp_path, capsys):
    path = tmp_path / "twice.yaml"
    path.write_text(
        f"output_dir: {tmp_path / 'run'}\n"  # line 1
        "optim:\n"  # 2
        "  lr: 0.01\n"  # 3
        "  optimizer: sgd\n"  # 4
        "  lr: 0.0001\n"  # 5
    )
    line = refused(capsys, "--config", path)
    assert "twice.yaml" in line and "'lr'" in line and "lines 3 and 5" in line, line
    assert not (tmp_path / "run").exists()


def test_a_section_twice_is_refused_too(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  epochs: 2\ndata:\n  workers: 0\ntrain:\n  batch_size: 2\n")
    with pytest.raises(UserError, match=r"key 'train' on lines 1 and 5"):
        load_config(path)


def test_yes_and_true_are_one_key(tmp_path):
    # YAML 1.1 reads both as the boolean true: the second would replace the first.
    path = tmp_path / "twice.yaml"
    path.write_text("model:\n  options: {yes: 1, true: 2}\n")
    with pytest.raises(UserError, match=r"key 'true' twice on line 2"):
        load_config(path)


def test_a_key_twice_in_classes_yaml_is_refused_naming_it_and_its_line(tmp_path):
    from segmentation.data.folder import read_classes

    (tmp_path / "classes.yaml").write_text(
        "mask_format: rgb\n"  # line 1
        "classes:\n"  # 2
        "  - name: road\n"  # 3
        "    color: [128, 64, 128]\n"  # 4
        "    name: lane\n"  # 5
    )
    with pytest.raises(UserError) as error:
        read_classes(tmp_path)
    message = str(error.value)
    assert "classes.yaml" in message and "'name'" in message and "lines 3 and 5" in message
    assert len(message.splitlines()) == 1


def test_a_key_twice_in_a_set_value_is_refused(tmp_path, capsys):
    config_path = write_config(tmp_path, tiny_config(tmp_path / "run"))
    line = refused(capsys, "--config", config_path, "--set", "data={workers: 1, workers: 2}")
    assert "--set data" in line and "'workers' twice on line 1" in line, line


def test_merge_keys_still_override_what_they_bring(tmp_path):
    # `<<: *name` copies a mapping whose keys the mapping itself may set again: not a repeat.
    path = tmp_path / "merged.yaml"
    path.write_text(
        "data:\n  augment: &light {hflip: 0.5, color: 0.1}\n"
        "train:\n  epochs: 3\n"
        "loss:\n  options: {<<: {bce_weight: 0.2}, bce_weight: 0.7}\n"
    )
    config = load_config(path)
    assert config.loss.options == {"bce_weight": 0.7}
    assert config.data.augment.color == 0.1


# --------------------------------------------------------------------------- --set mappings


def test_a_mapping_given_to_set_merges_into_its_section(tmp_path):
    config_path = write_config(
        tmp_path,
        tiny_config(tmp_path / "run", data={"dataset": "kitti", "labels": "road"}),
    )
    config = resolve("--config", config_path, "--set", "data={root: /elsewhere, workers: 2}")
    assert (config.data.root, config.data.workers) == ("/elsewhere", 2)
    # What the file set and the mapping did not name stays: no fall back to Cityscapes.
    assert config.data.dataset == "kitti" and config.data.labels == ["road"]
    assert config.data.image_size == (32, 64)


def test_a_nested_mapping_merges_key_by_key(tmp_path):
    config_path = write_config(
        tmp_path,
        tiny_config(
            tmp_path / "run",
            data={"augment": {"hflip": 0.0, "color": 0.2}},
            model={"options": {"dropout": 0.1}},
        ),
    )
    config = resolve(
        "--config",
        config_path,
        "--set",
        "data={augment: {color: 0.7}}",
        "--set",
        "model.options={pyramid_channels: 64}",
    )
    assert (config.data.augment.hflip, config.data.augment.color) == (0.0, 0.7)
    assert config.model.options == {"dropout": 0.1, "pyramid_channels": 64}
    assert resolve("--config", config_path, "--set", "model.options=null").model.options == {}


def test_a_loss_named_in_a_mapping_brings_its_head(tmp_path):
    config_path = write_config(tmp_path, tiny_config(tmp_path / "run"))
    assert resolve("--config", config_path, "--set", "loss={name: ce}").model.head == "softmax"
    kept = resolve(
        "--config", config_path, "--set", "loss={name: ce}", "--set", "model={head: null}"
    )
    assert kept.model.head == "softmax"


def test_switching_the_dataset_by_override_takes_the_new_kinds_defaults():
    kitti = apply_overrides(config_from_dict({}), {"data.dataset": "kitti"})
    assert kitti.data.labels == ["road"] and kitti.data.val_fraction == 0.1
    chosen = config_from_dict({"data": {"holdout_cities": ["ulm"], "labels": "road"}})
    with pytest.raises(UserError, match="unknown config key.*holdout_cities"):
        apply_overrides(chosen, {"data.dataset": "kitti"})
