"""The lexicon inside the package: the dictionary the model learned from, shipped with it and combined at inference.

A model trained on a lexicon annotator's labels should never ship worse than
that lexicon. ``appliance export`` therefore packs the lexicon the model's
training annotations were made with (found through the model's manifest:
its annotation set and the annotator parameters recorded there, each
lexicon file checked against its recorded SHA-256), or lexicon files given
with ``--lexicon``, as two package files:

* ``lexicon.tsv``: the entries, ``term<TAB>label<TAB>code``
  (:mod:`appliance.annotate.lexicon_tsv`);
* ``lexicon.json``: the matcher's options (language, case folding,
  inflection, generic-term skipping, regex rules: the
  :class:`~appliance.annotate.lexicon.LexiconAnnotator` keyword arguments),
  where the entries came from, and the combination defaults.

Both are listed in the signed manifest like every other file; in a
real-zone package they are ``lexicon.tsv.enc`` and ``lexicon.json.enc``,
encrypted under the workspace data key (a hospital's term lists may be
sensitive). ``ner.json`` says which files hold the lexicon, its size and
types, and the default combination.

At inference the matcher is rebuilt through the annotator's public API (a
:class:`Lexicon` plus options), so a change of its matching rules reaches
packaged lexicons unchanged, and its matches are combined with the model's
entities by :func:`combine` under the rule in :data:`UNION_RULE`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from appliance.annotate.lexicon import (
    Lexicon,
    LexiconAnnotator,
    LexiconRules,
    reload_source,
)
from appliance.annotate.lexicon_tsv import from_tsv, to_tsv
from appliance.config import EntitySchema
from appliance.documents import Span
from appliance.errors import InputError, UsageError, WorkspaceError
from appliance.ner import zones
from appliance.ner.encoding import Entity
from appliance.security.crypto import atomic_write, read_encrypted, write_encrypted
from appliance.security.keys import DataKey

LEXICON_FILE = "lexicon.tsv"
SETTINGS_FILE = "lexicon.json"
LEXICON_FORMAT = "appliance-ner-lexicon/1"

COMBINE = ("model", "lexicon", "union")
DEFAULT_COMBINE = "union"  # for a package that carries a lexicon; one without gives "model"
# A model entity the lexicon does not confirm is kept from this confidence on. On
# NCBI-disease devel (BENCHMARKS.md) the model's entities that overlap no lexicon
# match were right 25 % of the time overall and 45 % from 0.9: union at 0.5 stayed
# within a point of the lexicon alone, at 0.9 it passed it by 4.
DEFAULT_MIN_CONFIDENCE = 0.9
# What export tries when it has a real development gold file to choose from.
CALIBRATION_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)

UNION_RULE = (
    "the model's entities with confidence at least the minimum confidence are kept (the others "
    "are dropped); a lexicon match with the same offsets and type as a model entity, of any "
    "confidence, gives that entity, marked as found by both; any other lexicon match that "
    "overlaps no kept model entity is added; one that overlaps kept model entities replaces them only if it contains each "
    "of them, is strictly longer than each and has the type of each; otherwise the model's "
    "entities stay and the lexicon match is dropped"
)

# The LexiconAnnotator keyword options a package records (its constructor's, minus the lexicon).
# ``language_rules`` is carried whole (LexiconRules.to_json), not as the summary an
# annotation manifest records.
_OPTION_NAMES = frozenset(inspect.signature(LexiconAnnotator).parameters) - {"lexicon"}


# ---------------------------------------------------------------------------
# What export packs


@dataclass
class PackedLexicon:
    """A lexicon, the matcher options to reproduce its matches, and where it came from."""

    lexicon: Lexicon
    options: dict[str, Any]
    origin: dict[str, Any]

    def annotator(self, where: str = "the lexicon") -> LexiconAnnotator:
        return build_annotator(self.lexicon, self.options, where)

    def describe(self) -> str:
        if self.origin.get("kind") == "training annotations":
            return f"the training annotations '{self.origin.get('annotations')}'"
        names = ", ".join(Path(str(s.get("path", "?"))).name for s in self.lexicon.sources)
        return f"--lexicon {names}"


def annotator_options(params: dict[str, Any]) -> dict[str, Any]:
    """The keyword options in an annotator's recorded parameters (``LexiconAnnotator.params()``)."""
    out = {k: v for k, v in params.items() if k in _OPTION_NAMES and k != "language_rules"}
    if "rules" in out:
        out["rules"] = [[str(label), str(pattern)] for label, pattern in out["rules"]]
    return out


def build_annotator(lexicon: Lexicon, options: dict[str, Any], where: str) -> LexiconAnnotator:
    """The lexicon annotator for ``lexicon`` with recorded ``options``; unknown options are refused."""
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        raise InputError(
            f"{where}: matching option(s) {', '.join(unknown)} unknown to this appliance version; "
            "use the appliance version that exported the package, or --combine model"
        )
    kwargs = dict(options)
    if "rules" in kwargs:
        kwargs["rules"] = [(str(label), str(pattern)) for label, pattern in kwargs["rules"]]
    if "language_rules" in kwargs:
        try:
            kwargs["language_rules"] = LexiconRules.from_json(kwargs["language_rules"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InputError(f"{where}: 'language_rules' is not a set of lexicon rules") from None
    return LexiconAnnotator(lexicon, **kwargs)


def with_language_rules(options: dict[str, Any], rules: LexiconRules) -> dict[str, Any]:
    """``options`` plus the language rules, whole, so a package matches as annotation did."""
    return {**options, "language_rules": rules.to_json()}


def _rebuild_source(source: dict[str, Any], ws_root: Path) -> Lexicon:
    """One lexicon source of the training annotator, read again and checked against its hash."""
    return reload_source(source, ws_root, "pass --lexicon FILE to pack another, or --no-lexicon")


def training_lexicon(
    source: dict[str, Any],
    annotation_manifest: dict[str, Any] | None,
    ws_root: Path,
    schema: EntitySchema | None = None,
) -> tuple[PackedLexicon | None, str]:
    """The lexicon the model's training annotations were made with, or (None, why there is none).

    ``source``: the model's ``data.source`` (its manifest's); its
    ``annotator`` record, else the annotation set's manifest
    (``annotation_manifest``), gives the lexicon member's parameters: the
    lexicon files with their hashes and the matching options. The rebuilt
    annotator must report the same parameters (term count included), so
    the package reproduces the matches the model was trained on.
    """
    if source.get("kind") != "annotations":
        what = "a gold file" if source.get("kind") == "gold file" else "documents given directly"
        return None, f"the model was trained on {what}, not on lexicon annotations"
    name = str(source.get("name", "default"))
    annotator = source.get("annotator")
    if not isinstance(annotator, dict):
        annotator = (annotation_manifest or {}).get("annotator")
    members = annotator.get("members") if isinstance(annotator, dict) else None
    params = next(
        (m for m in members or [] if isinstance(m, dict) and m.get("annotator") == "lexicon"),
        None,
    )
    if params is None:
        return None, f"the annotation set '{name}' was made without a lexicon annotator"
    lexicon = Lexicon()
    for item in params.get("sources") or []:
        lexicon.extend(_rebuild_source(item, ws_root))
    options = annotator_options(params)
    language = str(params.get("language", "en"))
    rules = (
        LexiconRules.from_schema(schema, language)
        if schema is not None
        else LexiconRules.builtin(language)
    )
    options = with_language_rules(options, rules)
    rebuilt = build_annotator(lexicon, options, f"annotation set '{name}'").params()
    differs = sorted(
        k for k, v in params.items() if k != "sources" and k in rebuilt and rebuilt[k] != v
    )
    if differs:
        raise WorkspaceError(
            f"annotation set '{name}': the lexicon annotator rebuilt from its record differs in "
            f"{', '.join(differs)} (recorded {params[differs[0]]!r}, now {rebuilt[differs[0]]!r}); "
            "pass --lexicon FILE or --no-lexicon"
        )
    origin = {
        "kind": "training annotations",
        "annotations": name,
        "combine": (annotator or {}).get("combine"),
    }
    if len(members or []) > 1:
        origin["ensemble_members"] = [m.get("annotator") for m in members or []]
    return PackedLexicon(lexicon, options, origin), ""


def lexicon_from_files(
    paths: Sequence[Path], label: str | None, language: str, schema: EntitySchema | None = None
) -> PackedLexicon:
    """``--lexicon [TYPE=]FILE ...`` (the formats ``annotate --lexicon`` reads), matched with the annotator's defaults."""
    from appliance.annotate.annotators import AnnotatorOptions
    from appliance.annotate.annotators.lexicon import build_lexicon

    lexicon = build_lexicon(AnnotatorOptions(lexicons=tuple(paths), label=label))
    rules = (
        LexiconRules.from_schema(schema, language)
        if schema is not None
        else LexiconRules.builtin(language)
    )
    annotator = LexiconAnnotator(lexicon, language=language, language_rules=rules)
    options = with_language_rules(annotator_options(annotator.params()), rules)
    return PackedLexicon(lexicon, options, {"kind": "files"})


def write_lexicon(
    folder: Path,
    packed: PackedLexicon,
    key: DataKey | None,
    combine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``lexicon.tsv`` and ``lexicon.json`` (encrypted under ``key`` if given); returns ner.json's entry.

    ``combine``: the package's combination defaults (``default``,
    ``min_confidence`` and how it was chosen); the built-in ones when None.
    """
    annotator = packed.annotator()
    tsv = to_tsv(packed.lexicon)
    entries = tsv.count(b"\n") - 1
    combine = combine or {"default": DEFAULT_COMBINE, "min_confidence": DEFAULT_MIN_CONFIDENCE}
    sources = [
        {k: v for k, v in s.items() if k in ("path", "sha256", "format", "label", "entries")}
        for s in packed.lexicon.sources
    ]
    settings = {
        "format": LEXICON_FORMAT,
        "entries": entries,
        "terms": annotator.size,
        "labels": packed.lexicon.labels,
        "annotator": packed.options,
        "origin": {**packed.origin, "sources": sources},
        "combine": {**combine, "rule": UNION_RULE},
    }
    body = (json.dumps(settings, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    if key is None:
        files = [LEXICON_FILE, SETTINGS_FILE]
        atomic_write(folder / LEXICON_FILE, tsv, 0o600)
        atomic_write(folder / SETTINGS_FILE, body, 0o600)
    else:
        files = [LEXICON_FILE + zones.ENC, SETTINGS_FILE + zones.ENC]
        write_encrypted(folder / files[0], key, tsv, label=zones.LABEL_PACKAGE_LEXICON)
        write_encrypted(folder / files[1], key, body, label=zones.LABEL_PACKAGE_LEXICON_SETTINGS)
    return {
        "files": files,
        "entries": entries,
        "terms": annotator.size,
        "labels": packed.lexicon.labels,
        "origin": {
            **packed.origin,
            "sources": [
                {"name": Path(str(s.get("path", ""))).name, "sha256": s.get("sha256")}
                for s in sources
            ],
        },
        "combine": combine,
    }


# ---------------------------------------------------------------------------
# What inference loads


@dataclass
class PackageLexicon:
    """A package's lexicon, ready to match: its annotator and its ``ner.json`` entry."""

    annotator: LexiconAnnotator
    info: dict[str, Any]

    def match(self, texts: Sequence[str]) -> list[list[Span]]:
        return [self.annotator.annotate_text(t) for t in texts]


def lexicon_info(package: Path) -> dict[str, Any] | None:
    """The package's ``ner.json`` lexicon entry (None for a package without a lexicon)."""
    try:
        meta = json.loads((package / "ner.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    info = meta.get("lexicon") if isinstance(meta, dict) else None
    return info if isinstance(info, dict) and info.get("files") else None


def load_package_lexicon(package: Path, key: DataKey | None = None) -> PackageLexicon | None:
    """The lexicon of a (verified) package, decrypted in memory with ``key`` in the real zone."""
    info = lexicon_info(package)
    if info is None:
        return None
    files = info["files"]
    if not isinstance(files, list) or len(files) != 2:
        raise InputError(f"{package / 'ner.json'}: 'lexicon.files' must name two files")
    tsv_name, settings_name = (str(f) for f in files)
    if tsv_name.endswith(zones.ENC):
        meta = json.loads((package / "ner.json").read_text(encoding="utf-8"))
        key = zones.require_key(package, meta, key)
        tsv = read_encrypted(package / tsv_name, key, label=zones.LABEL_PACKAGE_LEXICON)
        body = read_encrypted(
            package / settings_name, key, label=zones.LABEL_PACKAGE_LEXICON_SETTINGS
        )
    else:
        tsv = (package / tsv_name).read_bytes()
        body = (package / settings_name).read_bytes()
    where = str(package / settings_name)
    try:
        settings = json.loads(body)
    except ValueError:
        raise InputError(f"{where}: not JSON") from None
    if not isinstance(settings, dict) or settings.get("format") != LEXICON_FORMAT:
        raise InputError(f"{where}: not a package lexicon of format {LEXICON_FORMAT}")
    sources = (settings.get("origin") or {}).get("sources") or []
    lexicon = from_tsv(tsv, str(package / tsv_name), sources)
    return PackageLexicon(build_annotator(lexicon, settings.get("annotator") or {}, where), info)


def choose_combine(
    requested: str | None, info: dict[str, Any] | None, where: Path | str
) -> tuple[str, float]:
    """The combination mode (``requested``, else the package's default) and its minimum confidence."""
    defaults = (info or {}).get("combine") or {}
    if requested is None:
        mode = str(defaults.get("default", DEFAULT_COMBINE)) if info else "model"
    else:
        mode = requested
    if mode not in COMBINE:
        raise UsageError(f"unknown --combine '{mode}'; choose from: {', '.join(COMBINE)}")
    if mode != "model" and info is None:
        raise UsageError(
            f"--combine {mode}: {where} carries no lexicon (exported with --no-lexicon, from a "
            "model trained without one, or before packages carried one); use --combine model"
        )
    return mode, float(defaults.get("min_confidence", DEFAULT_MIN_CONFIDENCE))


def check_min_confidence(value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise UsageError(f"--min-confidence {value}: must be between 0 and 1")


# ---------------------------------------------------------------------------
# The rule


def _overlaps(a: Entity | Span, b: Entity | Span) -> bool:
    return a.start < b.end and b.start < a.end


def _covers(outer: Span, inner: Entity) -> bool:
    return (
        outer.start <= inner.start
        and inner.end <= outer.end
        and (outer.end - outer.start) > (inner.end - inner.start)
        and outer.label == inner.label
    )


def _from_lexicon(s: Span) -> Entity:
    return Entity(s.start, s.end, s.label, s.text, s.confidence, source="lexicon")


def combine(
    model: Sequence[Entity],
    lexicon: Sequence[Span],
    mode: str,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> list[Entity]:
    """One note's entities under ``mode``.

    ``model``: the model's entities, returned unchanged (no ``source``).
    ``lexicon``: the lexicon's matches, each with ``source`` ``lexicon`` and
    the annotator's confidence (1.0 for a dictionary match). ``union``:
    :data:`UNION_RULE`; every entity says its ``source`` (``model``,
    ``lexicon`` or ``both``). The result is in text order and free of
    overlaps when its inputs are (the model's and the annotator's are).
    """
    if mode == "model":
        return list(model)
    ordered = sorted(lexicon, key=lambda s: (s.start, -(s.end - s.start), s.label))
    if mode == "lexicon":
        return [_from_lexicon(s) for s in sorted(ordered, key=lambda s: (s.start, s.end))]
    if mode != "union":
        raise UsageError(f"unknown --combine '{mode}'; choose from: {', '.join(COMBINE)}")
    kept: dict[int, Entity] = {
        i: replace(e, source="model") for i, e in enumerate(model) if e.confidence >= min_confidence
    }
    added: list[Entity] = []
    taken: list[Span] = []  # lexicon matches already used (added, or confirming a model entity)
    for match in ordered:
        if any(_overlaps(match, t) for t in taken):
            continue
        same = next(
            (
                i
                for i, e in enumerate(model)
                if (e.start, e.end, e.label) == (match.start, match.end, match.label)
            ),
            None,
        )
        hits = [i for i, e in kept.items() if _overlaps(e, match)]
        if same is not None and set(hits) <= {same}:
            kept[same] = replace(model[same], source="both")
        elif not hits:
            added.append(_from_lexicon(match))
        elif all(_covers(match, kept[i]) for i in hits):
            for i in hits:
                del kept[i]
            added.append(_from_lexicon(match))
        else:
            continue
        taken.append(match)
    return sorted([*kept.values(), *added], key=lambda e: (e.start, e.end, e.label))


def predict(
    tagger: Any,
    lexicon: PackageLexicon | None,
    texts: Sequence[str],
    mode: str,
    min_confidence: float | None = None,
    batch_size: int = 32,
) -> list[list[Entity]]:
    """Each text's entities under ``mode`` (the model is not run for ``lexicon``)."""
    threshold = DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence
    if mode == "model":
        return list(tagger.predict(texts, batch_size))
    if lexicon is None:
        raise UsageError(f"--combine {mode}: the package carries no lexicon")
    model = tagger.predict(texts, batch_size) if mode != "lexicon" else [[] for _ in texts]
    return [
        combine(m, spans, mode, threshold)
        for m, spans in zip(model, lexicon.match(texts), strict=True)
    ]


def calibrate(
    model: Sequence[Sequence[Entity]],
    lexicon: Sequence[Sequence[Span]],
    gold: Sequence[Any],
    grid: Sequence[float] = CALIBRATION_GRID,
) -> tuple[float, dict[str, float]]:
    """The union's minimum confidence with the best exact-span F1 on ``gold`` (real annotated notes).

    ``model`` and ``lexicon`` are each note's entities and matches, in the
    order of ``gold``. Ties go to the higher threshold (fewer unconfirmed
    model entities). Returns the threshold and the F1 at each one tried,
    beside the lexicon alone (``"lexicon"``) and the model alone (``"model"``).
    """
    from appliance.documents import Document
    from appliance.metrics import score

    def f1(entities: Sequence[Sequence[Entity]]) -> float:
        docs = [
            Document(g.id, g.text, [e.span() for e in ents])
            for g, ents in zip(gold, entities, strict=True)
        ]
        return round(float(score(gold, docs)["exact"]["micro"]["f1"]), 4)

    table: dict[str, float] = {}
    for t in grid:
        table[f"{t:g}"] = f1(
            [combine(m, x, "union", t) for m, x in zip(model, lexicon, strict=True)]
        )
    best = max(grid, key=lambda t: (table[f"{t:g}"], t))
    table["lexicon"] = f1([combine([], x, "lexicon") for x in lexicon])
    table["model"] = f1(model)
    return best, table
