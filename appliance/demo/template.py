"""The template language of the demo notes and the pieces a rendered line is made of.

A template such as

    "[Empirical|Intravenous] treatment with {d:ceftriaxone} {dose:ceftriaxone} was started."

has ``[a|b]`` alternatives (one is picked; an empty one makes text
optional) and ``{name:arg}`` slots. ``parse`` turns it into nodes; the
``Writer`` renders nodes into pieces: plain text, an entity (``Ent``) or an
identifier (``Ident``). Since a gold span is a piece, every span is right by
construction rather than searched for afterwards.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "Alt",
    "Ent",
    "Ident",
    "Line",
    "Node",
    "Piece",
    "Slot",
    "cap",
    "clean",
    "join_items",
    "parse",
]


@dataclass(frozen=True)
class Ent:
    """An entity mention: its text, label and concept code."""

    text: str
    label: str
    code: str


@dataclass(frozen=True)
class Ident:
    """A patient identifier in the text: its text and type."""

    text: str
    type: str


Piece: TypeAlias = str | Ent | Ident
Line: TypeAlias = list[Piece]


@dataclass(frozen=True)
class Alt:
    options: tuple[tuple[Node, ...], ...]


@dataclass(frozen=True)
class Slot:
    name: str
    arg: str


Node: TypeAlias = str | Alt | Slot


@functools.cache
def parse(template: str) -> tuple[Node, ...]:
    """Parse ``[a|b]`` alternatives and ``{name:arg}`` slots (cached: templates repeat)."""
    nodes, i = _parse_seq(template, 0)
    if i != len(template):
        raise ValueError(f"stray '{template[i]}' in template {template!r}")
    return nodes


def _parse_seq(t: str, i: int) -> tuple[tuple[Node, ...], int]:
    """Parse from ``t[i]`` up to an unmatched '|' or ']' (or the end); return nodes and position."""
    out: list[Node] = []
    buf: list[str] = []
    while i < len(t):
        c = t[i]
        if c == "[":
            if buf:
                out.append("".join(buf))
                buf = []
            options: list[tuple[Node, ...]] = []
            i += 1
            while True:
                seq, i = _parse_seq(t, i)
                options.append(seq)
                if i >= len(t):
                    raise ValueError(f"unclosed '[' in template {t!r}")
                i += 1
                if t[i - 1] == "]":
                    break
            out.append(Alt(tuple(options)))
            continue
        if c == "{":
            j = t.find("}", i)
            if j < 0:
                raise ValueError(f"unclosed '{{' in template {t!r}")
            name, _, arg = t[i + 1 : j].partition(":")
            if buf:
                out.append("".join(buf))
                buf = []
            out.append(Slot(name, arg))
            i = j + 1
            continue
        if c in "|]":
            break  # closes an alternative; at the top level parse reports it as stray
        buf.append(c)
        i += 1
    if buf:
        out.append("".join(buf))
    return tuple(out), i


_SPACES = re.compile(r" {2,}")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:)])(?=\s|$|[,.;)])")
_OPEN_PAREN_SPACE = re.compile(r"\( +")


def clean(pieces: Sequence[Piece]) -> Line:
    """Merge adjacent text and tidy spaces that optional alternatives leave behind."""
    merged: Line = []
    for p in pieces:
        if isinstance(p, str):
            if not p:
                continue
            if merged and isinstance(merged[-1], str):
                merged[-1] += p
                continue
        merged.append(p)
    for k, p in enumerate(merged):
        # Substring checks first: most pieces need no fixing and regexes are the hot path.
        if isinstance(p, str) and " " in p:
            if "  " in p:
                p = _SPACES.sub(" ", p)
            if " ," in p or " ." in p or " ;" in p or " :" in p or " )" in p:
                p = _SPACE_BEFORE_PUNCT.sub(r"\1", p)
            if "( " in p:
                p = _OPEN_PAREN_SPACE.sub("(", p)
            merged[k] = p
        if isinstance(p, str) and ".." in p:
            # "t.i.d." closing a sentence: one full stop, as people write it.
            merged[k] = p.replace("..", ".")
    # Text at the two ends of a line must not carry spaces (no trailing whitespace).
    while merged and isinstance(merged[0], str) and not merged[0].strip():
        merged.pop(0)
    while merged and isinstance(merged[-1], str) and not merged[-1].strip():
        merged.pop()
    if merged and isinstance(merged[0], str):
        merged[0] = merged[0].lstrip()
    if merged and isinstance(merged[-1], str):
        merged[-1] = merged[-1].rstrip()
    return merged


def _first_word_lower(s: str) -> bool:
    word = s.split(" ", 1)[0]
    return word[:1].isalpha() and word == word.lower()


def cap(line: Line) -> Line:
    """Capitalize a sentence start, leaving abbreviations like "eGFR" or "tPA" alone."""
    if not line:
        return line
    first = line[0]
    if isinstance(first, str) and _first_word_lower(first):
        return [first[0].upper() + first[1:], *line[1:]]
    if isinstance(first, Ent) and _first_word_lower(first.text):
        return [Ent(first.text[0].upper() + first.text[1:], first.label, first.code), *line[1:]]
    return line


def join_items(items: Sequence[Line], rng: random.Random, *, conj: str = "and") -> Line:
    """ "a, b and c" (or "a, b, c" now and then, as people write)."""
    if not items:
        return []
    if len(items) == 1:
        return list(items[0])
    out: Line = []
    last_sep = f" {conj} " if rng.random() < 0.85 else ", "
    for k, item in enumerate(items):
        if k:
            out.append(last_sep if k == len(items) - 1 else ", ")
        out.extend(item)
    return out
