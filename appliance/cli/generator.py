"""``appliance generator train`` and ``appliance generate``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from appliance.cli.options import (
    DEVICE,
    ApplianceGroup,
    open_workspace,
    progress,
    workspace_option,
)


@click.group(cls=ApplianceGroup)
def generator() -> None:
    """Train the synthetic-note generator (a GPT-2) on the workspace's records."""


@generator.command("train")
@workspace_option
@click.option(
    "--recipe",
    default="small",
    show_default=True,
    help="Recipe name (tiny, small, gpt2-124m) or a recipe TOML file.",
)
@click.option(
    "--from",
    "from_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Continue from a local GPT-2 checkpoint folder (config.json, weights, tokenizer.json) instead of from scratch.",
)
@click.option(
    "--canaries",
    default=0,
    show_default=True,
    type=int,
    help="Insert this many random secret canaries.",
)
@click.option(
    "--canary-repeats",
    default=10,
    show_default=True,
    type=int,
    help="Times each canary is inserted.",
)
@click.option(
    "--max-steps", default=None, type=int, help="Override the recipe's number of training steps."
)
@click.option(
    "--device",
    type=DEVICE,
    default=None,
    help="Override the recipe's device.",
)
@click.option(
    "--entity-terms",
    "entity_terms",
    multiple=True,
    metavar="[TYPE=]FILE|demo",
    help="Condition on entity terms: each training note's prefix names the terms of these lists it mentions (matched as the lexicon annotator does), and generation names terms of the lists, walking through all of them, so the synthetic notes cover the vocabulary. Same formats as `annotate --lexicon`; `demo` for the built-in demo vocabularies. Repeatable.",
)
def generator_train(
    workspace: Path | None,
    recipe: str,
    from_dir: Path | None,
    canaries: int,
    canary_repeats: int,
    max_steps: int | None,
    device: str | None,
    entity_terms: tuple[str, ...],
) -> None:
    """Train a byte-level BPE tokenizer and a GPT-2 on the (pseudonymized) records.

    A fixed share of records is held out (never trained on) and gives the
    perplexity. Checkpoints are encrypted; an interrupted run resumes where it
    stopped. The trained generator is stored encrypted in models/generator/.

    \b
    Example:
      appliance generator train -w ./ws --recipe small
      appliance generator train -w ./ws --recipe gpt2-124m --from /models/hospital-gpt2 --canaries 10
      appliance generator train -w ./ws --entity-terms DRUG=drugs.tsv --entity-terms DIAGNOSIS=icd10.tsv
    """
    from appliance.generator import train as train_mod

    ws = open_workspace(workspace)
    entities = _entity_terms(ws, entity_terms) if entity_terms else None
    with _training_progress() as update:
        result = train_mod.run(
            ws,
            recipe=Path(recipe) if recipe.endswith(".toml") else recipe,
            from_dir=from_dir,
            canaries=canaries,
            canary_repeats=canary_repeats,
            max_steps=max_steps,
            device=device,
            progress=update,
            entities=entities,
        )
    click.echo(result.summary())


def _entity_terms(ws: Any, values: tuple[str, ...]) -> Any:
    """``--entity-terms`` as the generator takes them (``demo``: the built-in vocabularies)."""
    from appliance.annotate.annotators import AnnotatorOptions
    from appliance.annotate.annotators.lexicon import term_finder
    from appliance.errors import ApplianceError, UsageError
    from appliance.generator.prefixes import EntityTerms

    files = tuple(Path(v) for v in values if v != "demo")
    if files and len(files) != len(values):
        raise UsageError("--entity-terms: give either `demo` or term files, not both")
    try:
        find, vocabulary, sources = term_finder(
            AnnotatorOptions(lexicons=files),
            ws.policy.entity_schema(),
            ws.config.workspace.language,
        )
    except ApplianceError as exc:  # the lexicon reader's words name annotate's --label
        message = str(exc).replace(
            " and no --label; pass --label TYPE for this file", "; give it as TYPE=FILE"
        )
        raise type(exc)(f"--entity-terms {message}") from None
    return EntityTerms(find, vocabulary, sources)


@contextmanager
def _training_progress() -> Iterator[Callable[[Any], None]]:
    """Steps, loss, tokens/s and ETA: a live bar on a terminal, a line every 10% otherwise."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    if not sys.stderr.isatty():
        last = [-1]

        def log(p: Any) -> None:
            tenth = p.step * 10 // p.max_steps
            if tenth != last[0] or p.val_loss is not None:
                last[0] = tenth
                val = f" held-out loss {p.val_loss:.3f}" if p.val_loss is not None else ""
                click.echo(
                    f"step {p.step}/{p.max_steps} loss {p.loss:.3f}{val} {p.tokens_per_second:.0f} tok/s "
                    f"eta {p.eta_seconds:.0f}s",
                    err=True,
                )

        yield log
        return
    bar = Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]} · {task.fields[rate]} tok/s"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with bar:
        task = bar.add_task("train", total=None, loss="-", rate="-")

        def update(p: Any) -> None:
            bar.update(
                task,
                completed=p.step,
                total=p.max_steps,
                loss=f"{p.loss:.3f}",
                rate=f"{p.tokens_per_second:.0f}",
            )

        yield update


@click.command()
@workspace_option
@click.option("--count", required=True, type=int, help="Number of notes the corpus should hold.")
@click.option(
    "--backend",
    type=click.Choice(["transformers", "vllm"]),
    default="transformers",
    show_default=True,
)
@click.option(
    "--corpus", default="default", show_default=True, help="Name of the synthetic corpus folder."
)
@click.option("--temperature", default=1.0, show_default=True, type=float)
@click.option("--top-k", default=50, show_default=True, type=int, help="0 disables top-k.")
@click.option("--top-p", default=0.95, show_default=True, type=float)
@click.option(
    "--max-new-tokens",
    default=None,
    type=int,
    help="Longest note in tokens (default: the model's context).",
)
@click.option("--batch-size", default=16, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--prefix",
    default=None,
    help='Condition every note on this prefix, e.g. "procedure note, age group 7, female, C50,".',
)
@click.option(
    "--entity-terms/--no-entity-terms",
    default=True,
    show_default=True,
    help="With a generator trained with --entity-terms: name terms of its list in each prompt (walking through the whole list), or leave them out.",
)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
def generate(
    workspace: Path | None,
    count: int,
    backend: str,
    corpus: str,
    temperature: float,
    top_k: int,
    top_p: float,
    max_new_tokens: int | None,
    batch_size: int,
    seed: int,
    prefix: str | None,
    entity_terms: bool,
    device: str,
) -> None:
    """Sample synthetic notes from the trained generator (stored encrypted, marked unscreened).

    Prefixes (note type, age group, sex, diagnosis) are drawn with the
    frequencies of the training records unless --prefix fixes one; a
    generator trained with --entity-terms also gets a line of list terms to
    write about. Same
    settings and seed, same notes; an interrupted run resumes, and a larger
    --count extends the corpus.

    \b
    Example:
      appliance generate -w ./ws --count 2000 --seed 1
      appliance generate -w ./ws --count 50000 --backend vllm --corpus big
    """
    from appliance.generator import sample

    ws = open_workspace(workspace)
    settings = sample.SamplingSettings(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        prefix=prefix,
        entity_terms=entity_terms,
    )
    with progress("generating", "notes") as advance:
        result = sample.run(
            ws,
            count=count,
            backend=backend,
            settings=settings,
            corpus=corpus,
            device=device,
            progress=lambda done, total: advance(done),
        )
    click.echo(result.summary())
