"""--resume continues in the checkpoint's folder: only when that folder is the run's own (or
holds nothing a resume would replace); never over another run's or a user's files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

import train
from segmentation.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

USER_CONFIG = "# my notes on this experiment\nmodel:\n  arch: fpn\n"


@pytest.fixture(scope="module")
def runs(cityscapes_root, tmp_path_factory, small_config) -> dict[str, Path]:
    """Two finished one-epoch runs of different learning rates, each with best.pt."""
    root = tmp_path_factory.mktemp("runs")
    folders = {}
    for name, lr in (("a", 0.001), ("b", 0.002)):
        config = small_config(cityscapes_root, root / name, optim={"lr": lr})
        config["train"]["log_images"] = 0
        (root / f"{name}.yaml").write_text(yaml.safe_dump(config))
        assert train.main(["--config", str(root / f"{name}.yaml")]) == 0
        assert (root / name / "best.pt").is_file()
        folders[name] = root / name
    return folders


def contents(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


def refused(capsys, *argv) -> str:
    assert train.main([*map(str, argv)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def as_before_run_ids(checkpoint: Path) -> None:
    """Rewrite `checkpoint` as the toolkit wrote it before run ids (format 1)."""
    state = torch.load(checkpoint, weights_only=True)
    del state["run_id"], state["state"]["trained_epoch"]
    state["version"] = 1
    torch.save(state, checkpoint)


def legacy_copy(run: Path, target: Path) -> Path:
    """A copy of `run` as a run made before run ids left it."""
    shutil.copytree(run, target)
    (target / ".run_id").unlink()
    for name in ("last.pt", "best.pt"):
        as_before_run_ids(target / name)
    return target


def test_a_snapshot_beside_another_runs_best_and_a_users_config_is_refused(runs, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(runs["b"] / "best.pt", folder / "best.pt")
    (folder / "config.yaml").write_text(USER_CONFIG)
    shutil.copy(runs["a"] / "last.pt", folder / "snapshot.pt")
    before = contents(folder)

    line = refused(capsys, "--resume", folder / "snapshot.pt", "--epochs", 2)
    assert "holds files this run did not write (best.pt, config.yaml)" in line, line
    assert f"--init-from {folder / 'snapshot.pt'}" in line
    assert contents(folder) == before


def test_a_snapshot_in_another_runs_folder_is_refused(runs, tmp_path, capsys):
    folder = tmp_path / "b"
    shutil.copytree(runs["b"], folder)
    shutil.copy(runs["a"] / "last.pt", folder / "snapshot.pt")
    before = contents(folder)
    owner = (folder / ".run_id").read_text().strip()
    line = refused(capsys, "--resume", folder / "snapshot.pt", "--epochs", 2)
    assert f"it is run {owner}'s folder" in line, line
    assert contents(folder) == before


@pytest.mark.slow
def test_a_checkpoint_copied_alone_into_a_new_folder_continues_there(runs, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copy(runs["a"] / "last.pt", folder / "snapshot.pt")
    assert train.main(["--resume", str(folder / "snapshot.pt"), "--epochs", "2"]) == 0
    run_id = load_checkpoint(runs["a"] / "last.pt")["run_id"]
    assert (folder / ".run_id").read_text().strip() == run_id
    assert load_checkpoint(folder / "last.pt")["state"]["epoch"] == 2
    # Its own folder now: resuming again is no refusal.
    assert train.main(["--resume", str(folder / "last.pt"), "--epochs", "3"]) == 0


def test_a_run_made_before_run_ids_resumes_in_its_folder(runs, tmp_path):
    folder = legacy_copy(runs["a"], tmp_path / "old")
    assert train.main(["--resume", str(folder / "last.pt"), "--epochs", "2"]) == 0
    resumed = load_checkpoint(folder / "last.pt")
    assert resumed["state"]["epoch"] == 2
    # The run now has an id, in its folder and checkpoints: the next resume is recognized.
    assert resumed["run_id"].startswith("legacy-")
    assert (folder / ".run_id").read_text().strip() == resumed["run_id"]
    assert train.main(["--resume", str(folder / "last.pt"), "--epochs", "3"]) == 0


def test_an_old_snapshot_in_another_old_runs_folder_is_refused(runs, tmp_path, capsys):
    folder = legacy_copy(runs["b"], tmp_path / "old-b")
    shutil.copy(legacy_copy(runs["a"], tmp_path / "old-a") / "last.pt", folder / "snapshot.pt")
    before = contents(folder)
    line = refused(capsys, "--resume", folder / "snapshot.pt", "--epochs", 2)
    assert "(last.pt, best.pt, config.yaml, tensorboard, metrics.jsonl)" in line, line
    assert contents(folder) == before


def test_an_old_snapshot_beside_the_best_of_another_run_of_its_config_is_refused(
    runs, tmp_path, capsys
):
    """Two old runs of one config are told apart by the best metric last.pt records."""
    folder = legacy_copy(runs["a"], tmp_path / "old-a")
    other_best = torch.load(folder / "best.pt", weights_only=True)
    other_best["state"]["best_metric"] += 0.125  # another run of the config: another best
    torch.save(other_best, folder / "best.pt")
    before = contents(folder)
    line = refused(capsys, "--resume", folder / "last.pt", "--epochs", 2)
    assert "did not write (best.pt)" in line, line
    assert contents(folder) == before
