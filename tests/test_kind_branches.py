"""Outside the dataset kinds' own modules (segmentation/data/kinds/), nothing branches on a
dataset's name: a comparison with a kind's name, a table keyed on the names, a match on them,
or a Literal of them. What a kind does differently is a method or attribute of its kind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from segmentation.data.kinds.catalog import KINDS

REPO = Path(__file__).resolve().parents[1]
KINDS_PACKAGE = REPO / "segmentation" / "data" / "kinds"
SCRIPTS = ("train.py", "evaluate.py", "inference.py")


def _names_a_kind(node: ast.AST, names: set[str]) -> bool:
    """A kind's name as a literal, alone or among the items of a tuple, list or set."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in names
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_kind(item, names) for item in node.elts)
    return False


def _is_dataset(node: ast.AST) -> bool:
    """An expression that holds a dataset's name: `dataset`, `x.dataset`, `x["dataset"]`."""
    if isinstance(node, ast.Name):
        return node.id == "dataset"
    if isinstance(node, ast.Attribute):
        return node.attr == "dataset"
    if isinstance(node, ast.Subscript):
        key = node.slice
        return isinstance(key, ast.Constant) and key.value == "dataset"
    return False


def _is_text(node: ast.AST) -> bool:
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_is_text(item) for item in node.elts)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def branch_sites(source: str, names: set[str]) -> list[int]:
    """Line numbers of the places in `source` that branch on a dataset's name."""
    sites = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            on_name = any(_names_a_kind(operand, names) for operand in operands)
            on_dataset = any(map(_is_dataset, operands)) and any(map(_is_text, operands))
            if on_name or on_dataset:
                sites.append(node.lineno)
        elif isinstance(node, ast.Dict):
            if any(key is not None and _names_a_kind(key, names) for key in node.keys):
                sites.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and _names_a_kind(node.value, names):
            sites.append(node.lineno)
        elif isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "Literal":
            sites += [node.lineno] if _names_a_kind(node.slice, names) else []
    return sorted(sites)


def checked_files() -> list[Path]:
    package = [
        path
        for path in sorted((REPO / "segmentation").rglob("*.py"))
        if KINDS_PACKAGE not in path.parents
    ]
    return [*package, *(REPO / script for script in SCRIPTS)]


@pytest.mark.parametrize(
    ("source", "count"),
    [
        ('if config.dataset == "kitti":\n    pass\n', 1),
        ('if scheme.dataset != "folder":\n    pass\n', 1),
        ('reader = read_a if name in ("cityscapes", "kitti") else read_b\n', 1),
        ('ADVICE = {"folder": "name the classes", "other": ""}\n', 1),
        ('match kind:\n    case "cityscapes":\n        pass\n', 1),
        ('Dataset = Literal["cityscapes", "kitti", "folder"]\n', 1),
        ('if values["dataset"] == "anything":\n    pass\n', 1),
        # Not branches: a kind's methods, names passed on, comparisons of two datasets.
        ("kind_of(config).find_samples(config, split)\n", 0),
        ('sub.add_parser("cityscapes", help="a tree")\n', 0),
        ("same = (other['dataset'], other['labels']) == (scheme.dataset, scheme.name)\n", 0),
        ('if looks == "natural":\n    pass\n', 0),
    ],
)
def test_the_detector_finds_branches_on_a_name(source, count):
    assert len(branch_sites(source, {"cityscapes", "kitti", "folder"})) == count


def test_nothing_outside_the_kinds_branches_on_a_dataset_name():
    names = set(KINDS)
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for path in checked_files()
        for line in branch_sites(path.read_text(), names)
    ]
    assert not found, f"branches on a dataset's name outside segmentation/data/kinds/: {found}"


def test_an_unknown_dataset_is_refused_in_one_line_listing_the_known_ones():
    from segmentation.config import config_from_dict
    from segmentation.errors import UserError

    with pytest.raises(UserError) as raised:
        config_from_dict({"data": {"dataset": "ade20k"}})
    message = str(raised.value)
    assert "\n" not in message and "ade20k" in message
    assert all(name in message for name in KINDS)


@pytest.mark.parametrize("name", ["cityscapes", "kitti"])
def test_each_scheme_a_kind_offers_builds(name):
    kind = KINDS[name]
    assert [kind.scheme_named(scheme).name for scheme in kind.schemes] == list(kind.schemes)
    assert kind.scheme_named(kind.default_labels).name in kind.schemes
