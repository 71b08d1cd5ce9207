"""`appliance normalize`: concept codes for entities from the hospital's terminologies."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from appliance.cli.options import (
    GOLD_FORMAT,
    ApplianceGroup,
    json_option,
    open_workspace,
    print_json,
    workspace_option,
)

_LEXICON_HELP = (
    "Terminology: TSV/CSV with a code column, or an OBO ontology; [TYPE=]FILE (repeatable)."
)


@contextmanager
def _progress() -> Iterator[Callable[[int, int, float], None]]:
    """Encoder steps: a bar on a terminal, a line at least every 30 s in a log."""
    if not sys.stderr.isatty():
        last = [time.monotonic()]

        def log(step: int, total: int, loss: float) -> None:
            now = time.monotonic()
            if now - last[0] >= 30 or step == total:
                last[0] = now
                click.echo(f"normalizer encoder step {step}/{total} loss {loss:.3f}", err=True)

        yield log
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("normalizer encoder"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task("encoder", total=None, loss="-")
        yield lambda step, total, loss: bar.update(
            task, completed=step, total=total, loss=f"{loss:.3f}"
        )


def _overrides(
    top_k: int | None, nil_threshold: float | None, dense_weight: float | None
) -> dict[str, Any]:
    """The linking settings given on the command line (the rest keep their saved or default value)."""
    from appliance.errors import UsageError

    out: dict[str, Any] = {}
    if top_k is not None:
        if top_k < 1:
            raise UsageError("--top-k must be at least 1")
        out["top_k"] = top_k
    if nil_threshold is not None:
        out["nil_threshold"] = nil_threshold
    if dense_weight is not None:
        if not 0 <= dense_weight <= 1:
            raise UsageError("--dense-weight must be from 0 to 1")
        out["dense_weight"] = dense_weight
    return out


def _encoder_settings(steps: int, device: str) -> object:
    from appliance.errors import UsageError
    from appliance.normalize.encoder import EncoderSettings

    if steps < 0:
        raise UsageError("--steps must be 0 or more")
    return EncoderSettings(steps=steps, device=device)


_common = [
    click.option(
        "--base",
        type=click.Path(path_type=Path),
        default=None,
        help="Local encoder folder to fine-tune on synonym pairs (default: none; exact, variant and character n-gram matching only).",
    ),
    click.option(
        "--steps",
        type=int,
        default=300,
        show_default=True,
        help="Encoder fine-tuning steps (0: the encoder as it is).",
    ),
    click.option(
        "--top-k", type=int, default=None, help="Candidates kept per mention (default 5)."
    ),
    click.option(
        "--nil-threshold",
        type=float,
        default=None,
        help="Below this score a mention gets no code (NIL; default: calibrated on held-out concepts of the terminology).",
    ),
    click.option(
        "--dense-weight",
        type=float,
        default=None,
        help="With an encoder: its share of the similarity score, the rest character n-grams (default 1.0).",
    ),
    click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Device for encoder fine-tuning.",
    ),
]


def _apply_common(f: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_common):
        f = option(f)
    return f


@click.group(cls=ApplianceGroup)
def normalize() -> None:
    """Concept codes for entities: exact, variant, n-gram and encoder matching against terminologies."""


@normalize.command("train")
@click.option("--lexicon", "lexicons", multiple=True, help=_LEXICON_HELP)
@click.option("--label", default=None, help="Entity type for lexicon files without a label column.")
@click.option(
    "--annotations",
    default="default",
    show_default=True,
    help="Annotation set whose synthetic notes give mentions (and, without --lexicon, the lexicon).",
)
@click.option(
    "--endpoint",
    default=None,
    help="OpenAI-compatible LLM endpoint that writes more mentions per concept (needs --base; the policy's egress guard applies).",
)
@click.option("--model", "llm_model", default=None, help="Served model name at --endpoint.")
@click.option(
    "--llm-concepts",
    type=int,
    default=1000,
    show_default=True,
    help="Concepts to ask the LLM about (a seeded sample when the terminology has more).",
)
@click.option(
    "--api-key-env", default=None, help="Environment variable holding the endpoint's API key."
)
@_apply_common
@workspace_option
@json_option
def normalize_train(
    lexicons: tuple[str, ...],
    label: str | None,
    annotations: str,
    base: Path | None,
    steps: int,
    top_k: int | None,
    nil_threshold: float | None,
    dense_weight: float | None,
    device: str,
    endpoint: str | None,
    llm_model: str | None,
    llm_concepts: int,
    api_key_env: str | None,
    workspace: Path | None,
    as_json: bool,
) -> None:
    """Build the workspace's normalizer (models/normalizer); `appliance export` packs it with the model.

    \b
    Example:
      appliance normalize train -w ./ws
      appliance normalize train -w ./ws --lexicon DIAGNOSIS=doid.obo --base ./all-MiniLM-L6-v2
      appliance normalize train -w ./ws --base ./all-MiniLM-L6-v2 --endpoint http://127.0.0.1:8000/v1 --model local-llm
    """
    import os

    from appliance.errors import UsageError
    from appliance.normalize.stage import LLMMentionOptions, parse_lexicons, run

    llm = None
    if endpoint or llm_model:
        if not (endpoint and llm_model):
            raise UsageError("--endpoint and --model go together")
        if llm_concepts < 1:
            raise UsageError("--llm-concepts must be at least 1")
        api_key = None
        if api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise UsageError(f"--api-key-env: ${api_key_env} is not set")
        llm = LLMMentionOptions(endpoint, llm_model, llm_concepts, api_key)
    ws = open_workspace(workspace)
    with _progress() as update:
        result = run(
            ws,
            lexicons=parse_lexicons(lexicons, label),
            annotations=annotations,
            base=base,
            overrides=_overrides(top_k, nil_threshold, dense_weight),
            encoder_settings=_encoder_settings(steps, device),  # type: ignore[arg-type]
            progress=update,
            llm=llm,
        )
    if as_json:
        print_json(
            {
                "folder": str(result.folder),
                "seconds": round(result.seconds, 1),
                "concepts": len(result.normalizer.terminology.concepts),
                "names": len(result.normalizer.surfaces),
                "documents": result.documents,
                "concepts_with_mentions": sum(1 for v in result.normalizer.mentions.values() if v),
                "encoder": result.normalizer.encoder is not None,
                "info": result.normalizer.info,
                "llm_mentions": result.details.get("llm_mentions"),
            }
        )
    else:
        click.echo(result.summary())


@normalize.command("evaluate")
@click.option(
    "--gold",
    required=True,
    type=click.Path(path_type=Path),
    help="Gold spans with codes: PubTator (6th column), JSONL ('code'), BRAT (N lines).",
)
@click.option("--format", "fmt", type=GOLD_FORMAT, default="auto", show_default=True)
@click.option("--lexicon", "lexicons", multiple=True, help=_LEXICON_HELP)
@click.option("--label", default=None, help="Entity type for lexicon files without a label column.")
@click.option(
    "--normalizer",
    type=click.Path(path_type=Path),
    default=None,
    help="A built normalizer: its folder (models/normalizer) or a model package holding one.",
)
@click.option("--language", default="en", show_default=True, help="Language rules for variants.")
@click.option(
    "--data-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The workspace data key, for the normalizer of a real-zone package.",
)
@_apply_common
@json_option
def normalize_evaluate(
    gold: Path,
    fmt: str,
    lexicons: tuple[str, ...],
    label: str | None,
    normalizer: Path | None,
    language: str,
    data_key: Path | None,
    base: Path | None,
    steps: int,
    top_k: int | None,
    nil_threshold: float | None,
    dense_weight: float | None,
    device: str,
    as_json: bool,
) -> None:
    """Concept-code accuracy@1 and @5 on gold spans, seen and unseen concepts apart, beside exact match.

    Gold codes reach the terminology directly or through its cross-references
    (NCBI-disease's MeSH/OMIM ids through Disease Ontology xrefs).

    \b
    Example:
      appliance normalize evaluate --gold NCBIdevelopset_corpus.txt --lexicon doid.obo --label DIAGNOSIS
      appliance normalize evaluate --gold gold.jsonl --normalizer ./ws/models/normalizer --json
    """
    from appliance.normalize.stage import parse_lexicons, run_evaluate
    from appliance.security.keys import load_data_key

    report = run_evaluate(
        gold,
        fmt=fmt,
        normalizer=normalizer,
        lexicons=parse_lexicons(lexicons, label),
        language=language,
        base=base,
        overrides=_overrides(top_k, nil_threshold, dense_weight),
        encoder_settings=_encoder_settings(steps, device),  # type: ignore[arg-type]
        key=load_data_key(data_key) if data_key else None,
    )
    if as_json:
        print_json(report.as_dict())
    else:
        click.echo(report.table())
        click.echo(report.summary())
