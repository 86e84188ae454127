"""Which files of a report folder are ours. Our page marks itself with a generator tag and
names every file it wrote beside it (its pictures and images.csv), so that --overwrite replaces
and removes those files only: a page without the tag is the user's, and so are the files it
shows."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

from segmentation.errors import UserError

PAGE = "index.html"
GENERATOR = "segmentation evaluate.py --report"
MARKER = f'<meta name="generator" content="{GENERATOR}">'
# The files of a report whose names do not depend on the data; the image panels' names do.
FIXED_FILES = (PAGE, "class_scores.png", "confusion.png", "pr_curves.png", "compare.png")
IMAGE_LIST = "images.csv"
_NAMED = re.compile(r'<(?:img src|a href)="([^"]+)"')


def is_our_page(path: Path) -> bool:
    """Whether `path` is a page that evaluate.py --report wrote."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)  # the tag is in <head>, before anything of the data
    except OSError:
        return False
    return MARKER.encode() in head


def files_of_report(folder: Path) -> set[str]:
    """The names of the files that the report page in `folder` wrote beside it, the page
    included; empty when there is no page or it is not ours."""
    page = Path(folder) / PAGE
    if not is_our_page(page):
        return set()
    try:
        text = page.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    names = {unescape(name) for name in _NAMED.findall(text)}
    # A plain name in the folder only: a link elsewhere is never a file to replace or remove.
    return {PAGE} | {
        name for name in names if name and "/" not in name and "\\" not in name and name[0] != "."
    }


def check_report_folder(folder: Path, overwrite: bool) -> None:
    """Refuse, before the evaluation, a report folder where the report would replace a file of
    the user's: a non-empty folder without `overwrite`; with it, a folder whose index.html is not
    ours, or that holds a file of a report's name that our earlier page did not write."""
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    if not overwrite:
        raise UserError(
            f"report folder {folder} is not empty: choose a new --report, or add --overwrite "
            "to write the report into it"
        )
    page = folder / PAGE
    if page.exists() and not is_our_page(page):
        raise UserError(
            f"{page} is not a page of evaluate.py --report, and --overwrite replaces only an "
            "earlier report: choose a new --report"
        )
    ours = files_of_report(folder)
    for name in (*FIXED_FILES, IMAGE_LIST):
        if (folder / name).exists() and name not in ours:
            raise UserError(
                f"{folder / name} is not a file of an earlier report, and the report would "
                "replace it: choose a new --report, or move that file"
            )
