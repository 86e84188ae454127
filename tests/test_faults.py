"""Interruptions, faults and bad input: nothing is lost, and every mistake explains itself.

Most cases run the real command lines as subprocesses and check the exit code, the one-line
message and that no file was lost.
"""

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import train
from segmentation.checkpoint import load_checkpoint
from segmentation.errors import UserError
from segmentation.sample import generate_cityscapes

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def run_script(script: str, *args, timeout: int = 180) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / script), *map(str, args)]
    return subprocess.run(
        command, env=ENV, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def long_epochs_root(tmp_path_factory) -> Path:
    """40 training images: 20 steps an epoch at batch 2, long enough to interrupt."""
    root = tmp_path_factory.mktemp("cityscapes_long")
    generate_cityscapes(
        root,
        height=64,
        width=128,
        train_per_city=8,
        val_per_city=1,
        test_per_city=1,
        video_frames=1,
        seed=4,
    )
    return root


@pytest.fixture(scope="module")
def checkpoint(cityscapes_root, tmp_path_factory, small_config) -> Path:
    run_dir = tmp_path_factory.mktemp("faults") / "run"
    config = write_yaml(run_dir.parent / "c.yaml", small_config(cityscapes_root, run_dir))
    assert train.main(["--config", str(config)]) == 0
    return run_dir / "last.pt"


def test_sigterm_mid_epoch_saves_and_resume_matches_a_straight_run(
    long_epochs_root, tmp_path, one_thread, small_config
):
    settings = {"train": {"epochs": 2, "batch_size": 2, "seed": 7}}
    straight = small_config(long_epochs_root, tmp_path / "straight", **settings)
    assert train.main(["--config", str(write_yaml(tmp_path / "a.yaml", straight))]) == 0

    run_dir = tmp_path / "interrupted"
    config = write_yaml(tmp_path / "b.yaml", small_config(long_epochs_root, run_dir, **settings))
    command = [sys.executable, str(REPO / "train.py"), "--config", str(config)]
    process = subprocess.Popen(command, env=ENV, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 240
    while not (run_dir / "last.pt").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "the first epoch never finished"
        time.sleep(0.05)
    time.sleep(0.3)  # into the second epoch
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert f"--resume {run_dir / 'last.pt'}" in stderr and "Traceback" not in stderr
    state = load_checkpoint(run_dir / "last.pt")
    assert state["state"]["epoch"] == 1 and 0 < state["state"]["epoch_batches"] < 20

    assert train.main(["--resume", str(run_dir / "last.pt")]) == 0
    expected = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    resumed = load_checkpoint(run_dir / "last.pt")["model"]
    for key, tensor in expected.items():
        assert torch.equal(tensor, resumed[key]), key


def test_a_nan_loss_stops_naming_the_step_and_saves_nothing(
    cityscapes_root, tmp_path, small_config
):
    # A learning-rate typo: the weights overflow after the first step.
    config = small_config(cityscapes_root, tmp_path / "run", optim={"lr": 1.0e30})
    result = run_script("train.py", "--config", write_yaml(tmp_path / "c.yaml", config))
    assert_one_line_error(result, "NaN or infinite at step 2", "train.grad_clip")
    assert not (tmp_path / "run" / "last.pt").exists()
    assert not (tmp_path / "run" / "best.pt").exists()


def test_skipping_bad_batches_stops_past_the_allowance(cityscapes_root, tmp_path, small_config):
    config = small_config(
        cityscapes_root, tmp_path / "run", optim={"lr": 1.0e30}, train={"skip_nonfinite": 1}
    )
    result = run_script("train.py", "--config", write_yaml(tmp_path / "c.yaml", config))
    assert_one_line_error(result, "2 batches had a NaN or infinite loss", "skip_nonfinite=1")
    assert "skipped a batch with a NaN or infinite loss" in result.stderr


def test_a_nan_model_never_overwrites_a_good_checkpoint(
    cityscapes_root, tmp_path, monkeypatch, small_config
):
    from segmentation import losses

    run_dir = tmp_path / "run"
    config = write_yaml(tmp_path / "c.yaml", small_config(cityscapes_root, run_dir))
    assert train.main(["--config", str(config)]) == 0
    good_last, good_best = (run_dir / "last.pt").read_bytes(), (run_dir / "best.pt").read_bytes()

    original = losses.BCEDiceLoss.forward
    monkeypatch.setattr(
        losses.BCEDiceLoss, "forward", lambda self, *a: original(self, *a) * float("nan")
    )
    assert train.main(["--resume", str(run_dir / "last.pt"), "--epochs", "2"]) == 2
    assert (run_dir / "last.pt").read_bytes() == good_last
    assert (run_dir / "best.pt").read_bytes() == good_best


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        # What torch.save's zip writer raises when the disk fills under it.
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 33"),
    ],
    ids=["oserror", "torch-runtimeerror"],
)
def test_a_failed_checkpoint_write_keeps_the_previous_one(
    failure, cityscapes_root, tmp_path, monkeypatch, capsys, small_config
):
    run_dir = tmp_path / "run"
    config = write_yaml(tmp_path / "c.yaml", small_config(cityscapes_root, run_dir))
    assert train.main(["--config", str(config)]) == 0
    previous = (run_dir / "last.pt").read_bytes()

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise failure

    monkeypatch.setattr(torch, "save", disk_full)
    assert train.main(["--resume", str(run_dir / "last.pt"), "--epochs", "2"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no space left writing" in lines[0], lines
    assert "the previous checkpoint is kept" in lines[0]
    assert (run_dir / "last.pt").read_bytes() == previous
    assert [path.name for path in run_dir.iterdir() if path.name.endswith(".tmp")] == []


def test_debug_shows_the_traceback(tmp_path):
    result = run_script("train.py", "--config", tmp_path / "missing.yaml", "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr


def bad_train_inputs(base: dict, root: Path, tmp: Path, kitti_root: Path, checkpoint: Path) -> dict:
    blocker = tmp / "a_file"
    blocker.write_text("")
    typo = {**base, "train": {**base["train"], "epoch": 3}}
    unet = {**base, "model": {**base["model"], "arch": "unet", "options": {}}}
    kitti = {**base, "data": {**base["data"], "dataset": "kitti", "labels": "road"}}
    return {
        "missing config": (["--config", tmp / "nope.yaml"], ["nope.yaml does not exist"]),
        "config typo": (["--config", write_yaml(tmp / "t.yaml", typo)], ["epoch", "epochs"]),
        "bad image size": (
            ["--config", write_yaml(tmp / "u.yaml", unet), "--image-size", "100x200"],
            ["100x200 is not a multiple of 64", "64x192 or 128x256"],
        ),
        "wrong cityscapes root": (
            ["--config", write_yaml(tmp / "w.yaml", base), "--data-root", kitti_root],
            ["leftImg8bit", "Cityscapes layout"],
        ),
        "wrong kitti root": (
            ["--config", write_yaml(tmp / "k.yaml", kitti), "--data-root", root],
            ["data_road", "KITTI road layout"],
        ),
        "missing resume checkpoint": (["--resume", tmp / "gone.pt"], ["gone.pt does not exist"]),
        "init-from another class count": (
            [
                "--config",
                write_yaml(tmp / "i.yaml", base),
                "--labels",
                "official",
                "--init-from",
                checkpoint,
            ],
            ["expected ['road'", "found ['void'"],
        ),
        "unwritable output directory": (
            ["--config", write_yaml(tmp / "o.yaml", base), "--output-dir", blocker / "run"],
            ["cannot write to run directory", "--output-dir"],
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing config",
        "config typo",
        "bad image size",
        "wrong cityscapes root",
        "wrong kitti root",
        "missing resume checkpoint",
        "init-from another class count",
        "unwritable output directory",
    ],
)
def test_bad_training_input(case, cityscapes_root, kitti_root, checkpoint, tmp_path, small_config):
    base = small_config(cityscapes_root, tmp_path / "run")
    args, fragments = bad_train_inputs(base, cityscapes_root, tmp_path, kitti_root, checkpoint)[
        case
    ]
    result = run_script("train.py", *args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_resume_refuses_optimizer_changes_it_would_ignore(checkpoint, tmp_path):
    run_dir = tmp_path / "copied_run"
    run_dir.mkdir()
    shutil.copy(checkpoint, run_dir / "last.pt")
    before = (run_dir / "last.pt").read_bytes()
    result = run_script("train.py", "--resume", run_dir / "last.pt", "--lr", "0.5")
    assert_one_line_error(result, "optim.lr:", "-> 0.5", "--init-from")
    assert (run_dir / "last.pt").read_bytes() == before
    assert sorted(path.name for path in run_dir.iterdir()) == ["last.pt"]


def test_bad_evaluation_and_inference_input(cityscapes_root, kitti_root, checkpoint, tmp_path):
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": Path("not a tensor")}, pickled)
    empty = tmp_path / "empty"
    empty.mkdir()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    export = tmp_path / "export"
    export.mkdir()
    (export / "keep.png").write_text("mine")
    cases = [
        ("evaluate.py", ["--checkpoint", tmp_path / "x.pt"], ["x.pt does not exist"]),
        ("evaluate.py", ["--checkpoint", pickled], ["pickle", "refused"]),
        (
            "evaluate.py",
            ["--checkpoint", checkpoint, "--data-root", kitti_root],
            ["Cityscapes layout"],
        ),
        (
            "evaluate.py",
            ["--checkpoint", checkpoint, "--export-dir", export],
            ["is not empty", "--export-dir"],
        ),
        (
            "inference.py",
            ["--checkpoint", checkpoint, "--input", empty, "--output", tmp_path / "out"],
            ["no images", "--input"],
        ),
        (
            "inference.py",
            [
                "--checkpoint",
                checkpoint,
                "--input",
                cityscapes_root / "leftImg8bit" / "val" / "lindau",
                "--output",
                blocker / "out",
            ],
            ["cannot create output folder"],
        ),
    ]
    for script, args, fragments in cases:
        assert_one_line_error(run_script(script, *args), *fragments)
    assert (export / "keep.png").read_text() == "mine"


# --- files, outputs and messages ---


def copy_of(root: Path, tmp_path: Path) -> Path:
    """A private copy of a session dataset, to break files in."""
    return Path(shutil.copytree(root, tmp_path / "data"))


def test_evaluate_checks_its_outputs_first_and_overwrites_nothing(checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    last = Path(shutil.copy(checkpoint, run_dir / "last.pt"))
    best = Path(shutil.copy(checkpoint, run_dir / "best.pt"))
    before = last.read_bytes()
    scores = tmp_path / "scores.json"
    scores.write_text("old scores")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cases = [
        (["--output-json", best], ["best.pt already exists", "--overwrite"]),
        (["--output-json", last], ["is the checkpoint"]),
        (["--output-json", last, "--overwrite"], ["is the checkpoint"]),
        (["--output-json", scores], ["scores.json already exists", "--overwrite"]),
        (["--output-json", run_dir], ["is a folder", "--output-json"]),
        (["--output-json", blocker / "s.json"], ["cannot write", "--output-json"]),
        (["--export-dir", blocker / "preds"], ["cannot create", "--export-dir"]),
    ]
    for args, fragments in cases:
        result = run_script("evaluate.py", "--checkpoint", last, "--workers", 0, *args)
        assert_one_line_error(result, *fragments)
        assert result.stdout == "", "refused only after scoring"
    assert last.read_bytes() == before and best.read_bytes() == before
    assert scores.read_text() == "old scores"
    assert sorted(path.name for path in run_dir.iterdir()) == ["best.pt", "last.pt"]

    args = ["--checkpoint", last, "--workers", 0, "--output-json", scores, "--overwrite"]
    result = run_script("evaluate.py", *args)
    assert result.returncode == 0, result.stderr
    assert json.loads(scores.read_text())["images"] == 6
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file", "run", "scores.json"]


def test_a_corrupt_validation_file_stops_training_before_the_first_step(
    cityscapes_root, tmp_path, small_config
):
    data = copy_of(cityscapes_root, tmp_path)
    broken = sorted((data / "leftImg8bit" / "val").glob("*/*.png"))[-1]
    broken.write_bytes(b"")
    config = write_yaml(tmp_path / "c.yaml", small_config(data, tmp_path / "run"))
    result = run_script("train.py", "--config", config)
    assert_one_line_error(result, str(broken), "is empty")
    assert not (tmp_path / "run").exists()


def write_pair(folder: Path, image: np.ndarray, label: np.ndarray, label_suffix=".png"):
    from segmentation.data.dataset import Sample

    folder.mkdir(parents=True, exist_ok=True)
    image_path, label_path = folder / "x_image.png", folder / f"x_label{label_suffix}"
    cv2.imwrite(str(image_path), image)
    cv2.imwrite(str(label_path), label)
    return Sample(image_path, label_path, "x", "group")


def header_cases(tmp: Path) -> dict:
    """name -> (dataset, samples, fragments of the error; None: accepted)."""
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), np.uint8)
    ids = np.full((40, 60), 7, np.uint8)
    rgb = np.dstack([ids] * 3)
    cases = {
        "good cityscapes": ("cityscapes", write_pair(tmp / "a", image, ids), None),
        "good kitti": ("kitti", write_pair(tmp / "b", image, rgb), None),
        "label of another size": (
            "cityscapes",
            write_pair(tmp / "c", image, ids[:30]),
            ["x_label.png is 60x30", "x_image.png is 60x40"],
        ),
        "rgb cityscapes label": (
            "cityscapes",
            write_pair(tmp / "d", image, rgb),
            ["x_label.png", "single-channel 8-bit"],
        ),
        "16-bit cityscapes label": (
            "cityscapes",
            write_pair(tmp / "e", image, ids.astype(np.uint16)),
            ["x_label.png", "single-channel 8-bit"],
        ),
        "grey kitti label": (
            "kitti",
            write_pair(tmp / "f", image, ids),
            ["x_label.png", "RGB"],
        ),
        "jpeg label": (
            "cityscapes",
            write_pair(tmp / "g", image, ids, label_suffix=".jpg"),
            ["x_label.jpg", "JPEG", "not a PNG"],
        ),
    }
    # An image that is a JPEG is fine; its size comes from the SOF marker.
    jpeg_image = write_pair(tmp / "h", image, ids[:, :50])
    cv2.imwrite(str(jpeg_image.image_path.with_suffix(".jpg")), image)
    jpeg_image.image_path.with_suffix(".jpg").replace(jpeg_image.image_path)
    cases["jpeg image of another size"] = ("cityscapes", jpeg_image, ["is 50x40", "is 60x40"])
    truncated = write_pair(tmp / "i", image, ids)
    truncated.image_path.write_bytes(truncated.image_path.read_bytes()[:-100])
    cases["truncated image"] = ("cityscapes", truncated, ["x_image.png", "truncated"])
    text = write_pair(tmp / "j", image, ids)
    text.image_path.write_text("not an image at all, but long enough to have a header")
    cases["text image"] = ("cityscapes", text, ["x_image.png", "neither a PNG nor a JPEG"])
    return cases


def test_the_start_up_check_reads_headers_and_names_the_file(tmp_path):
    from segmentation.data.headers import check_headers

    for name, (dataset, sample, fragments) in header_cases(tmp_path).items():
        if fragments is None:
            check_headers([sample], dataset)
            continue
        with pytest.raises(UserError) as raised:
            check_headers([sample], dataset)
        for fragment in fragments:
            assert fragment in str(raised.value), (name, str(raised.value))


def test_a_jpeg_label_renamed_png_is_refused(cityscapes_root, tmp_path, small_config):
    from segmentation.data.io import read_label_ids
    from segmentation.data.kitti import read_kitti_codes

    data = copy_of(cityscapes_root, tmp_path)
    label = sorted((data / "gtFine" / "train").glob("*/*_labelIds.png"))[0]
    ids = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    label.write_bytes(cv2.imencode(".jpg", ids)[1].tobytes())
    config = write_yaml(tmp_path / "c.yaml", small_config(data, tmp_path / "run"))
    result = run_script("train.py", "--config", config)
    assert_one_line_error(result, str(label), "not a PNG")
    assert not (tmp_path / "run").exists()
    # Read directly, it is refused too: evaluation reads labels without the start-up check.
    for read in (read_label_ids, read_kitti_codes):
        with pytest.raises(UserError, match="not a PNG"):
            read(label)


def test_inference_refuses_an_output_folder_inside_its_input(checkpoint, cityscapes_root, tmp_path):
    frames = Path(
        shutil.copytree(cityscapes_root / "leftImg8bit" / "val" / "lindau", tmp_path / "f")
    )
    names = sorted(path.name for path in frames.iterdir())
    for source, output in [
        (frames, frames),
        (frames, frames / "renders"),
        (f"{frames}/*.png", frames),
    ]:
        result = run_script(
            "inference.py", "--checkpoint", checkpoint, "--input", source, "--output", output
        )
        assert_one_line_error(result, "--output", "inside the input")
    assert sorted(path.name for path in frames.iterdir()) == names


def test_a_nan_prediction_is_an_error_naming_the_image(
    trained_checkpoint, tmp_path, monkeypatch, capsys, one_thread
):
    import evaluate
    from segmentation.inference import model as model_module

    load = model_module.load_trained_model

    def nan_model(*args, **kwargs):
        trained = load(*args, **kwargs)
        forward = trained.model.forward
        trained.model.forward = lambda images: forward(images) * float("nan")
        return trained

    monkeypatch.setattr(model_module, "load_trained_model", nan_model)
    checkpoint = trained_checkpoint("kitti", "road")
    export = tmp_path / "export"
    for extra in ([], ["--export-dir", str(export)]):
        assert evaluate.main(["--checkpoint", str(checkpoint), "--workers", "0", *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1, lines
        assert "NaN" in errors[0] and "_0000" in errors[0], errors[0]
    assert not list(export.rglob("*.png"))


@pytest.mark.parametrize("scales", ["nan", "1,inf"])
def test_scales_must_be_finite_numbers(scales, checkpoint, cityscapes_root, tmp_path):
    frames = cityscapes_root / "leftImg8bit" / "val" / "lindau"
    for script, args in [
        ("evaluate.py", []),
        ("inference.py", ["--input", frames, "--output", tmp_path / "out"]),
    ]:
        common = ["--checkpoint", checkpoint, "--tta", "multiscale", "--scales", scales]
        assert_one_line_error(run_script(script, *common, *args), "--scales", scales)
    assert not (tmp_path / "out").exists()


def make_video(*args) -> subprocess.CompletedProcess:
    # The script finds imageio-ffmpeg's binary through $PYTHON when no ffmpeg is on PATH.
    return subprocess.run(
        ["bash", str(REPO / "make_video.sh"), *map(str, args)],
        env={**ENV, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_video_takes_any_folder_name_and_fails_in_one_line(tmp_path):
    frames = tmp_path / "br[1] {a,b} 50% $x"
    frames.mkdir()
    for index in range(12):
        image = np.full((32, 48, 3), 20 * index, np.uint8)
        cv2.imwrite(str(frames / f"frame_{index:06d}_overlay.png"), image)
    output = tmp_path / "v[1]" / "out.mp4"
    result = make_video(frames, output, 10, "*_overlay.png")
    assert result.returncode == 0, result.stderr
    assert "12 frames" in result.stdout
    capture = cv2.VideoCapture(str(output))
    decoded = 0
    while capture.read()[0]:
        decoded += 1
    capture.release()
    assert decoded == 12

    for fps in ("0", "0.0"):
        result = make_video(frames, tmp_path / "zero.mp4", fps)
        assert result.returncode == 2 and result.stderr.startswith("error: FPS"), result.stderr
        assert result.stderr.count("\n") == 1

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "frame_000000.png").write_text("not a PNG")
    result = make_video(broken, tmp_path / "broken.mp4")
    assert result.returncode != 0
    assert result.stderr.startswith("error: ffmpeg") and result.stderr.count("\n") == 1, (
        result.stderr
    )
    assert not (tmp_path / "broken.mp4").exists()


def tiny_files() -> None:
    """In the child: writes past 4 KiB fail with EFBIG, as on a full disk (no SIGXFSZ kill)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_inference_on_a_full_disk_is_one_line(checkpoint, cityscapes_root, tmp_path):
    output = tmp_path / "out"
    command = [
        sys.executable,
        str(REPO / "inference.py"),
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(cityscapes_root / "leftImg8bit" / "val" / "lindau"),
        "--output",
        str(output),
        "--workers",
        "0",
    ]
    result = subprocess.run(
        command,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        preexec_fn=tiny_files,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write"), lines
    assert "File too large" in lines[0]
    assert list(output.iterdir()) == []


def test_label_schemes_do_not_combine_with_label_names(cityscapes_root, tmp_path, small_config):
    config = write_yaml(tmp_path / "c.yaml", small_config(cityscapes_root, tmp_path / "run"))
    result = run_script("train.py", "--config", config, "--labels", "categories,road")
    assert_one_line_error(result, "'categories'", "cannot be combined with label names", "road")
    assert "unknown" not in result.stderr
