"""Reading the demo's packaged data files (``data/*.toml`` and ``data/*.tsv``).

The clinical knowledge, phrase tables and name lists are data, not code: a
clinician can review or extend them without reading Python. This module only
reads them; ``knowledge`` turns them into the tables the generator uses.
"""

from __future__ import annotations

import sys
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["read_toml", "read_tsv", "tuples"]


def _text(name: str) -> str:
    return (resources.files("appliance.demo") / "data" / name).read_text(encoding="utf-8")


def read_toml(name: str) -> dict[str, Any]:
    """The parsed TOML file ``data/<name>``."""
    try:
        return tomllib.loads(_text(name))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"data/{name}: {exc}") from exc


def read_tsv(name: str, header: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of the tab-separated file ``data/<name>``, whose first line must be ``header``."""
    lines = _text(name).splitlines()
    if not lines or tuple(lines[0].split("\t")) != header:
        raise ValueError(f"data/{name}: the header must be the columns {header}")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise ValueError(f"data/{name} line {lineno}: expected {len(header)} columns")
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def tuples(value: Any) -> Any:
    """``value`` with every list (at any depth) turned into a tuple: the tables are read-only."""
    if isinstance(value, list):
        return tuple(tuples(v) for v in value)
    return value
