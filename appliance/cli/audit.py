"""``appliance audit verify`` and ``appliance audit show``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from appliance.cli.options import (
    ApplianceGroup,
    json_option,
    open_workspace,
    print_json,
    workspace_option,
)
from appliance.errors import UsageError


@click.group(cls=ApplianceGroup)
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
    ws = open_workspace(workspace)
    result = ws.verify_audit()
    # Record the check itself, only once it passed: appending after a failed
    # check would write a fresh head over the evidence of a truncation.
    ws.log("audit verify", details={"entries": result.entries, "head": result.head})
    click.echo(f"audit log intact: {result.entries} entries, head {result.head[:16]}")
    for note in result.interrupted:
        click.echo(f"interrupted write (recoverable): {note}")
    for run in ws.interrupted_runs():
        click.echo(f"interrupted stage (recoverable): {run.describe()}")


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
    ws = open_workspace(workspace)
    entries = [e for _, e in ws.audit.entries()]
    if last is not None:
        entries = entries[-last:]
    if as_json:
        print_json(entries)
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
