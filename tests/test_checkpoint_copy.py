"""copy_checkpoint: best.pt copied to last.pt is a file of its own."""

import torch

from segmentation.checkpoint import copy_checkpoint, load_checkpoint, save_checkpoint


def _weights(path) -> torch.Tensor:
    return load_checkpoint(path)["model"]["weight"]


def test_the_copy_holds_the_same_checkpoint_and_leaves_no_temporary_file(tmp_path):
    save_checkpoint({"model": {"weight": torch.tensor([1.0, 2.0])}}, tmp_path / "best.pt")
    (tmp_path / "last.pt").write_bytes(b"an older last.pt")
    copy_checkpoint(tmp_path / "best.pt", tmp_path / "last.pt")
    assert torch.equal(_weights(tmp_path / "last.pt"), torch.tensor([1.0, 2.0]))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_a_save_in_place_over_one_name_leaves_the_other_as_it_was(tmp_path):
    """A user who edits best.pt with torch.save (no rename) must not change last.pt: the
    two names may never share one file (a hard link would)."""
    save_checkpoint({"model": {"weight": torch.tensor([1.0])}}, tmp_path / "best.pt")
    copy_checkpoint(tmp_path / "best.pt", tmp_path / "last.pt")
    torch.save({"model": {"weight": torch.tensor([3.0])}}, tmp_path / "best.pt")
    assert torch.equal(_weights(tmp_path / "last.pt"), torch.tensor([1.0]))
