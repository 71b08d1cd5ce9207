"""The generator's training text: records split by a keyed hash, pseudonymized, prefixed, tokenized.

A fixed share of records is held out (never trained on) by a keyed hash of
the record id, so the split is stable and the leakage screen can rebuild it.
Canaries (random secrets in a fixed sentence) are repeated into the training
text when asked for; the screen later measures whether the model learned them.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.documents import Record
from appliance.errors import InputError, WorkspaceError
from appliance.generator.prefixes import EntityTerms, PrefixSchema, derive_schema, join_prefix
from appliance.generator.recipes import Recipe
from appliance.generator.tokenizer import EOS, train_tokenizer
from appliance.records.holdout import is_holdout
from appliance.records.ingest import open_store
from appliance.security.keys import PURPOSE_HOLDOUT, PURPOSE_PSEUDONYMS
from appliance.workspace import Workspace

CANARY_FORMAT = "The patient's reference code is {secret}."
CANARY_DIGITS = 9


def holdout_ids(ws: Workspace, fraction: float) -> set[str]:
    """The record ids held out from training (for the leakage screen's comparison set)."""
    key = ws.data_key.derive(PURPOSE_HOLDOUT)
    return {r.id for r in open_store(ws) if is_holdout(key, r.id, fraction)}


def make_canaries(count: int, repeats: int) -> list[dict[str, Any]]:
    """Random secrets in the Secret Sharer's style: a fixed format with random digits."""
    return [
        {"text": CANARY_FORMAT.format(secret=" ".join(str(secrets.randbelow(10)) for _ in range(CANARY_DIGITS))),
         "repeats": repeats}
        for _ in range(count)
    ]  # fmt: skip


@dataclass
class Corpus:
    train_docs: list[str]
    holdout_docs: list[str]
    train_ids: list[str]
    holdout_ids: list[str]
    prefixes: list[str]  # the metadata line of each training note (what PrefixSampler counts)
    counts: Counter[str]
    # Entity conditioning: terms of each type each training note named (empty without it).
    entity_counts: list[Counter[str]] = field(default_factory=list)


def prepare(
    ws: Workspace, recipe: Recipe, entities: EntityTerms | None = None
) -> tuple[Corpus, PrefixSchema]:
    """Split, pseudonymize and prefix the workspace's records (and the prefix schema of the split).

    With ``entities``, each note's prefix gains a line naming the entity
    terms its pseudonymized text mentions (``entities: a; b``), so the model
    learns to write the terms a prompt names.
    """
    # Imported here: the recognizers behind it load presidio (seconds), which
    # the screen's use of is_holdout and holdout_ids does not need.
    from appliance.generator.pseudonymize import Pseudonymizer

    store = open_store(ws)
    records: list[Record] = list(store)
    if not records:
        raise WorkspaceError(
            f"{ws.root}: the record store is empty; run `appliance ingest EXPORT` first"
        )
    key = ws.data_key
    holdout_key = key.derive(PURPOSE_HOLDOUT)
    frac = recipe.train.holdout_fraction
    train = [r for r in records if not is_holdout(holdout_key, r.id, frac)]
    holdout = [r for r in records if is_holdout(holdout_key, r.id, frac)]
    if not train:
        raise InputError(
            f"all {len(records)} records fell in the held-out share; ingest more records"
        )
    schema = derive_schema(train)
    pseudo = Pseudonymizer(
        ws.policy,
        key.derive(PURPOSE_PSEUDONYMS),
        identifiers=[i for r in records for i in r.identifiers],
    )
    counts: Counter[str] = Counter()
    entity_counts: list[Counter[str]] = []

    def doc(r: Record) -> tuple[str, str, Counter[str]]:
        result = pseudo.pseudonymize(r)
        counts.update(result.counts)
        prefix = schema.render(r)
        line, named = entities.line(result.text) if entities is not None else ("", Counter())
        head = join_prefix(prefix, line)
        return prefix, (f"{head}\n{result.text}" if head else result.text), named

    train_triples = [doc(r) for r in train]
    train_pairs = [(p, d) for p, d, _ in train_triples]
    if entities is not None:
        entity_counts = [named for _, _, named in train_triples]
    holdout_docs = [doc(r)[1] for r in holdout]
    corpus = Corpus(
        train_docs=[d for _, d in train_pairs],
        holdout_docs=holdout_docs,
        train_ids=[r.id for r in train],
        holdout_ids=[r.id for r in holdout],
        prefixes=[p for p, _ in train_pairs],
        counts=counts,
        entity_counts=entity_counts,
    )
    return corpus, schema


def training_text(corpus: Corpus, canaries: list[dict[str, Any]]) -> list[str]:
    """The documents trained on: the training records, then each canary ``repeats`` times."""
    docs = list(corpus.train_docs)
    for c in canaries:
        docs.extend([c["text"]] * c["repeats"])
    return docs


def new_tokenizer(docs: Sequence[str], recipe: Recipe) -> Any:
    """A byte-level BPE learned from the training text (a run without ``--from``)."""
    return train_tokenizer(
        docs,
        vocab_size=recipe.tokenizer.vocab_size,
        min_frequency=recipe.tokenizer.min_frequency,
    )


def encode(tokenizer: Any, docs: Sequence[str]) -> Any:
    """One packed token stream (a 1-D long tensor): each document followed by the end-of-text token."""
    import torch

    eos = tokenizer.token_to_id(EOS)
    ids: list[int] = []
    for enc in tokenizer.encode_batch(list(docs)):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)
