"""Line numbers of keys in a TOML document, for error messages.

``tomllib`` gives values but no positions, so this scans the text: table headers
(``[a.b]``, ``[[a.b]]``) and ``key = value`` lines. Keys inside inline tables and multi-line
values map to the line of the key that opens them, which is where a reader would look.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# A key part: bare, "basic" (with backslash escapes) or 'literal'.
_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")

Path = tuple[str | int, ...]


def _split_key(dotted: str) -> list[str]:
    parts = re.findall(_PART, dotted)
    return [_unquote(p) for p in parts]


def _unquote(part: str) -> str:
    if part.startswith('"'):
        return part[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
    return part[1:-1] if part.startswith("'") else part


def key_lines(text: str) -> dict[Path, int]:
    """Map every key path (array-of-table entries indexed) to its 1-based line number."""
    lines: dict[Path, int] = {}
    table: Path = ()
    array_counts: dict[Path, int] = {}
    in_multiline: str | None = None
    # TOML lines end at \n only (splitlines would also split at U+2028 and friends).
    for number, line in enumerate(text.split("\n"), start=1):
        if in_multiline:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            names = tuple(_split_key(header.group(2)))
            if header.group(1) == "[[":
                index = array_counts.get(names, 0)
                array_counts[names] = index + 1
                table = (*names, index)
                lines.setdefault(names, number)
            else:
                table = _resolve_arrays(names, array_counts)
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            parts = _split_key(key.group(1))
            for end in range(1, len(parts) + 1):  # a.b.c = 1 also defines a and a.b here
                lines.setdefault((*table, *parts[:end]), number)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2 == 1:
                    in_multiline = quote
    return lines


def _resolve_arrays(names: tuple[str, ...], array_counts: dict[Path, int]) -> Path:
    """``[a.b]`` after ``[[a]]`` belongs to the latest ``a`` entry."""
    resolved: list[str | int] = []
    for i, name in enumerate(names):
        resolved.append(name)
        prefix = names[: i + 1]
        if prefix in array_counts and i < len(names) - 1:
            resolved.append(array_counts[prefix] - 1)
    return tuple(resolved)


def line_of(lines: dict[Path, int], path: Sequence[str | int]) -> int | None:
    """The line of ``path`` or of its closest enclosing key that has one."""
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None
