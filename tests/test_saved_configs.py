"""Runs saved before each dataset kind had its own data keys still load: their config.yaml and
checkpoints carry every kind's keys (tests/saved_by_main/: as main saved them). Such a key is
dropped with one warning where a run saved it, and refused in a user's config file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

import train
from segmentation.checkpoint import load_checkpoint, save_checkpoint
from segmentation.config import config_to_dict, load_config, saved_config_from_dict
from segmentation.errors import UserError

SAVED = Path(__file__).resolve().parent / "saved_by_main"


def saved_by_main(dataset: str, data_root: Path, output_dir: Path) -> dict:
    values = yaml.safe_load((SAVED / f"{dataset}.yaml").read_text())
    values["data"]["root"], values["output_dir"] = str(data_root), str(output_dir)
    return values


def dropped_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "mean nothing" in r.getMessage()]


@pytest.mark.parametrize(
    ("dataset", "dropped"),
    [("cityscapes", ["classes", "val_fraction"]), ("kitti", ["classes", "train_split"])],
)
def test_a_saved_config_drops_the_keys_of_other_kinds_with_one_warning(
    dataset, dropped, tmp_path, caplog
):
    values = saved_by_main(dataset, tmp_path / "data", tmp_path / "run")
    with caplog.at_level(logging.WARNING):
        config = saved_config_from_dict(values, f"checkpoint {tmp_path}/{dataset}.pt")
        again = saved_config_from_dict(values, f"checkpoint {tmp_path}/{dataset}.pt")
    [warning] = dropped_warnings(caplog)
    assert all(key in warning for key in dropped) and dataset in warning
    saved = config_to_dict(config)["data"]
    assert not set(dropped) & set(saved)
    kept = {key: value for key, value in values["data"].items() if key in saved}
    assert config_to_dict(again)["data"] == saved
    # Every key of its kind, as it was; a section (augment) may have gained keys since, at
    # their defaults.
    assert {key: within(saved[key], value) for key, value in kept.items()} == kept


def within(now, before):
    """`now`, limited to the keys `before` had where both are mappings."""
    if isinstance(now, dict) and isinstance(before, dict):
        return {key: within(now.get(key), value) for key, value in before.items()}
    return now


def test_the_same_keys_in_a_users_config_file_are_refused_in_one_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved_by_main("kitti", tmp_path, tmp_path / "run")))
    with pytest.raises(UserError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "\n" not in message
    unknown = "classes, coarse, holdout_cities, train_split, val_split"  # as safe_dump sorts them
    assert f"unknown config key(s) {unknown}" in message
    assert "in section 'data'" in message and "val_fraction" in message  # the valid keys


@pytest.mark.slow
def test_resume_of_a_run_saved_before_the_kinds(cityscapes_root, tmp_path, small_config, caplog):
    """A one-epoch run whose checkpoint and config.yaml hold the config as main saved it
    continues with --resume, and saves its config in the kind's keys from then on."""
    run_dir = tmp_path / "run"
    values = small_config(cityscapes_root, run_dir)
    values["optim"] = {"optimizer": "sgd", "momentum": 0.0, "lr": 0.01}
    values["model"]["channels_last"] = False
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    with torch.inference_mode(False):
        assert train.main(["--config", str(path)]) == 0
    old = saved_by_main("cityscapes", cityscapes_root, run_dir)
    state = load_checkpoint(run_dir / "last.pt")
    state["config"] = old
    save_checkpoint(state, run_dir / "last.pt")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    with caplog.at_level(logging.WARNING):
        assert train.main(["--resume", str(run_dir / "last.pt"), "--epochs", "2"]) == 0
    assert len(dropped_warnings(caplog)) == 1
    resumed = load_checkpoint(run_dir / "last.pt")
    assert resumed["state"]["epoch"] == 2
    assert not {"classes", "val_fraction"} & set(resumed["config"]["data"])
    assert (
        yaml.safe_load((run_dir / "config.yaml").read_text())["data"] == (resumed["config"]["data"])
    )
