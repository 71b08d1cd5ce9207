"""Notes and documents: real records as readers yield them, documents with entity spans, gold readers and writers.

A ``Record`` is one real note as an export reader yields it (id, text,
metadata, the patient's ``Identifier``s); a ``Reject`` is an input row that
was not stored, and why. Every input row ends as exactly one of the two, so
nothing is silently lost.

One in-memory shape serves every annotation and evaluation path: a
``Document`` is an id, a text and character spans. Three on-disk formats are
read into it (and the last two written from it):

* CoNLL / IOB: ``token<TAB>...<TAB>tag`` one token per line (the first column
  is the token, the last the tag; space-separated columns are accepted when a
  line has no tab), a blank line between sentences. Files with ``-DOCSTART-``
  lines are split into documents there (sentences joined by a newline);
  without them every sentence is a document. Text is rebuilt by joining the
  tokens with single spaces. IOB2 and IOB1 tags are accepted (an ``I-`` that
  does not continue an entity of its type starts one).
* BRAT standoff: a folder of ``.txt`` + ``.ann`` pairs, or one ``.ann``
  beside its ``.txt``. Text-bound annotations (``T`` lines) become spans; a
  discontinuous one covers its fragments' full extent. Other lines
  (relations, events, attributes, notes, comments) are ignored.
* JSONL: ``{"id", "text", "entities": [{"start", "end", "label", ...}]}`` per
  line, the demo ``gold.jsonl`` format. Other top-level keys go to ``meta``.
* PubTator (read only): ``ID|t|title`` and ``ID|a|abstract`` lines, then
  ``ID<TAB>start<TAB>end<TAB>mention<TAB>type[<TAB>concept]`` per mention, a
  blank line between documents (the NCBI-disease corpus). The text is the
  title and the abstract joined by a newline (one character, as the offsets
  count a space there).

Word tokens (``word_tokens``) are language neutral: runs of letters and
digits, and every other non-space character alone. They define the
word-level BIO tags NER training and seqeval scoring use.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import InputError

__all__ = [
    "FORMATS",
    "Document",
    "Identifier",
    "Record",
    "Reject",
    "Span",
    "Uncertain",
    "bio_tags",
    "detect_format",
    "read_gold",
    "spans_from_bio",
    "word_tokens",
    "write_brat",
    "write_jsonl",
]

FORMATS = ("auto", "conll", "brat", "jsonl", "pubtator")

_WORD = re.compile(r"[^\W_]+|\S")
_TAG = re.compile(r"(?P<prefix>[BIES])-(?P<type>\S+)")
_CONLL_SUFFIXES = {".tsv", ".conll", ".iob", ".iob2", ".bio", ".conllu", ".txt"}


@dataclass(frozen=True)
class Identifier:
    """A real identifier of the record's patient, e.g. ("PERSON", "Mari Tamm", "patient.name")."""

    type: str
    value: str
    field: str

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value, "field": self.field}


@dataclass(frozen=True)
class Record:
    """One note. ``text`` is kept exactly as read (character offsets refer to it)."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    identifiers: tuple[Identifier, ...] = ()
    # Where it came from, e.g. "export.csv:row 12"; never part of the note's identity.
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "metadata": self.metadata,
            "identifiers": [i.as_dict() for i in self.identifiers],
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(
            id=data["id"],
            text=data["text"],
            metadata=dict(data.get("metadata") or {}),
            identifiers=tuple(Identifier(**i) for i in data.get("identifiers") or ()),
            source=data.get("source", ""),
        )


@dataclass(frozen=True)
class Reject:
    """An input row that was not stored, and why. Never carries note text."""

    source: str  # the export file (relative to the export root for folders)
    location: str  # "line 12", "row 5", "file a/b.txt", "line 3 entry 2"
    reason: str  # one line, e.g. "empty text", "bad base64 in content[0].attachment.data"
    record_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "location": self.location,
            "reason": self.reason,
            "record_id": self.record_id,
        }


@dataclass(frozen=True)
class Span:
    """An entity: characters ``text[start:end]`` of its document, with a type label.

    ``confidence`` (0 to 1) is how sure the annotator that made the span is;
    gold spans and exact dictionary matches have 1.0. It never takes part in
    comparing spans: two spans are the same entity if offsets and type agree.
    """

    start: int
    end: int
    label: str
    text: str
    confidence: float = field(default=1.0, compare=False)
    code: str = field(default="", compare=False)  # a concept code, where the source names one


@dataclass(frozen=True)
class Uncertain:
    """Characters ``[start, end)`` an annotator could not decide on (entity or not).

    Training with partial labels leaves the tokens there out of the loss
    instead of teaching them as outside any entity. ``reason`` says why, for
    the QA counts (``head_noun``, ``unknown_word``, ``low_confidence``...).
    """

    start: int
    end: int
    reason: str


@dataclass
class Document:
    """A note (or a sentence of a gold corpus), its entity spans and its undecided ranges."""

    id: str
    text: str
    spans: list[Span]
    meta: dict[str, Any] = field(default_factory=dict)
    uncertain: list[Uncertain] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Word tokens and BIO tags


def word_tokens(text: str) -> list[tuple[int, int]]:
    """Word-level ``(start, end)`` character offsets: letter/digit runs, other characters alone."""
    return [m.span() for m in _WORD.finditer(text)]


def _ordered(spans: Iterable[Span]) -> list[Span]:
    # Earlier first, then longer first: the rule every overlap resolution here follows.
    return sorted(spans, key=lambda s: (s.start, -(s.end - s.start), s.label))


def bio_tags(doc: Document) -> list[str]:
    """IOB2 tags over ``word_tokens(doc.text)``.

    A word is inside a span when it overlaps it. Where spans overlap, the one
    that starts first (then the longer) keeps the words; a later span only
    tags words still free, so the tags stay a valid IOB2 sequence.
    """
    tokens = word_tokens(doc.text)
    tags = ["O"] * len(tokens)
    starts = [s for s, _ in tokens]
    for span in _ordered(doc.spans):
        i = bisect.bisect_right(starts, span.start) - 1
        if i < 0 or tokens[i][1] <= span.start:
            i += 1
        first = True
        while i < len(tokens) and tokens[i][0] < span.end:
            if tags[i] != "O":
                if not first:
                    break  # ran into an earlier span: stop, do not split it
                i += 1
                continue
            tags[i] = ("B-" if first else "I-") + span.label
            first = False
            i += 1
    return tags


def spans_from_bio(text: str, tokens: Sequence[tuple[int, int]], tags: Sequence[str]) -> list[Span]:
    """Spans from word-level tags (IOB2; IOB1 and BIOES read leniently)."""
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    spans: list[Span] = []
    current: tuple[int, int, str] | None = None

    def close() -> None:
        if current is not None:
            s, e, label = current
            spans.append(Span(s, e, label, text[s:e]))

    for (start, end), tag in zip(tokens, tags, strict=True):
        m = _TAG.fullmatch(tag)
        if m is None:  # "O" or anything unknown ends an entity
            close()
            current = None
            continue
        prefix, label = m["prefix"], m["type"]
        if prefix in ("I", "E") and current is not None and current[2] == label:
            current = (current[0], end, label)
        else:
            close()
            current = (start, end, label)
        if prefix in ("E", "S"):
            close()
            current = None
    close()
    return spans


# ---------------------------------------------------------------------------
# Reading


def detect_format(path: Path) -> str:
    """Guess the gold format from the path: folder or .ann → brat, .jsonl/.json → jsonl, else conll."""
    if path.is_dir():
        return "brat"
    suffix = path.suffix.lower()
    if suffix == ".ann" or (suffix == ".txt" and path.with_suffix(".ann").is_file()):
        return "brat"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".txt" and _looks_pubtator(path):
        return "pubtator"
    if suffix in _CONLL_SUFFIXES:
        return "conll"
    raise InputError(
        f"{path}: cannot tell the gold format from the name; pass the format "
        "(conll, brat, jsonl or pubtator) explicitly"
    )


def read_gold(
    path: Path, fmt: str = "auto", labels: Mapping[str, str] | None = None
) -> list[Document]:
    """Read a gold set (CoNLL/IOB, BRAT standoff or JSONL spans) into documents.

    ``labels`` renames entity types and keeps only the ones it names, e.g.
    ``{"Disease": "DIAGNOSIS"}``. Malformed input raises ``InputError`` naming
    the file and the line.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: gold file not found")
    if fmt not in FORMATS:
        raise InputError(f"unknown gold format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "conll":
        docs = _read_conll(path)
    elif fmt == "brat":
        docs = _read_brat(path)
    elif fmt == "pubtator":
        docs = _read_pubtator(path)
    else:
        docs = _read_jsonl(path)
    if labels is not None:
        for doc in docs:
            doc.spans = [
                Span(s.start, s.end, labels[s.label], s.text)
                for s in doc.spans
                if s.label in labels
            ]
    return docs


def _read_text(path: Path) -> str:
    try:
        # newline="" keeps "\r\n" as two characters, as standoff offsets count them.
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc


def _read_conll(path: Path) -> list[Document]:
    if path.is_dir():
        raise InputError(f"{path}: a CoNLL gold set is one file, not a folder")
    lines = _read_text(path).splitlines()
    has_docstart = any(line.startswith("-DOCSTART-") for line in lines)
    docs: list[Document] = []
    sentences: list[list[tuple[str, str]]] = []
    sentence: list[tuple[str, str]] = []
    first_line = 1

    def end_sentence() -> None:
        nonlocal sentence
        if sentence:
            sentences.append(sentence)
        sentence = []

    def end_document(next_line: int) -> None:
        nonlocal sentences, first_line
        end_sentence()
        if sentences:
            docs.append(_conll_document(f"{path.stem}-{len(docs) + 1}", sentences, first_line))
        sentences = []
        first_line = next_line

    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if line.startswith("-DOCSTART-"):
            end_document(lineno + 1)
            continue
        if not line.strip():
            if has_docstart:
                end_sentence()
            else:
                end_document(lineno + 1)
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        if len(cols) < 2 or not cols[0].strip():
            raise InputError(f"{path} line {lineno}: expected 'token<TAB>tag', got {line[:60]!r}")
        token, tag = cols[0].strip(), cols[-1].strip()
        if tag != "O" and _TAG.fullmatch(tag) is None:
            raise InputError(
                f"{path} line {lineno}: tag {tag!r} is not O, B-TYPE or I-TYPE (IOB tagging)"
            )
        sentence.append((token, tag))
    end_document(len(lines) + 1)
    return docs


def _conll_document(
    doc_id: str, sentences: list[list[tuple[str, str]]], first_line: int
) -> Document:
    parts: list[str] = []
    tokens: list[tuple[int, int]] = []
    tags: list[str] = []
    pos = 0
    for si, sentence in enumerate(sentences):
        if si:
            parts.append("\n")
            pos += 1
        for ti, (token, tag) in enumerate(sentence):
            if ti:
                parts.append(" ")
                pos += 1
            parts.append(token)
            tokens.append((pos, pos + len(token)))
            tags.append(tag)
            pos += len(token)
    text = "".join(parts)
    return Document(doc_id, text, spans_from_bio(text, tokens, tags), {"line": first_line})


_PUBTATOR_TEXT = re.compile(r"([^|\t]+)\|([ta])\|(.*)")


def _looks_pubtator(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for line in fh:
                if line.strip():
                    return _PUBTATOR_TEXT.match(line.rstrip("\r\n")) is not None
    except (OSError, UnicodeDecodeError):
        return False
    return False


def _read_pubtator(path: Path) -> list[Document]:
    if path.is_dir():
        raise InputError(f"{path}: a PubTator gold set is one file, not a folder")
    docs: list[Document] = []
    seen: set[str] = set()
    parts: dict[str, str] = {}
    mentions: list[tuple[int, list[str]]] = []
    doc_id = ""
    first = 0

    def end_document() -> None:
        nonlocal parts, mentions, doc_id
        if not parts:
            return
        where = f"{path} line {first}"
        if "t" not in parts or "a" not in parts:
            raise InputError(f"{where}: document {doc_id!r} needs a |t| and an |a| line")
        text = parts["t"] + "\n" + parts["a"]
        spans = []
        for lineno, cols in mentions:
            try:
                start, end = int(cols[1]), int(cols[2])
            except ValueError:
                raise InputError(f"{path} line {lineno}: offsets are not integers") from None
            if not 0 <= start < end <= len(text):
                raise InputError(
                    f"{path} line {lineno}: offsets {start}-{end} are outside the text "
                    f"({len(text)} characters)"
                )
            if text[start:end].split() != cols[3].split():
                raise InputError(
                    f"{path} line {lineno}: mention {cols[3]!r} does not match the text at "
                    f"{start}-{end} ({text[start:end]!r})"
                )
            code = cols[5].strip() if len(cols) > 5 else ""
            spans.append(Span(start, end, cols[4], text[start:end], code=code))
        if doc_id in seen:
            # The NCBI-disease training file lists one abstract twice; keep the first.
            parts, mentions = {}, []
            return
        seen.add(doc_id)
        docs.append(Document(doc_id, text, _ordered(set(spans)), {"line": first}))
        parts, mentions = {}, []

    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        line = line.rstrip("\r")
        if not line.strip():
            end_document()
            continue
        m = _PUBTATOR_TEXT.fullmatch(line)
        if m is not None:
            if parts and m[1] != doc_id:
                end_document()
            if not parts:
                doc_id, first = m[1], lineno
            parts[m[2]] = m[3]
            continue
        cols = line.split("\t")
        if len(cols) < 5 or cols[0] != doc_id:
            raise InputError(
                f"{path} line {lineno}: expected 'ID|t|title', 'ID|a|abstract' or "
                f"'ID<TAB>start<TAB>end<TAB>mention<TAB>type', got {line[:60]!r}"
            )
        mentions.append((lineno, cols))
    end_document()
    return docs


# A normalization line: "N1<TAB>Reference T1 DOID:9352<TAB>type 2 diabetes mellitus"; the
# reference is kept whole as the span's code.
_ANN_N = re.compile(r"N\S*\tReference (?P<target>T\S+) (?P<code>\S+)(\t.*)?")
_ANN_T = re.compile(r"(?P<id>T\S*)\t(?P<label>\S+) (?P<offsets>[0-9 ;]+)(\t(?P<text>.*))?")


def _read_brat(path: Path) -> list[Document]:
    if path.is_dir():
        anns = sorted(path.rglob("*.ann"))
        if not anns:
            raise InputError(f"{path}: no .ann files in this folder (expected BRAT standoff)")
        return [_read_brat_pair(ann, base=path) for ann in anns]
    ann = path if path.suffix.lower() == ".ann" else path.with_suffix(".ann")
    return [_read_brat_pair(ann, base=ann.parent)]


def _read_brat_pair(ann: Path, base: Path) -> Document:
    txt = ann.with_suffix(".txt")
    if not ann.is_file():
        raise InputError(f"{ann}: annotation file not found")
    if not txt.is_file():
        raise InputError(f"{ann}: no text file {txt.name} beside it")
    text = _read_text(txt)
    spans: list[Span] = []
    ids: list[str] = []
    codes: dict[str, str] = {}  # T id -> the first concept code its N (normalization) line names
    for lineno, line in enumerate(_read_text(ann).splitlines(), 1):
        if line.startswith("N"):
            n = _ANN_N.fullmatch(line.rstrip("\r"))
            if n is None:
                raise InputError(
                    f"{ann} line {lineno}: expected 'N<n><TAB>Reference T<n> DB:ID<TAB>name', "
                    f"got {line[:60]!r}"
                )
            codes.setdefault(n["target"], n["code"])
            continue
        if not line.startswith("T"):
            continue  # relations, events, attributes, notes, comments
        m = _ANN_T.fullmatch(line.rstrip("\r"))
        if m is None:
            raise InputError(
                f"{ann} line {lineno}: expected 'T<n><TAB>TYPE START END<TAB>text', got {line[:60]!r}"
            )
        try:
            fragments = [
                (int(a), int(b))
                for a, b in (frag.split() for frag in m["offsets"].split(";") if frag.strip())
            ]
        except ValueError:
            raise InputError(
                f"{ann} line {lineno}: offsets {m['offsets']!r} are not 'START END[;START END]'"
            ) from None
        start = min(a for a, _ in fragments)
        end = max(b for _, b in fragments)
        if not fragments or any(not 0 <= a < b <= len(text) for a, b in fragments):
            raise InputError(
                f"{ann} line {lineno}: offsets {m['offsets']!r} are outside the text "
                f"({len(text)} characters in {txt.name})"
            )
        if (
            len(fragments) == 1
            and m["text"] is not None
            and m["text"].split() != text[start:end].split()
        ):
            raise InputError(
                f"{ann} line {lineno}: annotated text {m['text']!r} does not match the text at "
                f"{start}-{end} ({text[start:end]!r})"
            )
        spans.append(Span(start, end, m["label"], text[start:end]))
        ids.append(m["id"])
    spans = [
        dataclasses.replace(s, code=codes[i]) if i in codes else s
        for s, i in zip(spans, ids, strict=True)
    ]
    doc_id = str(ann.relative_to(base).with_suffix(""))
    return Document(doc_id, text, _ordered(spans), {"source": str(ann)})


def _read_jsonl(path: Path) -> list[Document]:
    if path.is_dir():
        raise InputError(f"{path}: a JSONL gold set is one file, not a folder")
    docs: list[Document] = []
    seen: set[str] = set()
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg})") from None
        doc = document_from_json(obj, where, default_id=str(lineno))
        if doc.id in seen:
            raise InputError(f"{where}: duplicate document id {doc.id!r}")
        seen.add(doc.id)
        docs.append(doc)
    return docs


def document_from_json(obj: Any, where: str, default_id: str | None = None) -> Document:
    """A ``Document`` from one ``{"id","text","entities"}`` object; ``InputError`` names ``where``."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object")
    text = obj.get("text")
    if not isinstance(text, str):
        raise InputError(f"{where}: 'text' must be a string")
    doc_id = obj.get("id", default_id)
    if not isinstance(doc_id, str | int) or isinstance(doc_id, bool) or doc_id == "":
        raise InputError(f"{where}: 'id' must be a non-empty string")
    entities = obj.get("entities", [])
    if not isinstance(entities, list):
        raise InputError(f"{where}: 'entities' must be a list")
    spans: list[Span] = []
    for i, ent in enumerate(entities):
        ctx = f"{where}: entity {i + 1}"
        if not isinstance(ent, dict):
            raise InputError(f"{ctx}: expected an object with start, end, label")
        start, end, label = ent.get("start"), ent.get("end"), ent.get("label")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
            raise InputError(f"{ctx}: 'start' and 'end' must be integers")
        assert isinstance(start, int) and isinstance(end, int)
        if not isinstance(label, str) or not label:
            raise InputError(f"{ctx}: 'label' must be a non-empty string")
        if not 0 <= start < end <= len(text):
            raise InputError(
                f"{ctx}: offsets {start}-{end} are outside the text ({len(text)} characters)"
            )
        given = ent.get("text")
        if given is not None and given != text[start:end]:
            raise InputError(
                f"{ctx}: 'text' {given!r} does not match the text at {start}-{end} ({text[start:end]!r})"
            )
        confidence = ent.get("confidence", 1.0)
        if (
            not isinstance(confidence, int | float)
            or isinstance(confidence, bool)
            or not 0 <= confidence <= 1
        ):
            raise InputError(f"{ctx}: 'confidence' must be a number from 0 to 1")
        code = ent.get("code", "")
        if not isinstance(code, str) or any(ch.isspace() for ch in code):
            raise InputError(f"{ctx}: 'code' must be a string without spaces")
        spans.append(Span(start, end, label, text[start:end], float(confidence), code))
    uncertain = _uncertain_from_json(obj.get("uncertain", []), text, where)
    meta = {k: v for k, v in obj.items() if k not in ("id", "text", "entities", "uncertain")}
    return Document(str(doc_id), text, _ordered(spans), meta, uncertain)


def _uncertain_from_json(items: Any, text: str, where: str) -> list[Uncertain]:
    if not isinstance(items, list):
        raise InputError(f"{where}: 'uncertain' must be a list")
    out = []
    for i, item in enumerate(items):
        ctx = f"{where}: uncertain range {i + 1}"
        if not isinstance(item, dict):
            raise InputError(f"{ctx}: expected an object with start, end, reason")
        start, end, reason = item.get("start"), item.get("end"), item.get("reason", "")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
            raise InputError(f"{ctx}: 'start' and 'end' must be integers")
        assert isinstance(start, int) and isinstance(end, int)
        if not 0 <= start < end <= len(text):
            raise InputError(f"{ctx}: offsets {start}-{end} are outside the text")
        out.append(Uncertain(start, end, str(reason)))
    return sorted(out, key=lambda u: (u.start, u.end))


# ---------------------------------------------------------------------------
# Writing


def document_to_json(doc: Document, **extra: Any) -> dict[str, Any]:
    """The JSONL object of a document (the gold/annotation span format)."""
    return {
        "id": doc.id,
        "text": doc.text,
        "entities": [_span_json(s) for s in _ordered(doc.spans)],
        **({"uncertain": [_uncertain_json(u) for u in doc.uncertain]} if doc.uncertain else {}),
        **extra,
    }


def _span_json(s: Span) -> dict[str, Any]:
    out: dict[str, Any] = {"start": s.start, "end": s.end, "label": s.label, "text": s.text}
    if s.confidence != 1.0:
        out["confidence"] = round(s.confidence, 4)
    if s.code:
        out["code"] = s.code
    return out


def _uncertain_json(u: Uncertain) -> dict[str, Any]:
    return {"start": u.start, "end": u.end, "reason": u.reason}


def write_jsonl(docs: Iterable[Document], path: Path) -> int:
    """Write documents as JSONL spans; returns the number written."""
    n = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps(document_to_json(doc), ensure_ascii=False) + "\n")
            n += 1
    return n


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def write_brat(docs: Iterable[Document], folder: Path) -> int:
    """Write one ``.txt`` + ``.ann`` pair per document into ``folder``; returns the count."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    used: set[str] = set()
    for doc in docs:
        name = _SAFE_NAME.sub("_", doc.id).strip("._") or f"doc{n + 1}"
        while name in used:
            name += "_"
        used.add(name)
        with open(folder / f"{name}.txt", "w", encoding="utf-8", newline="") as fh:
            fh.write(doc.text)
        lines = []
        for i, s in enumerate(_ordered(doc.spans), 1):
            # BRAT keeps one line per annotation: a span's own newlines become spaces.
            shown = s.text.replace("\r", " ").replace("\n", " ")
            lines.append(f"T{i}\t{s.label} {s.start} {s.end}\t{shown}\n")
            if s.code:
                lines.append(f"N{i}\tReference T{i} {s.code}\t{shown}\n")
        with open(folder / f"{name}.ann", "w", encoding="utf-8", newline="") as fh:
            fh.write("".join(lines))
        n += 1
    return n
