"""``appliance demo-data``, ``appliance ingest`` and ``appliance records stats``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appliance.cli.options import (
    EXPORT_FORMAT,
    ApplianceGroup,
    console,
    json_option,
    open_workspace,
    print_json,
    progress,
    reader_options,
    workspace_option,
)
from appliance.errors import InputError


@click.command("demo-data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--notes", default=200, show_default=True, type=int, help="Number of notes.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "txt", "fhir"]),  # the formats the demo writes
    default="csv",
    show_default=True,
    help="Export format.",
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same files)."
)
def demo_data(out: Path, notes: int, fmt: str, seed: int) -> None:
    """Write a fake hospital export with fake patients and a gold sidecar (gold.jsonl).

    Notes are discharge summaries, procedure notes and outpatient visits with
    drug, procedure and diagnosis mentions; gold.jsonl gives their character
    spans and the patients' identifiers. Nothing in it is real.

    \b
    Example:
      appliance demo-data ./export --notes 500 --format fhir --seed 7
    """
    from appliance import demo

    result = demo.run(out, notes=notes, fmt=fmt, seed=seed)
    click.echo(
        f"wrote {result.notes} {fmt} notes for {result.patients} fake patients to {result.export_path} "
        f"({result.entities} gold entities in {result.gold_path})"
    )


@click.command()
@click.argument("export", type=click.Path(path_type=Path))
@workspace_option
@click.option(
    "--format",
    "fmt",
    type=EXPORT_FORMAT,
    default="auto",
    show_default=True,
    help="Export format; auto decides by extension and content.",
)
@reader_options(ingest=True)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit with code 5 when any row was rejected (the other rows are still stored).",
)
def ingest(
    export: Path,
    workspace: Path | None,
    fmt: str,
    id_column: str | None,
    text_column: str | None,
    identifier_column: tuple[str, ...],
    metadata_column: tuple[str, ...],
    encoding: str,
    delimiter: str | None,
    strict: bool,
) -> None:
    """Read an export (CSV, JSONL, folder of .txt, FHIR NDJSON) into the encrypted record store.

    Rows already stored are skipped; rejected rows are listed with their row
    and reason in reports/ingest/.

    \b
    Example:
      appliance ingest ./export/notes.csv -w ./ws
      appliance ingest notes.csv --id-column DocID --text-column Body --identifier-column PatientName
    """
    from appliance.records import ingest as ingest_mod
    from appliance.records.readers import ReaderOptions

    ws = open_workspace(workspace)
    options = ReaderOptions(
        id_column=id_column,
        text_column=text_column,
        identifier_columns=identifier_column or None,
        metadata_columns=metadata_column or None,
        encoding=encoding,
        delimiter=delimiter,
        max_note_chars=ws.policy.ingest.max_note_chars,
    )
    with progress("ingesting", "rows") as advance:
        result = ingest_mod.run(ws, export, fmt=fmt, options=options, progress=advance)
    for name in result.removed_uncommitted:
        click.echo(f"note: removed {name}, left uncommitted by an interrupted ingest", err=True)
    click.echo(result.summary())
    if strict and result.rejected:
        sys.exit(InputError.exit_code)


@click.group(cls=ApplianceGroup)
def records() -> None:
    """Inspect the record store (never prints note text)."""


@records.command("stats")
@workspace_option
@json_option
def records_stats(workspace: Path | None, as_json: bool) -> None:
    """Counts, lengths, languages and identifier counts; no note text is shown.

    Every shard is authenticated while reading, so this also checks the store.

    \b
    Example:
      appliance records stats -w ./ws
    """
    from appliance.records import stats as stats_mod

    ws = open_workspace(workspace)
    stats = stats_mod.run(ws)
    if as_json:
        print_json(stats.as_dict())
        return
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("records", f"{stats.records} in {stats.shards} shards")

    def dist(d: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in d.items()) if d else "-"

    table.add_row("characters", dist(stats.chars))
    table.add_row("words", dist(stats.words))
    table.add_row(
        "languages (guessed)", ", ".join(f"{k} {v}" for k, v in stats.languages.items()) or "-"
    )
    table.add_row(
        "identifiers",
        (", ".join(f"{k} {v}" for k, v in stats.identifiers.items()) or "-")
        + f" ({stats.records_with_identifiers} records have some)",
    )
    table.add_row(
        "metadata fields", ", ".join(f"{k} {v}" for k, v in stats.metadata_fields.items()) or "-"
    )
    for key, values in stats.metadata_values.items():
        table.add_row(f"  {key}", ", ".join(f"{v} {n}" for v, n in values.items()))
    console().print(table)
    click.echo(stats.summary())
