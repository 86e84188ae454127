"""The architecture's boundaries: training and inference never import each other, training
never needs the sample generator, the report (used by both) imports neither, the models never
read the config, and the sample package has no import cycle."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LOADED = "import sys, {module}; print(' '.join(sorted(sys.modules)))"


def modules_loaded_by(module: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", LOADED.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(result.stdout.split())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        # matplotlib too: training draws its charts only once an epoch, and imports it then.
        (
            "segmentation.engine.loop",
            ("segmentation.inference", "segmentation.sample", "matplotlib"),
        ),
        ("segmentation.inference.render", ("segmentation.engine",)),
        ("segmentation.inference.export", ("segmentation.engine",)),
        ("segmentation.evaluation.evaluator", ("segmentation.engine",)),
        # The report serves both sides, so it may import neither.
        ("segmentation.report.page", ("segmentation.engine", "segmentation.inference")),
        ("segmentation.report.images", ("segmentation.engine", "segmentation.inference")),
        ("segmentation.engine.run_logger", ("segmentation.inference",)),
        # What training's validation and the scripts share sits below both.
        (
            "segmentation.prediction.trained_model",
            ("segmentation.engine", "segmentation.inference"),
        ),
    ],
)
def test_packages_keep_to_their_side(module, forbidden):
    loaded = modules_loaded_by(module)
    assert module in loaded
    crossing = sorted(name for name in loaded if name.startswith(forbidden))
    assert not crossing, f"{module} imports {crossing}"


# Counts the requests made while the package's albumentations import runs, and refuses them.
NO_NETWORK = """
import urllib.request
calls = []
def refuse(self, *args, **kwargs):
    calls.append(args)
    raise OSError("no network here")
urllib.request.OpenerDirector.open = refuse
import segmentation.data.transforms
print(len(calls))
"""


@pytest.mark.slow
def test_importing_the_package_asks_no_server_for_updates():
    """albumentations checks PyPI for a newer version at import, unless told not to: a cluster
    node without network would pay a timeout and print a warning at every job's start."""
    environment = dict(os.environ)
    environment.pop("NO_ALBUMENTATIONS_UPDATE", None)
    result = subprocess.run(
        [sys.executable, "-c", NO_NETWORK], capture_output=True, text=True, env=environment
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0"], result.stdout + result.stderr
    assert "version info" not in result.stderr


# --------------------------------------------------------------------------- import graphs

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "segmentation"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function: `from a import b` names
    a.b where b is a module of ours, else a."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                parts = candidate.split(".")
                if (PACKAGE.parent.joinpath(*parts).with_suffix(".py")).exists():
                    imported.add(candidate)
    return imported


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports, each with the packages above it (whose
    __init__ runs first)."""
    modules = {module_name(path): path for path in package.glob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for target in imported_modules(path):
            parts = target.split(".")
            for end in range(1, len(parts) + 1):
                prefix = ".".join(parts[:end])
                if prefix in modules and prefix != name:
                    edges.add(prefix)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of `graph` as the list of its modules, or [] if there is none."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for following in sorted(graph[node]):
            if state.get(following) == "open":
                return [*path[path.index(following) :], following]
            if following not in state and (cycle := visit(following)):
                return cycle
        state[node] = "done"
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_sample_package_has_no_import_cycle():
    graph = import_graph(PACKAGE / "sample")
    assert "segmentation.sample.generate" in graph["segmentation.sample.folder"]
    assert find_cycle(graph) == []


def test_the_sample_package_init_imports_nothing():
    assert imported_modules(PACKAGE / "sample" / "__init__.py") == set()


def test_the_models_package_does_not_read_the_config():
    reading = {
        path.name: sorted(
            name
            for name in imported_modules(path)
            if name == "segmentation.config" or name.startswith("segmentation.config.")
        )
        for path in (PACKAGE / "models").glob("*.py")
    }
    assert not any(reading.values()), reading


def test_the_model_catalog_imports_nothing():
    """Plain data, so that the config can check model keys without torch."""
    assert imported_modules(PACKAGE / "model_catalog.py") <= {"__future__"}


# A bad backbone and a bad option are refused, and good model keys accepted, without torch.
CONFIG_WITHOUT_TORCH = """
import sys
from segmentation.config import ModelConfig, _check_model, config_from_dict
from segmentation.errors import UserError
for model in ({"backbone": "vgg16"}, {"arch": "unet", "options": {"pyramid_channels": 8}}):
    try:
        config_from_dict({"model": model})
    except UserError as error:
        print(str(error).split(" ")[0])
model = ModelConfig(arch="unet", backbone="resnext50", options={"num_filters": "16"})
_check_model(model)
print(model.options["num_filters"] + 1, "torch" in sys.modules)
"""


@pytest.mark.slow
def test_the_config_checks_model_keys_without_torch():
    result = subprocess.run(
        [sys.executable, "-c", CONFIG_WITHOUT_TORCH], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["model.backbone='vgg16'", "model.options", "17", "False"]


def test_no_virtual_environment_is_tracked():
    """A committed .venv (even a link) makes git replace the user's ignored environment with it
    at the next checkout, and breaks the README's `python3 -m venv .venv` on a fresh clone."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout with git installed")
    tracked = subprocess.run(
        ["git", "ls-files", "--", ".venv", "venv"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked == [], f"tracked: {tracked}; git rm --cached them"
