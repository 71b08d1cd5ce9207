"""``appliance doctor``: what works here."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appliance.cli.options import (
    console,
    json_option,
    print_json,
    workspace_option,
)
from appliance.workspace import CONFIG_NAME, resolve_path

STATUS_STYLE = {"ok": "green", "info": "cyan", "warn": "yellow", "fail": "bold red"}


@click.command()
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

    root = resolve_path(workspace)
    checks = doc.run(root if (workspace is not None or (root / CONFIG_NAME).exists()) else None)
    failed = [c for c in checks if c.status == "fail"]
    if as_json:
        print_json([c.__dict__ for c in checks])
    else:
        from rich.table import Table

        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("check")
        table.add_column("status")
        table.add_column("detail", overflow="fold")
        for c in checks:
            table.add_row(c.name, f"[{STATUS_STYLE[c.status]}]{c.status}[/]", c.detail)
        console().print(table)
        warned = sum(c.status == "warn" for c in checks)
        click.echo(
            f"doctor: {len(checks)} checks, {len(failed)} failed, {warned} warnings"
            + (f" (first failure: {failed[0].name})" if failed else "")
        )
    if failed:
        sys.exit(1)
