"""What every command module shares: the error-to-exit-code group, common options, output helpers.

Command modules import from here and never from the group module
(:mod:`appliance.cli.main`), which imports them to register their commands.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from appliance.errors import ApplianceError, Terminated
from appliance.records.readers import FORMATS as READER_FORMATS
from appliance.workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])

DEVICE = click.Choice(["auto", "cpu", "cuda"])
GOLD_FORMAT = click.Choice(["auto", "conll", "brat", "jsonl", "pubtator"])
# Built from the readers' registry: a new export format shows up here by itself.
EXPORT_FORMAT = click.Choice(["auto", *READER_FORMATS])


class ApplianceGroup(click.Group):
    """Turns appliance errors into a one-line message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApplianceError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_code)
        except Terminated:
            click.echo(
                "terminated (SIGTERM); completed work is kept and the next run resumes", err=True
            )
            sys.exit(143)
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


def apply(f: F, options: Sequence[Callable[[Any], Any]]) -> F:
    """Apply option decorators so that ``--help`` lists them in the given order."""
    for option in reversed(options):
        f = option(f)
    return f


def reader_options(*, ingest: bool) -> Callable[[F], F]:
    """The column and text options of the export readers (``ingest`` and ``infer``).

    ``ingest`` adds the identifier and metadata columns (only the record store
    keeps them) and help that names the readers' defaults.
    """

    def decorate(f: F) -> F:
        options = [
            click.option(
                "--id-column",
                default=None,
                help="Column/field holding the note id"
                + (" (default: note_id, id, document_id...)." if ingest else "."),
            ),
            click.option(
                "--text-column",
                default=None,
                help="Column/field holding the note text"
                + (" (default: text, note_text, note...)." if ingest else "."),
            ),
        ]
        if ingest:
            options += [
                click.option(
                    "--identifier-column",
                    multiple=True,
                    help="Column/field holding a patient identifier (repeatable; default: recognized by name, e.g. patient_name, national_id, phone).",
                ),
                click.option(
                    "--metadata-column",
                    multiple=True,
                    help="Keep only these columns as metadata (repeatable; default: every other column).",
                ),
            ]
        options += [
            click.option(
                "--encoding",
                default="utf-8",
                show_default=True,
                help="Text encoding of the export" + (" (e.g. cp1252)." if ingest else "."),
            ),
            click.option(
                "--delimiter",
                default=None,
                help="CSV delimiter" + (" (default: ',' or tab for .tsv)." if ingest else "."),
            ),
        ]
        return apply(f, options)

    return decorate


def open_workspace(workspace: Path | None) -> Workspace:
    return Workspace.open(workspace)


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


@contextmanager
def progress(what: str, unit: str) -> Iterator[Callable[[int], None]]:
    """A live counter on stderr when it is a terminal; silent in scripts and logs."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(
        SpinnerColumn(),
        TextColumn(f"{what} {{task.completed}} {unit}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with bar:
        task = bar.add_task(what, total=None)
        yield lambda n: bar.update(task, completed=n)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
