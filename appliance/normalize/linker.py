"""The normalizer: an entity mention in, the best concept with a score, top-k alternatives or NIL out.

Three steps, cheapest first:

1. **exact**: the mention equals a concept's name or synonym (case, spacing
   and dash forms aside): score 1.0.
2. **variant**: the same words after the entity schema's language rules
   (inflections, spelling variants), in any order and without stop words
   ("deficiency of factor VIII" = "factor VIII deficiency"): score 0.98.
3. **similarity** for the rest: the cosine of character n-gram TF-IDF
   vectors (always) and, when the normalizer has an encoder, of its
   embeddings, mixed ``dense_weight`` : ``1 - dense_weight``; a concept's
   score is its best name's.

In a note, a mention that is an abbreviation the note defines ("Duchenne
muscular dystrophy (DMD)") is normalized as its long form. Candidates are
restricted to the mention's entity type where the terminology has that
type. Below ``nil_threshold`` the mention is NIL (no code); its candidates
are still reported.

A normalizer is a set of flat files (``normalizer*``), in its own folder or
inside a model package, which signs them with the model:
``normalizer.json`` (settings, the terminology's hash, the language rules),
``normalizer-concepts.jsonl``, ``normalizer-sparse.json`` and, with an
encoder, ``normalizer-encoder.onnx``, ``normalizer-tokenizer.json``,
``normalizer-embeddings.npy``.
"""

from __future__ import annotations

import hashlib
import io
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.annotate.abbreviations import find_abbreviations
from appliance.annotate.lexicon import Lexicon, LexiconAnnotator, LexiconRules
from appliance.documents import word_tokens
from appliance.errors import InputError, KeyRequired
from appliance.normalize.terminology import Terminology
from appliance.security.crypto import atomic_write, read_encrypted, write_encrypted
from appliance.security.keys import DataKey

FORMAT = "appliance-normalizer/1"
META = "normalizer.json"
CONCEPTS = "normalizer-concepts.jsonl"
SPARSE = "normalizer-sparse.json"
ENCODER = "normalizer-encoder.onnx"
TOKENIZER = "normalizer-tokenizer.json"
EMBEDDINGS = "normalizer-embeddings.npy"
FILES = (META, CONCEPTS, SPARSE, ENCODER, TOKENIZER, EMBEDDINGS)
ENC = ".enc"  # in a real-zone package every normalizer file is encrypted under the data key
LABEL = "normalizer/"  # AEAD label prefix, with the file's role: a file moved elsewhere does not decrypt

EXACT = 1.0
VARIANT = 0.98
CACHE_SIZE = 100_000  # distinct similarity queries remembered
NGRAMS = (2, 4)


@dataclass(frozen=True)
class NormalizerSettings:
    top_k: int = 5
    nil_threshold: float = (
        0.45  # the fallback; a build calibrates it (normalize.build.calibrate_nil)
    )
    dense_weight: float = 1.0  # with an encoder: its share of the score (the rest: n-grams)
    abbreviations: bool = True  # expand abbreviations the note defines


@dataclass(frozen=True)
class Candidate:
    code: str
    name: str
    system: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "system": self.system,
            "score": round(self.score, 4),
        }


@dataclass
class Link:
    """The normalizer's answer for one mention: ``code`` None is NIL."""

    candidates: list[Candidate]
    via: str  # exact, variant, abbreviation+exact, similarity...
    nil_threshold: float
    best: Candidate | None = field(init=False)

    def __post_init__(self) -> None:
        top = self.candidates[0] if self.candidates else None
        self.best = top if top is not None and top.score >= self.nil_threshold else None

    @property
    def code(self) -> str | None:
        return self.best.code if self.best is not None else None

    @property
    def score(self) -> float:
        return self.candidates[0].score if self.candidates else 0.0

    def fields(self) -> dict[str, Any]:
        """The entity fields inference writes: ``code`` (None when NIL) and the rest."""
        b = self.best
        return {
            "code": b.code if b else None,
            "code_system": b.system if b else None,
            "code_name": b.name if b else None,
            "code_score": round(self.score, 4),
            "code_via": self.via if b else "nil",
            "code_candidates": [c.as_dict() for c in self.candidates],
        }


class SurfaceKeys:
    """Exact and variant keys of a surface string, under one language's rules."""

    def __init__(self, rules: LexiconRules) -> None:
        self.rules = rules
        self._norm = LexiconAnnotator(Lexicon(), language_rules=rules)
        self._stop = rules.stop_words

    def exact(self, surface: str) -> str:
        """Every token, punctuation included, case and dash forms aside ("" for no token)."""
        return " ".join(self._norm._fold(t) for t in _tokens(surface, keep_all=True))

    def variant(self, surface: str) -> str:
        """Words (and ``+``) after the language rules, sorted, stop words out ("" for no word)."""
        words = [self._norm.normalize(t) for t in _tokens(surface, keep_all=False)]
        kept = sorted(w for w in words if w not in self._stop)
        return " ".join(kept or words)


def prepare(text: str) -> str:
    """How a surface is compared: Unicode compatibility forms folded (full-width letters), lower case."""
    return unicodedata.normalize("NFKC", text).lower()


def _tokens(surface: str, keep_all: bool) -> list[str]:
    """Word tokens of ``surface``; ``keep_all`` keeps punctuation tokens, else only ``+`` of them.

    ``+`` stays in both keys: "HER2+ breast cancer" and "HER2- breast cancer" are different
    concepts, and a hyphen only joins words far more often than it means "negative".
    """
    surface = unicodedata.normalize("NFKC", surface)
    out = []
    for a, b in word_tokens(surface):
        t = surface[a:b]
        if t.isalnum() or keep_all or t == "+":
            out.append(t)
    return out


class Normalizer:
    def __init__(
        self,
        terminology: Terminology,
        rules: LexiconRules,
        settings: NormalizerSettings,
        sparse: dict[str, Any],
        encoder: Any = None,
        embeddings: np.ndarray | None = None,
        mentions: dict[str, int] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._cache: dict[tuple[str, str | None], tuple[Candidate, ...]] = {}
        self.terminology = terminology
        self.rules = rules
        self.settings = settings
        self.keys = SurfaceKeys(rules)
        self.encoder = encoder
        self.mentions = dict(mentions or {})  # concept code -> training mentions from notes
        self.info = dict(info or {})
        concepts = terminology.concepts
        self.surfaces: list[str] = []
        starts: list[int] = []
        self._exact: dict[str, list[int]] = {}
        self._variant: dict[str, list[int]] = {}
        by_name: set[tuple[int, str]] = set()  # (concept, key) where the key is its own name's
        for i, c in enumerate(concepts):
            starts.append(len(self.surfaces))
            for j, name in enumerate(c.names):
                self.surfaces.append(name)
                for table, key in (
                    (self._exact, self.keys.exact(name)),
                    (self._variant, self.keys.variant(name)),
                ):
                    if not key:
                        continue  # a name of punctuation only matches by similarity alone
                    hits = table.setdefault(key, [])
                    if i not in hits:
                        hits.append(i)
                    if j == 0:
                        by_name.add((i, key))
        # A concept whose own name has the key ranks before those listing it as a synonym.
        for table in (self._exact, self._variant):
            for key, hits in table.items():
                if len(hits) > 1:
                    own = [i for i in hits if (i, key) in by_name]
                    hits[:] = own + [i for i in hits if (i, key) not in by_name]
        self.starts = np.asarray(starts, dtype=np.int64)
        self.labels = np.asarray([c.label for c in concepts])
        self.label_set = set(self.labels.tolist())
        self.sparse_state = sparse
        try:
            self.vectorizer = TfidfVectorizer(
                analyzer="char_wb",
                ngram_range=tuple(sparse["ngram_range"]),
                preprocessor=prepare,
                sublinear_tf=True,
                vocabulary=sparse["vocabulary"],
                dtype=np.float32,
            )
            self.vectorizer.idf_ = np.asarray(sparse["idf"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"normalizer: unreadable n-gram vocabulary ({exc})") from None
        self.matrix = self.vectorizer.transform(self.surfaces).T.tocsr()  # (V, S)
        if encoder is not None and (embeddings is None or len(embeddings) != len(self.surfaces)):
            raise InputError("normalizer: the embeddings do not match the concepts' names")
        self.embeddings = embeddings

    @property
    def settings(self) -> NormalizerSettings:
        return self._settings

    @settings.setter
    def settings(self, value: NormalizerSettings) -> None:
        # (text, label) -> candidates of the similarity step, under these settings only.
        self._settings = value
        self._cache.clear()

    # -- building ------------------------------------------------------------

    @staticmethod
    def fit_sparse(terminology: Terminology) -> dict[str, Any]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(
            analyzer="char_wb", ngram_range=NGRAMS, preprocessor=prepare, sublinear_tf=True
        )
        vec.fit([n for c in terminology.concepts for n in c.names])
        vocab = {str(k): int(v) for k, v in vec.vocabulary_.items()}
        return {
            "ngram_range": list(NGRAMS),
            "vocabulary": vocab,
            "idf": [round(float(x), 6) for x in vec.idf_],
        }

    # -- linking -------------------------------------------------------------

    def link(self, mentions: Sequence[tuple[str, str | None]]) -> list[Link]:
        """One :class:`Link` per ``(text, label)`` mention, in order.

        Candidates are concepts of the mention's type; a type the terminology
        does not have gets NIL (``via`` "type not in terminology"), and
        ``label`` None means any type (a gold set whose type names differ).
        An exact or variant match answers without the similarity step (its
        candidates are the concepts that name matches); the rest are scored
        in batches, each distinct ``(text, label)`` once, and remembered
        (a bounded cache: a batch of notes repeats its mentions).
        """
        out: list[Link | None] = [None] * len(mentions)
        rest: dict[tuple[str, str | None], list[int]] = {}
        concepts = self.terminology.concepts
        threshold = self.settings.nil_threshold
        for i, (text, label) in enumerate(mentions):
            if label is not None and label not in self.label_set:
                out[i] = Link([], "type not in terminology", threshold)
                continue
            hit = self._keyed(text, label)
            if hit is None:
                cached = self._cache.get((text, label))
                if cached is not None:
                    out[i] = Link(list(cached), "similarity", threshold)
                else:
                    rest.setdefault((text, label), []).append(i)
                continue
            found, score, via = hit
            cands = [
                Candidate(concepts[j].code, concepts[j].name, concepts[j].system, score)
                for j in found[: self.settings.top_k]
            ]
            out[i] = Link(cands, via, self.settings.nil_threshold)
        queries = list(rest)
        for lo in range(0, len(queries), 256):
            part = queries[lo : lo + 256]
            scores = self._similarity(part)
            for row, query in enumerate(part):
                cands = self._candidates(scores[row])
                if len(self._cache) >= CACHE_SIZE:
                    self._cache.clear()
                self._cache[query] = tuple(cands)
                for i in rest[query]:
                    out[i] = Link(list(cands), "similarity", threshold)
        return [x for x in out if x is not None]

    def link_note(self, text: str, spans: Sequence[tuple[int, int, str | None]]) -> list[Link]:
        """Links for ``(start, end, label)`` mentions of one note, expanding the note's abbreviations."""
        return self.link_notes([text], [spans])[0]

    def link_notes(
        self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int, str | None]]]
    ) -> list[list[Link]]:
        """:meth:`link_note` for many notes, their mentions linked in one batch."""
        queries: list[tuple[str, str | None]] = []
        expanded: list[bool] = []
        for text, note_spans in zip(texts, spans, strict=True):
            longs: dict[str, str] = {}
            if self.settings.abbreviations and note_spans:
                for a in find_abbreviations(text):
                    longs.setdefault(a.short, a.long)
            for start, end, label in note_spans:
                mention = text[start:end]
                long = longs.get(mention.strip())
                expanded.append(long is not None)
                queries.append((long if long is not None else mention, label))
        links = self.link(queries)
        for link, was in zip(links, expanded, strict=True):
            if was:
                link.via = "abbreviation+" + link.via
        out: list[list[Link]] = []
        at = 0
        for note_spans in spans:
            out.append(links[at : at + len(note_spans)])
            at += len(note_spans)
        return out

    def _keyed(self, text: str, label: str | None) -> tuple[list[int], float, str] | None:
        for table, key, score, via in (
            (self._exact, self.keys.exact(text), EXACT, "exact"),
            (self._variant, self.keys.variant(text), VARIANT, "variant"),
        ):
            hits = table.get(key) if key else None
            if hits:
                typed = [i for i in hits if label is None or self.labels[i] == label]
                if typed:
                    return typed, score, via
        return None

    def _similarity(self, mentions: Sequence[tuple[str, str | None]]) -> np.ndarray:
        """Concept scores (mentions, concepts): each concept's best name, other types at -1."""
        texts = [t for t, _ in mentions]
        w = self.settings.dense_weight if self.encoder is not None else 0.0
        sims = np.zeros((len(texts), len(self.surfaces)), np.float32)
        if w < 1.0:
            sparse = self.vectorizer.transform(texts) @ self.matrix
            sims += (1 - w) * np.asarray(sparse.todense(), np.float32)
        if w > 0.0 and self.encoder is not None and self.embeddings is not None:
            sims += w * (self.encoder(texts) @ self.embeddings.T)
        by_concept = np.maximum(np.maximum.reduceat(sims, self.starts, axis=1), 0.0)
        for row, (_, label) in enumerate(mentions):
            if label is not None:
                by_concept[row, self.labels != label] = -1.0
        return by_concept

    def _candidates(self, scores: np.ndarray) -> list[Candidate]:
        k = min(self.settings.top_k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        concepts = self.terminology.concepts
        return [
            Candidate(concepts[i].code, concepts[i].name, concepts[i].system, float(scores[i]))
            for i in top
            if scores[i] > -1.0
        ]

    # -- files ---------------------------------------------------------------

    def files(self, encoder_bytes: bytes | None, tokenizer_json: str | None) -> dict[str, bytes]:
        """Every file of this normalizer, by name (what :func:`load` reads back)."""
        concepts = self.terminology.to_jsonl()
        out = {CONCEPTS: concepts, SPARSE: json.dumps(self.sparse_state).encode("utf-8")}
        if encoder_bytes is not None and self.embeddings is not None and tokenizer_json:
            buf = io.BytesIO()
            np.save(buf, self.embeddings.astype(np.float32), allow_pickle=False)
            out[ENCODER] = encoder_bytes
            out[TOKENIZER] = tokenizer_json.encode("utf-8")
            out[EMBEDDINGS] = buf.getvalue()
        meta = {
            "format": FORMAT,
            "terminology_sha256": hashlib.sha256(concepts).hexdigest(),
            "concepts": len(self.terminology.concepts),
            "names": len(self.surfaces),
            "labels": self.terminology.labels,
            "sources": self.terminology.sources,
            "settings": self.settings.__dict__,
            "rules": self.rules.to_json(),
            "encoder": ENCODER in out,
            "mentions": self.mentions,
            "files": {
                name: hashlib.sha256(data).hexdigest()
                for name, data in out.items()
                if name != CONCEPTS
            },
            **self.info,
        }
        out[META] = (json.dumps(meta, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
        return out

    def save(self, folder: Path, encoder_bytes: bytes | None, tokenizer_json: str | None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            (folder / name).unlink(missing_ok=True)
        write_files(folder, self.files(encoder_bytes, tokenizer_json), None)

    def describe(self) -> str:
        how = "exact, variant, character n-grams"
        if self.encoder is not None:
            how += f" and an encoder ({self.info.get('base', 'local')})"
        return f"{self.terminology.describe()}; {how}"


def has_normalizer(folder: Path) -> bool:
    return (folder / META).is_file() or (folder / (META + ENC)).is_file()


def write_files(folder: Path, files: dict[str, bytes], key: DataKey | None) -> list[str]:
    """Write a normalizer's files into ``folder`` (encrypted under ``key`` when given); their names."""
    names = []
    for name, data in files.items():
        if key is None:
            atomic_write(folder / name, data, 0o600)
            names.append(name)
        else:
            write_encrypted(folder / (name + ENC), key, data, label=LABEL + name)
            names.append(name + ENC)
    return names


def read_folder(folder: Path, key: DataKey | None = None) -> dict[str, bytes]:
    """A normalizer's files (decrypted into memory in a real-zone package), by name."""
    encrypted = not (folder / META).is_file() and (folder / (META + ENC)).is_file()
    if not has_normalizer(folder):
        raise InputError(f"{folder}: no normalizer here ({META} is missing)")
    if encrypted and key is None:
        raise KeyRequired(
            f"{folder}: the normalizer is encrypted (a real-zone package); it needs the "
            "workspace's data key (-w WORKSPACE or --data-key FILE)"
        )
    out = {}
    for name in FILES:
        path = folder / (name + ENC if encrypted else name)
        if path.is_file():
            out[name] = (
                read_encrypted(path, key, label=LABEL + name)
                if encrypted and key is not None
                else path.read_bytes()
            )
    return out


def load(
    folder: Path,
    device: str = "cpu",
    settings: NormalizerSettings | None = None,
    key: DataKey | None = None,
) -> Normalizer:
    """The normalizer whose files are in ``folder`` (its own folder or a model package).

    A real-zone package's normalizer files are encrypted: ``key`` (the
    workspace data key) decrypts them into memory. See :func:`from_files`.
    """
    return from_files(read_folder(folder, key), str(folder), device, settings)


def from_files(
    files: dict[str, bytes],
    where: str,
    device: str = "cpu",
    settings: NormalizerSettings | None = None,
) -> Normalizer:
    """The normalizer these files make up (``where`` names them in errors).

    Refused with a one-line error when a file is missing or unreadable, or
    when a file's hash is not the one ``normalizer.json`` recorded when the
    normalizer was built (the terminology's above all).
    """

    def read(name: str) -> bytes:
        if name not in files:
            raise InputError(f"{where}: normalizer file {name} is missing")
        return files[name]

    try:
        meta = json.loads(read(META).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}/{META}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{where}/{META}: not a normalizer of format {FORMAT}")
    concepts = read(CONCEPTS)
    digest = hashlib.sha256(concepts).hexdigest()
    if digest != meta.get("terminology_sha256"):
        raise InputError(
            f"{where}/{CONCEPTS}: the terminology's hash {digest[:12]} is not the one the "
            f"normalizer was built on ({str(meta.get('terminology_sha256'))[:12]}); rebuild it"
        )
    recorded = meta.get("files")
    if not isinstance(recorded, dict):
        raise InputError(f"{where}/{META}: no file hashes recorded")
    for name, want in recorded.items():
        if hashlib.sha256(read(str(name))).hexdigest() != want:
            raise InputError(f"{where}/{name}: changed since the normalizer was built")
    terminology = Terminology.from_jsonl(concepts, f"{where}/{CONCEPTS}")
    terminology.sources = list(meta.get("sources") or [])
    try:
        rules = LexiconRules.from_json(meta["rules"])
        saved = NormalizerSettings(**meta["settings"])
        sparse = json.loads(read(SPARSE))
        mentions = {str(k): int(v) for k, v in (meta.get("mentions") or {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{where}/{META}: unreadable settings ({exc})") from None
    encoder = embeddings = None
    if meta.get("encoder"):
        from tokenizers import Tokenizer

        from appliance.normalize.encoder import MAX_TOKENS, OnnxEncoder

        tok_json, emb = read(TOKENIZER), read(EMBEDDINGS)
        try:
            tok = Tokenizer.from_str(tok_json.decode("utf-8"))
            embeddings = np.load(io.BytesIO(emb), allow_pickle=False)
        except Exception as exc:  # the tokenizers library raises its own untyped errors
            raise InputError(f"{where}: unreadable encoder files ({exc})") from None
        tok.no_padding()
        tok.enable_truncation(MAX_TOKENS)
        encoder = OnnxEncoder(read(ENCODER), tok, device)
    info = {k: meta[k] for k in INFO_KEYS if k in meta}
    return Normalizer(
        terminology, rules, settings or saved, sparse, encoder, embeddings, mentions, info
    )


# What normalizer.json keeps of how the normalizer was built.
INFO_KEYS = (
    "base",
    "training",
    "created",
    "parity",
    "mention_sources",
    "llm_mentions",
    "nil_calibration",
)
