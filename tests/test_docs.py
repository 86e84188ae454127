"""The user manual's links resolve, its commands take the flags it gives them, and the README
stays short enough to lead.

Checks every relative markdown link and #anchor in README.md, docs/*.md and bench/README.md:
the file or folder it names exists in the repository, and an anchor names a heading of the
target page (GitHub's heading ids). Links inside code (fenced blocks, `inline`) are text, not
links, and are left out. The commands in the pages' shell blocks that run one of our scripts are
checked against that script's --help.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from segmentation.data.kinds.catalog import KINDS

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300

# [text](target) and ![alt](target); the target ends at whitespace (a title may follow) or ")".
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")


def manual_pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench/README.md"]


def prose_lines(text: str, *, keep_inline_code: bool = False) -> list[str]:
    """The page's lines outside fenced code blocks, inline code blanked out unless kept
    (a heading may hold `code`, which its id keeps)."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            lines.append(line if keep_inline_code else INLINE_CODE.sub("", line))
    return lines


def heading_id(title: str) -> str:
    """GitHub's id of a heading: lower case, punctuation dropped, spaces as hyphens."""
    title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a linked heading keeps its text
    title = title.replace("`", "").lower()
    title = re.sub(r"[^\w\- ]", "", title)
    return title.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading id of a page; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    ids = set()
    for line in prose_lines(page.read_text(encoding="utf-8"), keep_inline_code=True):
        match = HEADING.match(line)
        if not match:
            continue
        base = heading_id(match.group(2))
        count = seen.get(base, 0)
        ids.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return ids


def links(page: Path) -> list[str]:
    return [
        match.group(1)
        for line in prose_lines(page.read_text(encoding="utf-8"))
        for match in LINK.finditer(line)
    ]


def broken_links(page: Path, repo: Path = REPO) -> list[str]:
    """Each link of the page that does not resolve, with the reason."""
    repo, problems = repo.resolve(), []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: outside the repository
            continue
        if target.startswith("/"):
            problems.append(f"{target}: an absolute path; link relative to {page.name}")
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(repo):
            problems.append(f"{target}: points outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file {resolved.relative_to(repo)}")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            problems.append(f"{target}: no heading #{anchor} in {resolved.relative_to(repo)}")
    return problems


@pytest.mark.parametrize("page", manual_pages(), ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path):
    assert page.exists(), f"{page.relative_to(REPO)} is missing"
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


def test_readme_leads_in_at_most_300_lines():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; move detail into docs/ to keep it <= {README_MAX_LINES}"
    )


def test_link_checker_sees_broken_links_and_anchors(tmp_path: Path):
    # Known answers on a hand-written page: the checker must flag exactly the broken ones.
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/other.md").write_text(
        "# Other page\n\n## Set `data.root` (twice)\n## A\n## A\n"
    )
    page = tmp_path / "docs/page.md"
    page.write_text(
        "# Title\n"
        "[ok](other.md) [ok](other.md#set-dataroot-twice) [ok](other.md#a-1) [ok](#title)\n"
        "[web](https://example.com/x#y) ![img](../docs/other.md)\n"
        "[missing](nothere.md) [bad anchor](other.md#nothing) [self](#nope)\n"
        "[abs](/docs/other.md) [outside](../../etc.md)\n"
        "`[code](nothere.md)`\n"
        "```\n[fenced](nothere.md)\n```\n"
    )
    assert [problem.split(":")[0] for problem in broken_links(page, repo=tmp_path)] == [
        "nothere.md",
        "other.md#nothing",
        "#nope",
        "/docs/other.md",
        "../../etc.md",
    ]


# `python SCRIPT.py ...` or `python -m segmentation.MODULE [SUBCOMMAND] ...` in a shell block;
# a subcommand is a dataset kind's name (the sample generators').
SUBCOMMANDS = "|".join(map(re.escape, KINDS))
OUR_COMMAND = re.compile(
    r"\bpython3?\s+(?P<script>(?:[\w.-]+/)*[\w-]+\.py|-m\s+segmentation(?:\.\w+)+"
    rf"(?:\s+(?:{SUBCOMMANDS})\b)?)(?P<args>[^#;|&]*)"
)


def shell_commands(page: Path) -> list[str]:
    """The commands of the page's ```bash blocks, continuation lines joined."""
    commands, block = [], None
    for line in page.read_text(encoding="utf-8").splitlines():
        if block is None:
            if re.match(r"^ {0,3}```(bash|sh|shell)\s*$", line):
                block = []
        elif FENCE.match(line):
            commands.extend("\n".join(block).replace("\\\n", " ").splitlines())
            block = None
        else:
            block.append(line)
    return commands


@functools.cache
def help_text(script: str) -> str:
    argv = script.split() if script.startswith("-m") else [script]
    result = subprocess.run(
        [sys.executable, *argv, "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{script} --help failed: {result.stderr[-2000:]}"
    return result.stdout


def unknown_flags(page: Path) -> list[str]:
    problems = []
    for command in shell_commands(page):
        for match in OUR_COMMAND.finditer(command):
            script = " ".join(match.group("script").split())
            if not script.startswith("-m") and not (REPO / script).is_file():
                problems.append(f"{command.strip()}: no script {script}")
                continue
            known = set(re.findall(r"--[\w-]+", help_text(script)))
            for flag in re.findall(r"(?<![\w-])--[\w-]+", match.group("args")):
                if flag not in known:
                    problems.append(f"{command.strip()}: {script} has no {flag}")
    return problems


@pytest.mark.slow
@pytest.mark.parametrize("page", manual_pages(), ids=lambda page: str(page.relative_to(REPO)))
def test_documented_commands_take_their_flags(page: Path):
    problems = unknown_flags(page)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_flag_checker_sees_unknown_flags_and_scripts(tmp_path: Path):
    # Known answers: the checker must flag exactly the flag train.py lacks and the missing script.
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\n"
        "python train.py --config configs/demo.yaml \\\n"
        "    --epochs 2 --no-such-flag   # --not-checked in a comment\n"
        "python nothere.py --x\n"
        "torchrun --nproc_per_node=2 train.py --seed 1 && .venv/bin/python -m pytest -q\n"
        "```\n"
        "```\npython train.py --not-shell\n```\n"
    )
    assert [problem.split(": ", 1)[1] for problem in unknown_flags(page)] == [
        "train.py has no --no-such-flag",
        "no script nothere.py",
    ]
