"""Abbreviations a note defines: the Schwartz–Hearst algorithm, on character offsets.

Schwartz and Hearst (2003), "A simple algorithm for identifying abbreviation
definitions in biomedical text" (PSB 8:451-462), as in their reference
implementation (``ExtractAbbrev.java``):

1. **Candidates.** Every parenthesis opened after whitespace, ``... ( ... )``.
   The long-form candidate is the text before it, back to the last ``". "``
   or ``", "`` (or the previous closing parenthesis, or the start of the
   note; here also a ``!``/``?`` followed by whitespace, or a blank line).
   The text inside is the short form (pattern ``long form (SF)``), cut at a
   ``", "`` or ``"; "``; a nested ``(`` extends it to the next ``)``. When
   it has more than two words, or is longer than the long-form candidate,
   the roles swap (pattern ``SF (long form)``): the short form is the word
   before the parenthesis, which must then contain a capital letter.
2. **Short-form checks.** At least one letter, the first character a letter
   or digit, 2 to 10 letters and digits.
3. **Long form.** Right to left, every letter or digit of the short form
   must be found in the candidate, in order, each further left than the
   one before; the short form's first character must be found at the start
   of a word. The long form runs from the start of that word to the end of
   the candidate, so it is the shortest one that matches.
4. **Long-form checks.** Not shorter than the short form, not containing the
   short form as a word of its own at its end or followed by a space, and at
   most ``min(|SF| + 5, 2·|SF|)`` words (words split at spaces and hyphens;
   ``|SF|`` counts letters and digits).

Nothing here is specific to a language: parentheses, letters and digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Abbreviation", "best_long_form", "find_abbreviations", "valid_short_form"]

_OPEN = re.compile(r"(?<=\s)\(")
# Where a long-form candidate may start: after a sentence or clause end, a blank line.
_BOUNDARY = re.compile(r"[.,!?]\s|\n\s*\n")
_LF_WORDS = re.compile(r"[^\s\-]+")


@dataclass(frozen=True)
class Abbreviation:
    """A definition found in a note: ``text[sf_start:sf_end]`` stands for ``text[lf_start:lf_end]``."""

    short: str
    long: str
    sf_start: int
    sf_end: int
    lf_start: int
    lf_end: int


def valid_short_form(sf: str) -> bool:
    """Step 2: a letter, a letter or digit first, 2 to 10 letters and digits, at most two words."""
    if len(sf) < 2 or len(sf.split()) > 2:
        return False
    alnum = sum(c.isalnum() for c in sf)
    return any(c.isalpha() for c in sf) and sf[0].isalnum() and 2 <= alnum <= 10


def best_long_form(sf: str, lf: str) -> int | None:
    """Step 3: where in ``lf`` the shortest long form of ``sf`` starts, or None."""
    s = len(sf) - 1
    i = len(lf) - 1
    while s >= 0:
        c = sf[s].lower()
        if not c.isalnum():
            s -= 1
            continue
        # Find c further left; the short form's first character must start a word.
        while i >= 0 and (lf[i].lower() != c or (s == 0 and i > 0 and lf[i - 1].isalnum())):
            i -= 1
        if i < 0:
            return None
        i -= 1
        s -= 1
    return lf.rfind(" ", 0, i + 1) + 1


def _valid_pair(sf: str, lf: str) -> bool:
    """Step 4."""
    n = sum(c.isalnum() for c in sf)
    words = len(_LF_WORDS.findall(lf))
    return not (
        len(lf) < len(sf)
        or f"{sf} " in lf
        or lf.endswith(sf)
        or words > 2 * n
        or words > n + 5
        or n > 10
    )


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _pair(text: str, sf: tuple[int, int], lf: tuple[int, int]) -> Abbreviation | None:
    sf_start, sf_end = _strip(text, *sf)
    lf_start, lf_end = _strip(text, *lf)
    short, candidate = text[sf_start:sf_end], text[lf_start:lf_end]
    if not valid_short_form(short) or not candidate:
        return None
    offset = best_long_form(short, candidate)
    if offset is None:
        return None
    lf_start += offset
    long = text[lf_start:lf_end]
    if not _valid_pair(short, long):
        return None
    return Abbreviation(short, long, sf_start, sf_end, lf_start, lf_end)


def find_abbreviations(text: str) -> list[Abbreviation]:
    """Every abbreviation definition in ``text``, in order (steps 1 to 4 of the module docstring)."""
    found: list[Abbreviation] = []
    region = 0  # where the current long-form candidate may start at the earliest
    pos = 0
    while (m := _OPEN.search(text, pos)) is not None:
        op = m.start()
        cp = text.find(")", op + 1)
        if cp < 0:
            break
        start = region
        for b in _BOUNDARY.finditer(text, region, op):
            start = b.end()
        lf = (start, op)
        inner = text[op + 1 : cp]
        if "(" in inner and (cp2 := text.find(")", cp + 1)) >= 0:
            cp = cp2
            inner = text[op + 1 : cp]
        sf_end = op + 1 + len(inner)
        for sep in (", ", "; "):
            if (k := text.find(sep, op + 1, sf_end)) >= 0:
                sf_end = k
        sf = (op + 1, sf_end)
        lf_text = text[lf[0] : lf[1]].strip()
        sf_text = text[sf[0] : sf[1]].strip()
        if len(sf_text) > 1 and len(lf_text) > 1:
            pair = None
            if len(sf_text.split()) > 2 or len(sf_text) > len(lf_text):
                # SF (long form): the short form is the word before the parenthesis.
                before = text[lf[0] : op].rstrip()
                word_start = lf[0] + max(before.rfind(" "), before.rfind("\n")) + 1
                word = (word_start, lf[0] + len(before))
                if any(c.isupper() for c in text[word[0] : word[1]]):
                    pair = _pair(text, word, sf)
            else:
                pair = _pair(text, sf, lf)
            if pair is not None:
                found.append(pair)
        region = pos = cp + 1
    return found
