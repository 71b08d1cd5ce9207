"""A reduced pipeline end to end: every stage runs, a rerun skips what is current, bad configs fail cleanly."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.errors import ConfigError

CONFIG = """
[pipeline]
export = "export/notes.csv"

[generator]
recipe = "tiny"
max_steps = 40
entity_terms = true

[generate]
count = 40
batch_size = 20

[annotate]
annotator = ["lexicon"]
lexicons = ["terms.tsv"]

[ner]
base = "scratch"
epochs = 3
max_steps = {ner_steps}
batch_size = 8
"""


@pytest.fixture
def project(tmp_path: Path) -> tuple[Any, Path]:
    from appliance import demo
    from appliance.workspace import init

    demo.run(tmp_path / "export", notes=120, fmt="csv", seed=5)
    (tmp_path / "pipeline.toml").write_text(CONFIG.format(ner_steps=30))
    # A 40-step generator writes barely a word of the demo vocabularies, so the
    # lexicon names what it does write often (this test is about the stages, not quality).
    (tmp_path / "terms.tsv").write_text(
        "term\tlabel\tcode\nmg\tDRUG\tRX1\nwith\tDIAGNOSIS\tDX1\nand\tDIAGNOSIS\tDX2\n"
    )
    return init(tmp_path / "ws"), tmp_path


def test_pipeline_runs_every_stage_then_skips_what_is_current(project: tuple[Any, Path]) -> None:
    from appliance.pipeline import STAGES, load_config, run

    ws, root = project
    first = run(ws, load_config(root / "pipeline.toml"))
    assert [s.name for s in first.stages] == list(STAGES)
    assert all(s.status == "ran" for s in first.stages)
    assert first.records == 120
    assert first.generated == 40
    assert first.released + first.quarantined + first.rejected == 40  # rejected: empty notes
    assert first.report is not None
    counts = json.loads(first.report.with_suffix(".json").read_text())["counts"]
    assert (first.released, first.quarantined, first.rejected) == (
        counts["released"],
        counts["quarantined"],
        counts["rejected"],
    )
    assert first.released > 0 and first.annotated > 0
    # The generator was conditioned on the [annotate] term list.
    gen = json.loads((ws.generator_dir / "manifest.json").read_text())["data"]["entity_terms"]
    assert gen["sources"][0]["path"].endswith("terms.tsv") and gen["notes_naming_terms"] > 0
    assert first.package is not None and (first.package / "model.onnx").exists()
    # The term list's codes gave a normalizer, packed with the model.
    assert (first.package / "normalizer-concepts.jsonl").exists()
    assert first.report is not None and first.report.suffix == ".html" and first.report.exists()
    # One rule for the whole workspace: nothing in it is readable by group or others.
    shared = [
        f"{p.relative_to(ws.root)} {stat.S_IMODE(p.lstat().st_mode):o}"
        for p in [ws.root, *ws.root.rglob("*")]
        if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077
    ]
    assert not shared, shared

    # Only the NER stage's parameters change: it and export run again, nothing before them.
    (root / "pipeline.toml").write_text(CONFIG.format(ner_steps=20))
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "pipeline", "run", "-w", str(ws.root), "--config", str(root / "pipeline.toml")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    status = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()[: len(STAGES)]}
    assert status == {
        "ingest": "skipped",
        "generator": "skipped",
        "generate": "skipped",
        "screen": "skipped",
        "annotate": "skipped",
        "normalize": "skipped",
        "ner": "ran",
        "export": "ran",
    }
    assert "model package:" in proc.stdout and "privacy report:" in proc.stdout
    entries = [e for _, e in ws.audit.entries() if e["command"] == "pipeline run"]
    assert len(entries) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pipeline]\n", "export is required"),
        ('[pipeline]\nexport = "x.csv"\n[generat]\n', "unknown section"),
        ('[pipeline]\nexport = "x.csv"\n[generate]\ncount = "many"\n', "generate.count must be"),
        ('[pipeline]\nexport = "x.csv"\n[ner]\nbse = "scratch"\n', "unknown key ner.bse"),
        ('[pipeline]\nexport = "x.csv"\n[generate]\ncount = 0\n', "at least 1"),
        ('[pipeline]\nexport = "x.csv"\n[annotate]\nhead_nouns = "no"\n', "head_nouns must be"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    from appliance.pipeline import load_config

    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_annotate_section_passes_the_lexicon_switches(tmp_path: Path) -> None:
    from appliance.pipeline import annotator_options, load_config

    path = tmp_path / "p.toml"
    path.write_text(
        '[pipeline]\nexport = "x.csv"\n[annotate]\nabbreviations = false\nunknown_words = true\n'
    )
    options = annotator_options(load_config(path))
    assert (options.abbreviations, options.variants, options.head_nouns) == (False, True, True)
    assert options.unknown_words is True


def test_cli_missing_export_and_config(workspace: Any, tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[pipeline]\nexport = "nothing.csv"\n')
    base = [sys.executable, "-m", "appliance", "pipeline", "run", "-w", str(workspace.root)]
    proc = subprocess.run([*base, "--config", str(path)], capture_output=True, text=True)
    assert proc.returncode == 5 and "export not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(
        [*base, "--config", str(tmp_path / "no.toml")], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_demo_scores_the_term_list_and_the_model_on_the_same_fresh_notes(tmp_path: Path) -> None:
    """`appliance demo` end to end, with a tiny generator: what it prints and what it leaves."""
    from appliance.pipeline import demo

    result = demo(
        tmp_path / "d", notes=150, synthetic=60, fresh=20, recipe="demo", generator_steps=200
    )
    assert result.terms is not None and result.terms.is_file()
    kept = result.term_counts
    assert all(0 < c["kept"] < c["concepts"] for c in kept.values())  # a partial term list
    assert {s.name: s.status for s in result.pipeline.stages} == dict.fromkeys(
        ("ingest", "generator", "generate", "screen", "annotate", "normalize", "ner", "export"),
        "ran",
    )
    # The package normalizes: the fresh notes' gold mentions were linked and scored.
    assert result.codes is not None and result.codes["mappable"] > 0
    assert result.codes["normalizer"]["all"]["accuracy_at_1"] > 0.5
    ws = json.loads((result.workspace / "models" / "generator" / "manifest.json").read_text())
    assert ws["data"]["entity_terms"]["sources"][0]["path"].endswith("terms.tsv")
    ner = json.loads(
        (result.workspace / "models" / "ner" / "default" / "manifest.json").read_text()
    )
    assert ner["settings"]["mention_copies"] == 1
    assert ner["data"]["source"]["mention_replacement"]["terms"] == (
        "the lexicon of the training annotations"
    )
    # Terms were held out of training, and export judged the package's default on them.
    assert ner["settings"]["term_holdout"] == 0.2
    assert ner["data"]["source"]["term_holdout"]["mentions"] > 0
    package = json.loads((result.pipeline.package / "ner.json").read_text())
    combine = package["lexicon"]["combine"]
    assert "held_out_terms" in combine and result.f1["combine"] == combine["default"]
    comparison = result.f1["comparison"]
    assert {"model", "lexicon", "union"} <= set(comparison)
    lexicon_alone = result.lexicon_f1["seqeval"]["micro"]["f1"]
    # The same term list scored two ways gives the same figure: directly and inside the package.
    assert comparison["lexicon"]["seqeval"]["micro"]["f1"] == pytest.approx(lexicon_alone, abs=1e-3)
    assert 0 < lexicon_alone < 1  # the fresh notes mention concepts the list lacks
    assert len(result.predictions.read_text().splitlines()) == 20


def test_a_running_stage_says_something_at_least_every_interval() -> None:
    import time

    from appliance.pipeline import Heartbeat

    lines: list[str] = []
    with Heartbeat(lines.append, "generator", every=0.3) as beat:
        time.sleep(0.75)  # quiet: the watcher speaks for it
        assert lines and lines[0].startswith("generator: running (0m00s)")
        quiet = len(lines)
        for i in range(50):  # chatty: throttled to one line an interval
            beat.update(f"step {i}/50")
            time.sleep(0.01)
    assert len(lines) - quiet <= 3
    assert any(line.startswith("generator: step ") for line in lines[quiet:])
    gaps = len(lines)
    time.sleep(0.5)
    assert len(lines) == gaps  # stopped with the stage
