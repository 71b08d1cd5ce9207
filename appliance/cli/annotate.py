"""`appliance` commands of the annotate stage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from appliance.cli.options import (
    GOLD_FORMAT,
    ApplianceGroup,
    F,
    apply,
    json_option,
    open_workspace,
    print_json,
    progress,
    workspace_option,
)
from appliance.errors import UsageError


def _annotator_options(f: F) -> F:
    """Options shared by `annotate` and `annotate evaluate`: which annotator, and how."""
    options = [
        click.option(
            "--annotator",
            "annotators",
            multiple=True,
            type=click.Choice(["lexicon", "llm"]),
            help="Annotator (repeatable for an ensemble; default: lexicon).",
        ),
        click.option(
            "--lexicon",
            "lexicons",
            multiple=True,
            type=click.Path(path_type=Path),
            help="Lexicon file: TSV/CSV term list or OBO ontology, or TYPE=FILE (repeatable; default: the built-in demo vocabularies).",
        ),
        click.option(
            "--label",
            default=None,
            help="Entity type for lexicon files without a label column (e.g. DIAGNOSIS).",
        ),
        click.option(
            "--regex",
            multiple=True,
            metavar="TYPE=PATTERN",
            help="Regular-expression rule for a type, added to the lexicon matches (repeatable).",
        ),
        click.option(
            "--abbreviations/--no-abbreviations",
            default=True,
            show_default=True,
            help="Lexicon: short forms a note defines ('long form (SF)', 'SF (long form)') take the long form's type throughout the note.",
        ),
        click.option(
            "--variants/--no-variants",
            default=True,
            show_default=True,
            help="Lexicon: spelling variants, hyphen/space/none, optional tokens and word orders the entity schema declares.",
        ),
        click.option(
            "--head-nouns/--no-head-nouns",
            default=True,
            show_default=True,
            help="Lexicon: noun phrases ending in a head noun or suffix the schema declares for a type (spans or undecided ranges).",
        ),
        click.option(
            "--unknown-words/--no-unknown-words",
            default=False,
            show_default=True,
            help="Lexicon: leave undecided the words no rule matched that look like names (digits, capitals).",
        ),
        click.option(
            "--endpoint",
            default=None,
            help="OpenAI-compatible API of the LLM, e.g. http://127.0.0.1:8000/v1 (loopback or a host the policy allows).",
        ),
        click.option(
            "--model", default=None, help="Served model name (as `appliance llm serve` printed it)."
        ),
        click.option(
            "--prompt",
            "prompts",
            multiple=True,
            type=click.Choice(["zero-shot", "few-shot", "retrieval"]),
            help="Prompt strategy (repeatable: one ensemble member each; default: zero-shot).",
        ),
        click.option(
            "--examples",
            type=click.Path(path_type=Path),
            default=None,
            help="Annotated examples for few-shot/retrieval prompts (JSONL, BRAT or CoNLL; default: built-in ones).",
        ),
        click.option("--k", default=3, show_default=True, type=int, help="Examples per prompt."),
        click.option(
            "--retriever",
            type=click.Choice(["bm25", "embedding"]),
            default="bm25",
            show_default=True,
            help="How retrieval prompts choose examples.",
        ),
        click.option(
            "--embedder",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Local encoder folder for --retriever embedding.",
        ),
        click.option(
            "--combine",
            type=click.Choice(["union", "intersection", "majority"]),
            default="union",
            show_default=True,
            help="How an ensemble combines its members' spans.",
        ),
        click.option(
            "--max-in-flight",
            default=8,
            show_default=True,
            type=int,
            help="LLM requests outstanding at once.",
        ),
        click.option(
            "--timeout",
            default=None,
            type=float,
            help="Seconds per LLM request (default: derived from the endpoint's measured speed).",
        ),
        click.option(
            "--retries",
            default=4,
            show_default=True,
            type=int,
            help="Retries of a request after a 5xx, timeout or connection error.",
        ),
        click.option(
            "--max-failures",
            default=10,
            show_default=True,
            type=int,
            help="Stop after this many notes in a row failed to reach the LLM.",
        ),
        click.option("--temperature", default=0.0, show_default=True, type=float),
        click.option(
            "--max-tokens",
            default=2048,
            show_default=True,
            type=int,
            help="Ceiling on an answer's tokens (each note asks for a budget sized to its length).",
        ),
        click.option(
            "--api-key-env",
            default=None,
            metavar="VAR",
            help="Environment variable holding an API key for the endpoint.",
        ),
    ]
    return apply(f, options)


def _options(kw: dict[str, Any]) -> Any:
    from appliance.annotate.annotators import AnnotatorOptions

    regex = []
    for item in kw["regex"]:
        label, sep, pattern = item.partition("=")
        if not sep or not label or not pattern:
            raise UsageError(f"--regex {item!r}: expected TYPE=PATTERN")
        regex.append((label, pattern))
    api_key = None
    if kw["api_key_env"]:
        api_key = os.environ.get(kw["api_key_env"])
        if not api_key:
            raise UsageError(f"--api-key-env: ${kw['api_key_env']} is not set")
    return AnnotatorOptions(
        annotators=tuple(kw["annotators"]) or ("lexicon",),
        lexicons=tuple(kw["lexicons"]),
        label=kw["label"],
        regex=tuple(regex),
        endpoint=kw["endpoint"],
        model=kw["model"],
        prompts=tuple(kw["prompts"]) or ("zero-shot",),
        examples=kw["examples"],
        k=kw["k"],
        retriever=kw["retriever"],
        embedder=kw["embedder"],
        combine=kw["combine"],
        abbreviations=kw["abbreviations"],
        variants=kw["variants"],
        head_nouns=kw["head_nouns"],
        unknown_words=kw["unknown_words"],
        max_in_flight=kw["max_in_flight"],
        timeout=kw["timeout"],
        retries=kw["retries"],
        max_failures=kw["max_failures"],
        temperature=kw["temperature"],
        max_tokens=kw["max_tokens"],
        api_key=api_key,
    )


@click.group(cls=ApplianceGroup, invoke_without_command=True)
@workspace_option
@_annotator_options
@click.option(
    "--corpus",
    default="default",
    show_default=True,
    help="Synthetic corpus whose released notes are annotated.",
)
@click.option(
    "--name",
    default="default",
    show_default=True,
    help="Name of this annotation run (folder under annotations/).",
)
@json_option
@click.pass_context
def annotate(
    ctx: click.Context, workspace: Path | None, corpus: str, name: str, as_json: bool, **kw: Any
) -> None:
    """Annotate the released synthetic notes: lexicon (default), a local LLM, or an ensemble.

    Only notes the leakage screen released are read. The LLM names entities
    through the OpenAI-compatible chat API with a JSON-schema response format
    and the appliance places them at exact character offsets; answers are
    cached, so a rerun or a resumed run asks nothing twice. Writes
    annotations/NAME/ (annotations.jsonl, rejected.jsonl, manifest.json).

    \b
    Example:
      appliance annotate -w ./ws
      appliance annotate -w ./ws --annotator llm --endpoint http://127.0.0.1:8000/v1 --model local-llm --prompt retrieval
      appliance annotate evaluate --gold devel.tsv --lexicon doid.obo --label Disease
    """
    if ctx.invoked_subcommand is not None:
        return
    from appliance.annotate import stage

    ws = open_workspace(workspace)
    options = _options(kw)
    with progress("annotating", "notes") as advance:
        result = stage.run(ws, options, corpus=corpus, name=name, progress=advance)
    if as_json:
        print_json(
            {
                "folder": str(result.folder),
                "notes": result.notes,
                "annotated": result.annotated,
                "rejected": result.rejected,
                "entities": result.entities,
                "qa": result.qa,
            }
        )
    else:
        click.echo(result.summary())


@annotate.command("evaluate")
@click.option(
    "--gold",
    "gold",
    required=True,
    type=click.Path(path_type=Path),
    help="Gold set: CoNLL/IOB file, BRAT folder or .ann, or JSONL spans.",
)
@click.option(
    "--format",
    "fmt",
    type=GOLD_FORMAT,
    default="auto",
    show_default=True,
    help="Gold format.",
)
@click.option(
    "--map",
    "label_map",
    multiple=True,
    metavar="GOLD=TYPE",
    help="Rename a gold type (repeatable); with --map, unmapped gold types are ignored.",
)
@click.option(
    "--predictions",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the predictions as JSONL spans here.",
)
@workspace_option
@_annotator_options
@json_option
def annotate_evaluate(
    gold: Path,
    fmt: str,
    label_map: tuple[str, ...],
    predictions: Path | None,
    workspace: Path | None,
    as_json: bool,
    **kw: Any,
) -> None:
    """Score an annotator against a gold set: precision, recall and F1 per type, exact and partial.

    Works on a gold file alone; with -w the workspace's policy (egress,
    entity schema) and LLM answer cache are used. Only the gold set's entity
    types are scored.

    \b
    Example:
      appliance annotate evaluate --gold ncbi_devel.tsv --annotator lexicon --lexicon doid.obo --label Disease
      appliance annotate evaluate --gold gold.jsonl --annotator llm --endpoint http://127.0.0.1:8000/v1 --model local-llm --json
    """
    from appliance.annotate.evaluate import evaluate

    mapping = None
    if label_map:
        mapping = {}
        for item in label_map:
            src, sep, dst = item.partition("=")
            if not sep or not src or not dst:
                raise UsageError(f"--map {item!r}: expected GOLD=TYPE")
            mapping[src] = dst
    options = _options(kw)
    kwargs: dict[str, Any] = {}
    cache = None
    if workspace is not None or os.environ.get("APPLIANCE_WORKSPACE"):
        ws = open_workspace(workspace)
        kwargs = {
            "egress": ws.policy.egress,
            "schema": ws.policy.entity_schema(),
            "language": ws.config.workspace.language,
        }
        if "llm" in options.annotators:
            from appliance.annotate.cache import AnswerCache
            from appliance.annotate.stage import CACHE_NAME

            cache = AnswerCache(ws.annotations_dir / CACHE_NAME)
    try:
        report = evaluate(
            gold,
            options,
            fmt=fmt,
            label_map=mapping,
            cache=cache,
            predictions_out=predictions,
            **kwargs,
        )
    finally:
        if cache is not None:
            cache.close()
    if as_json:
        print_json(report)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in (
        "type",
        "gold",
        "pred",
        "exact P",
        "exact R",
        "exact F1",
        "partial P",
        "partial R",
        "partial F1",
    ):
        table.add_column(col, justify="left" if col == "type" else "right")
    rows = [*report["exact"]["per_type"].keys(), "micro"]
    for t in rows:
        e = report["exact"]["micro"] if t == "micro" else report["exact"]["per_type"][t]
        p = report["partial"]["micro"] if t == "micro" else report["partial"]["per_type"][t]
        table.add_row(
            t,
            str(e["gold"]),
            str(e["pred"]),
            *(f"{e[k]:.3f}" for k in ("precision", "recall", "f1")),
            *(f"{p[k]:.3f}" for k in ("precision", "recall", "f1")),
        )
    Console(highlight=False).print(table)
    micro = report["exact"]["micro"]
    failed = (
        f", {report['failed_documents']} documents failed" if report["failed_documents"] else ""
    )
    click.echo(
        f"evaluated on {report['gold']['documents']} documents: exact P {micro['precision']:.3f} "
        f"R {micro['recall']:.3f} F1 {micro['f1']:.3f}, partial F1 {report['partial']['micro']['f1']:.3f}{failed}"
    )
