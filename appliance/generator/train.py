"""``appliance generator train``: tokenizer and GPT-2 trained on the workspace's records.

The loop is nanoGPT's: random windows of a packed token stream, AdamW with
decoupled weight decay on matrices only, linear warmup then cosine decay,
gradient clipping, periodic held-out evaluation and checkpoints. Everything
the run needs to resume (model, optimizer, step) goes into one encrypted
checkpoint; batches are drawn from a generator seeded by the step number, so
a resumed run sees the same batches the uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import quiet_transformers
from appliance.documents import Record
from appliance.errors import (
    ApplianceError,
    ConfigError,
    InputError,
    WorkspaceError,
    missing_dependency,
)
from appliance.generator import artifact
from appliance.generator.prefixes import PrefixSampler, derive_schema
from appliance.generator.recipes import Recipe, load_recipe
from appliance.generator.tokenizer import EOS, train_tokenizer
from appliance.records.holdout import is_holdout
from appliance.records.ingest import open_store
from appliance.security.audit import utc_now
from appliance.security.crypto import read_encrypted, write_encrypted
from appliance.security.keys import PURPOSE_HOLDOUT, PURPOSE_PSEUDONYMS
from appliance.workspace import Workspace, hashed

CANARY_FORMAT = "The patient's reference code is {secret}."
CANARY_DIGITS = 9


@dataclass(frozen=True)
class TrainProgress:
    step: int
    max_steps: int
    loss: float
    lr: float
    tokens_per_second: float
    eta_seconds: float
    val_loss: float | None = None


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

    def summary(self) -> str:
        ppl = f"{self.holdout_perplexity:.1f}" if self.holdout_perplexity is not None else "n/a"
        resumed = f" (resumed at step {self.resumed_from})" if self.resumed_from else ""
        replaced = sum(self.pseudonymized.values())
        return (
            f"trained generator: {self.steps} steps{resumed} on {self.train_records} records "
            f"({self.train_tokens} tokens), held-out perplexity {ppl} on {self.holdout_records} records, "
            f"{self.tokens_per_second:.0f} tokens/s, {replaced} identifier spans pseudonymized; "
            f"saved encrypted to {self.manifest_path.parent}"
        )


def make_canaries(count: int, repeats: int) -> list[dict[str, Any]]:
    """Random secrets in the Secret Sharer's style: a fixed format with random digits."""
    return [
        {"text": CANARY_FORMAT.format(secret=" ".join(str(secrets.randbelow(10)) for _ in range(CANARY_DIGITS))),
         "repeats": repeats}
        for _ in range(count)
    ]  # fmt: skip


def resolve_device(requested: str) -> str:
    """ "auto" is CUDA when torch sees a GPU, else the CPU; "cuda" without a GPU is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' requested but torch sees no CUDA GPU; use --device cpu or auto"
        )
    return requested


def _lr(step: int, r: Recipe) -> float:
    t = r.train
    if step < t.warmup_steps:
        return t.learning_rate * (step + 1) / t.warmup_steps
    if step >= t.max_steps:
        return t.min_learning_rate
    ratio = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
    return t.min_learning_rate + 0.5 * (1 + math.cos(math.pi * ratio)) * (
        t.learning_rate - t.min_learning_rate
    )


def _windows(data: Any, block: int, batch: int, generator: Any) -> tuple[Any, Any]:
    import torch

    starts = torch.randint(len(data) - block - 1 + 1, (batch,), generator=generator)
    x = torch.stack([data[i : i + block] for i in starts.tolist()])  # (B, T)
    y = torch.stack([data[i + 1 : i + 1 + block] for i in starts.tolist()])  # (B, T)
    return x, y


def _encode(tokenizer: Any, docs: Sequence[str]) -> Any:
    import torch

    eos = tokenizer.token_to_id(EOS)
    ids: list[int] = []
    for enc in tokenizer.encode_batch(list(docs)):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def _load_base(from_dir: Path) -> tuple[Any, Any]:
    """A hospital's own GPT-2 checkpoint folder (config.json, weights, tokenizer.json)."""
    from tokenizers import Tokenizer
    from transformers import GPT2LMHeadModel

    if not from_dir.is_dir():
        raise InputError(f"--from {from_dir}: not a folder")
    if not (from_dir / "tokenizer.json").is_file():
        raise InputError(
            f"--from {from_dir}: no tokenizer.json (a fast tokenizer file is required)"
        )
    try:
        model = GPT2LMHeadModel.from_pretrained(str(from_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"--from {from_dir}: not a loadable GPT-2 checkpoint: {str(exc).splitlines()[0]}"
        ) from exc
    tok = Tokenizer.from_file(str(from_dir / "tokenizer.json"))
    if tok.token_to_id(EOS) is None:
        tok.add_special_tokens([EOS])
    if tok.get_vocab_size() > model.config.vocab_size:
        model.resize_token_embeddings(tok.get_vocab_size())
    return model, tok


def _new_model(recipe: Recipe, vocab_size: int, eos_id: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    m = recipe.model
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=m.block_size,
        n_embd=m.n_embd,
        n_layer=m.n_layer,
        n_head=m.n_head,
        resid_pdrop=m.dropout,
        embd_pdrop=m.dropout,
        attn_pdrop=m.dropout,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    return GPT2LMHeadModel(config)


def _optimizer(model: Any, recipe: Recipe) -> Any:
    import torch

    # nanoGPT: decay matrices (weights of linear layers, embeddings), not biases or norms.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.train.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=recipe.train.learning_rate,
        betas=(0.9, 0.95),
    )


@dataclass
class _Corpus:
    train_docs: list[str]
    holdout_docs: list[str]
    train_ids: list[str]
    holdout_ids: list[str]
    prefixes: list[str]
    counts: Counter[str]


def _prepare(ws: Workspace, recipe: Recipe) -> tuple[_Corpus, Any]:
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

    def doc(r: Record) -> tuple[str, str]:
        result = pseudo.pseudonymize(r)
        counts.update(result.counts)
        prefix = schema.render(r)
        return prefix, (f"{prefix}\n{result.text}" if prefix else result.text)

    train_pairs = [doc(r) for r in train]
    holdout_docs = [doc(r)[1] for r in holdout]
    corpus = _Corpus(
        train_docs=[d for _, d in train_pairs],
        holdout_docs=holdout_docs,
        train_ids=[r.id for r in train],
        holdout_ids=[r.id for r in holdout],
        prefixes=[p for p, _ in train_pairs],
        counts=counts,
    )
    return corpus, schema


def _fingerprint(
    ws: Workspace, recipe: Recipe, from_dir: Path | None, canaries: int, repeats: int
) -> str:
    parts = {
        "recipe": recipe.as_dict(),
        "store": hashed(ws.store_manifest)["sha256"],
        "policy": ws.policy.sha256,
        "from": hashed(from_dir)["sha256"] if from_dir else None,
        "canaries": [canaries, repeats],
    }
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
) -> TrainResult:
    """Train the workspace's generator (resuming an interrupted run) and store it encrypted."""
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
            "canary_repeats": canary_repeats, "max_steps": rec.train.max_steps}  # fmt: skip
    try:
        with ws.lock("generator train"):
            result = _train(ws, rec, from_dir, canaries, canary_repeats, progress, torch)
    except ApplianceError as exc:
        ws.log("generator train", args=args, result=f"error: {exc.message}")
        raise
    except KeyboardInterrupt:
        ws.log("generator train", args=args, result="interrupted (checkpoint kept)")
        raise
    ws.log(
        "generator train",
        args=args,
        inputs=[hashed(ws.store_manifest, ws.root)],
        outputs=[hashed(result.manifest_path, ws.root)],
        details={
            "steps": result.steps,
            "resumed_from": result.resumed_from,
            "train_records": result.train_records,
            "holdout_records": result.holdout_records,
            "holdout_perplexity": result.holdout_perplexity,
            "pseudonymized_spans": result.pseudonymized,
            "canaries": result.canaries,
        },
    )
    return result


def _train(
    ws: Workspace,
    recipe: Recipe,
    from_dir: Path | None,
    n_canaries: int,
    canary_repeats: int,
    progress: Callable[[TrainProgress], None] | None,
    torch: Any,
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
    fingerprint = _fingerprint(ws, recipe, from_dir, n_canaries, canary_repeats)
    key = ws.data_key

    checkpoint: dict[str, Any] | None = None
    if checkpoint_path.exists():
        blob = read_encrypted(checkpoint_path, key, label="generator/checkpoint")
        checkpoint = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        if checkpoint.get("fingerprint") != fingerprint:
            checkpoint = None  # made from other data or settings: start over
            checkpoint_path.unlink()

    corpus, schema = _prepare(ws, recipe)
    if checkpoint is not None:
        canaries = checkpoint["meta"]["canaries"]
    else:
        canaries = make_canaries(n_canaries, canary_repeats)
    rng_docs = list(corpus.train_docs)
    for c in canaries:
        rng_docs.extend([c["text"]] * c["repeats"])

    if checkpoint is not None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(checkpoint["tokenizer"])
        model = None
    elif from_dir is not None:
        model, tokenizer = _load_base(from_dir)
    else:
        tokenizer = train_tokenizer(
            rng_docs,
            vocab_size=recipe.tokenizer.vocab_size,
            min_frequency=recipe.tokenizer.min_frequency,
        )
        model = None

    eos = tokenizer.token_to_id(EOS)
    assert eos is not None, "the tokenizer always carries the end-of-text token"
    eos_id = int(eos)
    train_data = _encode(tokenizer, rng_docs)
    holdout_data = _encode(tokenizer, corpus.holdout_docs) if corpus.holdout_docs else None
    block = recipe.model.block_size
    if len(train_data) < block + 2:
        raise InputError(
            f"not enough text to train: {len(train_data)} tokens, the recipe's block_size needs more than {block + 1}; "
            "ingest more records or use a recipe with a smaller block_size"
        )

    if model is None:
        if checkpoint is not None:
            from transformers import GPT2Config, GPT2LMHeadModel

            model = GPT2LMHeadModel(GPT2Config.from_dict(checkpoint["config"]))
            model.load_state_dict(checkpoint["model"])
        else:
            torch.manual_seed(t.seed)  # reproducible initial weights
            model = _new_model(recipe, tokenizer.get_vocab_size(), eos_id)
    block = min(block, model.config.n_positions)
    device = resolve_device(t.device)
    model.to(device)  # type: ignore[arg-type]
    optimizer = _optimizer(model, recipe)
    start_step = 0
    history: list[dict[str, float]] = []
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_step = int(checkpoint["step"])
        history = list(checkpoint["history"])
    meta = {
        "prefix_schema": schema.as_dict(),
        "prefix_counts": dict(PrefixSampler.from_prefixes(corpus.prefixes).counts),
        "canaries": canaries,
        "canary_format": CANARY_FORMAT,
        "canary_digits": CANARY_DIGITS,
        "holdout": {"rule": "hmac-sha256(record id) < fraction", "fraction": t.holdout_fraction},
        "from": str(from_dir) if from_dir else None,
    }
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if device == "cuda" and t.precision == "bf16"
        else contextlib.nullcontext()
    )

    def evaluate() -> float | None:
        if holdout_data is None or len(holdout_data) < 2:
            return None
        model.eval()
        width = min(block, len(holdout_data) - 1)
        gen = torch.Generator().manual_seed(
            t.seed
        )  # the same windows every time: comparable numbers
        losses = []
        with torch.no_grad():
            for _ in range(t.eval_batches):
                x, y = _windows(holdout_data, width, t.batch_size, gen)
                with autocast:
                    out = model(input_ids=x.to(device), labels=None)
                    logits = out.logits.float()
                loss = torch.nn.functional.cross_entropy(
                    logits.view(-1, logits.size(-1)), y.to(device).view(-1)
                )
                losses.append(loss.item())
        model.train()
        return sum(losses) / len(losses)

    def save_checkpoint(step: int) -> None:
        buf = io.BytesIO()
        torch.save(
            {
                "fingerprint": fingerprint,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "config": model.config.to_dict(),
                "tokenizer": tokenizer.to_str(),
                "history": history,
                "meta": meta,
            },
            buf,
        )
        write_encrypted(checkpoint_path, key, buf.getvalue(), label="generator/checkpoint")

    model.train()
    tokens_per_step = t.batch_size * block
    step = start_step
    loss_value = float("nan")
    val_loss: float | None = None
    window_started, window_tokens = time.monotonic(), 0
    rate = 0.0
    try:
        while step < t.max_steps:
            lr = _lr(step, recipe)
            for group in optimizer.param_groups:
                group["lr"] = lr
            gen = torch.Generator().manual_seed(t.seed * 1_000_003 + step)
            x, y = _windows(train_data, block, t.batch_size, gen)
            with autocast:
                logits = model(input_ids=x.to(device)).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits.view(-1, logits.size(-1)), y.to(device).view(-1)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            step += 1
            loss_value = loss.item()
            window_tokens += tokens_per_step
            elapsed = time.monotonic() - window_started
            rate = window_tokens / elapsed if elapsed > 0 else 0.0
            val_loss = None
            if step % t.eval_every == 0 or step == t.max_steps:
                val_loss = evaluate()
                history.append(
                    {
                        "step": step,
                        "loss": loss_value,
                        **({"val_loss": val_loss} if val_loss is not None else {}),
                    }
                )
            if step % t.checkpoint_every == 0 and step < t.max_steps:
                save_checkpoint(step)
            if progress is not None:
                remaining = (t.max_steps - step) * tokens_per_step / rate if rate else 0.0
                progress(
                    TrainProgress(step, t.max_steps, loss_value, lr, rate, remaining, val_loss)
                )
    except KeyboardInterrupt:
        if step > start_step:
            save_checkpoint(step)
        raise

    holdout_loss = evaluate()
    manifest = {
        "stage": "generator",
        "zone": "real",
        "created": utc_now(),
        "recipe": recipe.as_dict(),
        "device": device,
        "steps": step,
        "resumed_from": start_step,
        "inputs": {
            "store": hashed(ws.store_manifest, ws.root),
            "from": hashed(from_dir) if from_dir else None,
            "policy_sha256": ws.policy.sha256,
        },
        "data": {
            "train_records": len(corpus.train_ids),
            "holdout_records": len(corpus.holdout_ids),
            "train_tokens": len(train_data),
            "holdout_tokens": len(holdout_data) if holdout_data is not None else 0,
            "pseudonymized_spans": dict(corpus.counts),
            "pseudonymization": bool(ws.policy.pseudonymize.enabled),
            "canaries": len(canaries),
            "canary_repeats": canaries[0]["repeats"] if canaries else 0,
        },
        "tokenizer": {"type": "byte-level BPE", "vocab_size": tokenizer.get_vocab_size()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "metrics": {
            "final_loss": loss_value,
            "holdout_loss": holdout_loss,
            "holdout_perplexity": math.exp(holdout_loss) if holdout_loss is not None else None,
            "tokens_per_second": rate,
        },
        "history": history,
    }
    model.to("cpu")  # type: ignore[arg-type]
    final = artifact.save_generator(ws, model, tokenizer, meta, manifest)
    checkpoint_path.unlink(missing_ok=True)
    return TrainResult(
        steps=step,
        resumed_from=start_step,
        train_records=len(corpus.train_ids),
        holdout_records=len(corpus.holdout_ids),
        train_tokens=len(train_data),
        holdout_tokens=len(holdout_data) if holdout_data is not None else 0,
        final_loss=loss_value,
        holdout_loss=holdout_loss,
        holdout_perplexity=final["metrics"]["holdout_perplexity"],
        tokens_per_second=rate,
        seconds=time.monotonic() - started,
        pseudonymized=dict(corpus.counts),
        canaries=len(canaries),
        manifest_path=folder / "manifest.json",
        history=history,
    )


def holdout_ids(ws: Workspace, fraction: float) -> set[str]:
    """The record ids held out from training (for the leakage screen's comparison set)."""
    key = ws.data_key.derive(PURPOSE_HOLDOUT)
    return {r.id for r in open_store(ws) if is_holdout(key, r.id, fraction)}
