"""data.cache: decoded samples read from memmap files give exactly what the PNG path gives;
a stale, foreign or half-built cache is never read; building is atomic and cleans up after
itself (two builders at once, a full disk); the module's command line."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from command_line import ENV, REPO, assert_one_line_error, write_yaml
from test_slurm_script import cluster, submit, torchrun_call  # noqa: F401 (cluster: a fixture)

from segmentation.config import DataConfig
from segmentation.data.build import build_training_datasets, label_reader
from segmentation.data.cache import CachedReader
from segmentation.data.cache.builder import build_cache
from segmentation.data.cache.manifest import read_manifest
from segmentation.data.cache.store import PartWriter
from segmentation.data.dataset import FileReader
from segmentation.data.loading import make_loader
from segmentation.engine.sampler import EpochSampler
from segmentation.errors import UserError


def data_config(root: Path, cache: Path | None, **values) -> DataConfig:
    """A config whose augmentations all fire: colour on every sample, flips on half."""
    augment = {"color": 1.0, "hflip": 0.5}
    cache = None if cache is None else str(cache)
    return DataConfig(root=str(root), image_size=(32, 64), cache=cache, augment=augment, **values)


def copied_tree(source: Path, tmp_path: Path) -> Path:
    """A private copy of a session tree, for tests that change its files."""
    return Path(shutil.copytree(source, tmp_path / "data"))


def leftovers(folder: Path) -> list[str]:
    """Temporary folders a build left beside `folder`."""
    return sorted(path.name for path in folder.parent.iterdir() if path.name.startswith("."))


@pytest.fixture(params=["cityscapes", "kitti", "folder"])
def dataset_config(request, cityscapes_root, kitti_root, folder_root, tmp_path):
    """(config with data.cache, the same config without) for each layout: KITTI's and the
    folder dataset's frames vary in size, the folder dataset's RGB masks decode to indices."""
    cache = tmp_path / "cache"
    if request.param == "cityscapes":
        return data_config(cityscapes_root, cache), data_config(cityscapes_root, None)
    if request.param == "kitti":
        values = {"dataset": "kitti", "labels": ["road"]}
        return data_config(kitti_root, cache, **values), data_config(kitti_root, None, **values)
    values = {"dataset": "folder"}
    root = folder_root("rgb")
    return data_config(root, cache, **values), data_config(root, None, **values)


def test_cached_samples_are_byte_identical_to_the_png_path(dataset_config):
    cached_config, png_config = dataset_config
    cached_train, cached_val = build_training_datasets(cached_config)
    png_train, png_val = build_training_datasets(png_config)
    assert isinstance(cached_train.reader, CachedReader)
    assert isinstance(png_train.reader, FileReader)
    sampler = EpochSampler(len(png_train), shuffle=True, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        for item in sampler:
            cached, png = cached_train[item], png_train[item]
            assert torch.equal(cached["image"], png["image"]), (epoch, item)
            assert torch.equal(cached["target"], png["target"]), (epoch, item)
    for index in range(len(png_val)):
        cached, png = cached_val[index], png_val[index]
        assert torch.equal(cached["image"], png["image"])
        assert torch.equal(cached["target"], png["target"])


@pytest.mark.filterwarnings("error")  # torch warns of a tensor over read-only memory
def test_frames_the_transforms_leave_as_they_are_are_copied_out_of_the_cache(
    cityscapes_root, tmp_path
):
    # The tree's own size, no crop, flip or colour: every transform passes the frame through.
    still = {"crop_scale": (1.0, 1.0), "hflip": 0.0, "color": 0.0}
    config = DataConfig(
        root=str(cityscapes_root), image_size=(64, 128), cache=str(tmp_path / "c"), augment=still
    )
    train, val = build_training_datasets(config)
    for item in (train[(0, 1)], val[0]):
        image = item["image"]
        image[0, 0, 0] = 7  # memory of its own: the cache stays as it was
    np.testing.assert_array_equal(
        val.reader.read(0)[0], FileReader(label_reader("cityscapes")).read(0, val.samples[0])[0]
    )


def test_the_cache_holds_the_decoded_files_and_labels_as_stored(kitti_root, tmp_path):
    config = data_config(kitti_root, tmp_path / "cache", dataset="kitti", labels=["road"])
    train, _ = build_training_datasets(config)
    files = FileReader(label_reader("kitti"))
    shapes = set()
    for index, sample in enumerate(train.samples):
        image, stored = train.reader.read(index, sample)
        expected_image, expected_stored = files.read(index, sample)
        assert image.dtype == np.uint8 and stored.dtype == np.uint8
        np.testing.assert_array_equal(image, expected_image)
        np.testing.assert_array_equal(stored, expected_stored)  # before scheme.encode
        shapes.add(image.shape)
    assert len(shapes) > 1  # KITTI's frames vary in size: offsets, not one array


def test_dataloader_workers_map_the_cache_themselves(cityscapes_root, tmp_path):
    train, _ = build_training_datasets(data_config(cityscapes_root, tmp_path / "cache"))
    train[(0, 0)]  # the mapping now exists in this process, and must not travel
    assert pickle.loads(pickle.dumps(train.reader))._opened is None
    batches = {}
    for workers in (0, 2):
        sampler = EpochSampler(len(train), shuffle=True, seed=1)
        loader = make_loader(
            train, sampler=sampler, batch_size=4, workers=workers, device=torch.device("cpu")
        )
        batches[workers] = list(loader)
    for single, parallel in zip(batches[0], batches[2], strict=True):
        assert torch.equal(single["image"], parallel["image"])
        assert torch.equal(single["target"], parallel["target"])


def test_a_changed_source_file_makes_the_cache_stale_until_rebuilt(cityscapes_root, tmp_path):
    root = copied_tree(cityscapes_root, tmp_path)
    config = data_config(root, tmp_path / "cache")
    train, _ = build_training_datasets(config)
    touched = train.samples[2].label_path
    status = touched.stat()
    os.utime(touched, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
    with pytest.raises(UserError) as refused:
        build_training_datasets(config)
    message = str(refused.value)
    assert "\n" not in message
    assert str(touched.absolute()) in message and "--rebuild" in message
    build_training_datasets(config, rebuild_cache=True)
    train, _ = build_training_datasets(config)  # accepted as it is now
    manifest = read_manifest(tmp_path / "cache")
    assert manifest["parts"]["train"][2]["label"]["mtime"] == touched.stat().st_mtime_ns
    assert leftovers(tmp_path / "cache") == []


def test_a_cache_of_other_files_or_another_scale_is_refused(cityscapes_root, tmp_path):
    cache = tmp_path / "cache"
    build_training_datasets(data_config(cityscapes_root, cache))
    with pytest.raises(UserError, match="cache_scale 1.0, not 0.5.*--rebuild"):
        build_training_datasets(data_config(cityscapes_root, cache, cache_scale=0.5))
    # Other validation cities: the first file that differs is named.
    other = data_config(cityscapes_root, cache, holdout_cities=["zurich"])
    with pytest.raises(UserError, match=r"zurich_\S+ \(train\) is not in it|zurich.*not use"):
        build_training_datasets(other)


def test_a_folder_holding_other_files_is_neither_used_nor_touched(cityscapes_root, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    for rebuild in (False, True):
        with pytest.raises(UserError, match="no cache"):
            build_training_datasets(data_config(cityscapes_root, folder), rebuild_cache=rebuild)
    assert [path.name for path in folder.iterdir()] == ["notes.txt"]


def test_a_builder_that_loses_the_race_uses_the_winners_cache(cityscapes_root, tmp_path):
    cache = tmp_path / "cache"
    train, _ = build_training_datasets(data_config(cityscapes_root, cache))
    manifest = read_manifest(cache)
    winner = (cache / "train.images").stat().st_ino
    # A second build of the same cache, finishing after the first was installed.
    parts = {"train": train.samples}
    build_cache(cache, parts, manifest, label_reader("cityscapes"))
    assert (cache / "train.images").stat().st_ino == winner
    assert leftovers(cache) == []


def test_a_build_removes_what_a_killed_build_left_on_this_machine(cityscapes_root, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    abandoned = tmp_path / f".cache.building-{host}-{gone.pid}"
    running = tmp_path / f".cache.building-{host}-{os.getppid()}"  # a live build: kept
    other_host = tmp_path / f".cache.building-elsewhere-{gone.pid}"  # not ours to judge
    for path in (abandoned, running, other_host):
        path.mkdir()
        (path / "train.images").write_bytes(b"partial")
    build_training_datasets(data_config(cityscapes_root, tmp_path / "cache"))
    assert not abandoned.exists() and running.is_dir() and other_host.is_dir()


def test_a_full_disk_leaves_no_partial_cache(cityscapes_root, tmp_path, monkeypatch):
    written = []

    def write_until_full(self, image, stored):
        if len(written) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(image.shape)
        original_append(self, image, stored)

    original_append = PartWriter.append
    monkeypatch.setattr(PartWriter, "append", write_until_full)
    cache = tmp_path / "caches" / "cache"
    with pytest.raises(UserError) as refused:
        build_training_datasets(data_config(cityscapes_root, cache))
    message = str(refused.value)
    assert "\n" not in message and "No space left on device" in message
    assert written and not cache.exists()
    assert leftovers(cache) == []


def test_cache_scale_stores_smaller_frames_with_only_their_label_values(cityscapes_root, tmp_path):
    config = data_config(cityscapes_root, tmp_path / "cache", cache_scale=0.5)
    train, _ = build_training_datasets(config)
    files = FileReader(label_reader("cityscapes"))
    for index, sample in enumerate(train.samples):
        image, stored = train.reader.read(index, sample)
        full_image, full_stored = files.read(index, sample)
        assert image.shape == (32, 64, 3) and stored.shape == (32, 64)
        np.testing.assert_array_equal(
            image, cv2.resize(full_image, (64, 32), interpolation=cv2.INTER_AREA)
        )
        # Nearest neighbour: every stored value is one of the file's; none is a blend.
        assert set(np.unique(stored)) <= set(np.unique(full_stored))
        np.testing.assert_array_equal(stored, full_stored[::2, ::2])
    assert train[(0, 5)]["image"].shape == (32, 64, 3)  # augmentations cut from them


def run_cache_command(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "segmentation.data.cache", *map(str, args)]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=180, cwd=REPO)


@pytest.mark.slow
def test_the_command_line_builds_checks_and_rebuilds(cityscapes_root, small_config, tmp_path):
    root = copied_tree(cityscapes_root, tmp_path)
    cache = tmp_path / "cache"
    config = write_yaml(tmp_path / "config.yaml", small_config(root, tmp_path / "run"))
    built = run_cache_command("--config", config, "--set", f"data.cache={cache}")
    assert built.returncode == 0, built.stderr
    assert "is ready: 15 training and 6 validation frames" in built.stdout
    label = next((root / "gtFine" / "val").rglob("*_labelIds.png"))
    os.utime(label, ns=(0, label.stat().st_mtime_ns + 10**9))
    stale = run_cache_command("--config", config, "--set", f"data.cache={cache}")
    assert_one_line_error(stale, str(label), "--rebuild")
    rebuilt = run_cache_command("--config", config, "--set", f"data.cache={cache}", "--rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert leftovers(cache) == []


# The cache command, held before it writes until the other builder got there too: both
# build at once, whatever the start-up times.
BUILDER_AT_THE_BARRIER = """
import sys, time
from pathlib import Path
from segmentation.data.cache import builder
from segmentation.data.cache.__main__ import main

here = Path(sys.argv.pop(1))
write = builder._write

def write_together(*args, **kwargs):
    here.touch()
    others = [path for path in here.parent.glob("building-*") if path != here]
    deadline = time.monotonic() + 120
    while not others and time.monotonic() < deadline:
        time.sleep(0.05)
        others = [path for path in here.parent.glob("building-*") if path != here]
    write(*args, **kwargs)

builder._write = write_together
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_builders_at_once_make_one_complete_cache(cityscapes_root, small_config, tmp_path):
    cache = tmp_path / "cache"
    config = small_config(cityscapes_root, tmp_path / "run")
    config["data"]["cache"] = str(cache)
    config_path = write_yaml(tmp_path / "config.yaml", config)
    builders = [
        subprocess.Popen(
            [sys.executable, "-c", BUILDER_AT_THE_BARRIER, str(tmp_path / f"building-{name}")]
            + ["--config", str(config_path)],
            env=ENV,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in "ab"
    ]
    outputs = [builder.communicate(timeout=180) for builder in builders]
    for builder, (_, errors) in zip(builders, outputs, strict=True):
        assert builder.returncode == 0, errors
    # Both built (neither found the other's cache first); one of them installed its copy.
    assert all((tmp_path / f"building-{name}").is_file() for name in "ab")
    assert sum("built by another process" in errors for _, errors in outputs) == 1
    assert leftovers(cache) == []
    train, val = build_training_datasets(data_config(cityscapes_root, cache))
    files = FileReader(label_reader("cityscapes"))
    for dataset in (train, val):
        for index, sample in enumerate(dataset.samples):
            image, stored = dataset.reader.read(index, sample)
            expected_image, expected_stored = files.read(index, sample)
            np.testing.assert_array_equal(image, expected_image)
            np.testing.assert_array_equal(stored, expected_stored)


FULL_DISK_TRAIN = """
import errno, os, sys
from segmentation.data.cache.store import PartWriter

def full(self, image, stored):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

PartWriter.append = full
import train
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_train_py_on_a_full_disk_says_so_and_starts_nothing(
    cityscapes_root, small_config, tmp_path
):
    cache = tmp_path / "cache"
    config = small_config(cityscapes_root, tmp_path / "run")
    config["data"]["cache"] = str(cache)
    config_path = write_yaml(tmp_path / "config.yaml", config)
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK_TRAIN, "--config", str(config_path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert_one_line_error(result, f"cannot write data.cache {cache}", "No space left")
    assert not (tmp_path / "run").exists()
    assert not cache.exists() and leftovers(cache) == []


def test_the_slurm_script_puts_the_cache_on_the_given_node_local_folder(request):
    env = request.getfixturevalue("cluster")  # test_slurm_script's fake cluster
    result, calls = submit(env, "configs/demo.yaml", "runs/r", DATA_CACHE="/tmp/cs-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    call = torchrun_call(calls)
    assert call.endswith(
        "--config configs/demo.yaml --output-dir runs/r --set data.cache=/tmp/cs-cache"
    )
    _, calls = submit({**env, "FAKE_LOG": env["FAKE_LOG"] + "2"}, "configs/demo.yaml", "runs/r")
    assert "data.cache" not in torchrun_call(calls)


# train.py under torchrun, its cache builds logged by local rank (and failing as on a full
# disk when asked): which processes built, and what the others did meanwhile.
LOGGED_TRAIN = """
import errno, os, sys
from pathlib import Path
from segmentation.data.cache import builder

log, full = Path(sys.argv.pop(1)), sys.argv.pop(1) == "full"
write = builder._write

def logged_write(*args, **kwargs):
    with open(log, "a") as handle:
        handle.write(os.environ["LOCAL_RANK"] + "\\n")
    if full:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    write(*args, **kwargs)

builder._write = logged_write
import train
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_under_ddp_local_rank_0_builds_and_a_failed_build_stops_every_rank(
    cityscapes_root, small_config, tmp_path
):
    script = tmp_path / "logged_train.py"
    script.write_text(LOGGED_TRAIN)
    cache = tmp_path / "cache"
    results = {}
    for attempt in ("full", "fits"):
        run_dir = tmp_path / f"run-{attempt}"
        config = small_config(cityscapes_root, run_dir, train={"epochs": 1, "batch_size": 2})
        config["data"]["cache"] = str(cache)
        config_path = write_yaml(tmp_path / f"{attempt}.yaml", config)
        builds = tmp_path / f"builds-{attempt}.log"
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
        command += ["--standalone", str(script), str(builds), attempt, "--config", config_path]
        results[attempt] = subprocess.run(
            list(map(str, command)), env=ENV, capture_output=True, text=True, timeout=300
        )
        assert builds.read_text().split() == ["0"], results[attempt].stderr[-3000:]
        assert (run_dir.exists()) == (attempt == "fits")
    failed = results["full"]
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0], failed.stderr[-3000:]
    assert results["fits"].returncode == 0, results["fits"].stderr[-3000:]
    assert read_manifest(cache) is not None and leftovers(cache) == []
