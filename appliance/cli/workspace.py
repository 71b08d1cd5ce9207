"""``appliance init``: a new workspace."""

from __future__ import annotations

from pathlib import Path

import click

from appliance import workspace as wsmod


@click.command()
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
    ws = wsmod.init(workspace, language=language, key_file=key_file, policy_file=policy_file)
    click.echo(
        f"created workspace {ws.root} (language {ws.config.workspace.language}, "
        f"policy {ws.policy.policy.name}, data key {ws.data_key.key_id} at {ws.data_key_path})"
    )
