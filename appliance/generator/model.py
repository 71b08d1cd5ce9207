"""The generator's GPT-2: a new one from the recipe, a hospital's own checkpoint, or a resumed one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.errors import InputError
from appliance.generator.recipes import Recipe
from appliance.generator.tokenizer import EOS


def load_base(from_dir: Path) -> tuple[Any, Any]:
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


def new_model(recipe: Recipe, vocab_size: int, eos_id: int) -> Any:
    """A GPT-2 of the recipe's shape, its weights drawn from torch's current seed."""
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


def resumed_model(checkpoint: dict[str, Any]) -> Any:
    """The GPT-2 of a checkpoint (see :func:`appliance.training.training_state`)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config.from_dict(checkpoint["config"]))
    model.load_state_dict(checkpoint["model"])
    return model


def make_optimizer(model: Any, recipe: Recipe) -> Any:
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
