"""``appliance generator train``: tokenizer and GPT-2 trained on the workspace's records.

nanoGPT's shape: prepare the text (:mod:`~appliance.generator.data`), build
the model (:mod:`~appliance.generator.model`), run the short loop
(:mod:`~appliance.generator.loop`), save. Everything the run needs to resume
(model, optimizer, step) goes into one encrypted checkpoint
(:mod:`appliance.training`); an interrupted run goes on from it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import (
    ConfigError,
    InputError,
    WorkspaceError,
    missing_dependency,
)
from appliance.generator import artifact
from appliance.generator.data import (
    CANARY_DIGITS,
    CANARY_FORMAT,
    Corpus,
    encode,
    make_canaries,
    new_tokenizer,
    prepare,
    training_text,
)
from appliance.generator.loop import LoopResult, TrainProgress, autocast_for, fit, heldout_loss
from appliance.generator.model import load_base, make_optimizer, new_model, resumed_model
from appliance.generator.prefixes import (
    EntitySampler,
    EntityTerms,
    PrefixSampler,
    PrefixSchema,
    per_note_counts,
)
from appliance.generator.recipes import Recipe, load_recipe
from appliance.generator.tokenizer import EOS
from appliance.security.audit import utc_now
from appliance.training import (
    load_checkpoint,
    quiet_transformers,
    resolve_device,
    save_checkpoint,
    training_state,
)
from appliance.workspace import Workspace, hashed

CHECKPOINT_LABEL = "generator/checkpoint"


@dataclass
class TrainResult:
    steps: int
    resumed_from: int
    train_records: int
    holdout_records: int
    train_tokens: int
    holdout_tokens: int
    final_loss: float
    holdout_loss: float | None
    holdout_perplexity: float | None
    tokens_per_second: float
    seconds: float
    pseudonymized: dict[str, int]
    canaries: int
    manifest_path: Path
    history: list[dict[str, float]] = field(default_factory=list)
    # Entity conditioning: training notes whose prefix named terms (None: not conditioned).
    entity_notes: int | None = None

    def summary(self) -> str:
        ppl = f"{self.holdout_perplexity:.1f}" if self.holdout_perplexity is not None else "n/a"
        resumed = f" (resumed at step {self.resumed_from})" if self.resumed_from else ""
        replaced = sum(self.pseudonymized.values())
        return (
            f"trained generator: {self.steps} steps{resumed} on {self.train_records} records "
            f"({self.train_tokens} tokens), held-out perplexity {ppl} on {self.holdout_records} records, "
            f"{self.tokens_per_second:.0f} tokens/s, {replaced} identifier spans pseudonymized"
            f"{self._entities()}; saved encrypted to {self.manifest_path.parent}"
        )

    def _entities(self) -> str:
        if self.entity_notes is None:
            return ""
        if self.entity_notes == 0:
            return (
                "; entity terms: no training record mentions a term of the lists, so "
                "generation will name terms the model never learned to write (check the lists)"
            )
        return (
            f"; entity terms named in {self.entity_notes} of {self.train_records} training records"
        )


def _fingerprint(
    ws: Workspace,
    recipe: Recipe,
    from_dir: Path | None,
    canaries: int,
    repeats: int,
    entities: EntityTerms | None,
) -> str:
    parts: dict[str, Any] = {
        "recipe": recipe.as_dict(),
        "store": hashed(ws.store_manifest)["sha256"],
        "policy": ws.policy.sha256,
        "from": hashed(from_dir)["sha256"] if from_dir else None,
        "canaries": [canaries, repeats],
    }
    if entities is not None:  # only then, so earlier checkpoints keep their fingerprint
        parts["entities"] = _entity_sources(entities)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def run(
    ws: Workspace,
    *,
    recipe: str | Path | Recipe = "small",
    from_dir: Path | None = None,
    canaries: int = 0,
    canary_repeats: int = 10,
    max_steps: int | None = None,
    device: str | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    entities: EntityTerms | None = None,
) -> TrainResult:
    """Train the workspace's generator (resuming an interrupted run) and store it encrypted.

    ``entities``: condition on entity terms (a second prefix line naming the
    terms each note mentions; generation then names terms of the list).
    """
    try:
        import torch
    except ImportError:
        raise missing_dependency("torch", "cpu", "generator training") from None
    quiet_transformers()
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    rec = rec.with_overrides(max_steps=max_steps, device=device)
    if canaries < 0 or canary_repeats < 1:
        raise ConfigError("--canaries must be ≥ 0 and --canary-repeats ≥ 1")
    args = {"recipe": rec.recipe.name, "from": str(from_dir) if from_dir else None, "canaries": canaries,
            "canary_repeats": canary_repeats, "max_steps": rec.train.max_steps,
            "entity_terms": _entity_sources(entities) if entities is not None else None}  # fmt: skip
    with ws.stage("generator train", args, interrupted="interrupted (checkpoint kept)") as stage:
        result = _train(ws, rec, from_dir, canaries, canary_repeats, progress, torch, entities)
        stage.inputs = [hashed(ws.store_manifest, ws.root)]
        stage.outputs = [hashed(result.manifest_path, ws.root)]
        stage.details = {
            "steps": result.steps,
            "resumed_from": result.resumed_from,
            "train_records": result.train_records,
            "holdout_records": result.holdout_records,
            "holdout_perplexity": result.holdout_perplexity,
            "pseudonymized_spans": result.pseudonymized,
            "canaries": result.canaries,
        }
    return result


@dataclass
class _Data:
    """The run's text, tokenized: what the loop trains on and what it is measured on."""

    corpus: Corpus
    schema: PrefixSchema
    entities: EntityTerms | None
    canaries: list[dict[str, Any]]
    tokenizer: Any
    base_model: Any  # the --from model, None otherwise (a new or resumed one is built later)
    train: Any  # packed token stream (1-D long tensor)
    holdout: Any  # the same for the held-out records, None without any

    @property
    def holdout_tokens(self) -> int:
        return len(self.holdout) if self.holdout is not None else 0


def _data(
    ws: Workspace,
    recipe: Recipe,
    from_dir: Path | None,
    checkpoint: dict[str, Any] | None,
    n_canaries: int,
    canary_repeats: int,
    entities: EntityTerms | None,
) -> _Data:
    """Records to token streams; the tokenizer (and --from model) from the checkpoint, --from, or new."""
    corpus, schema = prepare(ws, recipe, entities)
    if checkpoint is not None:
        canaries = checkpoint["meta"]["canaries"]
    else:
        canaries = make_canaries(n_canaries, canary_repeats)
    rng_docs = training_text(corpus, canaries)

    model = None
    if checkpoint is not None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(checkpoint["tokenizer"])
    elif from_dir is not None:
        model, tokenizer = load_base(from_dir)
    else:
        tokenizer = new_tokenizer(rng_docs, recipe)

    assert tokenizer.token_to_id(EOS) is not None, (
        "the tokenizer always carries the end-of-text token"
    )
    train_data = encode(tokenizer, rng_docs)
    holdout_data = encode(tokenizer, corpus.holdout_docs) if corpus.holdout_docs else None
    block = recipe.model.block_size
    if len(train_data) < block + 2:
        raise InputError(
            f"not enough text to train: {len(train_data)} tokens, the recipe's block_size needs more than {block + 1}; "
            "ingest more records or use a recipe with a smaller block_size"
        )
    return _Data(corpus, schema, entities, canaries, tokenizer, model, train_data, holdout_data)


def _model(recipe: Recipe, data: _Data, checkpoint: dict[str, Any] | None, torch: Any) -> Any:
    """The --from model, the checkpoint's, or a new one with seeded initial weights."""
    if data.base_model is not None:
        return data.base_model
    if checkpoint is not None:
        return resumed_model(checkpoint)
    eos_id = int(data.tokenizer.token_to_id(EOS))
    torch.manual_seed(recipe.train.seed)  # reproducible initial weights
    return new_model(recipe, data.tokenizer.get_vocab_size(), eos_id)


def _entity_sources(entities: EntityTerms) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in src.items() if k in ("path", "sha256", "label", "terms")}
        for src in entities.sources
    ]


def _entity_meta(data: _Data) -> dict[str, Any] | None:
    """What generation needs to write entity lines: the term list and terms per note by type."""
    if data.entities is None:
        return None
    vocabulary = {k: sorted(set(v)) for k, v in data.entities.vocabulary.items() if v}
    sampler = EntitySampler(vocabulary, per_note_counts(data.corpus.entity_counts, vocabulary))
    return {**sampler.as_dict(), "sources": _entity_sources(data.entities)}


def _meta(recipe: Recipe, data: _Data, from_dir: Path | None) -> dict[str, Any]:
    """generator.json: what sampling and the leakage screen need besides the weights."""
    return {
        "prefix_schema": data.schema.as_dict(),
        "prefix_counts": dict(PrefixSampler.from_prefixes(data.corpus.prefixes).counts),
        "entity_prefix": _entity_meta(data),
        "canaries": data.canaries,
        "canary_format": CANARY_FORMAT,
        "canary_digits": CANARY_DIGITS,
        "holdout": {"rule": "hmac-sha256(record id) < fraction", "fraction": recipe.train.holdout_fraction},
        "from": str(from_dir) if from_dir else None,
    }  # fmt: skip


def _manifest(
    ws: Workspace,
    recipe: Recipe,
    from_dir: Path | None,
    data: _Data,
    model: Any,
    device: str,
    resumed_from: int,
    loop: LoopResult,
    holdout_loss: float | None,
    history: list[dict[str, float]],
) -> dict[str, Any]:
    """manifest.json before the file hashes (``artifact.save_generator`` adds those)."""
    canaries = data.canaries
    return {
        "stage": "generator",
        "zone": "real",
        "created": utc_now(),
        "recipe": recipe.as_dict(),
        "device": device,
        "steps": loop.step,
        "resumed_from": resumed_from,
        "inputs": {
            "store": hashed(ws.store_manifest, ws.root),
            "from": hashed(from_dir) if from_dir else None,
            "policy_sha256": ws.policy.sha256,
        },
        "data": {
            "train_records": len(data.corpus.train_ids),
            "holdout_records": len(data.corpus.holdout_ids),
            "train_tokens": len(data.train),
            "holdout_tokens": data.holdout_tokens,
            "pseudonymized_spans": dict(data.corpus.counts),
            "pseudonymization": bool(ws.policy.pseudonymize.enabled),
            "canaries": len(canaries),
            "canary_repeats": canaries[0]["repeats"] if canaries else 0,
            "entity_terms": (
                {
                    "sources": _entity_sources(data.entities),
                    "notes_naming_terms": sum(1 for c in data.corpus.entity_counts if c),
                    "terms_named": sum(sum(c.values()) for c in data.corpus.entity_counts),
                }
                if data.entities is not None
                else None
            ),
        },
        "tokenizer": {"type": "byte-level BPE", "vocab_size": data.tokenizer.get_vocab_size()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "metrics": {
            "final_loss": loop.loss,
            "holdout_loss": holdout_loss,
            "holdout_perplexity": math.exp(holdout_loss) if holdout_loss is not None else None,
            "tokens_per_second": loop.tokens_per_second,
        },
        "history": history,
    }


def _train(
    ws: Workspace,
    recipe: Recipe,
    from_dir: Path | None,
    n_canaries: int,
    canary_repeats: int,
    progress: Callable[[TrainProgress], None] | None,
    torch: Any,
    entities: EntityTerms | None = None,
) -> TrainResult:
    started = time.monotonic()
    t = recipe.train
    folder = ws.generator_dir
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint_path = folder / artifact.CHECKPOINT_FILE
    if not (ws.store_manifest).exists():
        raise WorkspaceError(
            f"{ws.root}: the record store is empty; run `appliance ingest EXPORT` first"
        )
    fingerprint = _fingerprint(ws, recipe, from_dir, n_canaries, canary_repeats, entities)
    key = ws.data_key
    checkpoint = load_checkpoint(
        checkpoint_path, key, label=CHECKPOINT_LABEL, fingerprint=fingerprint
    )

    data = _data(ws, recipe, from_dir, checkpoint, n_canaries, canary_repeats, entities)
    model = _model(recipe, data, checkpoint, torch)
    block = min(recipe.model.block_size, model.config.n_positions)
    device = resolve_device(t.device)
    model.to(device)
    optimizer = make_optimizer(model, recipe)
    start_step = 0
    history: list[dict[str, float]] = []
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_step = int(checkpoint["step"])
        history = list(checkpoint["history"])
    meta = _meta(recipe, data, from_dir)
    autocast = autocast_for(device, t.precision)

    def evaluate() -> float | None:
        return heldout_loss(model, data.holdout, block, recipe, device, autocast)

    def save(step: int) -> None:
        state = training_state(
            fingerprint=fingerprint,
            step=step,
            model=model,
            optimizer=optimizer,
            tokenizer=data.tokenizer,
            history=history,
            meta=meta,
        )
        save_checkpoint(checkpoint_path, state, key, label=CHECKPOINT_LABEL)

    loop = fit(
        model,
        optimizer,
        data.train,
        recipe=recipe,
        block=block,
        device=device,
        autocast=autocast,
        start_step=start_step,
        history=history,
        evaluate=evaluate,
        checkpoint=save,
        progress=progress,
    )
    holdout_loss = evaluate()
    manifest = _manifest(
        ws, recipe, from_dir, data, model, device, start_step, loop, holdout_loss, history
    )
    model.to("cpu")
    final = artifact.save_generator(ws, model, data.tokenizer, meta, manifest)
    checkpoint_path.unlink(missing_ok=True)
    return TrainResult(
        steps=loop.step,
        resumed_from=start_step,
        train_records=len(data.corpus.train_ids),
        holdout_records=len(data.corpus.holdout_ids),
        train_tokens=len(data.train),
        holdout_tokens=data.holdout_tokens,
        final_loss=loop.loss,
        holdout_loss=holdout_loss,
        holdout_perplexity=final["metrics"]["holdout_perplexity"],
        tokens_per_second=loop.tokens_per_second,
        seconds=time.monotonic() - started,
        pseudonymized=dict(data.corpus.counts),
        canaries=len(data.canaries),
        manifest_path=folder / "manifest.json",
        history=history,
        entity_notes=(
            sum(1 for c in data.corpus.entity_counts if c) if data.entities is not None else None
        ),
    )
