"""``appliance pipeline run`` and ``appliance demo``: every stage in order from one config.

    ingest → generator train → generate → screen → annotate → ner train → export

Each stage is skipped when its artifact is current: the pipeline keeps, in
``reports/pipeline-state.json``, a fingerprint per stage (its parameters and
the hashes of its inputs) and the hash of what it produced; a stage runs
again when either changed. A stage interrupted midway resumes (the stages
themselves resume: checkpoints, generated parts, the LLM answer cache), and
a stage whose inputs changed starts from a clean output folder.

The config is TOML; every key is optional except ``[pipeline] export``::

    [pipeline]
    export = "export/notes.csv"   # relative to the config file
    format = "auto"
    [generator]
    recipe = "small"              # or a recipe file
    from = ""                     # a local checkpoint folder to continue
    canaries = 0
    max_steps = 0                 # 0: the recipe's
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
    [ner]
    base = "scratch"              # or a local encoder folder
    dev = ""                      # a gold file of real annotated notes (optional)
    epochs = 20
    max_steps = 0
    batch_size = 16
    name = "default"
    [export]
    int8 = false
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import _read_toml
from appliance.errors import ConfigError
from appliance.security.crypto import atomic_write
from appliance.workspace import Workspace, hashed

STATE_FILE = "pipeline-state.json"
STAGES = ("ingest", "generator", "generate", "screen", "annotate", "ner", "export")

_DEFAULTS: dict[str, dict[str, Any]] = {
    "pipeline": {"export": None, "format": "auto"},
    "generator": {"recipe": "small", "from": "", "canaries": 0, "max_steps": 0},
    "generate": {
        "count": 2000,
        "corpus": "default",
        "backend": "transformers",
        "temperature": 1.0,
        "top_k": 50,
        "top_p": 0.95,
        "batch_size": 16,
        "seed": 0,
    },
    "annotate": {
        "annotator": ["lexicon"],
        "lexicons": [],
        "endpoint": "",
        "model": "",
        "prompt": ["zero-shot"],
        "combine": "union",
        "name": "default",
    },
    "ner": {
        "base": "scratch",
        "dev": "",
        "epochs": 20,
        "max_steps": 0,
        "batch_size": 16,
        "name": "default",
    },
    "export": {"int8": False},
}


@dataclass
class PipelineConfig:
    sections: dict[str, dict[str, Any]]
    base_dir: Path
    source: str

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.sections[section]

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
    sections: dict[str, dict[str, Any]] = {}
    where = str(path) if path else "the pipeline settings"
    for name, value in data.items():
        if name not in _DEFAULTS:
            raise ConfigError(f"{where}: unknown section [{name}] (known: {', '.join(_DEFAULTS)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
    for name, defaults in _DEFAULTS.items():
        given = dict(data.get(name, {}))
        given.update((overrides or {}).get(name, {}))
        for key, value in given.items():
            if key not in defaults:
                raise ConfigError(
                    f"{where}: unknown key {name}.{key} (known: {', '.join(defaults)})"
                )
            want = defaults[key]
            ok = (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
                if isinstance(want, list)
                else isinstance(value, str | type(None))
                if want is None or isinstance(want, str)
                else isinstance(value, bool)
                if isinstance(want, bool)
                else isinstance(value, int | float) and not isinstance(value, bool)
                if isinstance(want, float)
                else isinstance(value, int) and not isinstance(value, bool)
            )
            if not ok:
                kind = type(want).__name__ if want is not None else "str"
                raise ConfigError(f"{where}: {name}.{key} must be a {kind}, not {value!r}")
        sections[name] = {**defaults, **given}
    if not sections["pipeline"]["export"]:
        raise ConfigError(f"{where}: [pipeline] export is required (the record export to ingest)")
    if sections["generate"]["count"] < 1:
        raise ConfigError(f"{where}: generate.count must be at least 1")
    base = path.parent.resolve() if path is not None else Path.cwd()
    return PipelineConfig(sections, base, where)


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

    def record(self, stage: str, fingerprint: str, output: Path, info: dict[str, Any]) -> None:
        self.data[stage] = {"fingerprint": fingerprint, "output": _file_hash(output), **info}
        atomic_write(self.path, (json.dumps(self.data, indent=1) + "\n").encode(), 0o640)


def run(
    ws: Workspace,
    config: PipelineConfig,
    *,
    echo: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Run every stage that is not current; returns the summary."""
    from appliance.annotate.annotators import AnnotatorOptions
    from appliance.annotate.store import annotations_path
    from appliance.annotate.store import run as annotate
    from appliance.generator import sample, train
    from appliance.generator.artifact import generator_dir
    from appliance.ner import export as ner_export
    from appliance.ner import train as ner_train
    from appliance.ner.settings import NerSettings
    from appliance.privacy import screen
    from appliance.privacy.release import RELEASE_FILE, load_release
    from appliance.records import ingest

    say = echo or (lambda _: None)
    state = _State(ws)
    result = PipelineResult()
    started = time.monotonic()
    c = config
    export = c.path(str(c["pipeline"]["export"]))
    assert export is not None
    store_manifest = ws.records_dir / "store.json"

    def stage(name: str, fingerprint: str, output: Path, work: Callable[[], str]) -> None:
        t0 = time.monotonic()
        if state.current(name, fingerprint, output):
            summary = state.data[name].get("summary", "")
            result.stages.append(StageReport(name, "skipped", 0.0, f"current: {summary}"))
            say(f"{name}: current, skipped")
            return
        say(f"{name}: running")
        summary = work()
        seconds = time.monotonic() - t0
        state.record(name, fingerprint, output, {"summary": summary, "seconds": round(seconds, 1)})
        result.stages.append(StageReport(name, "ran", seconds, summary))
        say(f"{name}: {summary}")

    # -- ingest
    if not export.exists():
        from appliance.errors import InputError

        raise InputError(f"{export}: export not found (pipeline.export in {c.source})")
    fp = _digest({"export": hashed(export)["sha256"], "format": c["pipeline"]["format"]})
    stage(
        "ingest",
        fp,
        store_manifest,
        lambda: ingest.run(ws, export, fmt=c["pipeline"]["format"]).summary(),
    )

    # -- generator
    g = c["generator"]
    gen_manifest = generator_dir(ws) / "manifest.json"
    fp = _digest({"store": _file_hash(store_manifest), **g})

    def train_generator() -> str:
        recipe = c.path(g["recipe"]) if g["recipe"].endswith(".toml") else g["recipe"]
        return train.run(
            ws,
            recipe=recipe if recipe is not None else g["recipe"],
            from_dir=c.path(g["from"]),
            canaries=int(g["canaries"]),
            max_steps=int(g["max_steps"]) or None,
        ).summary()

    stage("generator", fp, gen_manifest, train_generator)

    # -- generate
    gn = c["generate"]
    corpus = str(gn["corpus"])
    corpus_manifest = sample.corpus_dir(ws, corpus) / "manifest.json"
    fp = _digest({"generator": _file_hash(gen_manifest), **gn})

    def generate() -> str:
        folder = sample.corpus_dir(ws, corpus)
        if folder.exists() and state.data.get("generate", {}).get("fingerprint") != fp:
            previous = json.loads(corpus_manifest.read_text()) if corpus_manifest.exists() else {}
            if previous.get("generator_sha256") or previous.get("stage") == "generate":
                shutil.rmtree(folder)  # made from another generator or settings: start over
        settings = sample.SamplingSettings(
            temperature=float(gn["temperature"]),
            top_k=int(gn["top_k"]),
            top_p=float(gn["top_p"]),
            batch_size=int(gn["batch_size"]),
            seed=int(gn["seed"]),
        )
        return sample.run(
            ws, count=int(gn["count"]), backend=gn["backend"], settings=settings, corpus=corpus
        ).summary()

    stage("generate", fp, corpus_manifest, generate)

    # -- screen
    release = sample.corpus_dir(ws, corpus) / RELEASE_FILE
    fp = _digest(
        {
            "corpus": _file_hash(corpus_manifest),
            "store": _file_hash(store_manifest),
            "policy": ws.policy.sha256,
        }
    )

    def run_screen() -> str:
        r = screen.run(ws, corpus=corpus)
        result.report = r.report_html
        return r.summary()

    stage("screen", fp, release, run_screen)
    body = load_release(ws, corpus)
    result.released = int(body["counts"]["released"])
    result.quarantined = int(body["counts"]["quarantined"])
    written = json.loads(corpus_manifest.read_text()).get("written", 0)
    result.generated = max(int(written), result.released + result.quarantined)
    # Notes the screen could not screen (empty ones) are neither released nor quarantined.
    result.rejected = result.generated - result.released - result.quarantined
    if result.report is None:
        result.report = ws.root / str(body["report"]["html"]["path"])

    # -- annotate
    a = c["annotate"]
    ann_name = str(a["name"])
    ann_manifest = annotations_path(ws, ann_name) / "manifest.json"
    fp = _digest({"release": _file_hash(release), **a})

    def run_annotate() -> str:
        options = AnnotatorOptions(
            annotators=tuple(a["annotator"]),
            lexicons=tuple(p for p in (c.path(x) for x in a["lexicons"]) if p is not None),
            endpoint=a["endpoint"] or None,
            model=a["model"] or None,
            prompts=tuple(a["prompt"]),
            combine=a["combine"],
        )
        return annotate(ws, options, corpus=corpus, name=ann_name).summary()

    stage("annotate", fp, ann_manifest, run_annotate)
    ann = json.loads(ann_manifest.read_text())
    result.annotated = int(ann.get("counts", {}).get("annotated", 0))
    result.entities = int(ann.get("counts", {}).get("entities", 0))

    # -- ner train
    n = c["ner"]
    ner_name = str(n["name"])
    model_manifest = ner_train.model_root(ws, ner_name) / "manifest.json"
    dev = c.path(n["dev"])
    fp = _digest(
        {
            "annotations": _file_hash(ann_manifest),
            "dev": _file_hash(dev) if dev else None,
            **n,
        }
    )

    def run_ner() -> str:
        settings = NerSettings(
            epochs=int(n["epochs"]),
            max_steps=int(n["max_steps"]) or None,
            batch_size=int(n["batch_size"]),
        )
        base = n["base"]
        if base != "scratch":
            base = str(c.path(base))
        return ner_train.run(
            ws, base=base, annotations=ann_name, dev_gold=dev, name=ner_name, settings=settings
        ).summary()

    stage("ner", fp, model_manifest, run_ner)
    try:
        meta = json.loads(model_manifest.read_text())
        f1 = meta["metrics"]["dev"]["exact"]["micro"]["f1"]
        result.dev_f1 = float(f1) if f1 is not None else None
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        result.dev_f1 = None

    # -- export
    e = c["export"]
    package = ner_train.model_root(ws, ner_name) / "package"
    fp = _digest(
        {"model": _file_hash(model_manifest), **e, "dev": _file_hash(dev) if dev else None}
    )
    stage(
        "export",
        fp,
        package / "manifest.json",
        lambda: ner_export.run(ws, name=ner_name, int8=bool(e["int8"]), dev_gold=dev).summary(),
    )
    result.package = package
    from appliance.records.ingest import open_store

    result.records = len(open_store(ws).index())
    result.seconds = time.monotonic() - started
    ws.log(
        "pipeline run",
        args={"config": c.source},
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
recipe = "demo"

[generate]
count = {synthetic}
batch_size = 32
seed = 1

[annotate]
annotator = ["lexicon"]

[ner]
base = "scratch"
epochs = 12
batch_size = 16
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


def demo(
    folder: Path,
    *,
    notes: int = 1500,
    synthetic: int = 1000,
    fresh: int = 200,
    echo: Callable[[str], None] | None = None,
) -> DemoResult:
    """Demo data → the whole pipeline (demo recipe, lexicon annotator) → infer on a fresh export."""
    from appliance import demo as demo_data
    from appliance.ner import infer
    from appliance.ner.evaluate import run as evaluate
    from appliance.workspace import init

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
    config_path = folder / "pipeline.toml"
    config_path.write_text(DEMO_CONFIG.format(ws=ws_dir, config=config_path, synthetic=synthetic))
    result = run(ws, load_config(config_path), echo=say)
    fresh_dir = folder / "fresh-export"
    fresh_export = fresh_dir / "notes.jsonl"
    if not fresh_export.exists():
        demo_data.run(fresh_dir, notes=fresh, fmt="jsonl", seed=2)
    predictions = folder / "predictions.jsonl"
    say(f"infer: {fresh} notes of a fresh demo export -> {predictions}")
    assert result.package is not None
    infer.run_ws(ws, fresh_export, package=result.package, out=predictions, fmt="jsonl")
    scores = evaluate(ws, gold=fresh_dir / "gold.jsonl", model=result.package)
    return DemoResult(
        folder=folder,
        workspace=ws_dir,
        pipeline=result,
        predictions=predictions,
        fresh_notes=fresh,
        f1=scores,
        seconds=time.monotonic() - started,
    )
