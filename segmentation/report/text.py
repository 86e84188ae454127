"""Names as the report shows them. Class and image names come from the user's files: a control
character would be invisible (or break the page), a `$` starts matplotlib's math mode, and a
name of 300 characters would squeeze a chart's axes to nothing."""

from __future__ import annotations

import unicodedata

CHART_NAME_LENGTH = 32  # the longest label a chart draws; a class name's table cell holds all


def visible(name: str) -> str:
    """`name` with each control character written as an escape (`\\x07`), so that it shows."""
    return "".join(
        f"\\x{ord(character):02x}" if unicodedata.category(character) == "Cc" else character
        for character in name
    )


def chart_label(name: str, length: int = CHART_NAME_LENGTH) -> str:
    """`name` as a chart draws it: visible, at most `length` characters (its start and end
    kept around an ellipsis, where names that share a long prefix differ), `$` as a literal."""
    shown = visible(name)
    if len(shown) > length:
        tail = (length - 1) // 3
        shown = f"{shown[: length - 1 - tail]}\u2026{shown[len(shown) - tail :]}"
    return shown.replace("$", r"\$")  # matplotlib reads text between two $ as math
