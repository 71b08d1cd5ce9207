"""Generator recipes: model size and training settings, as TOML (models/generator/*.toml).

A recipe is plain data, validated once when loaded; the trained generator's
manifest carries the whole recipe, so a generator can always say how it was made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from appliance.config import _build, _float, _int, _read_toml, _spec, _str
from appliance.errors import ConfigError


@dataclass(frozen=True)
class RecipeInfo:
    name: str = _spec("custom", "a non-empty string", _str(nonempty=True))
    description: str = _spec("", "a string", _str())


@dataclass(frozen=True)
class TokenizerSettings:
    vocab_size: int = _spec(4096, "an integer from 300 to 200000", _int(300, 200_000))
    min_frequency: int = _spec(2, "an integer ≥ 1", _int(1))


@dataclass(frozen=True)
class ModelSettings:
    n_layer: int = _spec(4, "an integer from 1 to 96", _int(1, 96))
    n_head: int = _spec(4, "an integer from 1 to 128", _int(1, 128))
    n_embd: int = _spec(192, "an integer from 8 to 16384", _int(8, 16384))
    block_size: int = _spec(256, "an integer from 16 to 32768", _int(16, 32768))
    dropout: float = _spec(0.1, "a number from 0 to 0.9", _float(0.0, 0.9))


@dataclass(frozen=True)
class TrainSettings:
    max_steps: int = _spec(600, "an integer ≥ 1", _int(1))
    batch_size: int = _spec(12, "an integer from 1 to 4096", _int(1, 4096))
    learning_rate: float = _spec(2e-3, "a number from 0 to 1", _float(0.0, 1.0))
    min_learning_rate: float = _spec(2e-4, "a number from 0 to 1", _float(0.0, 1.0))
    warmup_steps: int = _spec(30, "an integer ≥ 0", _int(0))
    weight_decay: float = _spec(0.1, "a number from 0 to 1", _float(0.0, 1.0))
    grad_clip: float = _spec(1.0, "a number ≥ 0 (0 disables clipping)", _float(0.0))
    eval_every: int = _spec(100, "an integer ≥ 1", _int(1))
    eval_batches: int = _spec(8, "an integer ≥ 1", _int(1))
    checkpoint_every: int = _spec(50, "an integer ≥ 1", _int(1))
    holdout_fraction: float = _spec(0.1, "a number from 0.01 to 0.5", _float(0.01, 0.5))
    seed: int = _spec(1337, "an integer", _int())
    device: str = _spec("auto", "'auto', 'cpu' or 'cuda'", lambda v: v in ("auto", "cpu", "cuda"))
    precision: str = _spec("fp32", "'fp32' or 'bf16'", lambda v: v in ("fp32", "bf16"))


@dataclass(frozen=True)
class Recipe:
    recipe: RecipeInfo
    tokenizer: TokenizerSettings
    model: ModelSettings
    train: TrainSettings

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, **train: Any) -> Recipe:
        """A copy with some [train] values replaced (None values are ignored)."""
        changes = {k: v for k, v in train.items() if v is not None}
        if not changes:
            return self
        data = dataclasses.asdict(self.train) | changes
        return dataclasses.replace(self, train=_build(TrainSettings, data, "override", "train"))


_SECTIONS: dict[str, type] = {
    "recipe": RecipeInfo,
    "tokenizer": TokenizerSettings,
    "model": ModelSettings,
    "train": TrainSettings,
}


def _recipe_dir() -> Path:
    # Installed wheels carry the recipes as package data; a development
    # checkout reads the repository's models/ folder.
    installed = Path(str(resources.files("appliance"))) / "models" / "generator"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent.parent / "models" / "generator"


def available() -> list[str]:
    return sorted(p.stem for p in _recipe_dir().glob("*.toml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load a built-in recipe by name (tiny, small, gpt2-124m) or a recipe TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = _recipe_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise ConfigError(
                f"no generator recipe named '{name_or_path}'; available: {', '.join(available())}"
            )
    where = str(path)
    doc = _read_toml(path, "generator recipe")
    unknown = sorted(set(doc) - set(_SECTIONS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown section [{unknown[0]}]; known sections: {', '.join(_SECTIONS)}"
        )
    recipe = Recipe(**{k: _build(cls, doc.get(k, {}), where, k) for k, cls in _SECTIONS.items()})
    if recipe.model.n_embd % recipe.model.n_head:
        raise ConfigError(
            f"{where}: [model] n_embd ({recipe.model.n_embd}) must be divisible by n_head ({recipe.model.n_head})"
        )
    return recipe
