"""``appliance pipeline run`` and ``appliance demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
@click.option(
    "--lexicon-share",
    default=0.6,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Share of the demo vocabulary's concepts in the term list the annotator uses.",
)
def demo(folder: Path, notes: int, synthetic: int, lexicon_share: float) -> None:
    """The whole pipeline on demo data, with the lexicon annotator; no GPU, no LLM.

    Makes a fake hospital export, a workspace, trains the generator, writes
    and screens synthetic notes, annotates the released ones, trains and
    exports the NER model, then runs it over a fresh demo export and scores
    it against that export's gold spans, beside the term list alone on the
    same notes. The term list (DIR/terms.tsv) holds a seeded 60% of the demo
    vocabulary's concepts, as a hospital's lists cover only part of what its
    notes mention. Rerunning resumes and skips what is done.

    \b
    Example:
      appliance demo ./appliance-demo
    """
    from appliance.pipeline import demo as run_demo

    if notes < 50 or synthetic < 20:
        raise UsageError("--notes must be at least 50 and --synthetic at least 20")
    result = run_demo(
        folder,
        notes=notes,
        synthetic=synthetic,
        lexicon_share=lexicon_share,
        echo=lambda m: click.echo(m, err=True),
    )
    for line in result.pipeline.lines():
        click.echo(line)
    comparison = result.f1.get("comparison") or {}
    model = comparison.get(
        "model", result.f1
    )  # the model alone, also when the package has a lexicon
    n = result.fresh_notes
    click.echo(f"lexicon alone on {n} fresh notes: {_f1_line(result.lexicon_f1)}")
    click.echo(f"model on {n} fresh notes (never seen): {_f1_line(model)}")
    if "union" in comparison:
        click.echo(
            f"model + its packaged lexicon (union) on {n} fresh notes: "
            f"{_f1_line(comparison['union'])}"
        )
        click.echo(
            f"the package as it answers by default ({result.f1.get('combine')}, as the "
            f"predictions) on {n} fresh notes: {_f1_line(result.f1)}"
        )
    if result.codes is not None:
        c = result.codes
        acc = c["normalizer"]["all"]["accuracy_at_1"]
        base = c["exact_match_baseline"]["all"]["accuracy_at_1"]
        click.echo(
            f"concept codes on {c['mappable']} fresh gold mentions of concepts in the term list: "
            f"accuracy@1 {acc or 0:.3f} (exact match {base or 0:.3f}); {c['unmappable']} mentions "
            f"of concepts outside it, {c['unmappable_left_nil']} of them left without a code"
        )
    click.echo(f"predictions:    {result.predictions}")
    click.echo(f"workspace:      {result.workspace}")
    click.echo(f"demo finished in {result.seconds / 60:.1f} min")


def _f1_line(report: dict[str, Any]) -> str:
    """``F1 0.612 (DIAGNOSIS 0.700, DRUG 0.500, ...)`` from a report's seqeval section."""
    seqeval = report.get("seqeval", {})
    per_type = ", ".join(
        f"{t} {float(v.get('f1', 0)):.3f}" for t, v in sorted(seqeval.get("per_type", {}).items())
    )
    f1 = float(seqeval.get("micro", {}).get("f1", 0.0))
    return f"F1 {f1:.3f}" + (f" ({per_type})" if per_type else "")
