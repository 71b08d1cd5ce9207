"""The ``appliance`` command line: each command parses its options and calls one function.

Errors the appliance raises on purpose (``ApplianceError``) become one line on
stderr and the error's exit code; nothing a user can cause prints a traceback.

This module holds the top-level group and registers the commands of each
stage's module on it; the command modules share their options and helpers
through :mod:`appliance.cli.options` and never import this module. Stage code
is imported inside each command, so that ``appliance --help`` and every
command load only the stage they use (all stages together take ten times the
start-up time), and a stage whose dependencies are broken does not stop
``appliance doctor`` from reporting it.
"""

from __future__ import annotations

import os

import click

from appliance import __version__
from appliance.cli import (
    annotate,
    audit,
    doctor,
    generator,
    llm,
    ner,
    normalize,
    pipeline,
    records,
    screen,
    workspace,
)
from appliance.cli.options import ApplianceGroup
from appliance.interrupts import handle_sigterm


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


# In the order of the pipeline; ``--help`` lists them sorted by name.
for command in (
    workspace.init,
    doctor.doctor,
    records.demo_data,
    records.ingest,
    records.records,
    generator.generator,
    generator.generate,
    screen.screen,
    llm.llm,
    annotate.annotate,
    ner.ner,
    normalize.normalize,
    ner.export_cmd,
    ner.infer_cmd,
    audit.audit,
    pipeline.pipeline,
    pipeline.demo,
):
    cli.add_command(command)


def main() -> None:
    # Workspaces, record exports and inference outputs hold patient data: private to their owner.
    os.umask(0o077)
    handle_sigterm()
    cli(prog_name="appliance")


if __name__ == "__main__":
    main()
