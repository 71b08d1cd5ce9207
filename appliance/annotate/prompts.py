"""Prompts for the LLM annotator, and the JSON schema its answers must follow.

The LLM is asked to *name* entities, not to place them: it returns each
mention as written in the note, with its type and, when the same words occur
more than once with different meanings, a few words of context. Code places
them (:mod:`appliance.annotate.align`).

Three strategies, the comparison the research ran:

* ``zero-shot``: the entity definitions of the policy's entity schema only;
* ``few-shot``: the same, then fixed worked examples (the first ``k`` of the
  example set) as earlier turns of the conversation;
* ``retrieval``: the ``k`` examples most similar to the note, chosen per note
  by BM25 over word tokens, or by cosine similarity of embeddings from a
  local encoder folder.

``PROMPT_VERSION`` changes whenever the wording changes, so cached answers to
an older prompt are never reused.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import EntitySchema
from appliance.documents import Document, Span, word_tokens
from appliance.errors import UsageError, missing_dependency

__all__ = [
    "BUILTIN_EXAMPLES",
    "PROMPT_VERSION",
    "STRATEGIES",
    "Bm25",
    "PromptBuilder",
    "answer_budget",
    "max_entities",
    "response_schema",
]

PROMPT_VERSION = "1"
STRATEGIES = ("zero-shot", "few-shot", "retrieval")


# Bounds that make every answer end. A small model that repeats itself or never
# closes a string runs into them: the server's structured-output grammar stops
# the list at ``maxItems`` and each string at ``maxLength``, so the longest
# answer a note allows, and with it the request's ``max_tokens``, follows from
# the note (:func:`answer_budget`).
MAX_TEXT_CHARS = 160  # an entity as written in the note
MAX_CONTEXT_CHARS = 80  # the few words around it, when it is ambiguous
MIN_ITEMS, MAX_ITEMS = 8, 200
CHARS_PER_ITEM = 20  # the densest notes (medication lists) name about one entity per 20 characters
CHARS_PER_TOKEN = 3.0  # JSON with note words, on a pessimistic tokenizer
ITEM_OVERHEAD = 24  # {"text": "", "label": ""}, in characters


def max_entities(text: str) -> int:
    """The most entities an answer about ``text`` may list (``maxItems``)."""
    return max(MIN_ITEMS, min(MAX_ITEMS, len(text) // CHARS_PER_ITEM + 1))


def answer_budget(text: str, labels: Sequence[str]) -> int:
    """Tokens a complete answer about ``text`` needs at most, in practice.

    Every entity's own words come from the note, so their total is about the
    note's length (counted twice: an ambiguous entity repeats its context);
    on top, each of :func:`max_entities` items costs its JSON and its label.
    """
    label = max((len(x) for x in labels), default=10)
    chars = 2 * len(text) + max_entities(text) * (ITEM_OVERHEAD + label) + 32
    return math.ceil(chars / CHARS_PER_TOKEN)


def response_schema(labels: Sequence[str], max_items: int | None = None) -> dict[str, Any]:
    """The JSON schema of an answer: ``{"entities": [{"text", "label", "context"?}]}``.

    ``max_items`` bounds the list (:func:`max_entities` of the note); strings
    are bounded always.
    """
    entities: dict[str, Any] = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
                "label": {"type": "string", "enum": list(labels)},
                "context": {"type": "string", "maxLength": MAX_CONTEXT_CHARS},
            },
            "required": ["text", "label"],
            "additionalProperties": False,
        },
    }
    if max_items is not None:
        entities["maxItems"] = max_items
    return {
        "type": "object",
        "properties": {"entities": entities},
        "required": ["entities"],
        "additionalProperties": False,
    }


def _ex(text: str, *ents: tuple[str, str]) -> Document:
    spans = []
    for surface, label in ents:
        start = text.index(surface)
        spans.append(Span(start, start + len(surface), label, surface))
    return Document(f"example-{len(text)}", text, spans)


# Short, invented notes for the default clinical schema (DRUG, PROCEDURE,
# DIAGNOSIS). A hospital passes its own with --examples.
BUILTIN_EXAMPLES: tuple[Document, ...] = (
    _ex(
        "Admitted with community-acquired pneumonia. Started on amoxicillin 1 g three times "
        "daily; chest X-ray on day 3 showed regression.",
        ("community-acquired pneumonia", "DIAGNOSIS"),
        ("amoxicillin", "DRUG"),
        ("chest X-ray", "PROCEDURE"),
    ),
    _ex(
        "Known type 2 diabetes mellitus and hypertension. Metformin continued, ramipril "
        "increased to 10 mg. HbA1c 7.4%. No signs of diabetic retinopathy.",
        ("type 2 diabetes mellitus", "DIAGNOSIS"),
        ("hypertension", "DIAGNOSIS"),
        ("Metformin", "DRUG"),
        ("ramipril", "DRUG"),
        ("diabetic retinopathy", "DIAGNOSIS"),
    ),
    _ex(
        "Laparoscopic cholecystectomy performed for symptomatic cholelithiasis. Cefazolin given "
        "before incision. Uneventful recovery; paracetamol as needed.",
        ("Laparoscopic cholecystectomy", "PROCEDURE"),
        ("cholelithiasis", "DIAGNOSIS"),
        ("Cefazolin", "DRUG"),
        ("paracetamol", "DRUG"),
    ),
    _ex(
        "Atrial fibrillation with rapid ventricular response. Transthoracic echocardiography: "
        "normal ejection fraction. Apixaban started; metoprolol for rate control.",
        ("Atrial fibrillation", "DIAGNOSIS"),
        ("Transthoracic echocardiography", "PROCEDURE"),
        ("Apixaban", "DRUG"),
        ("metoprolol", "DRUG"),
    ),
    _ex(
        "Colonoscopy with biopsy for iron deficiency anaemia: a sigmoid polyp was removed. "
        "Ferrous sulfate prescribed.",
        ("Colonoscopy", "PROCEDURE"),
        ("biopsy", "PROCEDURE"),
        ("iron deficiency anaemia", "DIAGNOSIS"),
        ("Ferrous sulfate", "DRUG"),
    ),
)


class Bm25:
    """Okapi BM25 over casefolded word tokens (k1 = 1.5, b = 0.75)."""

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs = [Counter(self._terms(t)) for t in texts]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        df: Counter[str] = Counter()
        for d in self.docs:
            df.update(d.keys())
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    @staticmethod
    def _terms(text: str) -> list[str]:
        return [text[a:b].casefold() for a, b in word_tokens(text) if text[a:b].isalnum()]

    def scores(self, query: str) -> list[float]:
        q = set(self._terms(query))
        out = []
        for d, length in zip(self.docs, self.lengths, strict=True):
            s = 0.0
            for t in q:
                f = d.get(t, 0)
                if f:
                    denom = f + self.k1 * (1 - self.b + self.b * length / (self.avg or 1))
                    s += self.idf[t] * f * (self.k1 + 1) / denom
            out.append(s)
        return out


class _Embedder:
    """Mean-pooled sentence embeddings from a local encoder folder (transformers)."""

    def __init__(self, folder: Path) -> None:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise missing_dependency("torch", "cpu", "retrieval by embedding") from None
        if not (folder / "config.json").is_file():
            raise UsageError(f"--embedder {folder}: not a local model folder (no config.json)")
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()

    def __call__(self, texts: Sequence[str]) -> Any:
        torch = self.torch
        with torch.no_grad():
            batch = self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt"
            )
            out = self.model(**batch).last_hidden_state  # (B, T, H)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vec = (out * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return torch.nn.functional.normalize(vec, dim=-1)


@dataclass(frozen=True)
class Prompt:
    messages: list[dict[str, str]]
    examples: tuple[str, ...]  # ids of the examples shown


class PromptBuilder:
    """Builds chat messages for one strategy over an entity schema and an example set."""

    def __init__(
        self,
        schema: EntitySchema,
        strategy: str = "zero-shot",
        *,
        examples: Sequence[Document] | None = None,
        k: int = 3,
        retriever: str = "bm25",
        embedder: Path | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise UsageError(f"unknown prompt '{strategy}'; choose one of: {', '.join(STRATEGIES)}")
        if retriever not in ("bm25", "embedding"):
            raise UsageError(f"unknown retriever '{retriever}'; choose bm25 or embedding")
        if k < 1:
            raise UsageError("--k must be at least 1")
        self.schema = schema
        self.strategy = strategy
        self.k = k
        self.retriever = retriever
        labels = set(schema.labels)
        pool = list(BUILTIN_EXAMPLES if examples is None else examples)
        # Examples only show the schema's types; an example of other types teaches nothing.
        self.examples = [
            Document(d.id, d.text, [s for s in d.spans if s.label in labels]) for d in pool
        ]
        self.examples = [d for d in self.examples if d.spans]
        if strategy != "zero-shot" and not self.examples:
            raise UsageError(
                f"prompt '{strategy}' needs annotated examples of the types {', '.join(schema.labels)}; "
                "pass --examples FILE (JSONL, BRAT or CoNLL)"
            )
        self._bm25: Bm25 | None = None
        self._embedder: _Embedder | None = None
        self._example_vectors: Any = None
        if strategy == "retrieval":
            if retriever == "bm25":
                self._bm25 = Bm25([d.text for d in self.examples])
            else:
                if embedder is None:
                    raise UsageError("--retriever embedding needs --embedder LOCAL_ENCODER_DIR")
                self._embedder = _Embedder(embedder)
                self._example_vectors = self._embedder([d.text for d in self.examples])
        self.embedder = str(embedder) if embedder else None

    @property
    def system(self) -> str:
        lines = [
            "You are a clinical annotator. Find every mention of the entity types below in the "
            "note the user sends.",
            "",
            "Entity types:",
        ]
        for e in self.schema.entities:
            lines.append(f"- {e.label}: {e.definition}")
            if e.examples:
                lines.append(f"  Examples: {', '.join(e.examples)}")
        lines += [
            "",
            "Rules:",
            "- Copy each mention exactly as it is written in the note; do not correct, expand or "
            "translate it, and do not give character offsets.",
            "- List a mention once even if it occurs several times, unless its occurrences have "
            "different types; then list each with a 'context' of a few words copied from the note "
            "around it.",
            "- Do not list anything that is not in the note.",
            '- Answer with JSON only: {"entities": [{"text": ..., "label": ...}]}.',
        ]
        return "\n".join(lines)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt": self.strategy,
            "prompt_version": PROMPT_VERSION,
            "schema": self.schema.as_dict(),
        }
        if self.strategy != "zero-shot":
            out["k"] = self.k
            out["examples_sha256"] = self.examples_hash
            out["examples"] = len(self.examples)
        if self.strategy == "retrieval":
            out["retriever"] = self.retriever
            if self.embedder:
                out["embedder"] = self.embedder
        return out

    @property
    def examples_hash(self) -> str:
        h = hashlib.sha256()
        for d in self.examples:
            h.update(
                json.dumps([d.id, d.text, [(s.start, s.end, s.label) for s in d.spans]]).encode()
            )
        return h.hexdigest()

    def choose(self, text: str) -> list[Document]:
        """The examples shown with ``text`` (none for zero-shot)."""
        if self.strategy == "zero-shot":
            return []
        if self.strategy == "few-shot":
            return self.examples[: self.k]
        if self._bm25 is not None:
            scores = self._bm25.scores(text)
        else:
            assert self._embedder is not None
            q = self._embedder([text])
            scores = (self._example_vectors @ q[0]).tolist()
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: self.k]
        # Most similar last, nearest to the note.
        return [self.examples[i] for i in reversed(order)]

    def build(self, text: str) -> Prompt:
        chosen = self.choose(text)
        messages = [{"role": "system", "content": self.system}]
        for ex in chosen:
            messages.append({"role": "user", "content": ex.text})
            messages.append({"role": "assistant", "content": answer_json(ex)})
        messages.append({"role": "user", "content": text})
        return Prompt(messages, tuple(d.id for d in chosen))


def answer_json(doc: Document) -> str:
    """The ideal answer for ``doc``: each (text, label) once, in order of first occurrence."""
    seen: list[tuple[str, str]] = []
    for s in sorted(doc.spans, key=lambda s: s.start):
        if (s.text, s.label) not in seen:
            seen.append((s.text, s.label))
    return json.dumps(
        {"entities": [{"text": t, "label": label} for t, label in seen]}, ensure_ascii=False
    )
