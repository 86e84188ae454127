"""copy_checkpoint: best.pt copied to last.pt without writing the bytes again."""

import errno
import os

import torch

from segmentation.checkpoint import copy_checkpoint, load_checkpoint, save_checkpoint


def _weights(path) -> torch.Tensor:
    return load_checkpoint(path)["model"]["weight"]


def test_the_copy_shares_the_file_instead_of_writing_it_again(tmp_path):
    save_checkpoint({"model": {"weight": torch.tensor([1.0, 2.0])}}, tmp_path / "best.pt")
    copy_checkpoint(tmp_path / "best.pt", tmp_path / "last.pt")
    assert os.path.samefile(tmp_path / "best.pt", tmp_path / "last.pt")
    assert torch.equal(_weights(tmp_path / "last.pt"), torch.tensor([1.0, 2.0]))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_saving_one_name_again_leaves_the_other_as_it_was(tmp_path):
    save_checkpoint({"model": {"weight": torch.tensor([1.0])}}, tmp_path / "best.pt")
    copy_checkpoint(tmp_path / "best.pt", tmp_path / "last.pt")
    save_checkpoint({"model": {"weight": torch.tensor([2.0])}}, tmp_path / "last.pt")
    assert torch.equal(_weights(tmp_path / "best.pt"), torch.tensor([1.0]))
    assert torch.equal(_weights(tmp_path / "last.pt"), torch.tensor([2.0]))
    save_checkpoint({"model": {"weight": torch.tensor([3.0])}}, tmp_path / "best.pt")
    assert torch.equal(_weights(tmp_path / "last.pt"), torch.tensor([2.0]))


def test_without_hard_links_the_bytes_are_copied(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    save_checkpoint({"model": {"weight": torch.tensor([4.0])}}, tmp_path / "best.pt")
    (tmp_path / "last.pt").write_bytes(b"an older last.pt")
    copy_checkpoint(tmp_path / "best.pt", tmp_path / "last.pt")
    assert not os.path.samefile(tmp_path / "best.pt", tmp_path / "last.pt")
    assert (tmp_path / "last.pt").read_bytes() == (tmp_path / "best.pt").read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.pt", "last.pt"]
