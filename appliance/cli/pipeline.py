"""``appliance pipeline run`` and ``appliance demo``."""

from __future__ import annotations

from pathlib import Path

import click

from appliance.cli.options import ApplianceGroup, open_workspace, workspace_option
from appliance.errors import InputError, UsageError


@click.group(cls=ApplianceGroup)
def pipeline() -> None:
    """Run every stage in order from one config (ingest to export)."""


@pipeline.command("run")
@workspace_option
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Pipeline config (TOML): export, recipe, counts, annotator, encoder, dev gold set.",
)
def pipeline_run(workspace: Path | None, config_path: Path) -> None:
    """Run ingest, generator train, generate, screen, annotate, ner train and export.

    Each stage is skipped when its artifact is current (same inputs and
    parameters, by hashes) and resumed when it was interrupted. Ends with one
    summary: records, notes generated / released / quarantined, annotations,
    dev F1, package and report paths, time per stage.

    \b
    Example:
      appliance pipeline run -w ./ws --config pipeline.toml
    """
    from appliance.pipeline import load_config, run

    if not config_path.exists():
        raise InputError(f"{config_path}: config file not found")
    ws = open_workspace(workspace)
    result = run(ws, load_config(config_path), echo=lambda m: click.echo(m, err=True))
    for line in result.lines():
        click.echo(line)


@click.command()
@click.argument(
    "folder",
    required=False,
    default="appliance-demo",
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--notes", default=1500, show_default=True, type=int, help="Demo export size.")
@click.option(
    "--synthetic", default=1000, show_default=True, type=int, help="Synthetic notes to generate."
)
def demo(folder: Path, notes: int, synthetic: int) -> None:
    """The whole pipeline on demo data, with the lexicon annotator; no GPU, no LLM.

    Makes a fake hospital export, a workspace, trains the generator, writes
    and screens synthetic notes, annotates the released ones, trains and
    exports the NER model, then runs it over a fresh demo export and scores
    it against that export's gold spans. Rerunning resumes and skips what is
    done.

    \b
    Example:
      appliance demo ./appliance-demo
    """
    from appliance.pipeline import demo as run_demo

    if notes < 50 or synthetic < 20:
        raise UsageError("--notes must be at least 50 and --synthetic at least 20")
    result = run_demo(
        folder, notes=notes, synthetic=synthetic, echo=lambda m: click.echo(m, err=True)
    )
    for line in result.pipeline.lines():
        click.echo(line)
    comparison = result.f1.get("comparison") or {}
    model = comparison.get(
        "model", result.f1
    )  # the model alone, also when the package has a lexicon
    micro = model.get("seqeval", {}).get("micro", {})
    per_type = ", ".join(
        f"{t} {100 * v.get('f1', 0):.1f}"
        for t, v in sorted(model.get("seqeval", {}).get("per_type", {}).items())
    )
    click.echo(
        f"model on {result.fresh_notes} fresh demo notes (never seen): F1 "
        f"{100 * float(micro.get('f1', 0.0)):.1f}" + (f" ({per_type})" if per_type else "")
    )
    if comparison:

        def f1(mode: str) -> float:
            return 100 * float(comparison[mode]["seqeval"].get("micro", {}).get("f1", 0.0))

        click.echo(
            f"with its packaged lexicon (union, as the predictions): F1 {f1('union'):.1f}; "
            f"lexicon alone F1 {f1('lexicon'):.1f} (the demo notes are written from that lexicon)"
        )
    click.echo(f"predictions:    {result.predictions}")
    click.echo(f"workspace:      {result.workspace}")
    click.echo(f"demo finished in {result.seconds / 60:.1f} min")
