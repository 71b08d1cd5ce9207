"""Training mentions for the normalizer's encoder: no human label, only terminologies and synthetic notes.

Three sources, each a list of ``(mention, concept code)``:

- **names**: every name and synonym of a concept (pairs of two names of one
  concept teach the encoder that they mean the same);
- **rule variants**: forms a note writes that a terminology seldom lists:
  case, hyphens closed or opened, "X, Y" turned into "Y X", a parenthesis
  dropped, two words swapped, one letter dropped from a long word (a typo);
- **note mentions**: entities the annotator found in released synthetic
  notes that key to exactly one concept, and abbreviations those notes
  define for a concept's name ("... muscular dystrophy (DMD)" gives DMD).

A concept with note mentions is *seen*; the normalizer's evaluation reports
seen and unseen concepts apart.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from appliance.annotate.abbreviations import find_abbreviations
from appliance.documents import Document
from appliance.normalize.linker import SurfaceKeys
from appliance.normalize.terminology import Terminology

_PAREN = re.compile(r"\s*\([^()]*\)\s*")


def rule_variants(name: str, rng: random.Random, stop_words: frozenset[str]) -> list[str]:
    """Forms of ``name`` a note might write; none equal to it."""
    out: list[str] = []
    words = name.split()
    if "-" in name:
        out += [name.replace("-", " "), name.replace("-", "")]
    if ", " in name:
        head, _, rest = name.partition(", ")
        out.append(f"{rest} {head}")
    if "(" in name:
        out.append(" ".join(_PAREN.sub(" ", name).split()))
    lowered = [w.casefold() for w in words]
    for sw in stop_words:
        if sw in lowered[1:-1]:
            i = lowered.index(sw)
            out.append(" ".join([*words[i + 1 :], *words[:i]]))
            break
    if 2 <= len(words) <= 4:
        i = rng.randrange(len(words) - 1)
        swapped = [*words[:i], words[i + 1], words[i], *words[i + 2 :]]
        out.append(" ".join(swapped))
    long_words = [i for i, w in enumerate(words) if len(w) >= 7 and w.isalpha()]
    if long_words:
        i = rng.choice(long_words)
        w = words[i]
        j = rng.randrange(1, len(w) - 1)
        out.append(" ".join([*words[:i], w[:j] + w[j + 1 :], *words[i + 1 :]]))
    out.append(name.upper() if name.islower() and len(name) <= 12 else name.casefold())
    return [v for v in dict.fromkeys(x.strip() for x in out) if v and v != name]


def note_mentions(
    docs: Iterable[Document], terminology: Terminology, keys: SurfaceKeys
) -> list[tuple[str, str]]:
    """``(mention, code)`` from annotated notes: spans and defined abbreviations that key to one concept."""
    exact: dict[str, set[str]] = {}
    variant: dict[str, set[str]] = {}
    for c in terminology.concepts:
        for n in c.names:
            exact.setdefault(keys.exact(n), set()).add(c.code)
            variant.setdefault(keys.variant(n), set()).add(c.code)
    labels = {c.code: c.label for c in terminology.concepts}

    def concept(text: str, label: str | None) -> str | None:
        for table, key in ((exact, keys.exact(text)), (variant, keys.variant(text))):
            codes = {c for c in table.get(key, ()) if label is None or labels[c] == label}
            if len(codes) == 1:
                return next(iter(codes))
            if codes:
                return None
        return None

    out: list[tuple[str, str]] = []
    short_forms: dict[str, Counter[str]] = {}
    for doc in docs:
        for s in doc.spans:
            code = concept(s.text, s.label)
            if code is not None:
                out.append((" ".join(s.text.split()), code))
        for a in find_abbreviations(doc.text):
            code = concept(a.long, None)
            if code is not None:
                short_forms.setdefault(a.short, Counter())[code] += 1
    for short, codes in short_forms.items():
        (only, count), *others = codes.most_common()
        if not others:  # a short form two concepts share is left to each note's own definition
            out.extend([(short, only)] * count)
    return out


def training_pairs(
    terminology: Terminology,
    mentions: Sequence[tuple[str, str]],
    stop_words: frozenset[str],
    seed: int = 0,
) -> list[tuple[str, str, int]]:
    """``(a, b, concept index)``: two forms of one concept, from names, variants and mentions."""
    rng = random.Random(seed)
    index = {c.code: i for i, c in enumerate(terminology.concepts)}
    by_concept: dict[int, list[str]] = {
        i: list(c.names) for i, c in enumerate(terminology.concepts)
    }
    for text, code in dict.fromkeys(mentions):
        forms = by_concept[index[code]]
        if text not in forms:
            forms.append(text)
    pairs: list[tuple[str, str, int]] = []
    for i, c in enumerate(terminology.concepts):
        names = by_concept[i]
        variants = [v for n in c.names[:3] for v in rule_variants(n, rng, stop_words)]
        forms = list(dict.fromkeys(names + variants))
        anchor = c.name
        for other in forms:
            if other != anchor:
                pairs.append((anchor, other, i))
        for a in names[1:4]:
            b = rng.choice(forms)
            if a != b:
                pairs.append((a, b, i))
        if len(forms) == 1:
            pairs.append((anchor, anchor, i))
    return pairs
