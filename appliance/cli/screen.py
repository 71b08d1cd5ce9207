"""``appliance screen``: the leakage screen and release gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from appliance.cli.options import (
    json_option,
    open_workspace,
    print_json,
    progress,
    workspace_option,
)
from appliance.errors import NothingProduced, UsageError


@click.command()
@workspace_option
@click.option(
    "--corpus",
    default="default",
    show_default=True,
    help="Synthetic corpus to screen (synthetic/NAME); its passing notes are released.",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Screen an external file instead: JSONL with id and text per line, or a folder of .txt.",
)
@click.option(
    "--import-as",
    default=None,
    metavar="NAME",
    help="With --input: store the notes as synthetic corpus NAME and release those that pass.",
)
@click.option("--batch-size", default=2048, show_default=True, type=int)
@json_option
def screen(
    workspace: Path | None,
    corpus: str,
    input_path: Path | None,
    import_as: str | None,
    batch_size: int,
    as_json: bool,
) -> None:
    """Check synthetic notes against the real records; release only those that pass.

    Detectors: verbatim spans, longest-common-subsequence ratio, near
    duplicates, replayed real identifiers, distance to closest record (with
    held-out real notes as the baseline) and canary exposure. Writes a
    report (reports/screen-*.html and .json) and, for a corpus, the signed
    release manifest that `annotate` requires.

    \b
    Example:
      appliance screen -w ./ws
      appliance screen -w ./ws --input candidates.jsonl
    """
    from appliance.privacy import screen as stage

    if import_as is not None and input_path is None:
        raise UsageError("--import-as needs --input FILE")
    ws = open_workspace(workspace)
    counts = {"records": 0, "notes": 0}
    # One live display: it counts real records while the index is built, then notes.
    with progress("leakage screen:", "records indexed / notes screened") as show:

        def indexed(n: int) -> None:
            counts["records"] += n
            show(counts["records"])

        def screened(n: int) -> None:
            counts["notes"] += n
            show(counts["notes"])

        result = stage.run(
            ws,
            corpus=None if input_path is not None and import_as is None else corpus,
            input_path=input_path,
            import_as=import_as,
            batch_size=batch_size,
            progress=screened,
            index_progress=indexed,
        )
    if as_json:
        print_json(
            {
                "source": result.source,
                "screened": result.screened,
                "released": result.released,
                "quarantined": result.quarantined,
                "rejected": [{"id": i, "reason": r} for i, r in result.rejected],
                "by_detector": dict(result.by_detector),
                "report_html": str(result.report_html),
                "report_json": str(result.report_json),
                "release": str(result.release) if result.release else None,
                "canaries": result.canaries,
                "seconds": round(result.seconds, 2),
            }
        )
    else:
        _echo_summary(result, ws)
    if (result.screened or result.rejected) and not result.released:
        # The decisions are recorded (report, release, audit line); the exit says none passed.
        raise NothingProduced(
            f"no note released: all {result.screened + len(result.rejected)} withheld; "
            f"see {result.report_html}"
        )


def _echo_summary(result: Any, ws: Any) -> None:
    click.echo(result.summary())
    for c in result.canaries:
        if c["exposure_bits"] > ws.policy.leakage.canary_exposure_max_bits:
            click.echo(
                f"warning: a canary has {c['exposure_bits']} bits of exposure (limit "
                f"{ws.policy.leakage.canary_exposure_max_bits}): the generator memorizes rare "
                "training text; consider fewer training steps or more data",
                err=True,
            )
