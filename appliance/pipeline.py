"""``appliance pipeline run`` and ``appliance demo``: every stage in order from one config.

    ingest → generator train → generate → screen → annotate → ner train → export

Each stage is skipped when its artifact is current: the pipeline keeps, in
``reports/pipeline-state.json``, a fingerprint per stage (its parameters and
the hashes of its inputs) and the hash of what it produced; a stage runs
again when either changed. A stage interrupted midway resumes (the stages
themselves resume: checkpoints, generated parts, the LLM answer cache), and
a stage whose inputs changed starts from a clean output folder.

The stages are one table (``_STAGES``: name, fingerprint inputs, output,
call) run in order by one loop; the config is validated frozen dataclasses,
declared like ``appliance.toml``'s sections in :mod:`appliance.config`.

The config is TOML; every key is optional except ``[pipeline] export``::

    [pipeline]
    export = "export/notes.csv"   # relative to the config file
    format = "auto"
    [generator]
    recipe = "small"              # or a recipe file
    from = ""                     # a local checkpoint folder to continue
    canaries = 0
    max_steps = 0                 # 0: the recipe's
    entity_terms = false          # prefixes name the [annotate] lexicons' terms (see generator train --entity-terms)
    [generate]
    count = 2000
    corpus = "default"
    backend = "transformers"
    temperature = 1.0
    top_k = 50
    top_p = 0.95
    batch_size = 16
    seed = 0
    [annotate]
    annotator = ["lexicon"]       # or ["llm"], or both (an ensemble)
    lexicons = []                 # files; empty: the built-in demo vocabularies
    endpoint = ""                 # llm: e.g. "http://127.0.0.1:8000/v1"
    model = ""
    prompt = ["zero-shot"]
    combine = "union"
    name = "default"
    abbreviations = true          # lexicon rules (see `appliance annotate --help`)
    variants = true
    head_nouns = true
    unknown_words = false
    [ner]
    base = "scratch"              # or a local encoder folder
    dev = ""                      # a gold file of real annotated notes (optional)
    epochs = 20
    max_steps = 0
    batch_size = 16
    name = "default"
    partial_labels = true         # what the annotator left undecided: out of the loss
    min_confidence = 0.5          # spans below this annotator confidence count as undecided
    o_keep = 0.3                  # share of O tokens kept in the loss (1: all)
    self_training_rounds = 0      # teacher-student rounds after the first model
    self_training_threshold = 0.9
    dev_signal = "partial"        # partial | plain | none
    mention_copies = 1            # mention-replaced copies of each training note (0: off)
    mention_share = 0.5           # chance that a confident mention is swapped in a copy
    term_holdout = 0.2            # share of terms withheld from training to judge the model (0: off)
    [export]
    int8 = false
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from appliance import demo as demo_data
from appliance.annotate.annotators import AnnotatorOptions
from appliance.annotate.annotators.lexicon import term_finder
from appliance.annotate.evaluate import evaluate as evaluate_annotator
from appliance.annotate.stage import run as annotate
from appliance.config import _bool, _describe, _float, _int, _read_toml, _spec, _str
from appliance.corpus import RELEASE_FILE, load_release
from appliance.demo.vocabulary import write_term_list
from appliance.errors import ConfigError, InputError
from appliance.generator import sample, train
from appliance.generator.prefixes import EntityTerms
from appliance.ner import export as ner_export
from appliance.ner import infer
from appliance.ner import train as ner_train
from appliance.ner.evaluate import run as evaluate
from appliance.ner.settings import (
    AUTO_MENTION_COPIES,
    AUTO_O_KEEP,
    AUTO_SELF_TRAINING_ROUNDS,
    AUTO_TERM_HOLDOUT,
    DEV_SIGNALS,
    NerSettings,
)
from appliance.normalize.encoder import EncoderSettings
from appliance.normalize.linker import has_normalizer
from appliance.normalize.stage import FOLDER as NORMALIZER_FOLDER
from appliance.normalize.stage import LLMMentionOptions, parse_lexicons
from appliance.normalize.stage import run as normalize_train
from appliance.normalize.stage import run_evaluate as normalize_evaluate
from appliance.normalize.terminology import NoConceptCodes
from appliance.privacy import screen
from appliance.records import ingest
from appliance.records.ingest import open_store
from appliance.security.crypto import atomic_write
from appliance.workspace import Workspace, hashed, init, write_manifest

STATE_FILE = "pipeline-state.json"

# ---------------------------------------------------------------------------
# The config: one frozen dataclass per section, declared like appliance.toml's
# (appliance.config: each field's metadata holds its check and the phrase for
# the error message). A field named after a Python keyword ends in "_"
# (``from_``); its TOML key is the name without it.


def _strings(v: Any) -> bool:
    # Empty strings are allowed, as they always were: an empty lexicon entry means none.
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


_STRING = ("a string", _str())
_INT = ("an integer", _int())
_NUMBER = ("a number", _float())
_BOOL = ("true or false", _bool)
_STRINGS = ("a list of strings", _strings)


@dataclass(frozen=True)
class PipelineSection:
    export: str = _spec("", "a path to the record export (relative to the config file)", _str())
    format: str = _spec("auto", *_STRING)


@dataclass(frozen=True)
class GeneratorSection:
    recipe: str = _spec("small", "a recipe name or a recipe file", _str())
    from_: str = _spec("", "a path to a local checkpoint folder (empty: none)", _str())
    canaries: int = _spec(0, *_INT)
    max_steps: int = _spec(0, "an integer (0: the recipe's)", _int())
    # Condition on the [annotate] section's term lists (the demo vocabularies when it names none).
    entity_terms: bool = _spec(False, *_BOOL)


@dataclass(frozen=True)
class GenerateSection:
    count: int = _spec(2000, "an integer of at least 1", _int(1))
    corpus: str = _spec("default", *_STRING)
    backend: str = _spec("transformers", *_STRING)
    temperature: float = _spec(1.0, *_NUMBER)
    top_k: int = _spec(50, *_INT)
    top_p: float = _spec(0.95, *_NUMBER)
    batch_size: int = _spec(16, *_INT)
    seed: int = _spec(0, *_INT)


@dataclass(frozen=True)
class AnnotateSection:
    annotator: list[str] = _spec(["lexicon"], *_STRINGS)
    lexicons: list[str] = _spec([], *_STRINGS)
    endpoint: str = _spec("", *_STRING)
    model: str = _spec("", *_STRING)
    prompt: list[str] = _spec(["zero-shot"], *_STRINGS)
    combine: str = _spec("union", *_STRING)
    name: str = _spec("default", *_STRING)
    abbreviations: bool = _spec(True, *_BOOL)
    variants: bool = _spec(True, *_BOOL)
    head_nouns: bool = _spec(True, *_BOOL)
    unknown_words: bool = _spec(False, *_BOOL)


_NER = NerSettings()


@dataclass(frozen=True)
class NerSection:
    base: str = _spec("scratch", "'scratch' or a local encoder folder", _str())
    dev: str = _spec("", "a path to a gold file (empty: none)", _str())
    epochs: int = _spec(20, *_INT)
    max_steps: int = _spec(0, "an integer (0: no limit)", _int())
    batch_size: int = _spec(16, *_INT)
    name: str = _spec("default", *_STRING)
    partial_labels: bool = _spec(_NER.partial_labels, *_BOOL)
    min_confidence: float = _spec(_NER.min_confidence, "a number from 0 to 1", _float(0.0, 1.0))
    # The pipeline trains on annotations: the defaults for an annotator's labels.
    o_keep: float = _spec(AUTO_O_KEEP, "a number above 0, at most 1", _float(1e-9, 1.0))
    self_training_rounds: int = _spec(AUTO_SELF_TRAINING_ROUNDS, "an integer ≥ 0", _int(0))
    self_training_threshold: float = _spec(
        _NER.self_training_threshold, "a number from 0.5 to 1", _float(0.5, 1.0)
    )
    dev_signal: str = _spec(
        _NER.dev_signal, "one of partial, plain, none", lambda v: v in DEV_SIGNALS
    )
    mention_copies: int = _spec(AUTO_MENTION_COPIES, "an integer from 0 to 10", _int(0, 10))
    mention_share: float = _spec(
        _NER.mention_share, "a number above 0, at most 1", _float(1e-9, 1.0)
    )
    term_holdout: float = _spec(AUTO_TERM_HOLDOUT, "a number from 0 to 0.5", _float(0.0, 0.5))


@dataclass(frozen=True)
class NormalizeSection:
    enabled: bool = _spec(True, *_BOOL)
    # Terminologies with codes (empty: the [annotate] section's lexicons).
    lexicons: list[str] = _spec([], *_STRINGS)
    base: str = _spec("", "a local encoder folder (empty: n-gram matching only)", _str())
    steps: int = _spec(300, "an integer ≥ 0", _int(0))
    # LLM-written mentions from the [annotate] endpoint and model (0: none; needs base).
    llm_concepts: int = _spec(0, "an integer ≥ 0", _int(0))


@dataclass(frozen=True)
class ExportSection:
    int8: bool = _spec(False, *_BOOL)


# In stage order: the order error messages list them in.
_SECTIONS: dict[str, type] = {
    "pipeline": PipelineSection,
    "generator": GeneratorSection,
    "generate": GenerateSection,
    "annotate": AnnotateSection,
    "normalize": NormalizeSection,
    "ner": NerSection,
    "export": ExportSection,
}


def _key(f: dataclasses.Field[Any]) -> str:
    return f.name.removesuffix("_")


def section_dict(section: Any) -> dict[str, Any]:
    """A section's values under their TOML keys (what a stage's fingerprint covers)."""
    return {_key(f): getattr(section, f.name) for f in dataclasses.fields(section)}


def _section(cls: type, name: str, given: Mapping[str, Any], where: str) -> Any:
    fields = {_key(f): f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in given.items():
        f = fields.get(key)
        if f is None:
            raise ConfigError(f"{where}: unknown key {name}.{key} (known: {', '.join(fields)})")
        if not f.metadata["check"](value):
            raise ConfigError(
                f"{where}: {name}.{key} must be {f.metadata['expect']}, not {_describe(value)}"
            )
        values[f.name] = value
    return cls(**values)


@dataclass(frozen=True)
class PipelineConfig:
    pipeline: PipelineSection
    generator: GeneratorSection
    generate: GenerateSection
    annotate: AnnotateSection
    normalize: NormalizeSection
    ner: NerSection
    export: ExportSection
    base_dir: Path
    source: str

    def path(self, value: str) -> Path | None:
        if not value:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()


def load_config(
    path: Path | None, overrides: dict[str, dict[str, Any]] | None = None
) -> PipelineConfig:
    """Read and validate a pipeline config (unknown sections or keys, wrong types: ConfigError)."""
    data: dict[str, Any] = _read_toml(path, "pipeline config") if path is not None else {}
    where = str(path) if path else "the pipeline settings"
    for name, value in data.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{where}: unknown section [{name}] (known: {', '.join(_SECTIONS)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
    sections = {
        name: _section(cls, name, {**data.get(name, {}), **(overrides or {}).get(name, {})}, where)
        for name, cls in _SECTIONS.items()
    }
    if not sections["pipeline"].export:
        raise ConfigError(f"{where}: [pipeline] export is required (the record export to ingest)")
    base = path.parent.resolve() if path is not None else Path.cwd()
    return PipelineConfig(**sections, base_dir=base, source=where)


@dataclass
class StageReport:
    name: str
    status: str  # ran | skipped
    seconds: float
    summary: str


@dataclass
class PipelineResult:
    stages: list[StageReport] = field(default_factory=list)
    records: int = 0
    generated: int = 0
    released: int = 0
    quarantined: int = 0
    rejected: int = 0  # not screened at all (empty notes), listed in the screen report
    annotated: int = 0
    entities: int = 0
    dev_f1: float | None = None
    package: Path | None = None
    report: Path | None = None
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"{s.name:<10} {s.status:<8} {s.seconds:7.1f}s  {s.summary}" for s in self.stages]
        f1 = f"{100 * self.dev_f1:.1f}" if self.dev_f1 is not None else "n/a"
        out.append(
            f"records {self.records}; synthetic notes generated {self.generated}, released "
            f"{self.released}, quarantined {self.quarantined}"
            + (f", rejected {self.rejected} (see the report)" if self.rejected else "")
            + f"; annotated {self.annotated} "
            f"({self.entities} entities); model dev F1 {f1}; {self.seconds:.0f}s in all"
        )
        out.append(f"privacy report: {self.report}")
        out.append(f"model package:  {self.package}")
        return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _file_hash(path: Path) -> str | None:
    return hashed(path)["sha256"] if path.exists() else None


class _State:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.path = ws.reports_dir / STATE_FILE
        self.data: dict[str, Any] = {}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                self.data = {}

    def current(self, stage: str, fingerprint: str, output: Path) -> bool:
        entry = self.data.get(stage)
        return (
            isinstance(entry, dict)
            and entry.get("fingerprint") == fingerprint
            and entry.get("output") == _file_hash(output)
            and entry.get("output") is not None
        )

    def begin(self, stage: str, fingerprint: str) -> None:
        """Note, before a stage runs, where the audit log stood (see :meth:`finished`)."""
        last = self.ws.audit.last_entry()
        self.data[stage] = {"fingerprint": fingerprint, "pending_after": last["seq"] if last else 0}
        self._write()

    def finished(self, stage: str, fingerprint: str, output: Path) -> bool:
        """Whether a run of ``stage`` killed after it committed, before this file said so, finished.

        The stage's own authenticated closing line decides: an ``ok`` line of
        its command after the one noted by :meth:`begin`, whose outputs all
        still hash as it recorded them. Then the stage is current and is
        recorded as such, rather than run again from the start.
        """
        entry = self.data.get(stage)
        if not (
            isinstance(entry, dict)
            and entry.get("fingerprint") == fingerprint
            and isinstance(entry.get("pending_after"), int)
            and output.exists()
        ):
            return False
        command = STAGE_COMMANDS[stage]
        for _, line in self.ws.audit.entries():
            if (
                line.get("seq", 0) > entry["pending_after"]
                and line.get("command") == command
                and line.get("result") == "ok"
                and line.get("outputs")
                and all(
                    _file_hash(self.ws.root / str(o.get("path"))) == o.get("sha256")
                    for o in line["outputs"]
                )
            ):
                summary = (
                    f"{command} finished (audit line {line['seq']}) before the pipeline was stopped"
                )
                self.record(stage, fingerprint, output, {"summary": summary})
                return True
        return False

    def record(self, stage: str, fingerprint: str, output: Path, info: dict[str, Any]) -> None:
        self.data[stage] = {"fingerprint": fingerprint, "output": _file_hash(output), **info}
        self._write()

    def _write(self) -> None:
        atomic_write(self.path, (json.dumps(self.data, indent=1) + "\n").encode())


# The audit command of each pipeline stage.
STAGE_COMMANDS = {
    "ingest": "ingest",
    "generator": "generator train",
    "generate": "generate",
    "screen": "screen",
    "annotate": "annotate",
    "normalize": "normalize train",
    "ner": "ner train",
    "export": "export",
}


# ---------------------------------------------------------------------------
# The stages: a table of entries, run in order by one loop.


class Heartbeat:
    """A line at least every ``every`` seconds while a stage runs, for a log as for a terminal.

    Stages report through :meth:`update` (their progress callbacks); the
    latest report is printed as soon as ``every`` seconds passed since the
    last line, and a background thread prints it again, with the time spent,
    when a stage is quiet for that long (loading a model, building an index).
    """

    def __init__(self, say: Callable[[str], None], stage: str, every: float = 30.0) -> None:
        self.say, self.stage, self.every = say, stage, every
        self.started = self.printed = time.monotonic()
        self.last = "running"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name=f"beat-{stage}")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def update(self, text: str) -> None:
        with self._lock:
            self.last = text
            if time.monotonic() - self.printed >= self.every:
                self._print()

    def _print(self) -> None:
        elapsed = int(time.monotonic() - self.started)
        self.say(f"{self.stage}: {self.last} ({elapsed // 60}m{elapsed % 60:02d}s)")
        self.printed = time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.every / 3)):
            with self._lock:
                if time.monotonic() - self.printed >= self.every:
                    self._print()


class _Run:
    """One pipeline run: its workspace, config, state and summary, and the stages' artifacts.

    The artifact paths are computed when a stage first needs them (a bad
    corpus or model name fails when its stage comes, after the stages before it ran).
    """

    def __init__(self, ws: Workspace, config: PipelineConfig, say: Callable[[str], None]) -> None:
        self.ws = ws
        self.c = config
        self.say = say
        self.state = _State(ws)
        self.result = PipelineResult()
        self.beat: Heartbeat = Heartbeat(say, "")  # the running stage's (see ``stage``)
        export = config.path(config.pipeline.export)
        assert export is not None
        self.export = export

    @cached_property
    def store_manifest(self) -> Path:
        return self.ws.store_manifest

    @cached_property
    def gen_manifest(self) -> Path:
        return self.ws.generator_dir / "manifest.json"

    @cached_property
    def corpus(self) -> str:
        return self.c.generate.corpus

    @cached_property
    def corpus_manifest(self) -> Path:
        return self.ws.corpus_dir(self.corpus) / "manifest.json"

    @cached_property
    def release(self) -> Path:
        return self.ws.corpus_dir(self.corpus) / RELEASE_FILE

    @cached_property
    def ann_name(self) -> str:
        return self.c.annotate.name

    @cached_property
    def ann_manifest(self) -> Path:
        return self.ws.annotation_dir(self.ann_name) / "manifest.json"

    @cached_property
    def ner_name(self) -> str:
        return self.c.ner.name

    @cached_property
    def model_manifest(self) -> Path:
        return self.ws.ner_model_dir(self.ner_name) / "manifest.json"

    @cached_property
    def dev(self) -> Path | None:
        return self.c.path(self.c.ner.dev)

    @cached_property
    def package(self) -> Path:
        return self.ws.ner_model_dir(self.ner_name) / "package"

    def stage(self, entry: _Stage) -> None:
        """Run one stage unless its recorded fingerprint and output are current."""
        name = entry.name
        t0 = time.monotonic()
        fingerprint = _digest(entry.inputs(self))
        output = entry.output(self)
        if self.state.current(name, fingerprint, output) or self.state.finished(
            name, fingerprint, output
        ):
            summary = self.state.data[name].get("summary", "")
            self.result.stages.append(StageReport(name, "skipped", 0.0, f"current: {summary}"))
            self.say(f"{name}: current, skipped")
        else:
            self.say(f"{name}: running")
            self.state.begin(name, fingerprint)
            with Heartbeat(self.say, name) as self.beat:
                summary = entry.call(self, fingerprint)
            seconds = time.monotonic() - t0
            self.state.record(
                name, fingerprint, output, {"summary": summary, "seconds": round(seconds, 1)}
            )
            self.result.stages.append(StageReport(name, "ran", seconds, summary))
            self.say(f"{name}: {summary}")
        if entry.collect is not None:
            entry.collect(self)


@dataclass(frozen=True)
class _Stage:
    name: str
    # What the stage's fingerprint covers: its parameters and the hashes of its inputs.
    inputs: Callable[[_Run], dict[str, Any]]
    # The artifact whose hash, recorded after a run, marks the stage as done.
    output: Callable[[_Run], Path]
    # Runs the stage (given its fingerprint) and returns its one-line summary.
    call: Callable[[_Run, str], str]
    # Reads the stage's counts into the run's summary, whether it ran or was skipped.
    collect: Callable[[_Run], None] | None = None


def _ingest_inputs(r: _Run) -> dict[str, Any]:
    if not r.export.exists():
        raise InputError(f"{r.export}: export not found (pipeline.export in {r.c.source})")
    return {"export": hashed(r.export)["sha256"], "format": r.c.pipeline.format}


def _ingest(r: _Run, fingerprint: str) -> str:
    return ingest.run(
        r.ws, r.export, fmt=r.c.pipeline.format, progress=lambda n: r.beat.update(f"{n} rows read")
    ).summary()


def _train_generator(r: _Run, fingerprint: str) -> str:
    g = r.c.generator
    recipe = r.c.path(g.recipe) if g.recipe.endswith(".toml") else g.recipe
    entities = None
    if g.entity_terms:
        find, vocabulary, sources = term_finder(
            annotator_options(r.c), r.ws.policy.entity_schema(), r.ws.config.workspace.language
        )
        entities = EntityTerms(find, vocabulary, sources)
    return train.run(
        r.ws,
        recipe=recipe if recipe is not None else g.recipe,
        from_dir=r.c.path(g.from_),
        canaries=g.canaries,
        max_steps=g.max_steps or None,
        entities=entities,
        progress=lambda p: r.beat.update(
            f"step {p.step}/{p.max_steps}, loss {p.loss:.3f}, "
            f"{p.tokens_per_second:.0f} tokens/s, about {p.eta_seconds / 60:.0f} min left"
        ),
    ).summary()


def _generate(r: _Run, fingerprint: str) -> str:
    gn = r.c.generate
    corpus, corpus_manifest = r.corpus, r.corpus_manifest
    folder = r.ws.corpus_dir(corpus)
    if folder.exists() and r.state.data.get("generate", {}).get("fingerprint") != fingerprint:
        previous = json.loads(corpus_manifest.read_text()) if corpus_manifest.exists() else {}
        if previous.get("generator_sha256") or previous.get("stage") == "generate":
            shutil.rmtree(folder)  # made from another generator or settings: start over
    settings = sample.SamplingSettings(
        temperature=gn.temperature,
        top_k=gn.top_k,
        top_p=gn.top_p,
        batch_size=gn.batch_size,
        seed=gn.seed,
    )
    return sample.run(
        r.ws,
        count=gn.count,
        backend=gn.backend,
        settings=settings,
        corpus=corpus,
        progress=lambda done, total: r.beat.update(f"{done}/{total} notes"),
    ).summary()


def _screen(r: _Run, fingerprint: str) -> str:
    s = screen.run(
        r.ws,
        corpus=r.corpus,
        progress=lambda n: r.beat.update(f"{n} notes screened"),
        index_progress=lambda n: r.beat.update(f"leakage index: {n} real notes"),
    )
    r.result.report = s.report_html
    return s.summary()


def _collect_screen(r: _Run) -> None:
    result = r.result
    body = load_release(r.ws, r.corpus)
    result.released = int(body["counts"]["released"])
    result.quarantined = int(body["counts"]["quarantined"])
    written = json.loads(r.corpus_manifest.read_text()).get("written", 0)
    result.generated = max(int(written), result.released + result.quarantined)
    # Notes the screen could not screen (empty ones) are neither released nor quarantined.
    result.rejected = result.generated - result.released - result.quarantined
    if result.report is None:
        result.report = r.ws.root / str(body["report"]["html"]["path"])


def annotator_options(c: PipelineConfig) -> AnnotatorOptions:
    """The annotate stage's options from the config's [annotate] section."""
    a = c.annotate
    return AnnotatorOptions(
        annotators=tuple(a.annotator),
        lexicons=tuple(p for p in (c.path(x) for x in a.lexicons) if p is not None),
        endpoint=a.endpoint or None,
        model=a.model or None,
        prompts=tuple(a.prompt),
        combine=a.combine,
        abbreviations=a.abbreviations,
        variants=a.variants,
        head_nouns=a.head_nouns,
        unknown_words=a.unknown_words,
    )


def _annotate(r: _Run, fingerprint: str) -> str:
    options = annotator_options(r.c)
    return annotate(
        r.ws,
        options,
        corpus=r.corpus,
        name=r.ann_name,
        progress=lambda n: r.beat.update(f"{n} notes annotated"),
    ).summary()


def _collect_annotate(r: _Run) -> None:
    ann = json.loads(r.ann_manifest.read_text())
    r.result.annotated = int(ann.get("counts", {}).get("annotated", 0))
    r.result.entities = int(ann.get("counts", {}).get("entities", 0))


def _normalize_lexicons(c: PipelineConfig) -> list[tuple[Path, str | None]]:
    """``[normalize] lexicons`` as (path, type): ``TYPE=FILE`` or a file with a label column."""
    out = []
    for path, label in parse_lexicons(c.normalize.lexicons, None):
        resolved = c.path(str(path))
        if resolved is not None:
            out.append((resolved, label))
    return out


def _normalize_output(r: _Run) -> Path:
    # Switched off, the stage has nothing of its own: it is current with the annotations.
    if not r.c.normalize.enabled:
        return r.ann_manifest
    return r.ws.models_dir / NORMALIZER_FOLDER / "manifest.json"


def _normalize(r: _Run, fingerprint: str) -> str:
    n = r.c.normalize
    folder = r.ws.models_dir / NORMALIZER_FOLDER
    if not n.enabled:
        shutil.rmtree(folder, ignore_errors=True)  # never packed with a model it was not made for
        return "off ([normalize] enabled = false)"
    lexicons = _normalize_lexicons(r.c)
    llm = None
    if n.llm_concepts:
        a = r.c.annotate
        if not (a.endpoint and a.model and n.base):
            raise ConfigError(
                f"{r.c.source}: [normalize] llm_concepts needs [normalize] base and [annotate] "
                "endpoint and model"
            )
        llm = LLMMentionOptions(a.endpoint, a.model, n.llm_concepts)
    try:
        return normalize_train(
            r.ws,
            lexicons=lexicons,
            annotations=r.ann_name,
            base=r.c.path(n.base) if n.base else None,
            encoder_settings=EncoderSettings(steps=n.steps),
            llm=llm,
            progress=lambda step, total, loss: r.beat.update(
                f"encoder step {step}/{total}, loss {loss:.3f}"
            ),
            llm_progress=lambda done, total: r.beat.update(f"LLM mentions: {done}/{total}"),
        ).summary()
    except NoConceptCodes:
        # A manifest without normalizer files: the stage is done, and export packs nothing.
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        why = "the lexicon has no concept codes (give [normalize] lexicons with codes)"
        write_manifest(folder, {"stage": "normalize train", "skipped": why})
        return f"skipped: {why}"


def _train_ner(r: _Run, fingerprint: str) -> str:
    n = r.c.ner
    settings = NerSettings(
        epochs=n.epochs,
        max_steps=n.max_steps or None,
        batch_size=n.batch_size,
        partial_labels=n.partial_labels,
        min_confidence=n.min_confidence,
        o_keep=n.o_keep,
        self_training_rounds=n.self_training_rounds,
        self_training_threshold=n.self_training_threshold,
        dev_signal=n.dev_signal,
        mention_copies=n.mention_copies,
        mention_share=n.mention_share,
        term_holdout=None if n.dev else n.term_holdout,
    )
    base = n.base
    if base != "scratch":
        base = str(r.c.path(base))

    def ner_progress(p: Any) -> None:
        f1 = f", dev F1 {p.dev_f1:.3f}" if p.dev_f1 is not None else ""
        r.beat.update(
            f"{p.phase} step {p.step}/{p.max_steps}, loss {p.loss:.3f}{f1}, "
            f"about {p.eta_seconds / 60:.0f} min left"
        )

    return ner_train.run(
        r.ws,
        base=base,
        annotations=r.ann_name,
        dev_gold=r.dev,
        name=r.ner_name,
        settings=settings,
        progress=ner_progress,
    ).summary()


def _collect_ner(r: _Run) -> None:
    try:
        meta = json.loads(r.model_manifest.read_text())
        f1 = meta["metrics"]["dev"]["exact"]["micro"]["f1"]
        r.result.dev_f1 = float(f1) if f1 is not None else None
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        r.result.dev_f1 = None


def _export(r: _Run, fingerprint: str) -> str:
    return ner_export.run(
        r.ws,
        name=r.ner_name,
        int8=r.c.export.int8,
        dev_gold=r.dev,
        no_normalizer=not r.c.normalize.enabled,
    ).summary()


def _collect_export(r: _Run) -> None:
    r.result.package = r.package


# Each stage's fingerprint covers the hash of the artifact of the stage before
# it, so a change anywhere reruns everything after it and nothing before.
_STAGES: tuple[_Stage, ...] = (
    _Stage("ingest", _ingest_inputs, lambda r: r.store_manifest, _ingest),
    _Stage(
        "generator",
        lambda r: {
            "store": _file_hash(r.store_manifest),
            **section_dict(r.c.generator),
            **({"terms": r.c.annotate.lexicons} if r.c.generator.entity_terms else {}),
        },
        lambda r: r.gen_manifest,
        _train_generator,
    ),
    _Stage(
        "generate",
        lambda r: {"generator": _file_hash(r.gen_manifest), **section_dict(r.c.generate)},
        lambda r: r.corpus_manifest,
        _generate,
    ),
    _Stage(
        "screen",
        lambda r: {
            "corpus": _file_hash(r.corpus_manifest),
            "store": _file_hash(r.store_manifest),
            "policy": r.ws.policy.sha256,
        },
        lambda r: r.release,
        _screen,
        _collect_screen,
    ),
    _Stage(
        "annotate",
        lambda r: {"release": _file_hash(r.release), **section_dict(r.c.annotate)},
        lambda r: r.ann_manifest,
        _annotate,
        _collect_annotate,
    ),
    _Stage(
        "normalize",
        lambda r: {
            "annotations": _file_hash(r.ann_manifest),
            "terms": r.c.annotate.lexicons,
            **section_dict(r.c.normalize),
            # The terminology's content: a file edited in place builds the normalizer again.
            "terminology": [_file_hash(p) for p, _ in _normalize_lexicons(r.c)],
        },
        _normalize_output,
        _normalize,
    ),
    _Stage(
        "ner",
        # The section's own "dev" (the path as written) overrides the hash: kept
        # so, because it is what existing pipeline states were fingerprinted with.
        lambda r: {
            "annotations": _file_hash(r.ann_manifest),
            "dev": _file_hash(r.dev) if r.dev else None,
            **section_dict(r.c.ner),
        },
        lambda r: r.model_manifest,
        _train_ner,
        _collect_ner,
    ),
    _Stage(
        "export",
        lambda r: {
            "model": _file_hash(r.model_manifest),
            **section_dict(r.c.export),
            "dev": _file_hash(r.dev) if r.dev else None,
            "normalizer": _file_hash(_normalize_output(r)),
        },
        lambda r: r.package / "manifest.json",
        _export,
        _collect_export,
    ),
)
STAGES = tuple(s.name for s in _STAGES)


def run(
    ws: Workspace,
    config: PipelineConfig,
    *,
    echo: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Run every stage that is not current; returns the summary."""
    started = time.monotonic()
    r = _Run(ws, config, echo or (lambda _: None))
    for entry in _STAGES:
        r.stage(entry)
    result = r.result
    result.records = len(open_store(ws).index())
    result.seconds = time.monotonic() - started
    ws.log(
        "pipeline run",
        args={"config": config.source},
        details={
            "stages": {s.name: s.status for s in result.stages},
            "released": result.released,
            "quarantined": result.quarantined,
            "dev_f1": result.dev_f1,
        },
    )
    return result


# --------------------------------------------------------------------------- demo

DEMO_CONFIG = """# The pipeline `appliance demo` ran; rerun with:
#   appliance pipeline run -w {ws} --config {config}
[pipeline]
export = "export/notes.csv"

[generator]
recipe = "{recipe}"
max_steps = {generator_steps}
entity_terms = {entity_terms}          # prompts name terms of terms.tsv, walking through all of them

[generate]
count = {synthetic}
batch_size = 32
seed = 1

[annotate]
annotator = ["lexicon"]
lexicons = ["terms.tsv"]      # {share:.0%} of the demo vocabulary's concepts, as a hospital's lists would be

[ner]
base = "scratch"
epochs = 12
batch_size = 16
mention_copies = {mention_copies}
term_holdout = {term_holdout}
"""


@dataclass
class DemoResult:
    folder: Path
    workspace: Path
    pipeline: PipelineResult
    predictions: Path
    fresh_notes: int
    f1: dict[str, Any]
    seconds: float
    # The annotator that taught the model, alone, on the same fresh notes.
    lexicon_f1: dict[str, Any] = field(default_factory=dict)
    terms: Path | None = None
    term_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # Concept codes on the fresh notes' gold mentions, when the package normalizes.
    codes: dict[str, Any] | None = None


def demo(
    folder: Path,
    *,
    notes: int = 1500,
    synthetic: int = 1000,
    fresh: int = 200,
    lexicon_share: float = 0.6,
    entity_terms: bool = True,
    mention_copies: int = AUTO_MENTION_COPIES,
    term_holdout: float = AUTO_TERM_HOLDOUT,
    recipe: str = "demo",
    generator_steps: int = 0,
    echo: Callable[[str], None] | None = None,
) -> DemoResult:
    """Demo data → the whole pipeline (demo recipe, lexicon annotator) → infer on a fresh export.

    The lexicon covers a seeded ``lexicon_share`` of the demo vocabulary's
    concepts (:func:`appliance.demo.vocabulary.write_term_list`); the fresh
    notes are scored twice, by the model and by that lexicon alone.
    ``recipe`` and ``generator_steps`` (0: the recipe's) size the generator.
    """
    say = echo or (lambda _: None)
    started = time.monotonic()
    folder = folder.expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    ws_dir = folder / "ws"
    export = folder / "export" / "notes.csv"
    if not export.exists():
        say(f"demo data: {notes} notes -> {export.parent}")
        demo_data.run(folder / "export", notes=notes, fmt="csv", seed=1)
    ws = Workspace.open(ws_dir) if (ws_dir / "appliance.toml").exists() else init(ws_dir)
    terms = folder / "terms.tsv"
    say(f"term list: {lexicon_share:.0%} of the demo vocabulary's concepts -> {terms}")
    term_counts = write_term_list(terms, share=lexicon_share, seed=1)
    config_path = folder / "pipeline.toml"
    config_path.write_text(
        DEMO_CONFIG.format(
            ws=ws_dir,
            config=config_path,
            synthetic=synthetic,
            share=lexicon_share,
            entity_terms=str(entity_terms).lower(),
            mention_copies=mention_copies,
            term_holdout=term_holdout,
            recipe=recipe,
            generator_steps=generator_steps,
        )
    )
    result = run(ws, load_config(config_path), echo=say)
    fresh_dir = folder / "fresh-export"
    fresh_export = fresh_dir / "notes.jsonl"
    if not fresh_export.exists():
        demo_data.run(fresh_dir, notes=fresh, fmt="jsonl", seed=2)
    predictions = folder / "predictions.jsonl"
    # The demo's own output, seconds to redo: a rerun with other settings (another package)
    # writes it again instead of refusing to resume it.
    predictions.unlink(missing_ok=True)
    predictions.with_name(predictions.name + ".progress").unlink(missing_ok=True)
    say(f"infer: {fresh} notes of a fresh demo export -> {predictions}")
    assert result.package is not None
    infer.run_ws(ws, fresh_export, package=result.package, out=predictions, fmt="jsonl")
    scores = evaluate(ws, gold=fresh_dir / "gold.jsonl", model=result.package)
    teacher = evaluate_annotator(
        fresh_dir / "gold.jsonl",
        AnnotatorOptions(annotators=("lexicon",), lexicons=(terms,)),
        egress=ws.policy.egress,
        schema=ws.policy.entity_schema(),
        language=ws.config.workspace.language,
    )
    codes = None
    if has_normalizer(result.package):
        codes = normalize_evaluate(fresh_dir / "gold.jsonl", normalizer=result.package).as_dict()
    return DemoResult(
        folder=folder,
        workspace=ws_dir,
        pipeline=result,
        predictions=predictions,
        fresh_notes=fresh,
        f1=scores,
        seconds=time.monotonic() - started,
        lexicon_f1=teacher,
        terms=terms,
        term_counts=term_counts,
        codes=codes,
    )
