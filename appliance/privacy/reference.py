"""The reference index: what the leakage screen knows about the real records.

Built in one streaming pass over the encrypted record store and kept,
encrypted, in ``records/leakage-index/``; it is rebuilt only when the record
store, the leakage policy or the key changes (its fingerprint). It holds no
readable text:

- **k-grams**: keyed 64-bit hashes of every word k-gram of every real note,
  with note number and position, and each note's patient number (a
  per-index counter, no identifier), so the screen knows per distinct
  k-gram how many distinct *patients'* notes it occurs in: a k-gram in the
  notes of many patients is boilerplate that identifies nobody, while a
  paragraph one patient's notes copy forward is still that patient's;
- **MinHash**: one signature per note over keyed word shingles, and LSH band
  keys (sorted arrays) to find near-duplicate candidates;
- **identifiers**: keyed hashes of every real identifier and the variants a
  note may write it in (from record metadata and from the offline presidio
  pattern recognizers run over the real notes), with its type, its note and
  whether it is *strong* (identifies by itself: an ID number, a phone, a full
  name) or *weak* (a birth date, one name alone);
- **distance to closest record**: a 256-dimensional random projection of
  each note's TF-IDF word vector (cosine similarity), the training/held-out
  split of the generator, and the held-out notes' similarity to their
  nearest training note (the baseline synthetic notes are compared with).

The real note texts themselves are fetched from the store only to confirm
a finding (``RecordStore.get_many``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from appliance import __version__
from appliance.config import Policy
from appliance.documents import Identifier, Record
from appliance.errors import IntegrityError, WorkspaceError
from appliance.identifiers.phones import DEFAULT_PHONE_REGIONS, number_forms
from appliance.privacy.ngram_index import _P, _TOKEN
from appliance.privacy.segments import SegmentReader, SegmentWriter
from appliance.records.holdout import is_holdout
from appliance.records.ingest import open_store
from appliance.security.audit import utc_now
from appliance.security.crypto import atomic_write, read_encrypted, write_encrypted
from appliance.security.keys import PURPOSE_HOLDOUT, PURPOSE_LEAKAGE_INDEX, DataKey
from appliance.workspace import Workspace, hashed

INDEX_DIR = "leakage-index"
INDEX_FORMAT = 7
DCR_DIMENSIONS = 256
IDENT_MAX_TOKENS = 10
DEFAULT_HOLDOUT_FRACTION = 0.1

# Identifier tokens: words and single punctuation marks, case-folded (as the deny-list recognizers).
_ID_TOKEN = re.compile(r"\w+|[^\w\s]")

STRONG, WEAK = 1, 0
_MASK = (1 << 64) - 1
_P_INT = int(_P)
PHONE_TYPE = "PHONE_NUMBER"
# Identifier types that name the patient a note belongs to, most specific first.
PATIENT_KEY_TYPES = ("MEDICAL_RECORD_NUMBER", "NATIONAL_ID")
# Metadata fields that name the patient when the export keeps the id as metadata.
PATIENT_KEY_FIELDS = ("patient_id", "patient", "subject", "subject_id", "person_id", "mrn")


class TokenHasher:
    """Keyed 64-bit token hashes (BLAKE2b), cached per distinct token."""

    def __init__(self, key: bytes) -> None:
        self.key = key[:64]
        self._cache: dict[str, int] = {}

    def one(self, token: str) -> int:
        h = self._cache.get(token)
        if h is None:
            digest = hashlib.blake2b(token.encode(), key=self.key, digest_size=8).digest()
            h = self._cache[token] = int.from_bytes(digest, "little")
            if len(self._cache) > 2_000_000:  # bounded memory on huge vocabularies
                self._cache.clear()
        return h

    def many(self, tokens: Sequence[str]) -> np.ndarray:
        cache = self._cache
        found = [cache.get(t) for t in tokens]
        if None in found:
            found = [self.one(t) if h is None else h for t, h in zip(tokens, found, strict=True)]
        return np.array(found, dtype=np.uint64)

    def digits(self, digits: str) -> int:
        return self.one("\0phone:" + digits)


def gram_hashes(th: np.ndarray, k: int) -> np.ndarray:
    """Polynomial combination of ``k`` consecutive token hashes (mod 2**64)."""
    n = len(th) - k + 1
    if n <= 0:
        return np.empty(0, dtype=np.uint64)
    acc = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            acc = acc * _P + th[j : j + n]
    return acc


def max_similarity(
    vectors: np.ndarray, pool: np.ndarray, chunk: int = 16384, rows: int = 2048
) -> np.ndarray:
    """Each (unit) vector's largest dot product with a row of ``pool``; -1 when the pool is empty.

    Blocks of ``rows`` × ``chunk`` similarities (128 MiB) at a time, however
    many vectors and pool rows: the held-out baseline of a large record set
    is tens of thousands of vectors against hundreds of thousands.
    """
    best = np.full(len(vectors), -1.0, dtype=np.float32)
    for r in range(0, len(vectors), rows):
        query, out = vectors[r : r + rows], best[r : r + rows]
        for s in range(0, len(pool), chunk):
            np.maximum(out, (query @ pool[s : s + chunk].T).max(axis=1), out=out)
    return best


# The only characters whose lower case depends on more than themselves: "İ"
# lower-cases to "i" and a combining dot (no word character), "Σ" by context.
_LOWER_BY_CONTEXT = ("İ", "Σ")


def word_tokens(text: str) -> list[str]:
    """The word tokens of :func:`appliance.privacy.ngram_index.tokenize`, without their spans."""
    if text.isascii() or not any(c in text for c in _LOWER_BY_CONTEXT):
        # Lower-casing the whole text at once then moves no token boundary.
        return _TOKEN.findall(text.lower())
    return [t.lower() for t in _TOKEN.findall(text)]


def combine(token_hashes: Sequence[int]) -> int:
    """``gram_hashes(th, len(th))[0]`` for one short sequence, in Python integers (no array overhead)."""
    acc = 0
    for h in token_hashes:
        acc = (acc * _P_INT + h) & _MASK
    return acc


def id_tokens(text: str) -> list[tuple[str, int, int]]:
    return [(m.group().casefold(), m.start(), m.end()) for m in _ID_TOKEN.finditer(text)]


def id_token_words(text: str) -> list[str]:
    """The tokens of :func:`id_tokens` without their spans (the common case: nothing matches)."""
    if text.isascii():
        return _ID_TOKEN.findall(text.lower())
    return [t.casefold() for t in _ID_TOKEN.findall(text)]


def id_token_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _ID_TOKEN.finditer(text)]


def patient_key(record: Record) -> str:
    """Which patient a record belongs to, as far as the export says.

    The record's medical record number, else its national ID, else a
    patient-id metadata field; a record without any of them is its own
    patient. Two patients merged by a shared value only make fewer k-grams
    boilerplate (the safe direction); one patient split into several would
    make more, which is why a record without a patient id counts alone.
    """
    for kind in PATIENT_KEY_TYPES:
        values = sorted(i.value.strip() for i in record.identifiers if i.type == kind)
        values = [v for v in values if v]
        if values:
            return f"{kind}\0{values[0]}"
    for name in PATIENT_KEY_FIELDS:
        for key, value in record.metadata.items():
            if key.rsplit(".", 1)[-1].lower() == name and str(value).strip():
                return f"meta\0{str(value).strip()}"
    return f"record\0{record.id}"


def identifier_variants(ident: Identifier) -> list[tuple[str, int]]:
    """(variant, strength) forms a note may write a real identifier in."""
    # presidio (under the recognizers) takes seconds to import: only when an index is built.
    from appliance.identifiers.recognizers import _name_variants, date_variants, parse_dates

    value = ident.value.strip()
    if not value:
        return []
    if ident.type == "PERSON":
        out = []
        for v in _name_variants(value, ident.field, parts=True):
            single = len(v.split()) == 1
            out.append((v, WEAK if single else STRONG))
        return out
    if ident.type == "DATE_OF_BIRTH":
        readings = parse_dates(value)
        forms = [value, *date_variants(readings[0][0])] if readings else [value]
        return [(f, WEAK) for f in dict.fromkeys(forms)]
    if ident.type == "ADDRESS":
        street = value.split(",")[0].strip()
        return [(value, STRONG), *([(street, STRONG)] if street != value else [])]
    return [(value, STRONG)]


# Real notes per build chunk, and per stored block of signature and vector rows.
CHUNK = 16384
# Postings a screen reads per rare k-gram: more occurrences say nothing new.
POSTINGS_CAP = 64
# Held-out notes whose similarity to their nearest training note the index keeps.
BASELINE_NOTES = 10_000

HEADER_FILE = "header.enc"
GRAMS_FILE = "grams.seg"
IDS_FILE = "identifiers.seg"
BANDS_FILE = "bands.seg"
SIGS_FILE = "signatures.seg"
VECS_FILE = "vectors.seg"
TOKENS_FILE = "tokens.seg"
SPILL_FILE = "spill.seg"
_TABLES = (GRAMS_FILE, IDS_FILE, BANDS_FILE, SIGS_FILE, VECS_FILE, TOKENS_FILE)


class _Chunk:
    """What one build chunk (at most ``CHUNK`` notes) adds, until it is spilled to disk."""

    def __init__(self, first: int) -> None:
        self.first = first  # number of its first note
        self.gram_parts: list[np.ndarray] = []  # per note, its k-gram hashes in order
        self.signatures: list[np.ndarray] = []
        self.token_counts: list[tuple[np.ndarray, np.ndarray]] = []  # distinct tokens, counts
        # identifier rows (hash, type, record, strength) as flat columns: millions of
        # rows in a 100k-note store, where a tuple per row would cost ten times the memory
        self.ident_hash: array[int] = array("Q")
        self.ident_type: array[int] = array("H")
        self.ident_record: array[int] = array("q")
        self.ident_strength: array[int] = array("B")

    def __len__(self) -> int:
        return len(self.gram_parts)

    def add_ident(self, h: int, kind: int, record: int, strength: int) -> None:
        self.ident_hash.append(h)
        self.ident_type.append(kind)
        self.ident_record.append(record)
        self.ident_strength.append(strength)


def _bucket_bits(records: int | None) -> int:
    """Buckets of the sorted tables: about 2,048 notes' worth each, 16 to 4,096 of them."""
    want = max(16, min(4096, (records or 0) // 2048))
    return max(4, math.ceil(math.log2(want)))


def _by_bucket(keys: np.ndarray, bits: int) -> np.ndarray:
    """Bounds of each bucket's rows in ``keys`` (sorted): bucket = the key's top ``bits`` bits."""
    bucket = (keys >> np.uint64(64 - bits)).astype(np.int64)
    return np.searchsorted(bucket, np.arange((1 << bits) + 1))


def _distinct_patients(
    keys: np.ndarray, recs: np.ndarray, patients: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct key of ``keys`` (sorted; postings in note order): first row, rows, distinct patients.

    Only keys with more than one posting can be in the notes of more than
    one patient; those are sorted by (key, patient) to count.
    """
    new_key = np.ones(len(keys), dtype=bool)
    new_key[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(new_key)
    count = np.diff(np.append(starts, len(keys))).astype(np.int64)
    udf = np.ones(len(starts), dtype=np.int64)
    group = np.cumsum(new_key, dtype=np.int64) - 1
    multi = np.flatnonzero(count[group] > 1)
    if len(multi):
        g, p = group[multi], patients[recs[multi]]
        order = np.lexsort((p, g))
        g, p = g[order], p[order]
        first = np.ones(len(g), dtype=bool)
        first[1:] = (g[1:] != g[:-1]) | (p[1:] != p[:-1])
        counted = np.bincount(g[first], minlength=len(starts))
        udf = np.where(counted > 0, counted, 1).astype(np.int64)
    return starts, count, udf


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``starts[i], starts[i] + 1, …`` (``counts[i]`` of them) for every ``i``, concatenated."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts.astype(np.int64), counts) + within


def _cat(parts: Sequence[dict[str, np.ndarray]], name: str, dtype: Any) -> np.ndarray:
    return np.concatenate([p[name] for p in parts]) if parts else np.empty(0, dtype=dtype)


def identifier_sequences(
    th: np.ndarray, note_of: np.ndarray, id_first: np.ndarray
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(length, first token, keyed hash) of every token sequence the identifier lookup tries.

    ``th``: the identifier tokens' keyed hashes of a batch of notes, one after
    the other (``note_of``: each token's note). Every single token; longer
    sequences (up to ``IDENT_MAX_TOKENS``) only where a known identifier's
    first token starts, within one note.
    """
    total = len(th)
    yield 1, np.arange(total), th
    if not total:
        return
    if len(id_first):
        # Notes repeat their words: each distinct token is looked up once.
        uniq, inverse = np.unique(th, return_inverse=True)
        pos = np.minimum(np.searchsorted(id_first, uniq), len(id_first) - 1)
        first_ok = np.flatnonzero((id_first[pos] == uniq)[inverse.reshape(-1)])
    else:
        first_ok = np.arange(total)
    for length in range(2, IDENT_MAX_TOKENS + 1):
        starts = first_ok[first_ok + length - 1 < total]
        starts = starts[note_of[starts + length - 1] == note_of[starts]]
        if not len(starts):
            return
        g = np.zeros(len(starts), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(length):
                g = g * _P + th[starts + j]
        yield length, starts, g


class _BaseBuckets:
    """The buckets of a base index's table, cut to the extended index's (as many or more) buckets."""

    def __init__(self, reader: SegmentReader, old_bits: int, new_bits: int, grams: bool) -> None:
        self.reader, self.old_bits, self.new_bits, self.grams = reader, old_bits, new_bits, grams
        self._cached: tuple[int, dict[str, np.ndarray] | None] | None = None

    def part(self, b: int) -> dict[str, np.ndarray] | None:
        old = b >> (self.new_bits - self.old_bits)
        if self._cached is None or self._cached[0] != old:
            part = self.reader.arrays(f"b{old}") if f"b{old}" in self.reader else None
            if part is not None and self.grams:  # distinct k-grams with their posting counts
                count = part.pop("count").astype(np.int64)
                part.pop("udf")
                part["keys"] = np.repeat(part["keys"], count)
            self._cached = (old, part)
        part = self._cached[1]
        if part is None or self.new_bits == self.old_bits:
            return part
        bounds = _by_bucket(part["keys"], self.new_bits)
        start, end = int(bounds[b]), int(bounds[b + 1])
        return {k: v[start:end] for k, v in part.items()} if end > start else None

    def close(self) -> None:
        self.reader.close()


class _Rows:
    """Some rows of a per-note table, indexed by note number like the whole table."""

    def __init__(self, records: np.ndarray, rows: np.ndarray) -> None:
        self.records = records  # sorted
        self.rows = rows

    def __getitem__(self, records: np.ndarray) -> np.ndarray:
        return self.rows[np.searchsorted(self.records, records)]


class IndexView:
    """The part of the reference index one round of synthetic notes touches, in memory.

    Built by :meth:`ReferenceIndex.view`: the k-grams, identifiers and LSH
    band keys of the round's notes that the index holds, their postings,
    the MinHash signatures of the real notes that share a band with one of
    them, and each note's nearest real note by group (training sample, other
    training notes, held out). Everything else (hashing, the per-note
    arrays, record ids) is the index's own.
    """

    def __init__(self, index: ReferenceIndex) -> None:
        self.index = index
        self.ukeys = np.empty(0, dtype=np.uint64)  # distinct k-grams, sorted
        self.ustart = np.empty(0, dtype=np.int64)  # first posting kept
        self.ucount = np.empty(0, dtype=np.int64)  # postings kept (rare k-grams: up to the cap)
        self.udf = np.empty(0, dtype=np.int64)  # distinct patients per k-gram
        self.gram_records = np.empty(0, dtype=np.uint32)
        self.gram_positions = np.empty(0, dtype=np.uint32)
        self.id_keys = np.empty(0, dtype=np.uint64)
        self.id_types = np.empty(0, dtype=np.uint16)
        self.id_records = np.empty(0, dtype=np.int64)
        self.id_strength = np.empty(0, dtype=np.uint8)
        self.band_keys: list[np.ndarray] = []
        self.band_records: list[np.ndarray] = []
        self.signatures = _Rows(np.empty(0, np.int64), np.empty((0, index.permutations), np.uint32))
        self.nearest_by_group: dict[int, tuple[float, float, float]] = {}  # by id(note)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)


class ReferenceIndex:
    """Everything the screen needs about the real records (see the module docstring).

    In memory: the per-note arrays, record ids, the identifier first tokens,
    the token weights and the held-out baseline. On disk, encrypted in
    segments: the k-gram, identifier and band tables (sorted, in buckets by
    the hash's top bits) and the signature and vector rows (in blocks of
    ``CHUNK`` notes). A screen reads the tables once per round of notes
    (:meth:`view`); nothing loads them whole.
    """

    def __init__(self, key: DataKey, policy: Policy) -> None:
        lk = policy.leakage
        self.key = key
        self.k = lk.ngram_tokens
        self.shingle = lk.shingle_tokens
        self.boilerplate = lk.boilerplate_patients
        self.permutations = lk.minhash_permutations
        self.bands = _bands(self.permutations)
        self.rows = self.permutations // self.bands
        secret = key.derive(PURPOSE_LEAKAGE_INDEX, 64)
        self.hasher = TokenHasher(secret)
        rng = np.random.default_rng(int.from_bytes(secret[:8], "little"))
        self._a = rng.integers(1, 2**63, size=self.permutations, dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, 2**63, size=self.permutations, dtype=np.uint64)
        self._proj_seed = int.from_bytes(secret[8:16], "little")
        self.folder: Path | None = None
        self.label = ""
        self.bits = 4
        self.chunks = 0
        self.chunk_rows = CHUNK
        self.chunk_first: list[int] = []  # first note of each stored block of rows
        self.index_id = ""  # one per index from scratch; kept by its extensions
        self.fingerprint = ""
        self.base_fingerprint = ""
        self.shards: list[list[str]] = []  # the record store's shards (name, sha256) it covers
        self.file_ids: dict[str, str] = {}  # table file -> the id its directory was sealed with
        self.df = np.empty(0, dtype=np.int64)  # notes per token (idf_keys)
        self.patient_keys = np.empty(0, dtype=np.uint64)  # keyed hash of each patient key, sorted
        self.patient_numbers = np.empty(0, dtype=np.uint32)
        self.types: list[str] = []
        self.meta: dict[str, Any] = {}
        self.record_ids: list[str] = []
        self.holdout = np.zeros(0, dtype=bool)
        self.record_patients = np.empty(0, dtype=np.uint32)  # patient number per note
        self.record_tokens = np.empty(0, dtype=np.uint32)  # word tokens per note
        self.id_first = np.empty(0, dtype=np.uint64)  # sorted first-token hashes
        self.idf_keys = np.empty(0, dtype=np.uint64)
        self.idf = np.empty(0, dtype=np.float32)
        # held-out notes (a sample of at most BASELINE_NOTES): similarity to nearest training note
        self.baseline_records = np.empty(0, dtype=np.int64)
        self.baseline = np.empty(0, dtype=np.float32)
        self._train_sample: np.ndarray | None = None

    # -- features shared by building and screening --------------------------------

    def minhash(self, grams_shingle: np.ndarray) -> np.ndarray:
        shingles = np.unique(grams_shingle)
        if not len(shingles):
            shingles = np.zeros(1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            hashed = (self._a[:, None] * shingles[None, :] + self._b[:, None]) >> np.uint64(32)
        return hashed.min(axis=1)

    def band_hashes(self, signatures: np.ndarray) -> np.ndarray:
        """(bands, n) uint64 key per band of each signature."""
        n = signatures.shape[0]
        sig = signatures.reshape(n, self.bands, self.rows)
        acc = np.zeros((n, self.bands), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for r in range(self.rows):
                acc = acc * _P + sig[:, :, r]
        return np.ascontiguousarray(acc.T)

    def _projection(self, token_hashes: np.ndarray) -> np.ndarray:
        """A ±1 vector per token, derived from its keyed hash (no stored vocabulary)."""
        bits = np.empty((len(token_hashes), DCR_DIMENSIONS), dtype=np.float32)
        h = token_hashes.copy()
        with np.errstate(over="ignore"):
            for block in range(DCR_DIMENSIONS // 64):
                h = h * _P + np.uint64(self._proj_seed + block)
                h ^= h >> np.uint64(29)
                raw = (
                    (h[:, None] >> np.arange(64, dtype=np.uint64)[None, :]) & np.uint64(1)
                ).astype(np.float32)
                bits[:, block * 64 : (block + 1) * 64] = raw * 2 - 1
        return bits

    def vectorize(self, token_lists: Sequence[np.ndarray]) -> np.ndarray:
        """Unit TF-IDF random projections of notes given as arrays of token hashes."""
        return self.vectorize_counts([np.unique(th, return_counts=True) for th in token_lists])

    def vectorize_counts(self, per_note: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """:meth:`vectorize` of notes given as (distinct token hashes, their counts)."""
        out = np.zeros((len(per_note), DCR_DIMENSIONS), dtype=np.float32)
        unseen = np.float32(self.meta.get("idf_unseen", 1.0))
        for s in range(0, len(per_note), 1024):
            self._vectorize_chunk(per_note[s : s + 1024], out[s : s + 1024], unseen)
        return out

    def _vectorize_chunk(
        self, per_note: Sequence[tuple[np.ndarray, np.ndarray]], out: np.ndarray, unseen: np.float32
    ) -> None:
        # Each distinct token's projection is computed once per chunk, not once per note.
        nonempty = [u for u, _ in per_note if len(u)]
        if not nonempty:
            return
        vocab = np.unique(np.concatenate(nonempty))
        proj = self._projection(vocab)
        for i, (uniq, counts) in enumerate(per_note):
            if not len(uniq):
                continue
            if len(self.idf_keys):
                pos = np.minimum(np.searchsorted(self.idf_keys, uniq), len(self.idf_keys) - 1)
                idf = np.where(self.idf_keys[pos] == uniq, self.idf[pos], unseen)
            else:
                idf = np.full(len(uniq), unseen, dtype=np.float32)
            weights = (1 + np.log(counts)).astype(np.float32) * idf
            v = weights @ proj[np.searchsorted(vocab, uniq)]
            norm = float(np.linalg.norm(v))
            if norm > 0:
                out[i] = v / norm

    def holdout_baseline(self, min_tokens: int) -> np.ndarray:
        """The held-out notes' similarities to their nearest training note, for notes of ≥ ``min_tokens`` words."""
        return self.baseline[self.record_tokens[self.baseline_records] >= min_tokens]

    @property
    def train_sample(self) -> np.ndarray:
        """A seeded sample of training notes as large as the held-out set (mask over notes)."""
        if self._train_sample is None:
            train = np.flatnonzero(~self.holdout)
            rng = np.random.default_rng(0)
            size = min(len(train), int(self.holdout.sum()))
            mask = np.zeros(len(self.holdout), dtype=bool)
            if size:
                mask[rng.choice(train, size=size, replace=False)] = True
            self._train_sample = mask
        return self._train_sample

    # -- building -----------------------------------------------------------------

    def build(
        self,
        records: Iterable[Record],
        *,
        folder: Path,
        label: str,
        holdout_key: bytes,
        holdout_fraction: float,
        identifier_policy: Any,
        canaries: Sequence[str] = (),
        progress: Callable[[int], None] | None = None,
        expected: int | None = None,
        base: ReferenceIndex | None = None,
    ) -> None:
        """Build the index into ``folder`` (new, empty) in one pass over ``records``.

        Memory stays bounded by one chunk of ``CHUNK`` notes and one bucket
        of the tables, plus the per-note arrays: each chunk's k-grams,
        identifiers and band keys are spilled to disk by bucket, and each
        bucket is then sorted and counted on its own.

        With ``base`` (an index of the same policy and key, opened), the new
        index is ``base`` extended by ``records``: only they are read and
        hashed; each bucket of ``base`` is merged with theirs, and the
        vectors and held-out baseline are recomputed from the stored token
        counts (every note's token weights change with the record set).
        """
        from appliance.identifiers.recognizers import build_recognizers, find_identifiers

        self.folder, self.label = folder, label
        recognizers = build_recognizers(identifier_policy)
        type_ids: dict[str, int] = {}
        patient_numbers: dict[int, int] = {}  # keyed hash of the patient key -> number
        patients: array[int] = array("I")
        holdout: array[int] = array("B")
        tokens: array[int] = array("I")
        first: set[int] = set()
        df_keys, df = np.empty(0, np.uint64), np.empty(0, np.int64)
        if base is None:
            self.bits = _bucket_bits(expected)
        else:
            # (more buckets when the record set has outgrown them: a bucket stays small)
            self.bits = max(base.bits, _bucket_bits(expected))
            self.chunk_rows = base.chunk_rows
            self.chunk_first = list(base.chunk_first)
            self.chunks = base.chunks
            self.record_ids = list(base.record_ids)
            type_ids = {t: i for i, t in enumerate(base.types)}
            patient_numbers = dict(
                zip(base.patient_keys.tolist(), base.patient_numbers.tolist(), strict=True)
            )
            patients.frombytes(base.record_patients.astype(np.uint32).tobytes())
            holdout.frombytes(base.holdout.astype(np.uint8).tobytes())
            tokens.frombytes(base.record_tokens.astype(np.uint32).tobytes())
            first = set(base.id_first.tolist())
            df_keys, df = base.idf_keys, base.df
        ident_cache: dict[tuple[str, str, str], tuple[list[tuple[int, int]], list[int]]] = {}
        writers = [
            SegmentWriter(folder / name, self.key, label)
            for name in (SPILL_FILE, SIGS_FILE, TOKENS_FILE)
        ]
        spill, signatures, token_file = writers
        first_new = len(self.record_ids)
        try:
            if base is not None:  # the stored rows of ``base`` come along as they are
                assert base.folder is not None
                for name, out in ((SIGS_FILE, signatures), (TOKENS_FILE, token_file)):
                    with base._reader(name) as old:
                        for segment in old.directory:
                            out.copy(old, segment)
            chunk = _Chunk(first_new)
            for n, record in enumerate(records, start=first_new):
                self.record_ids.append(record.id)
                patient = self.hasher.one("\0patient:" + patient_key(record))
                patients.append(patient_numbers.setdefault(patient, len(patient_numbers)))
                holdout.append(is_holdout(holdout_key, record.id, holdout_fraction))
                th = self.hasher.many(word_tokens(record.text))
                chunk.gram_parts.append(gram_hashes(th, self.k))
                chunk.signatures.append(
                    self.minhash(gram_hashes(_pad(th, self.shingle), self.shingle))
                )
                uniq, counts = np.unique(th, return_counts=True)
                chunk.token_counts.append((uniq, counts.astype(np.uint32)))
                tokens.append(int(counts.sum()))
                idents = list(record.identifiers)
                for f in find_identifiers(record.text, recognizers):
                    idents.append(Identifier(f.type, record.text[f.start : f.end], "text"))
                for ident in idents:
                    tid = type_ids.setdefault(ident.type, len(type_ids))
                    # The same value recurs across a patient's notes (names, dates): hash it once.
                    memo_key = (ident.type, ident.value, ident.field)
                    memo = ident_cache.get(memo_key)
                    if memo is None:
                        firsts: set[int] = set()
                        memo = ident_cache[memo_key] = (
                            self._identifier_hashes(ident, firsts),
                            list(firsts),
                        )
                        if len(ident_cache) > 1_000_000:  # bounded memory on huge record sets
                            ident_cache.clear()
                    first.update(memo[1])
                    for h, strength in memo[0]:
                        chunk.add_ident(h, tid, n, strength)
                if progress is not None:
                    progress(1)
                if len(chunk) == self.chunk_rows:
                    df_keys, df = self._spill(chunk, spill, signatures, token_file, df_keys, df)
                    chunk = _Chunk(chunk.first + self.chunk_rows)
            if base is None:  # (an extension keeps the canaries of its base)
                ctype = type_ids.setdefault("CANARY", len(type_ids))
                for secret in canaries:
                    for h, strength in self._identifier_hashes(
                        Identifier("CANARY", secret, "canary"), first
                    ):
                        chunk.add_ident(h, ctype, -1, strength)
            if len(chunk) or len(chunk.ident_hash) or not self.chunks:
                df_keys, df = self._spill(chunk, spill, signatures, token_file, df_keys, df)
            for w in writers:
                w.close()
            self.file_ids = {SIGS_FILE: signatures.file_id, TOKENS_FILE: token_file.file_id}
        except BaseException:
            for w in writers:
                w.abort()
            raise
        self.types = [t for t, _ in sorted(type_ids.items(), key=lambda kv: kv[1])]
        self.holdout = np.frombuffer(holdout, dtype=np.uint8).astype(bool)
        self.record_patients = np.frombuffer(patients, dtype=np.uint32).copy()
        self.record_tokens = np.frombuffer(tokens, dtype=np.uint32).copy()
        self.id_first = np.array(sorted(first), dtype=np.uint64)
        keys = np.fromiter(patient_numbers.keys(), dtype=np.uint64, count=len(patient_numbers))
        numbers = np.fromiter(patient_numbers.values(), dtype=np.uint32, count=len(keys))
        order = np.argsort(keys)
        self.patient_keys, self.patient_numbers = keys[order], numbers[order]
        n = max(1, len(self.record_ids))
        self.idf_keys, self.df = df_keys, df
        self.idf = np.log((1 + n) / (1 + df.astype(np.float64))).astype(np.float32) + 1
        self.meta["idf_unseen"] = float(math.log(1 + n) + 1)
        self.meta["postings"] = self.meta["identifier_keys"] = 0
        with SegmentReader(folder / SPILL_FILE, self.key, label) as spilled:
            self._merge_table(spilled, base, GRAMS_FILE, "g", self._merge_grams)
            self._merge_table(spilled, base, IDS_FILE, "i", self._merge_identifiers)
            self._merge_table(spilled, base, BANDS_FILE, "n", self._merge_bands)
        (folder / SPILL_FILE).unlink()
        self._finish_vectors()
        self.meta.update(
            {
                "records": len(self.record_ids),
                "patients": len(patient_numbers),
                "holdout_records": int(self.holdout.sum()),
                "holdout_fraction": holdout_fraction,
                "buckets": 1 << self.bits,
                "built": utc_now(),
                "extended": None
                if base is None
                else {"from": first_new, "added": len(self.record_ids) - first_new},
            }
        )

    def _spill(
        self,
        chunk: _Chunk,
        spill: SegmentWriter,
        signatures: SegmentWriter,
        token_file: SegmentWriter,
        df_keys: np.ndarray,
        df: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Write one chunk's rows to disk by bucket; returns the document frequencies so far."""
        c, bits = self.chunks, self.bits
        # k-gram postings, sorted by k-gram (stable: within a k-gram in note, position order)
        sizes = np.array([len(g) for g in chunk.gram_parts], dtype=np.int64)
        keys = np.concatenate(chunk.gram_parts) if len(sizes) else np.empty(0, np.uint64)
        recs = np.repeat(np.arange(chunk.first, chunk.first + len(sizes), dtype=np.uint32), sizes)
        pos = (np.arange(len(keys)) - np.repeat(np.cumsum(sizes) - sizes, sizes)).astype(np.uint32)
        order = np.argsort(keys, kind="stable")
        keys, recs, pos = keys[order], recs[order], pos[order]
        del order
        bounds = _by_bucket(keys, bits)
        for b in np.flatnonzero(np.diff(bounds)).tolist():
            s, e = bounds[b], bounds[b + 1]
            spill.add_arrays(
                f"g{c}.{b}", {"keys": keys[s:e], "records": recs[s:e], "positions": pos[s:e]}
            )
        del keys, recs, pos
        # identifier rows
        h = (
            np.frombuffer(chunk.ident_hash, dtype=np.uint64)
            if len(chunk.ident_hash)
            else np.empty(0, np.uint64)
        )
        order = np.argsort(h, kind="stable")
        cols: dict[str, np.ndarray] = {
            "keys": h[order],
            "types": np.array(chunk.ident_type, dtype=np.uint16)[order],
            "records": np.array(chunk.ident_record, dtype=np.int64)[order],
            "strength": np.array(chunk.ident_strength, dtype=np.uint8)[order],
        }
        bounds = _by_bucket(cols["keys"], bits)
        for b in np.flatnonzero(np.diff(bounds)).tolist():
            s, e = bounds[b], bounds[b + 1]
            spill.add_arrays(f"i{c}.{b}", {k: v[s:e] for k, v in cols.items()})
        # MinHash: signature rows, and LSH band keys by bucket
        sig = (
            np.stack(chunk.signatures)
            if chunk.signatures
            else np.empty((0, self.permutations), dtype=np.uint64)
        )
        signatures.add_arrays(str(c), {"rows": sig.astype(np.uint32)})
        bands = self.band_hashes(sig).reshape(-1)  # band-major
        band = np.repeat(np.arange(self.bands, dtype=np.uint8), len(sig))
        brecs = np.tile(np.arange(chunk.first, chunk.first + len(sig), dtype=np.uint32), self.bands)
        order = np.argsort(bands, kind="stable")
        bands, band, brecs = bands[order], band[order], brecs[order]
        bounds = _by_bucket(bands, bits)
        for b in np.flatnonzero(np.diff(bounds)).tolist():
            s, e = bounds[b], bounds[b + 1]
            spill.add_arrays(
                f"n{c}.{b}", {"keys": bands[s:e], "band": band[s:e], "records": brecs[s:e]}
            )
        # token counts, for the vectors once every note's document frequency is known
        counts = chunk.token_counts
        token_file.add_arrays(
            str(c),
            {
                "keys": np.concatenate([u for u, _ in counts])
                if counts
                else np.empty(0, np.uint64),
                "counts": np.concatenate([k for _, k in counts])
                if counts
                else np.empty(0, np.uint32),
                "sizes": np.array([len(u) for u, _ in counts], dtype=np.int64),
            },
        )
        if counts:
            uniq, inverse = np.unique(
                np.concatenate([df_keys, *[u for u, _ in counts]]), return_inverse=True
            )
            weights = np.concatenate([df, np.ones(sum(len(u) for u, _ in counts), np.int64)])
            df = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(uniq))
            df_keys, df = uniq, df.astype(np.int64)
        self.chunks += 1
        self.chunk_first.append(chunk.first)
        return df_keys, df

    def _bucket_parts(
        self, spilled: SegmentReader, prefix: str, b: int, base: _BaseBuckets | None
    ) -> list[dict[str, np.ndarray]]:
        """One bucket's rows: the base index's first, then the spilled chunks' (so in note order)."""
        parts = []
        if base is not None and (part := base.part(b)) is not None:
            parts.append(part)
        names = (f"{prefix}{c}.{b}" for c in range(self.chunks))
        return parts + [spilled.arrays(name) for name in names if name in spilled]

    def _reader(self, file: str) -> SegmentReader:
        """A table file of this index; refused when it is not the one the header names."""
        assert self.folder is not None
        return SegmentReader(self.folder / file, self.key, self.label, self.file_ids.get(file))

    def _merge_table(
        self,
        spilled: SegmentReader,
        base: ReferenceIndex | None,
        file: str,
        prefix: str,
        merge: Callable[[list[dict[str, np.ndarray]]], dict[str, np.ndarray]],
    ) -> None:
        """Write ``file`` bucket by bucket: the base's rows and the spilled ones, ``merge``d."""
        assert self.folder is not None
        old = None
        if base is not None:
            old = _BaseBuckets(base._reader(file), base.bits, self.bits, grams=prefix == "g")
        with (
            contextlib.closing(old) if old is not None else contextlib.nullcontext(),
            SegmentWriter(self.folder / file, self.key, self.label) as out,
        ):
            for b in range(1 << self.bits):
                parts = self._bucket_parts(spilled, prefix, b, old)
                if parts:
                    out.add_arrays(f"b{b}", merge(parts))
        self.file_ids[file] = out.file_id

    def _merge_grams(self, parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Postings sorted by k-gram (stable: note, position order kept), with patient counts."""
        keys = _cat(parts, "keys", np.uint64)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        recs = _cat(parts, "records", np.uint32)[order]
        pos = _cat(parts, "positions", np.uint32)[order]
        starts, count, udf = _distinct_patients(keys, recs, self.record_patients)
        self.meta["postings"] = self.meta.get("postings", 0) + len(keys)
        return {
            "keys": keys[starts],
            "udf": udf.astype(np.uint32),
            "count": count.astype(np.uint32),
            "records": recs,
            "positions": pos,
        }

    def _merge_identifiers(self, parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The identifier rows, sorted by (hash, type, record, strength), each once."""
        h = _cat(parts, "keys", np.uint64)
        t = _cat(parts, "types", np.uint16)
        r = _cat(parts, "records", np.int64)
        s = _cat(parts, "strength", np.uint8)
        order = np.lexsort((s, r, t, h))
        h, t, r, s = h[order], t[order], r[order], s[order]
        keep = np.ones(len(h), dtype=bool)
        keep[1:] = (h[1:] != h[:-1]) | (t[1:] != t[:-1]) | (r[1:] != r[:-1]) | (s[1:] != s[:-1])
        self.meta["identifier_keys"] = self.meta.get("identifier_keys", 0) + int(keep.sum())
        return {"keys": h[keep], "types": t[keep], "records": r[keep], "strength": s[keep]}

    @staticmethod
    def _merge_bands(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Band keys sorted by (key, band, note), as each band's column of the whole table is."""
        keys = _cat(parts, "keys", np.uint64)
        band = _cat(parts, "band", np.uint8)
        recs = _cat(parts, "records", np.uint32)
        order = np.lexsort((recs, band, keys))
        return {"keys": keys[order], "band": band[order], "records": recs[order]}

    def _finish_vectors(self) -> None:
        """Each note's vector (now that every token's weight is known), and the held-out baseline."""
        assert self.folder is not None
        held = np.flatnonzero(self.holdout)
        if len(held) > BASELINE_NOTES:
            held = np.sort(np.random.default_rng(0).choice(held, BASELINE_NOTES, replace=False))
        held_vectors = np.zeros((len(held), DCR_DIMENSIONS), dtype=np.float32)
        with (
            SegmentWriter(self.folder / VECS_FILE, self.key, self.label) as out,
            self._reader(TOKENS_FILE) as token_file,
        ):
            for c in range(self.chunks):
                t = token_file.arrays(str(c))
                bounds = np.concatenate([[0], np.cumsum(t["sizes"])])
                per_note = [
                    (t["keys"][s:e], t["counts"][s:e]) for s, e in itertools.pairwise(bounds)
                ]
                vectors = self.vectorize_counts(per_note)
                out.add_arrays(str(c), {"rows": vectors})
                first = self.chunk_first[c]
                mine = (held >= first) & (held < first + len(vectors))
                held_vectors[mine] = vectors[held[mine] - first]
        self.file_ids[VECS_FILE] = out.file_id
        self.baseline_records = held.astype(np.int64)
        train = ~self.holdout
        if not len(held) or not train.any():
            self.baseline_records = np.empty(0, dtype=np.int64)
            self.baseline = np.empty(0, dtype=np.float32)
            return
        best = np.full(len(held), -1.0, dtype=np.float32)
        for first, rows in self._vector_blocks():
            pool = rows[train[first : first + len(rows)]]
            if len(pool):
                np.maximum(best, max_similarity(held_vectors, pool), out=best)
        self.baseline = best

    def _vector_blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first note number, vectors) per stored block, in note order."""
        assert self.folder is not None
        with self._reader(VECS_FILE) as vecs:
            for c in range(self.chunks):
                yield self.chunk_first[c], vecs.arrays(str(c))["rows"]

    def _identifier_hashes(self, ident: Identifier, first: set[int]) -> list[tuple[int, int]]:
        out = []
        if ident.type == PHONE_TYPE:
            # The forms the screen's phone scan (``phone_candidates``) looks up.
            for digits in number_forms(ident.value, DEFAULT_PHONE_REGIONS):
                out.append((self.hasher.digits(digits), STRONG))
            return out
        for variant, strength in identifier_variants(ident):
            toks = [t for t, _, _ in id_tokens(variant)]
            if not toks or len(toks) > IDENT_MAX_TOKENS:
                continue
            th = [self.hasher.one(t) for t in toks]
            first.add(th[0])
            out.append((combine(th), strength))
            # the digits of any ID-like value also match when written with other separators
            digits = re.sub(r"\D", "", variant)
            if ident.type not in ("DATE_OF_BIRTH", "PERSON") and len(digits) >= 6:
                out.append((self.hasher.digits(digits), strength))
        return out

    # -- screening: the part of the index a round of notes touches -----------------

    def view(self, notes: Sequence[Any], *, dcr: bool = True) -> IndexView:
        """What the detectors read about ``notes`` (each with ``id``, ``text`` and ``hashes``).

        One pass over each on-disk table: every k-gram, identifier sequence,
        phone number and band key of the notes is looked up, bucket by
        bucket, and only what matches is kept.
        """
        from appliance.identifiers.phones import phone_candidates

        view = IndexView(self)
        if self.folder is None or not notes:
            return view
        self._view_grams(view, [gram_hashes(n.hashes, self.k) for n in notes])
        # identifier sequences, as the identifier detector tries them, and phone numbers
        words = [id_token_words(n.text) for n in notes]
        sizes = np.array([len(w) for w in words], dtype=np.int64)
        th = self.hasher.many([t for w in words for t in w])
        note_of = np.repeat(np.arange(len(notes), dtype=np.int64), sizes)
        queries = [g for _, _, g in identifier_sequences(th, note_of, self.id_first)]
        queries.append(
            np.array(
                [self.hasher.digits(d) for n in notes for _, _, d in phone_candidates(n.text)],
                dtype=np.uint64,
            )
        )
        self._view_identifiers(view, np.unique(np.concatenate(queries)))
        self._view_bands(view, notes)
        if dcr:
            self._view_nearest(view, notes)
        return view

    def _lookup(
        self, file: str, queries: np.ndarray
    ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
        """Per bucket holding any of ``queries`` (sorted, distinct): its table, the rows found, the queries' rows.

        ``found[i]`` is the row of the bucket's ``keys`` equal to the bucket's
        ``i``-th matched query; tables whose keys repeat (identifiers, bands)
        use ``searchsorted`` on both sides themselves.
        """
        assert self.folder is not None
        bounds = _by_bucket(queries, self.bits)
        with self._reader(file) as table:
            for b in np.flatnonzero(np.diff(bounds)).tolist():
                if f"b{b}" not in table:
                    continue
                part = table.arrays(f"b{b}")
                q = queries[bounds[b] : bounds[b + 1]]
                keys = part["keys"]
                pos = np.minimum(np.searchsorted(keys, q), max(len(keys) - 1, 0))
                hit = keys[pos] == q if len(keys) else np.zeros(len(q), dtype=bool)
                yield part, pos[hit], q[hit]

    def _view_grams(self, view: IndexView, grams: Sequence[np.ndarray]) -> None:
        queries = np.unique(np.concatenate(grams)) if grams else np.empty(0, np.uint64)
        keys, udf, count, recs, pos = [], [], [], [], []
        for part, rows, _ in self._lookup(GRAMS_FILE, queries):
            u = part["udf"][rows].astype(np.int64)
            n = part["count"].astype(np.int64)
            start = np.cumsum(n) - n
            # postings only for the rare k-grams (a common one anchors nothing), up to the cap
            kept = np.where(u < self.boilerplate, np.minimum(n[rows], POSTINGS_CAP), 0)
            postings = _ranges(start[rows], kept)
            keys.append(part["keys"][rows])
            udf.append(u)
            count.append(kept)
            recs.append(part["records"][postings])
            pos.append(part["positions"][postings])
        if keys:
            view.ukeys = np.concatenate(keys)
            view.udf = np.concatenate(udf)
            view.ucount = np.concatenate(count)
            view.ustart = np.cumsum(view.ucount) - view.ucount
            view.gram_records = np.concatenate(recs)
            view.gram_positions = np.concatenate(pos)

    def _view_identifiers(self, view: IndexView, queries: np.ndarray) -> None:
        cols: dict[str, list[np.ndarray]] = {"keys": [], "types": [], "records": [], "strength": []}
        for part, _, q in self._lookup(IDS_FILE, queries):
            lo = np.searchsorted(part["keys"], q, side="left")
            hi = np.searchsorted(part["keys"], q, side="right")
            rows = _ranges(lo, hi - lo)
            for name in cols:
                cols[name].append(part[name][rows])
        if cols["keys"]:
            view.id_keys = np.concatenate(cols["keys"])
            view.id_types = np.concatenate(cols["types"])
            view.id_records = np.concatenate(cols["records"])
            view.id_strength = np.concatenate(cols["strength"])

    def _view_bands(self, view: IndexView, notes: Sequence[Any]) -> None:
        sigs = np.stack(
            [self.minhash(gram_hashes(_pad(n.hashes, self.shingle), self.shingle)) for n in notes]
        )
        queries = np.unique(self.band_hashes(sigs))
        keys, band, recs = [], [], []
        for part, _, q in self._lookup(BANDS_FILE, queries):
            lo = np.searchsorted(part["keys"], q, side="left")
            hi = np.searchsorted(part["keys"], q, side="right")
            rows = _ranges(lo, hi - lo)
            keys.append(part["keys"][rows])
            band.append(part["band"][rows])
            recs.append(part["records"][rows])
        k = np.concatenate(keys) if keys else np.empty(0, np.uint64)
        bd = np.concatenate(band) if band else np.empty(0, np.uint8)
        r = np.concatenate(recs) if recs else np.empty(0, np.uint32)
        # per band, sorted by key then note, as the whole table's band columns are
        for b in range(self.bands):
            mine = bd == b
            view.band_keys.append(k[mine])
            view.band_records.append(r[mine])
        view.signatures = self._signature_rows(np.unique(r).astype(np.int64))

    def _signature_rows(self, records: np.ndarray) -> _Rows:
        assert self.folder is not None
        rows = np.zeros((len(records), self.permutations), dtype=np.uint32)
        if len(records):
            block = np.searchsorted(np.array(self.chunk_first), records, side="right") - 1
            with self._reader(SIGS_FILE) as table:
                for c in np.unique(block).tolist():
                    mine = block == c
                    rows[mine] = table.arrays(str(c))["rows"][records[mine] - self.chunk_first[c]]
        return _Rows(records, rows)

    def _view_nearest(self, view: IndexView, notes: Sequence[Any]) -> None:
        """Per note, cosine similarity to its nearest training-sample, other training, and held-out note."""
        vectors = self.vectorize([n.hashes for n in notes])
        best = np.full((3, len(notes)), -1.0, dtype=np.float32)
        sample = self.train_sample
        for first, rows in self._vector_blocks():
            end = first + len(rows)
            hold = self.holdout[first:end]
            samp = sample[first:end]
            for g, mask in enumerate((samp, ~hold & ~samp, hold)):
                if mask.any():
                    np.maximum(best[g], max_similarity(vectors, rows[mask]), out=best[g])
        # keyed by the note object (``id``): two notes of a round may share a note id
        view.nearest_by_group = {
            id(n): (float(a), float(b), float(c))
            for n, a, b, c in zip(notes, best[0], best[1], best[2], strict=True)
        }

    # -- persistence --------------------------------------------------------------

    _ARRAYS: ClassVar[list[str]] = [
        "holdout",
        "record_patients",
        "record_tokens",
        "id_first",
        "idf_keys",
        "idf",
        "df",
        "patient_keys",
        "patient_numbers",
        "baseline_records",
        "baseline",
    ]

    def save_header(self) -> None:
        """The in-memory part, encrypted, and a plain summary beside it (numbers only)."""
        assert self.folder is not None
        header = {
            "format": INDEX_FORMAT,
            "index_id": self.index_id,
            "fingerprint": self.fingerprint,
            "base_fingerprint": self.base_fingerprint,
            "shards": self.shards,
            "file_ids": self.file_ids,
            "bits": self.bits,
            "chunks": self.chunks,
            "chunk_rows": self.chunk_rows,
            "chunk_first": self.chunk_first,
            "types": self.types,
            "record_ids": self.record_ids,
            "meta": self.meta,
        }
        buf = io.BytesIO()
        buf.write(json.dumps(header).encode() + b"\n")
        np.savez(buf, **{name: getattr(self, name) for name in self._ARRAYS})
        with buf.getbuffer() as payload:
            write_encrypted(self.folder / HEADER_FILE, self.key, payload, label=self.label)
        summary = {
            "format": INDEX_FORMAT,
            "index_id": self.index_id,
            "fingerprint": self.fingerprint,
            "appliance_version": __version__,
            "records": len(self.record_ids),
            "postings": self.meta.get("postings"),
            "identifier_keys": self.meta.get("identifier_keys"),
            "buckets": 1 << self.bits,
            "built": self.meta.get("built"),
            "extended": self.meta.get("extended"),
            "bytes": {f: (self.folder / f).stat().st_size for f in (HEADER_FILE, *_TABLES)},
        }
        atomic_write(self.folder / "index.json", (json.dumps(summary, indent=2) + "\n").encode())

    def open(self, folder: Path) -> bool:
        """Read the saved index's header (the per-note arrays; the tables stay on disk).

        False when there is none or it has another format (it is then rebuilt).
        """
        path = folder / HEADER_FILE
        summary = folder / "index.json"
        if not path.exists() or not summary.exists():
            return False
        try:
            saved = json.loads(summary.read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(saved, dict):
            return False
        if saved.get("format") != INDEX_FORMAT or not saved.get("index_id"):
            return False
        label = _label(str(saved["index_id"]))
        payload = read_encrypted(path, self.key, label=label)
        head, _, body = payload.partition(b"\n")
        del payload
        header = json.loads(head)
        if header.get("format") != INDEX_FORMAT:
            return False
        data = np.load(io.BytesIO(body), allow_pickle=False)
        for name in self._ARRAYS:
            setattr(self, name, data[name])
        self.folder, self.label = folder, label
        self.index_id = str(header["index_id"])
        self.fingerprint = str(header["fingerprint"])
        self.base_fingerprint = str(header["base_fingerprint"])
        self.shards = [list(x) for x in header["shards"]]
        self.file_ids = {str(k): str(v) for k, v in header["file_ids"].items()}
        self.bits, self.chunks = int(header["bits"]), int(header["chunks"])
        self.chunk_rows = int(header["chunk_rows"])
        self.chunk_first = [int(x) for x in header["chunk_first"]]
        self.types = list(header["types"])
        self.record_ids = list(header["record_ids"])
        self.meta = dict(header["meta"])
        missing = [f for f in _TABLES if not (folder / f).is_file()]
        if missing:
            raise IntegrityError(
                f"{folder}: leakage index incomplete ({', '.join(missing)} missing); "
                f"delete the folder and rerun `appliance screen` to rebuild it"
            )
        for file in _TABLES:  # each table is the one this header was saved with
            self._reader(file).close()
        return True


def _label(index_id: str) -> str:
    """Associated data of every index file: a file of another index does not decrypt here."""
    return f"leakage-index {index_id}"


def _pad(th: np.ndarray, n: int) -> np.ndarray:
    if len(th) >= n:
        return th
    return np.concatenate([th, np.zeros(n - len(th), dtype=np.uint64)])


def _bands(permutations: int) -> int:
    for bands in (32, 16, 8, 4, 2, 1):
        if permutations % bands == 0 and permutations // bands >= 2:
            return bands
    return 1


def fingerprint(
    ws: Workspace, holdout_fraction: float, canaries: Sequence[str], *, store: bool = True
) -> str:
    """What the index depends on; without ``store``: all but the records (an extension keeps it)."""
    manifest = ws.store_manifest
    if not manifest.exists():
        raise WorkspaceError(
            f"{ws.root}: no real records to screen against; run `appliance ingest` first"
        )
    lk = ws.policy.leakage
    material = {
        "format": INDEX_FORMAT,
        # another version may hash, tokenize or recognize identifiers otherwise: built anew
        "appliance": __version__,
        "store": hashed(manifest)["sha256"] if store else None,
        "k": lk.ngram_tokens,
        "shingle": lk.shingle_tokens,
        "permutations": lk.minhash_permutations,
        "identifiers": ws.policy.identifiers.__dict__,
        "holdout_fraction": holdout_fraction,
        "canaries": hashlib.sha256("\n".join(canaries).encode()).hexdigest(),
        "key": ws.data_key.key_id,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def load_or_build(
    ws: Workspace,
    *,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    canaries: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    extend: bool = True,
) -> tuple[ReferenceIndex, bool]:
    """The workspace's reference index, built if missing or stale; (index, built now).

    When records were only added since the index was built (the store's
    shards begin with those the index covers, same policy and key), the
    index is extended with the new records instead of rebuilt (``extend``).
    A build goes to a fresh folder beside the index and replaces it only
    when complete: an interrupted build leaves the previous index (or none),
    never half of one.
    """
    fp = fingerprint(ws, holdout_fraction, canaries)
    base_fp = fingerprint(ws, holdout_fraction, canaries, store=False)
    folder = ws.leakage_index_dir
    building = folder.with_name(folder.name + ".building")
    old = folder.with_name(folder.name + ".old")
    _finish_swap(folder, building, old)
    saved = ReferenceIndex(ws.data_key, ws.policy)
    opened = saved.open(folder)
    if opened and saved.fingerprint == fp:
        return saved, False
    store = open_store(ws)
    shards = [[s.name, s.sha256] for s in store.shards]
    base = None
    if (
        extend
        and opened
        and saved.base_fingerprint == base_fp
        and shards[: len(saved.shards)] == saved.shards
    ):
        base = saved
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(mode=0o700, parents=True)
    index = ReferenceIndex(ws.data_key, ws.policy)
    index.index_id = base.index_id if base is not None else os.urandom(8).hex()
    index.fingerprint, index.base_fingerprint, index.shards = fp, base_fp, shards
    records = store.records_in(store.shards[len(base.shards) :]) if base is not None else store
    try:
        index.build(
            records,
            folder=building,
            label=_label(index.index_id),
            holdout_key=ws.data_key.derive(PURPOSE_HOLDOUT),
            holdout_fraction=holdout_fraction,
            identifier_policy=ws.policy.identifiers,
            canaries=canaries,
            progress=progress,
            expected=len(store),
            base=base,
        )
        index.save_header()
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    building.rename(folder)
    _sync_folder(folder.parent)
    shutil.rmtree(old, ignore_errors=True)
    index.folder = folder
    return index, True


def _finish_swap(folder: Path, building: Path, old: Path) -> None:
    """Complete a swap of index folders a stopped process left half done.

    A complete new index (its summary is written last) whose predecessor
    was already moved aside is put in place; a leftover predecessor is
    removed once an index is in place.
    """
    if not folder.exists() and (building / "index.json").is_file():
        building.rename(folder)
        _sync_folder(folder.parent)
    if folder.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _sync_folder(path: Path) -> None:
    """Make renames in ``path`` survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
