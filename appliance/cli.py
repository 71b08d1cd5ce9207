"""The ``appliance`` command line: each command parses its options and calls one function.

Errors the appliance raises on purpose (``ApplianceError``) become one line on
stderr and the error's exit code; nothing a user can cause prints a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from appliance import __version__
from appliance.errors import ApplianceError, InputError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

STATUS_STYLE = {"ok": "green", "info": "cyan", "warn": "yellow", "fail": "bold red"}


class ApplianceGroup(click.Group):
    """Turns appliance errors into a one-line message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApplianceError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; completed work is kept and the next run resumes", err=True)
            sys.exit(130)
        except OSError as exc:
            # Disk full, permission denied and the like: the environment, not a bug.
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            click.echo(f"error: {exc.strerror or exc}{where}", err=True)
            sys.exit(1)


def workspace_option(f: F) -> F:
    return click.option(
        "-w",
        "--workspace",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Workspace folder (default: $APPLIANCE_WORKSPACE, else the current folder).",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(f)


def _open(workspace: Path | None) -> Any:
    from appliance.workspace import Workspace

    return Workspace.open(workspace)


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


@contextmanager
def _progress(what: str, unit: str) -> Iterator[Callable[[int], None]]:
    """A live counter on stderr when it is a terminal; silent in scripts and logs."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(
        SpinnerColumn(),
        TextColumn(f"{what} {{task.completed}} {unit}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with progress:
        task = progress.add_task(what, total=None)
        yield lambda n: progress.update(task, completed=n)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@click.group(cls=ApplianceGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="appliance")
def cli() -> None:
    """On-premise clinical NER: synthetic notes, leakage screen, LLM annotation, ONNX model.

    \b
    Start with:
      appliance init ./ws
      appliance demo-data ./export --notes 300 --format csv
      appliance ingest ./export/notes.csv -w ./ws
      appliance records stats -w ./ws
    """


# ---------------------------------------------------------------------------
# init / doctor


@cli.command()
@click.argument("workspace", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--language", default="en", show_default=True, help="ISO 639-1 code of the notes' language."
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Use this existing 256-bit key (64 hex digits, base64 or 32 raw bytes; mode 0600) instead of generating one.",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Start from this policy file instead of the default policy.",
)
def init(workspace: Path, language: str, key_file: Path | None, policy_file: Path | None) -> None:
    """Create a workspace: folders, config, policy copy and keys.

    Refuses a folder that already has content.

    \b
    Example:
      appliance init /srv/appliance/ws --language et
      appliance init ./ws --key-file /run/keys/appliance.key
    """
    from appliance import workspace as wsmod

    ws = wsmod.init(workspace, language=language, key_file=key_file, policy_file=policy_file)
    click.echo(
        f"created workspace {ws.root} (language {ws.config.workspace.language}, "
        f"policy {ws.policy.policy.name}, data key {ws.data_key.key_id} at {ws.data_key_path})"
    )


@cli.command()
@workspace_option
@json_option
def doctor(workspace: Path | None, as_json: bool) -> None:
    """Report what works here: Python, torch/CUDA, GPU, vllm, onnxruntime, presidio, keys, offline settings, disk.

    Exits non-zero only when something required is broken.

    \b
    Example:
      appliance doctor -w ./ws
    """
    from appliance import doctor as doc
    from appliance.workspace import CONFIG_NAME, resolve_path

    root = resolve_path(workspace)
    checks = doc.run(root if (workspace is not None or (root / CONFIG_NAME).exists()) else None)
    failed = [c for c in checks if c.status == "fail"]
    if as_json:
        _print_json([c.__dict__ for c in checks])
    else:
        from rich.table import Table

        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("check")
        table.add_column("status")
        table.add_column("detail", overflow="fold")
        for c in checks:
            table.add_row(c.name, f"[{STATUS_STYLE[c.status]}]{c.status}[/]", c.detail)
        _console().print(table)
        warned = sum(c.status == "warn" for c in checks)
        click.echo(
            f"doctor: {len(checks)} checks, {len(failed)} failed, {warned} warnings"
            + (f" (first failure: {failed[0].name})" if failed else "")
        )
    if failed:
        sys.exit(1)


# ---------------------------------------------------------------------------
# demo data and records


@cli.command("demo-data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--notes", default=200, show_default=True, type=int, help="Number of notes.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "txt", "fhir"]),
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


@cli.command()
@click.argument("export", type=click.Path(path_type=Path))
@workspace_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "csv", "jsonl", "txt", "fhir"]),
    default="auto",
    show_default=True,
    help="Export format; auto decides by extension and content.",
)
@click.option(
    "--id-column",
    default=None,
    help="Column/field holding the note id (default: note_id, id, document_id...).",
)
@click.option(
    "--text-column",
    default=None,
    help="Column/field holding the note text (default: text, note_text, note...).",
)
@click.option(
    "--identifier-column",
    multiple=True,
    help="Column/field holding a patient identifier (repeatable; default: recognized by name, e.g. patient_name, national_id, phone).",
)
@click.option(
    "--metadata-column",
    multiple=True,
    help="Keep only these columns as metadata (repeatable; default: every other column).",
)
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="Text encoding of the export (e.g. cp1252).",
)
@click.option("--delimiter", default=None, help="CSV delimiter (default: ',' or tab for .tsv).")
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

    ws = _open(workspace)
    options = ReaderOptions(
        id_column=id_column,
        text_column=text_column,
        identifier_columns=identifier_column or None,
        metadata_columns=metadata_column or None,
        encoding=encoding,
        delimiter=delimiter,
        max_note_chars=ws.policy.ingest.max_note_chars,
    )
    with _progress("ingesting", "rows") as advance:
        result = ingest_mod.run(ws, export, fmt=fmt, options=options, progress=advance)
    for name in result.removed_uncommitted:
        click.echo(f"note: removed {name}, left uncommitted by an interrupted ingest", err=True)
    click.echo(result.summary())
    if strict and result.rejected:
        sys.exit(InputError.exit_code)


@cli.group(cls=ApplianceGroup)
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

    ws = _open(workspace)
    stats = stats_mod.run(ws)
    if as_json:
        _print_json(stats.as_dict())
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
    _console().print(table)
    click.echo(stats.summary())


# ---------------------------------------------------------------------------
# generator


@cli.group(cls=ApplianceGroup)
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
    type=click.Choice(["auto", "cpu", "cuda"]),
    default=None,
    help="Override the recipe's device.",
)
def generator_train(
    workspace: Path | None,
    recipe: str,
    from_dir: Path | None,
    canaries: int,
    canary_repeats: int,
    max_steps: int | None,
    device: str | None,
) -> None:
    """Train a byte-level BPE tokenizer and a GPT-2 on the (pseudonymized) records.

    A fixed share of records is held out (never trained on) and gives the
    perplexity. Checkpoints are encrypted; an interrupted run resumes where it
    stopped. The trained generator is stored encrypted in models/generator/.

    \b
    Example:
      appliance generator train -w ./ws --recipe small
      appliance generator train -w ./ws --recipe gpt2-124m --from /models/hospital-gpt2 --canaries 10
    """
    from appliance.generator import train as train_mod

    ws = _open(workspace)
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
        )
    click.echo(result.summary())


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
    progress = Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]} · {task.fields[rate]} tok/s"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task("train", total=None, loss="-", rate="-")

        def update(p: Any) -> None:
            progress.update(
                task,
                completed=p.step,
                total=p.max_steps,
                loss=f"{p.loss:.3f}",
                rate=f"{p.tokens_per_second:.0f}",
            )

        yield update


@cli.command()
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
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
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
    device: str,
) -> None:
    """Sample synthetic notes from the trained generator (stored encrypted, marked unscreened).

    Prefixes (note type, age group, sex, diagnosis) are drawn with the
    frequencies of the training records unless --prefix fixes one. Same
    settings and seed, same notes; an interrupted run resumes, and a larger
    --count extends the corpus.

    \b
    Example:
      appliance generate -w ./ws --count 2000 --seed 1
      appliance generate -w ./ws --count 50000 --backend vllm --corpus big
    """
    from appliance.generator import sample

    ws = _open(workspace)
    settings = sample.SamplingSettings(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        prefix=prefix,
    )
    with _progress("generating", "notes") as advance:
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


# ---------------------------------------------------------------------------
# audit


@cli.group(cls=ApplianceGroup)
def audit() -> None:
    """Check and read the hash-chained audit log."""


@audit.command("verify")
@workspace_option
def audit_verify(workspace: Path | None) -> None:
    """Check every entry's hash and link; name the first edited or deleted line.

    \b
    Example:
      appliance audit verify -w ./ws
    """
    ws = _open(workspace)
    result = ws.verify_audit()
    # Record the check itself, only once it passed: appending after a failed
    # check would write a fresh head over the evidence of a truncation.
    ws.log("audit verify", details={"entries": result.entries, "head": result.head})
    click.echo(f"audit log intact: {result.entries} entries, head {result.head[:16]}")


@audit.command("show")
@workspace_option
@click.option("--last", "last", type=int, default=None, help="Show only the last N entries.")
@json_option
def audit_show(workspace: Path | None, last: int | None, as_json: bool) -> None:
    """Print the audit log readably: time, user, command, result, input and output hashes.

    \b
    Example:
      appliance audit show -w ./ws --last 20
    """
    if last is not None and last < 1:
        raise UsageError("--last must be at least 1")
    ws = _open(workspace)
    entries = [e for _, e in ws.audit.entries()]
    if last is not None:
        entries = entries[-last:]
    if as_json:
        _print_json(entries)
        return

    # Plain lines rather than a table: they stay readable when piped to a file or grep.
    def files(items: list[dict[str, Any]]) -> str:
        return (
            " ".join(
                f"{Path(str(i.get('path', '?'))).name}:{str(i.get('sha256', ''))[:8]}"
                for i in items
            )
            or "-"
        )

    for e in entries:
        when = str(e.get("time", "")).replace("T", " ")[:19]
        click.echo(
            f"{e.get('seq', '?'):>5}  {when}  {e.get('user', '?')}  {e.get('command', '?')}  "
            f"[{e.get('result', '?')}]  in: {files(e.get('inputs', []))}  out: {files(e.get('outputs', []))}  "
            f"#{str(e.get('hash', ''))[:12]}"
        )
    click.echo(f"{len(entries)} entries shown")


# The later stages register their commands on ``cli`` (they import the helpers above).
from appliance.commands import annotate as _annotate  # noqa: E402,F401
from appliance.commands import ner as _ner  # noqa: E402,F401
from appliance.commands import pipeline as _pipeline  # noqa: E402,F401
from appliance.commands import screen as _screen  # noqa: E402,F401


def main() -> None:
    cli(prog_name="appliance")


if __name__ == "__main__":
    main()
