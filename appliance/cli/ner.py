"""`appliance` commands of the ner stage: ``ner train``, ``ner evaluate``, ``export``, ``infer``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from appliance.cli.options import (
    DEVICE,
    EXPORT_FORMAT,
    GOLD_FORMAT,
    ApplianceGroup,
    json_option,
    open_workspace,
    print_json,
    reader_options,
    workspace_option,
)
from appliance.errors import UsageError, WorkspaceError
from appliance.ner.settings import (
    AUTO_MENTION_COPIES,
    AUTO_O_KEEP,
    AUTO_SELF_TRAINING_ROUNDS,
    AUTO_TERM_HOLDOUT,
    NerSettings,
)
from appliance.security.keys import load_data_key, load_public_key

_COMBINE_HELP = (
    "How entities are chosen: the model alone, the package's lexicon alone, or their union "
    "(confident model entities, plus lexicon matches that overlap none; see README). "
    "Default: union for a package that carries a lexicon, else model."
)
_MIN_CONFIDENCE_HELP = (
    "Union rule: model entities below this confidence are dropped (default: the package's)."
)


def _combine_options(f: Any) -> Any:
    f = click.option("--min-confidence", type=float, default=None, help=_MIN_CONFIDENCE_HELP)(f)
    return click.option(
        "--combine",
        "combine_mode",
        type=click.Choice(["model", "lexicon", "union"]),
        default=None,
        help=_COMBINE_HELP,
    )(f)


_DEFAULTS = NerSettings()
_ROUNDS_DEFAULT = (
    f"{AUTO_SELF_TRAINING_ROUNDS} on annotations, 0 with --train"
    if AUTO_SELF_TRAINING_ROUNDS
    else "0 (off)"
)
_DATA_KEY_HELP = (
    "The workspace data key file, for a real-zone (encrypted) model outside its workspace "
    "(default: the workspace's key)."
)


@contextmanager
def _train_progress() -> Iterator[Callable[[Any], None]]:
    """Steps, loss, tokens/s, dev F1: a live bar on a terminal, a line every 10% otherwise."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    if not sys.stderr.isatty():
        last: list[Any] = [None]

        def log(p: Any) -> None:
            tenth = (p.phase, p.step * 10 // max(1, p.max_steps))
            if tenth != last[0] or p.dev_f1 is not None:
                last[0] = tenth
                f1 = f" dev F1 {100 * p.dev_f1:.1f}" if p.dev_f1 is not None else ""
                click.echo(
                    f"{p.phase} step {p.step}/{p.max_steps} loss {p.loss:.3f}{f1} "
                    f"{p.tokens_per_second:.0f} tok/s eta {p.eta_seconds:.0f}s",
                    err=True,
                )

        yield log
        return
    progress = Progress(
        TextColumn("{task.fields[phase]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]} · dev F1 {task.fields[f1]} · {task.fields[rate]} tok/s"
        ),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        task = progress.add_task("train", total=None, phase="training", loss="-", f1="-", rate="-")
        best: list[str] = ["-"]

        def update(p: Any) -> None:
            if p.dev_f1 is not None:
                best[0] = f"{100 * p.dev_f1:.1f}"
            progress.update(
                task,
                completed=p.step,
                total=p.max_steps,
                phase=p.phase,
                loss=f"{p.loss:.3f}",
                f1=best[0],
                rate=f"{p.tokens_per_second:.0f}",
            )

        yield update


@contextmanager
def _infer_progress() -> Iterator[Callable[[int, float], None]]:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(
        SpinnerColumn(),
        TextColumn("inferring {task.completed} notes · {task.fields[rate]} notes/s"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with progress:
        task = progress.add_task("infer", total=None, rate="-")
        yield lambda n, rate: progress.update(task, completed=n, rate=f"{rate:.1f}")


@click.group(cls=ApplianceGroup)
def ner() -> None:
    """Train and evaluate the NER model (token classification on annotated synthetic notes)."""


@ner.command("train")
@workspace_option
@click.option(
    "--base",
    default="scratch",
    show_default=True,
    help="Local Hugging Face encoder folder, or 'scratch' for a small BERT with a WordPiece tokenizer trained here.",
)
@click.option(
    "--annotations", default="default", show_default=True, help="Annotation set to train on."
)
@click.option(
    "--train",
    "train_gold",
    type=click.Path(path_type=Path),
    default=None,
    help="Train on this gold file (CoNLL, BRAT or JSONL) instead of the annotations; the model card says so.",
)
@click.option(
    "--dev",
    "dev_gold",
    type=click.Path(path_type=Path),
    default=None,
    help="Development gold set for early stopping (default: a split of the training notes).",
)
@click.option("--gold-format", type=GOLD_FORMAT, default="auto", show_default=True)
@click.option(
    "--epochs",
    type=int,
    default=20,
    show_default=True,
    help="Most epochs (early stopping may end sooner).",
)
@click.option("--max-steps", type=int, default=None, help="Most optimizer steps.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option(
    "--lr",
    type=float,
    default=None,
    help="Peak learning rate (default 1e-3 scratch, 5e-5 pretrained).",
)
@click.option(
    "--max-length", type=int, default=128, show_default=True, help="Sub-word tokens per window."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--name", default="default", show_default=True, help="Model folder: models/ner/NAME/."
)
@click.option(
    "--mlm-on-records",
    is_flag=True,
    help="First pretrain the encoder by masked language modelling on the real records (the model joins the real zone).",
)
@click.option("--mlm-steps", type=int, default=300, show_default=True)
@click.option(
    "--partial-labels/--no-partial-labels",
    default=_DEFAULTS.partial_labels,
    show_default=True,
    help="Leave what the annotator could not decide (its undecided ranges, spans below --min-confidence) out of the loss instead of teaching it as outside any entity.",
)
@click.option(
    "--min-confidence",
    type=float,
    default=_DEFAULTS.min_confidence,
    show_default=True,
    help="Annotator confidence below which a span counts as undecided (with --partial-labels).",
)
@click.option(
    "--o-keep",
    type=float,
    default=None,
    help=f"Share of outside (O) tokens kept in the loss, drawn again each epoch from the seed (1: all); below 1 an entity the annotator missed is taught as outside less often. Default: {AUTO_O_KEEP} on annotations, 1 with --train.",
)
@click.option(
    "--self-training-rounds",
    type=int,
    default=None,
    help=f"Teacher-student rounds: the model re-labels the training notes (annotator spans kept, its confident new spans added, tokens it is unsure about left out) and a fresh student trains on them; with a --dev gold file, while its score does not fall. Default: {_ROUNDS_DEFAULT}.",
)
@click.option(
    "--self-training-threshold",
    type=float,
    default=_DEFAULTS.self_training_threshold,
    show_default=True,
    help="Probability from which the teacher adds a span or decides a token.",
)
@click.option(
    "--dev-signal",
    type=click.Choice(["partial", "plain", "none"]),
    default=_DEFAULTS.dev_signal,
    show_default=True,
    help="What early stopping and the self-training rounds watch: dev F1 with undecided text counted neither way (partial), plain dev F1, or nothing (the whole budget, last weights).",
)
@click.option(
    "--mention-copies",
    type=int,
    default=None,
    help=f"Mention replacement: altered copies of each training note in which confident mentions are swapped for other terms of their type (from the annotations' lexicon, else from the notes' own mentions), so the model meets more of the vocabulary than the generator writes; 0: off. Default: {AUTO_MENTION_COPIES} on annotations, 0 with --train.",
)
@click.option(
    "--mention-share",
    type=float,
    default=_DEFAULTS.mention_share,
    show_default=True,
    help="Chance that a confident mention is swapped in a copy.",
)
@click.option(
    "--term-holdout",
    type=float,
    default=None,
    help=f"Share of the annotator's distinct terms withheld from the training labels (their mentions left out of the loss), so export can judge on them, without a human label, whether the model adds to the lexicon and choose the package's default; 0: off. Default: {AUTO_TERM_HOLDOUT} on annotations without --dev, 0 otherwise.",
)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
def ner_train(
    workspace: Path | None,
    base: str,
    annotations: str,
    train_gold: Path | None,
    dev_gold: Path | None,
    gold_format: str,
    epochs: int,
    max_steps: int | None,
    batch_size: int,
    lr: float | None,
    max_length: int,
    seed: int,
    name: str,
    mlm_on_records: bool,
    mlm_steps: int,
    partial_labels: bool,
    min_confidence: float,
    o_keep: float | None,
    self_training_rounds: int | None,
    self_training_threshold: float,
    dev_signal: str,
    mention_copies: int | None,
    mention_share: float,
    term_holdout: float | None,
    device: str,
) -> None:
    """Fine-tune a token-classification model on the workspace's annotations.

    Long notes are split into overlapping windows; early stopping on the
    development set keeps the best weights; an interrupted run resumes from
    its checkpoint. The model, its config, labels, data manifest and metrics
    go to models/ner/NAME/.

    \b
    Example:
      appliance ner train -w ./ws
      appliance ner train -w ./ws --base /models/all-MiniLM-L6-v2 --dev gold.jsonl --epochs 5
    """
    from appliance.ner import train as train_mod
    from appliance.ner.settings import NerSettings

    settings = NerSettings(
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        max_length=max_length,
        stride=min(32, max_length // 4),
        seed=seed,
        device=device,
        mlm_steps=mlm_steps,
        partial_labels=partial_labels,
        min_confidence=min_confidence,
        o_keep=o_keep,
        self_training_rounds=self_training_rounds,
        self_training_threshold=self_training_threshold,
        dev_signal=dev_signal,
        mention_copies=mention_copies,
        mention_share=mention_share,
        term_holdout=term_holdout,
    )
    ws = open_workspace(workspace)
    with _train_progress() as update:
        result = train_mod.run(
            ws,
            base=base,
            annotations=annotations,
            train_gold=train_gold,
            dev_gold=dev_gold,
            gold_format=gold_format,
            name=name,
            mlm_on_records=mlm_on_records,
            settings=settings,
            progress=update,
        )
    click.echo(result.summary())


@ner.command("evaluate")
@workspace_option
@click.option(
    "--gold",
    type=click.Path(path_type=Path),
    required=True,
    help="Gold set: CoNLL/IOB, BRAT or JSONL.",
)
@click.option("--gold-format", type=GOLD_FORMAT, default="auto", show_default=True)
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="A package folder (ONNX, verified first) or a trained model folder (PyTorch); default: the workspace's package, else its trained model.",
)
@click.option(
    "--name",
    default="default",
    show_default=True,
    help="Workspace model name when --model is not given.",
)
@click.option(
    "--label",
    "label_map",
    multiple=True,
    help="Rename a gold type, e.g. Disease=DIAGNOSIS (repeatable; others are dropped).",
)
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Trusted public key to verify a package with (default: the workspace's).",
)
@click.option(
    "--data-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=_DATA_KEY_HELP,
)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@_combine_options
@json_option
def ner_evaluate(
    workspace: Path | None,
    gold: Path,
    gold_format: str,
    model: Path | None,
    name: str,
    label_map: tuple[str, ...],
    public_key: Path | None,
    data_key: Path | None,
    device: str,
    combine_mode: str | None,
    min_confidence: float | None,
    as_json: bool,
) -> None:
    """Entity-level precision, recall and F1 per type (seqeval, strict) on a gold set.

    Works for PyTorch model folders and ONNX packages alike. A package that
    carries a lexicon is also scored as the model alone, the lexicon alone
    and their union, in one table; the per-type lines are those of --combine.

    \b
    Example:
      appliance ner evaluate -w ./ws --gold real-gold.jsonl
      appliance ner evaluate --gold devel.tsv --label Disease=DIAGNOSIS --model ./package --public-key signing.pub --json
    """
    from appliance.ner import evaluate as ev

    ws = _workspace_or_none(workspace, public_key is not None and model is not None)
    report = ev.run(
        ws,
        gold=gold,
        model=model,
        name=name,
        gold_format=gold_format,
        labels=ev.parse_label_map(label_map),
        public_key=public_key,
        device=device,
        data_key=data_key,
        combine_mode=combine_mode,
        min_confidence=min_confidence,
    )
    if as_json:
        print_json(report)
        return
    rows = report["seqeval"]
    for t, c in sorted(rows.get("per_type", {}).items()):
        click.echo(
            f"{t:<14} P {c['precision']:.3f}  R {c['recall']:.3f}  F1 {c['f1']:.3f}  ({c['support']} gold)"
        )
    comparison = report.get("comparison")
    if comparison:
        click.echo(
            f"{'entities from':<22} {'P':>6} {'R':>6} {'F1':>6} {'exact-span F1':>14}  (seqeval strict)"
        )
        for mode, r in comparison.items():
            m, exact = r["seqeval"].get("micro", {}), r["spans"]["exact"]["micro"]
            shown = {
                "model": "model alone",
                "lexicon": "lexicon alone",
                "union": f"union (min conf {report['min_confidence']})",
            }[mode]
            mark = " *" if mode == report["combine"] else ""
            click.echo(
                f"{shown:<22} {m.get('precision', 0):>6.3f} {m.get('recall', 0):>6.3f} "
                f"{m.get('f1', 0):>6.3f} {exact.get('f1', 0):>14.3f}{mark}"
            )
    micro = rows.get("micro", {})
    how = "" if report.get("combine", "model") == "model" else f" + lexicon ({report['combine']})"
    if "codes" in report:
        c = report["codes"]
        click.echo(
            f"span + concept code (end to end, {c['gold']} gold spans with a known code): "
            f"P {c['precision']:.3f} R {c['recall']:.3f} F1 {c['f1']:.3f}"
        )
    click.echo(
        f"evaluated {report['model'].get('backend')} model{how} on {report['documents']} documents: "
        f"micro P {micro.get('precision', 0):.3f} R {micro.get('recall', 0):.3f} F1 {micro.get('f1', 0):.3f} (seqeval strict)"
    )


def _workspace_or_none(workspace: Path | None, can_do_without: bool) -> Any:
    try:
        return open_workspace(workspace)
    except WorkspaceError:
        if can_do_without and workspace is None:
            return None
        raise


@click.command("export")
@workspace_option
@click.option(
    "--name", default="default", show_default=True, help="Model to export: models/ner/NAME/."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Package folder (default: models/ner/NAME/package/).",
)
@click.option(
    "--int8",
    is_flag=True,
    help="Quantize to int8 when the dev F1 loss is within the policy's limit.",
)
@click.option(
    "--dev",
    "dev_gold",
    type=click.Path(path_type=Path),
    default=None,
    help="Development gold set of real annotated notes, for the int8 check and for choosing the union's minimum confidence (default: the model's own development notes).",
)
@click.option("--gold-format", type=GOLD_FORMAT, default="auto", show_default=True)
@click.option(
    "--min-confidence",
    type=float,
    default=None,
    help="The package's union rule keeps a model entity from this confidence on (default: the best on a development gold file, --dev or the model's own, else 0.9).",
)
@click.option(
    "--lexicon",
    "lexicons",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Pack this lexicon instead of the training annotations' one: TSV/CSV term list or OBO ontology, or TYPE=FILE (repeatable; as for annotate --lexicon).",
)
@click.option(
    "--label", default=None, help="Entity type for --lexicon files without a label column."
)
@click.option(
    "--no-lexicon", is_flag=True, help="Pack no lexicon: inference gives the model alone."
)
@click.option(
    "--normalizer",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Pack this normalizer folder (default: the workspace's models/normalizer, when built).",
)
@click.option(
    "--no-normalizer", is_flag=True, help="Pack no normalizer: inference gives no concept codes."
)
def export_cmd(
    workspace: Path | None,
    name: str,
    out: Path | None,
    int8: bool,
    dev_gold: Path | None,
    gold_format: str,
    lexicons: tuple[Path, ...],
    label: str | None,
    no_lexicon: bool,
    min_confidence: float | None,
    normalizer: Path | None,
    no_normalizer: bool,
) -> None:
    """Write a signed ONNX package: model, tokenizer, labels, lexicon, normalizer, card, manifest, signature.

    Fails unless ONNX and PyTorch agree on sample notes (logits within
    tolerance, identical labels). With --int8, keeps the quantized model only
    if the dev F1 loss is within the policy's limit, else falls back to fp32.
    The package carries the lexicon the model's training annotations were
    made with (or --lexicon files, or none with --no-lexicon), which infer
    and ner evaluate combine with the model; with a development gold file,
    the union's minimum confidence is the one with the best F1 on it. It
    carries the workspace's normalizer (`appliance normalize train`), so
    infer gives every entity a concept code.

    \b
    Example:
      appliance export -w ./ws
      appliance export -w ./ws --int8 --out /srv/models/ner-2026-11
      appliance export -w ./ws --lexicon DIAGNOSIS=doid.obo --lexicon drugs.tsv
    """
    from appliance.ner import export as export_mod

    ws = open_workspace(workspace)
    result = export_mod.run(
        ws,
        name=name,
        out=out,
        int8=int8,
        dev_gold=dev_gold,
        gold_format=gold_format,
        lexicons=lexicons,
        label=label,
        no_lexicon=no_lexicon,
        min_confidence=min_confidence,
        normalizer=normalizer,
        no_normalizer=no_normalizer,
    )
    click.echo(result.summary())


@click.command("infer")
@click.argument("export", type=click.Path(path_type=Path))
@workspace_option
@click.option(
    "--model",
    "package",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Signed model package (default: the workspace's models/ner/NAME/package/).",
)
@click.option(
    "--name",
    default="default",
    show_default=True,
    help="Workspace model name when --model is not given.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Output file (a folder for brat)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "brat", "fhir"]),
    default="jsonl",
    show_default=True,
)
@click.option(
    "--input-format",
    type=EXPORT_FORMAT,
    default="auto",
    show_default=True,
    help="Export format, as for ingest.",
)
@reader_options(ingest=False)
@click.option(
    "--batch-size", type=int, default=32, show_default=True, help="Windows per model call."
)
@click.option(
    "--threads", type=int, default=None, help="CPU threads for onnxruntime (default: all cores)."
)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this process; ray: an actor pool on a Ray cluster (same output).",
)
@click.option(
    "--address",
    default=None,
    help="With --engine ray: the cluster's head (HOST:PORT); default: start Ray on this machine.",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="With --engine ray: actors in the pool (default: one per GPU, else per --threads CPUs).",
)
@click.option("--encrypt", is_flag=True, help="Write the output encrypted with the workspace key.")
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Trusted public key to verify the package with (default: the workspace's; allows use without a workspace).",
)
@click.option(
    "--data-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=_DATA_KEY_HELP + " With --encrypt outside a workspace, it also encrypts the output.",
)
@click.option(
    "--normalize/--no-normalize",
    default=True,
    show_default=True,
    help="Give every entity a concept code when the package carries a normalizer.",
)
@_combine_options
def infer_cmd(
    export: Path,
    workspace: Path | None,
    package: Path | None,
    name: str,
    out: Path,
    fmt: str,
    input_format: str,
    id_column: str | None,
    text_column: str | None,
    encoding: str,
    delimiter: str | None,
    batch_size: int,
    threads: int | None,
    device: str,
    engine: str,
    address: str | None,
    workers: int | None,
    encrypt: bool,
    public_key: Path | None,
    data_key: Path | None,
    normalize: bool,
    combine_mode: str | None,
    min_confidence: float | None,
) -> None:
    """Run a signed model package over a record export (CSV, JSONL, .txt folder, FHIR).

    Refuses a tampered or unsigned package. A real-zone package (encrypted)
    runs only with its workspace's data key: -w WORKSPACE or --data-key FILE. Writes per note its entities with
    character offsets, type, text and confidence (and, when the package's
    lexicon is combined, its source: model, lexicon or both; when it carries a
    normalizer, the concept code, system, name, score and top-k candidates);
    an interrupted run resumes
    with no note written twice or missed; rejected rows are listed with their
    reasons beside the output.

    \b
    Example:
      appliance infer ./export/notes.csv -w ./ws --out ./out/entities.jsonl
      appliance infer notes.ndjson --model ./package --public-key signing.pub --out ./brat --format brat
      appliance infer notes.csv -w ./ws --out out.jsonl --engine ray --address 10.0.0.5:6379
    """
    from appliance.ner import infer as infer_mod
    from appliance.records.readers import ReaderOptions

    if engine != "ray" and (address is not None or workers is not None):
        raise UsageError("--address and --workers go with --engine ray")
    ws = _workspace_or_none(workspace, public_key is not None and package is not None)
    key = load_data_key(data_key) if data_key is not None else None
    if ws is None and encrypt and key is None:
        raise UsageError(
            "--encrypt needs a workspace or --data-key (the data key encrypts the output)"
        )
    options = ReaderOptions(
        id_column=id_column,
        text_column=text_column,
        encoding=encoding,
        delimiter=delimiter,
        max_note_chars=ws.policy.ingest.max_note_chars if ws is not None else 1_000_000,
    )
    with _infer_progress() as advance:
        if ws is None:
            assert package is not None and public_key is not None
            result = infer_mod.run(
                export,
                package,
                out,
                fmt,
                trusted_public_key=load_public_key(public_key),
                encrypt_key=key if encrypt else None,
                package_key=key,
                reader_format=input_format,
                options=options,
                batch_size=batch_size,
                device=device,
                threads=threads,
                progress=advance,
                combine=combine_mode,
                min_confidence=min_confidence,
                normalize=normalize,
                engine=engine,
                address=address,
                workers=workers,
                log=lambda line: click.echo(line, err=True),
            )
        else:
            result = infer_mod.run_ws(
                ws,
                export,
                package=package,
                out=out,
                fmt=fmt,
                name=name,
                encrypt=encrypt,
                public_key=public_key,
                package_key=key,
                reader_format=input_format,
                options=options,
                batch_size=batch_size,
                device=device,
                threads=threads,
                progress=advance,
                combine=combine_mode,
                min_confidence=min_confidence,
                normalize=normalize,
                engine=engine,
                address=address,
                workers=workers,
                log=lambda line: click.echo(line, err=True),
            )
    click.echo(result.summary())
