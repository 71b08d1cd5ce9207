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

import hashlib
import io
import json
import math
import re
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from appliance import __version__
from appliance.config import Policy
from appliance.documents import Identifier, Record
from appliance.errors import WorkspaceError
from appliance.privacy.ngram_index import _P, _TOKEN
from appliance.security.audit import utc_now
from appliance.security.crypto import read_encrypted, write_encrypted
from appliance.security.keys import PURPOSE_HOLDOUT, PURPOSE_LEAKAGE_INDEX, DataKey
from appliance.workspace import Workspace

INDEX_DIR = "leakage-index"
INDEX_FILE = "index.npz.enc"
INDEX_FORMAT = 5
DCR_DIMENSIONS = 256
IDENT_MAX_TOKENS = 10
DEFAULT_HOLDOUT_FRACTION = 0.1

# Identifier tokens: words and single punctuation marks, case-folded (as the deny-list recognizers).
_ID_TOKEN = re.compile(r"\w+|[^\w\s]")
_DIGIT_GROUP = re.compile(r"\+?\d+")
_PHONE_GAP = re.compile(r"[ \t\-./()]{1,3}")
_MAX_PHONE_GROUPS = 8

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


def phone_candidates(text: str) -> list[tuple[int, int, str]]:
    """(start, end, digits) of every run of digit groups that could be a phone number."""
    groups = [(m.start(), m.end(), m.group().lstrip("+")) for m in _DIGIT_GROUP.finditer(text)]
    out = []
    for i, (start, _, digits) in enumerate(groups):
        acc = digits
        for j in range(i, min(i + _MAX_PHONE_GROUPS, len(groups))):
            if j > i:
                gap = text[groups[j - 1][1] : groups[j][0]]
                if not _PHONE_GAP.fullmatch(gap) or text[groups[j][0]] == "+":
                    break
                acc += groups[j][2]
            if len(acc) >= 6:
                out.append((start, groups[j][1], acc[2:] if acc.startswith("00") else acc))
    return out


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


@dataclass
class _Building:
    """Accumulators of one build pass."""

    ids: list[str]
    patients: list[int]  # patient number per note
    gram_parts: list[np.ndarray]  # per note, its k-gram hashes in order
    signatures: list[np.ndarray]
    token_counts: list[tuple[np.ndarray, np.ndarray]]  # per note: distinct token hashes, counts
    # identifier rows (hash, type, record, strength) as flat columns: millions of
    # rows in a 100k-note store, where a tuple per row would cost ten times the memory
    ident_hash: array[int]
    ident_type: array[int]
    ident_record: array[int]
    ident_strength: array[int]
    first: set[int]  # hash of the first token of every token-sequence variant

    def add_ident(self, h: int, kind: int, record: int, strength: int) -> None:
        self.ident_hash.append(h)
        self.ident_type.append(kind)
        self.ident_record.append(record)
        self.ident_strength.append(strength)


class ReferenceIndex:
    """Everything the screen needs about the real records (see the module docstring)."""

    def __init__(self, key: DataKey, policy: Policy) -> None:
        lk = policy.leakage
        self.k = lk.ngram_tokens
        self.shingle = lk.shingle_tokens
        self.permutations = lk.minhash_permutations
        self.bands = _bands(self.permutations)
        self.rows = self.permutations // self.bands
        secret = key.derive(PURPOSE_LEAKAGE_INDEX, 64)
        self.hasher = TokenHasher(secret)
        rng = np.random.default_rng(int.from_bytes(secret[:8], "little"))
        self._a = rng.integers(1, 2**63, size=self.permutations, dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, 2**63, size=self.permutations, dtype=np.uint64)
        self._proj_seed = int.from_bytes(secret[8:16], "little")
        self.types: list[str] = []
        self.meta: dict[str, Any] = {}
        self.record_ids: list[str] = []
        self.holdout = np.zeros(0, dtype=bool)
        # k-grams
        self.gram_keys = np.empty(0, dtype=np.uint64)  # sorted, one per posting
        self.gram_records = np.empty(0, dtype=np.uint32)
        self.gram_positions = np.empty(0, dtype=np.uint32)
        self.ukeys = np.empty(0, dtype=np.uint64)  # distinct k-grams
        self.ustart = np.empty(0, dtype=np.int64)
        self.ucount = np.empty(0, dtype=np.int64)
        self.udf = np.empty(0, dtype=np.int64)  # distinct patients per k-gram
        self.record_patients = np.empty(0, dtype=np.uint32)  # patient number per note
        self.record_tokens = np.empty(0, dtype=np.uint32)  # word tokens per note
        # MinHash
        self.signatures = np.empty((0, self.permutations), dtype=np.uint64)
        self.band_keys = np.empty((self.bands, 0), dtype=np.uint64)  # sorted per band
        self.band_records = np.empty((self.bands, 0), dtype=np.uint32)
        # identifiers
        self.id_keys = np.empty(0, dtype=np.uint64)
        self.id_types = np.empty(0, dtype=np.uint16)
        self.id_records = np.empty(0, dtype=np.int64)
        self.id_strength = np.empty(0, dtype=np.uint8)
        self.id_first = np.empty(0, dtype=np.uint64)  # sorted first-token hashes
        # distance to closest record
        self.idf_keys = np.empty(0, dtype=np.uint64)
        self.idf = np.empty(0, dtype=np.float32)
        self.vectors = np.empty((0, DCR_DIMENSIONS), dtype=np.float32)
        self.baseline = np.empty(
            0, dtype=np.float32
        )  # held-out notes: similarity to nearest training

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
        return self.baseline[self.record_tokens[self.holdout] >= min_tokens]

    def nearest(self, vectors: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Cosine similarity of each vector to its nearest indexed note among ``mask``."""
        return max_similarity(vectors, self.vectors[mask])

    # -- building -----------------------------------------------------------------

    def build(
        self,
        records: Iterable[Record],
        *,
        holdout_key: bytes,
        holdout_fraction: float,
        identifier_policy: Any,
        canaries: Sequence[str] = (),
        progress: Callable[[int], None] | None = None,
    ) -> None:
        from appliance.generator.corpus import is_holdout
        from appliance.identifiers.recognizers import build_recognizers, find_identifiers

        recognizers = build_recognizers(identifier_policy)
        type_ids: dict[str, int] = {}
        b = _Building([], [], [], [], [], array("Q"), array("H"), array("q"), array("B"), set())
        patient_numbers: dict[str, int] = {}
        holdout: list[bool] = []
        ident_cache: dict[tuple[str, str, str], tuple[list[tuple[int, int]], list[int]]] = {}
        for n, record in enumerate(records):
            b.ids.append(record.id)
            b.patients.append(patient_numbers.setdefault(patient_key(record), len(patient_numbers)))
            holdout.append(is_holdout(holdout_key, record.id, holdout_fraction))
            th = self.hasher.many(word_tokens(record.text))
            grams = gram_hashes(th, self.k)
            b.gram_parts.append(grams)
            b.signatures.append(self.minhash(gram_hashes(_pad(th, self.shingle), self.shingle)))
            uniq, counts = np.unique(th, return_counts=True)
            b.token_counts.append((uniq, counts.astype(np.uint32)))
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
                b.first.update(memo[1])
                for h, strength in memo[0]:
                    b.add_ident(h, tid, n, strength)
            if progress is not None:
                progress(1)
        ctype = type_ids.setdefault("CANARY", len(type_ids))
        for secret in canaries:
            for h, strength in self._identifier_hashes(
                Identifier("CANARY", secret, "canary"), b.first
            ):
                b.add_ident(h, ctype, -1, strength)
        self.types = [t for t, _ in sorted(type_ids.items(), key=lambda kv: kv[1])]
        self.record_ids = b.ids
        self.holdout = np.array(holdout, dtype=bool)
        self.record_patients = np.array(b.patients, dtype=np.uint32)
        self.record_tokens = np.array([c.sum() for _, c in b.token_counts], dtype=np.uint32)
        self._freeze_grams(b)
        self._freeze_minhash(b)
        self._freeze_identifiers(b)
        self._freeze_dcr(b)
        self.meta.update(
            {
                "records": len(b.ids),
                "patients": len(patient_numbers),
                "holdout_records": int(self.holdout.sum()),
                "holdout_fraction": holdout_fraction,
                "postings": len(self.gram_keys),
                "identifier_keys": len(self.id_keys),
                "built": utc_now(),
            }
        )

    def _identifier_hashes(self, ident: Identifier, first: set[int]) -> list[tuple[int, int]]:
        out = []
        if ident.type == PHONE_TYPE:
            from appliance.identifiers.recognizers import _phone_numbers

            for digits in _phone_numbers(ident.value, ("EE", "FI", "SE", "US", "GB", "DE")):
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

    def _freeze_grams(self, b: _Building) -> None:
        # Postings sorted by (k-gram, note, position). Concatenated note by note they are
        # already in (note, position) order, so a stable sort by k-gram alone does it.
        sizes = np.array([len(g) for g in b.gram_parts], dtype=np.int64)
        keys = np.concatenate(b.gram_parts) if b.gram_parts else np.empty(0, np.uint64)
        b.gram_parts.clear()
        order = np.argsort(keys, kind="stable")
        self.gram_keys = keys[order]
        del keys
        recs = np.repeat(np.arange(len(sizes), dtype=np.uint32), sizes)
        self.gram_records = recs[order]
        del recs
        # a posting's position in its note: its place in the concatenation minus the note's start
        note_start = np.cumsum(sizes) - sizes
        self.gram_positions = (order - note_start[self.gram_records]).astype(np.uint32)
        del order
        self._derive_unique()

    def _derive_unique(self, stored_udf: np.ndarray | None = None) -> None:
        """Per distinct k-gram: key, first posting, postings, distinct patients.

        The patient counts are the costly part (a sort of the postings); a
        loaded index brings them along (``stored_udf``) instead of recounting.
        """
        keys = self.gram_keys
        if not len(keys):
            self.ukeys = np.empty(0, np.uint64)
            self.ustart = self.ucount = self.udf = np.empty(0, np.int64)
            return
        new_key = np.ones(len(keys), dtype=bool)
        new_key[1:] = keys[1:] != keys[:-1]
        starts = np.flatnonzero(new_key)
        self.ukeys = keys[starts]
        self.ustart = starts.astype(np.int64)
        self.ucount = np.diff(np.append(starts, len(keys))).astype(np.int64)
        if stored_udf is not None and len(stored_udf) == len(starts):
            self.udf = stored_udf.astype(np.int64)
        else:
            self.udf = self._distinct_patients(starts, new_key)

    def _distinct_patients(self, starts: np.ndarray, new_key: np.ndarray) -> np.ndarray:
        """Per distinct k-gram, the number of distinct patients whose notes contain it."""
        recs = self.gram_records
        patients = self.record_patients
        if len(patients) != len(self.record_ids) or not len(patients):
            patients = np.arange(max(len(self.record_ids), int(recs.max()) + 1), dtype=np.uint32)
        pat = patients[recs]
        # Postings are sorted by (k-gram, note): only k-grams with more than one posting can
        # be in the notes of more than one patient; sort those by (k-gram, patient).
        group = np.cumsum(new_key, dtype=np.int64 if len(new_key) >= 2**31 else np.int32) - 1
        multi = np.flatnonzero(self.ucount[group] > 1)
        udf = np.ones(len(starts), dtype=np.int64)
        if len(multi):
            g, p = group[multi], pat[multi]
            order = np.lexsort((p, g))
            g, p = g[order], p[order]
            first = np.ones(len(g), dtype=bool)
            first[1:] = (g[1:] != g[:-1]) | (p[1:] != p[:-1])
            counted = np.bincount(g[first], minlength=len(starts))
            udf = np.where(counted > 0, counted, 1).astype(np.int64)
        return udf

    def _freeze_minhash(self, b: _Building) -> None:
        sig = (
            np.stack(b.signatures)
            if b.signatures
            else np.empty((0, self.permutations), dtype=np.uint64)
        )
        self.signatures = sig.astype(np.uint32)
        bands = self.band_hashes(sig)
        order = np.argsort(bands, axis=1, kind="stable")
        self.band_keys = np.take_along_axis(bands, order, axis=1)
        self.band_records = order.astype(np.uint32)
        b.signatures.clear()

    def _freeze_identifiers(self, b: _Building) -> None:
        """The identifier rows, sorted by (hash, type, record, strength), each once."""
        h = (
            np.frombuffer(b.ident_hash, dtype=np.uint64)
            if len(b.ident_hash)
            else np.empty(0, np.uint64)
        )
        t = np.array(b.ident_type, dtype=np.uint16)
        r = np.array(b.ident_record, dtype=np.int64)
        s = np.array(b.ident_strength, dtype=np.uint8)
        order = np.lexsort((s, r, t, h))
        h, t, r, s = h[order], t[order], r[order], s[order]
        keep = np.ones(len(h), dtype=bool)
        keep[1:] = (h[1:] != h[:-1]) | (t[1:] != t[:-1]) | (r[1:] != r[:-1]) | (s[1:] != s[:-1])
        self.id_keys, self.id_types, self.id_records, self.id_strength = (
            h[keep],
            t[keep],
            r[keep],
            s[keep],
        )
        self.id_first = np.array(sorted(b.first), dtype=np.uint64)
        for column in (b.ident_hash, b.ident_type, b.ident_record, b.ident_strength):
            del column[:]

    def _freeze_dcr(self, b: _Building) -> None:
        n = max(1, len(b.ids))
        if b.token_counts:
            keys, df = np.unique(np.concatenate([u for u, _ in b.token_counts]), return_counts=True)
        else:
            keys, df = np.empty(0, np.uint64), np.empty(0, np.int64)
        self.idf_keys = keys
        self.idf = np.log((1 + n) / (1 + df.astype(np.float64))).astype(np.float32) + 1
        self.meta["idf_unseen"] = float(math.log(1 + n) + 1)
        self.vectors = self.vectorize_counts(b.token_counts)
        b.token_counts.clear()
        train = ~self.holdout
        if self.holdout.any() and train.any():
            self.baseline = self.nearest(self.vectors[self.holdout], train)
        else:
            self.baseline = np.empty(0, dtype=np.float32)

    # -- persistence --------------------------------------------------------------

    _ARRAYS: ClassVar[list[str]] = [
        "holdout",
        "record_patients",
        "record_tokens",
        "gram_keys",
        "gram_records",
        "gram_positions",
        "signatures",
        "band_keys",
        "band_records",
        "id_keys",
        "id_types",
        "id_records",
        "id_strength",
        "id_first",
        "idf_keys",
        "idf",
        "vectors",
        "baseline",
    ]

    def save(self, folder: Path, key: DataKey, fingerprint: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        header = {
            "format": INDEX_FORMAT,
            "fingerprint": fingerprint,
            "types": self.types,
            "record_ids": self.record_ids,
            "meta": self.meta,
        }
        # One buffer (a header line, then the arrays), encrypted from a view of it: no copies.
        buf = io.BytesIO()
        buf.write(json.dumps(header).encode() + b"\n")
        arrays = {name: getattr(self, name) for name in self._ARRAYS}
        # Distinct patients per k-gram, so a load need not recount them.
        arrays["udf"] = self.udf.astype(np.uint32)
        np.savez(buf, **arrays)
        with buf.getbuffer() as payload:
            write_encrypted(folder / INDEX_FILE, key, payload, label="leakage-index")
        (folder / "index.json").write_text(
            json.dumps(
                {
                    "format": INDEX_FORMAT,
                    "fingerprint": fingerprint,
                    "appliance_version": __version__,
                    "records": len(self.record_ids),
                    "postings": len(self.gram_keys),
                    "identifier_keys": len(self.id_keys),
                    "built": self.meta.get("built"),
                },
                indent=2,
            )
            + "\n"
        )

    def load(self, folder: Path, key: DataKey, fingerprint: str) -> bool:
        """Load the saved index if its fingerprint matches; False when it must be rebuilt."""
        path = folder / INDEX_FILE
        if not path.exists():
            return False
        payload = read_encrypted(path, key, label="leakage-index")
        head, _, body = payload.partition(b"\n")
        del payload  # the arrays are copied out of ``body`` next
        header = json.loads(head)
        if header.get("format") != INDEX_FORMAT or header.get("fingerprint") != fingerprint:
            return False
        data = np.load(io.BytesIO(body))
        for name in self._ARRAYS:
            setattr(self, name, data[name])
        self.types = list(header["types"])
        self.record_ids = list(header["record_ids"])
        self.meta = dict(header["meta"])
        self._derive_unique(data["udf"] if "udf" in data.files else None)
        return True


def _pad(th: np.ndarray, n: int) -> np.ndarray:
    if len(th) >= n:
        return th
    return np.concatenate([th, np.zeros(n - len(th), dtype=np.uint64)])


def _bands(permutations: int) -> int:
    for bands in (32, 16, 8, 4, 2, 1):
        if permutations % bands == 0 and permutations // bands >= 2:
            return bands
    return 1


def fingerprint(ws: Workspace, holdout_fraction: float, canaries: Sequence[str]) -> str:
    from appliance.workspace import hashed

    store = ws.records_dir / "store.json"
    if not store.exists():
        raise WorkspaceError(
            f"{ws.root}: no real records to screen against; run `appliance ingest` first"
        )
    lk = ws.policy.leakage
    material = {
        "format": INDEX_FORMAT,
        "store": hashed(store)["sha256"],
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
) -> tuple[ReferenceIndex, bool]:
    """The workspace's reference index, built if missing or stale; (index, built now)."""
    from appliance.records.ingest import open_store

    fp = fingerprint(ws, holdout_fraction, canaries)
    folder = ws.records_dir / INDEX_DIR
    index = ReferenceIndex(ws.data_key, ws.policy)
    if index.load(folder, ws.data_key, fp):
        return index, False
    store = open_store(ws)
    index.build(
        store,
        holdout_key=ws.data_key.derive(PURPOSE_HOLDOUT),
        holdout_fraction=holdout_fraction,
        identifier_policy=ws.policy.identifiers,
        canaries=canaries,
        progress=progress,
    )
    index.save(folder, ws.data_key, fp)
    return index, True
