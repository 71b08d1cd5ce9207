"""Generator: the tiny recipe trains inside the test on demo data, resumes, stays encrypted, samples deterministically."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path
from typing import ClassVar

import pytest

from appliance import corpus, demo
from appliance.errors import DependencyError, UsageError
from appliance.generator import artifact, sample, train
from appliance.generator.data import prepare
from appliance.generator.recipes import load_recipe
from appliance.records import ingest
from appliance.security.crypto import FILE_MAGIC
from appliance.workspace import init

STEPS = 16


def _recipe(**train_overrides):
    recipe = load_recipe("tiny")
    return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, **train_overrides))


def _workspace(root: Path, notes: int = 60, seed: int = 5, key: bytes | None = None):
    """A workspace with ``notes`` demo records; ``key`` fixes the data key (and so the held-out split)."""
    key_file = None
    if key is not None:
        key_file = root / "data.key"
        key_file.write_bytes(base64.b64encode(key) + b"\n")
        key_file.chmod(0o600)
    ws = init(root / "ws", key_file=key_file)
    export = demo.run(root / "export", notes=notes, fmt="jsonl", seed=seed)
    ingest.run(ws, export.export_path)
    return ws, export


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    ws, export = _workspace(root)
    result = train.run(
        ws,
        recipe=_recipe(max_steps=STEPS, eval_every=8, checkpoint_every=4),
        canaries=2,
        canary_repeats=3,
    )
    return ws, export, result


def test_tiny_recipe_trains_and_reports_perplexity(trained):
    ws, _, result = trained
    assert result.steps == STEPS and result.resumed_from == 0
    assert result.holdout_records > 0 and result.train_records + result.holdout_records == 60
    assert result.holdout_perplexity is not None and 1 < result.holdout_perplexity < 1000
    manifest = json.loads((ws.generator_dir / "manifest.json").read_text())
    assert manifest["recipe"]["recipe"]["name"] == "tiny"
    assert manifest["data"]["canaries"] == 2
    assert manifest["inputs"]["store"]["sha256"]
    # Loss went down from the uniform-guess level ln(vocab).
    import math

    assert result.final_loss < math.log(manifest["tokenizer"]["vocab_size"])
    assert not (ws.generator_dir / artifact.CHECKPOINT_FILE).exists()


def test_prefix_schema_comes_from_metadata(trained):
    ws, _, _ = trained
    gen = artifact.load_generator(ws)
    assert gen.schema.fields == ("note_type", "age_group", "sex", "diagnosis")
    prefix = next(iter(gen.sampler.counts))
    assert re.fullmatch(r"[a-z ]+, age group \d+, (female|male), [A-Z]\d\d,", prefix), prefix


def test_stored_generator_has_no_plaintext(trained):
    ws, _, _ = trained
    folder = ws.generator_dir
    for path in folder.iterdir():
        if path.name in ("manifest.json", "config.json"):
            continue
        assert path.read_bytes().startswith(FILE_MAGIC), f"{path.name} is not encrypted"
    blob = b"".join(p.read_bytes() for p in folder.iterdir())
    gen = artifact.load_generator(ws)
    for canary in gen.meta["canaries"]:
        assert canary["text"].encode() not in blob
    # Frequent words of the notes are in the tokenizer's vocabulary, never on disk in the clear.
    vocab = gen.tokenizer.get_vocab()
    for word in ("Ġpatient", "Ġmg", "Ġdischarge"):
        if word in vocab:
            assert word.encode() not in blob


def test_canaries_are_recorded_encrypted(trained):
    ws, _, _ = trained
    gen = artifact.load_generator(ws)
    assert len(gen.meta["canaries"]) == 2
    for canary in gen.meta["canaries"]:
        assert re.fullmatch(r"The patient's reference code is( \d){9}\.", canary["text"])
        assert canary["repeats"] == 3


def test_generation_is_deterministic_and_unscreened(trained):
    ws, _, _ = trained
    settings = sample.SamplingSettings(batch_size=3, seed=11, max_new_tokens=40)
    sample.run(ws, count=5, settings=settings, corpus="a")
    sample.run(ws, count=5, settings=settings, corpus="b")
    sample.run(ws, count=5, settings=dataclasses.replace(settings, seed=12), corpus="c")
    a, b, c = (list(corpus.read_corpus(ws, name)) for name in "abc")
    assert [n.text for n in a] == [n.text for n in b]
    assert [n.text for n in a] != [n.text for n in c]
    assert [n.id for n in a] == ["S000001", "S000002", "S000003", "S000004", "S000005"]
    assert all(n.status == "unscreened" and n.text for n in a)
    assert all(n.metadata.get("note_type") for n in a)
    manifest = json.loads((ws.synthetic_dir / "a" / "manifest.json").read_text())
    assert manifest["status"] == "unscreened" and manifest["written"] == 5
    assert manifest["generator_sha256"] == artifact.load_generator(ws).sha256
    for part in (ws.synthetic_dir / "a").glob("part-*"):
        assert part.read_bytes().startswith(FILE_MAGIC)


def test_generation_resumes_without_duplicates(trained):
    ws, _, _ = trained
    settings = sample.SamplingSettings(batch_size=2, seed=3, max_new_tokens=30)
    first = sample.run(ws, count=3, settings=settings, corpus="grow")
    second = sample.run(ws, count=7, settings=settings, corpus="grow")
    assert (first.new, second.new, second.resumed_from, second.written) == (3, 4, 3, 7)
    again = sample.run(ws, count=7, settings=settings, corpus="grow")
    assert again.new == 0
    notes = list(corpus.read_corpus(ws, "grow"))
    assert [n.id for n in notes] == [f"S{i:06d}" for i in range(1, 8)]
    with pytest.raises(UsageError, match="other sampling settings"):
        sample.run(
            ws, count=9, settings=dataclasses.replace(settings, temperature=0.7), corpus="grow"
        )


def test_fixed_prefix(trained):
    ws, _, _ = trained
    settings = sample.SamplingSettings(
        batch_size=2, seed=1, max_new_tokens=20, prefix="procedure note, age group 7, female, C50,"
    )
    sample.run(ws, count=2, settings=settings, corpus="fixed")
    notes = list(corpus.read_corpus(ws, "fixed"))
    assert {n.prefix for n in notes} == {"procedure note, age group 7, female, C50,"}
    assert notes[0].metadata == {
        "note_type": "procedure note",
        "age_group": "age group 7",
        "sex": "female",
        "diagnosis": "C50",
    }


def test_vllm_backend_says_how_to_install_vllm(trained, monkeypatch):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here")
    monkeypatch.setattr(sample, "find_vllm_python", lambda: None)  # nor in .venv-vllm
    ws, _, _ = trained
    with pytest.raises(DependencyError, match=r"install.sh --vllm"):
        sample.run(ws, count=1, backend="vllm", corpus="v")


@pytest.mark.vllm
def test_vllm_backend_with_a_real_vllm_server_in_its_own_environment(trained):
    """vLLM's CPU build in .venv-vllm (or APPLIANCE_VLLM_PYTHON) samples the generator."""
    import glob

    from appliance.llmserver import find_vllm_python

    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is importable here: the offline engine is used instead")
    if find_vllm_python() is None:
        pytest.skip("no vLLM: bash install.sh --vllm, or set APPLIANCE_VLLM_PYTHON")
    ws, _, _ = trained
    before = set(glob.glob("/dev/shm/appliance-generator-*"))
    settings = sample.SamplingSettings(batch_size=4, seed=4, max_new_tokens=24)
    result = sample.run(ws, count=6, backend="vllm", corpus="real-vllm", settings=settings)
    assert result.written == 6 and result.backend == "vllm" and result.tokens > 0
    notes = list(corpus.read_corpus(ws, "real-vllm"))
    assert [n.id for n in notes] == [f"S{i:06d}" for i in range(1, 7)]
    assert all(n.text for n in notes)
    # the decrypted generator is gone with the server
    assert set(glob.glob("/dev/shm/appliance-generator-*")) <= before


def test_interrupted_training_resumes_from_checkpoint(tmp_path):
    # A fixed key: with a fresh random one, about 1 run in 70 holds none of the
    # 40 records out, and the held-out loss to compare would not exist.
    ws, _ = _workspace(tmp_path, notes=40, seed=9, key=bytes(range(32)))
    recipe = _recipe(max_steps=12, eval_every=6, checkpoint_every=4)

    def stop_at_7(p):
        if p.step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.run(ws, recipe=recipe, progress=stop_at_7)
    checkpoint = ws.generator_dir / artifact.CHECKPOINT_FILE
    assert checkpoint.read_bytes().startswith(FILE_MAGIC)
    resumed = train.run(ws, recipe=recipe)
    assert resumed.resumed_from == 7 and resumed.steps == 12
    assert not checkpoint.exists()
    audit = [
        e
        for _, e in ws.audit.entries()
        if e["command"] == "generator train" and e["result"] != "started"
    ]
    assert audit[0]["result"].startswith("interrupted") and audit[1]["details"]["resumed_from"] == 7

    # The resumed run ends where an uninterrupted one does: same batches, same optimizer state.
    straight = train.run(ws, recipe=recipe)
    assert straight.resumed_from == 0
    assert straight.final_loss == pytest.approx(resumed.final_loss, rel=1e-4)
    assert resumed.holdout_records > 0 and resumed.holdout_loss is not None
    assert straight.holdout_loss == pytest.approx(resumed.holdout_loss, rel=1e-4)


def test_continue_from_local_checkpoint(trained, tmp_path):
    ws, export, _ = trained
    gen = artifact.load_generator(ws)
    with artifact.plain_model_folder(gen) as folder:
        base = tmp_path / "hospital-gpt2"
        import shutil

        shutil.copytree(folder, base)
    other = init(tmp_path / "ws2")
    ingest.run(other, export.export_path)
    result = train.run(other, recipe=_recipe(max_steps=4, eval_every=4), from_dir=base)
    assert result.steps == 4
    continued = artifact.load_generator(other)
    assert continued.tokenizer.get_vocab() == gen.tokenizer.get_vocab()
    manifest = json.loads((other.generator_dir / "manifest.json").read_text())
    assert manifest["inputs"]["from"]["sha256"]


def test_plain_model_folder_is_private_and_removed(trained):
    ws, _, _ = trained
    gen = artifact.load_generator(ws)
    with artifact.plain_model_folder(gen) as folder:
        assert (folder / "config.json").exists() and (folder / "tokenizer.json").exists()
        assert folder.stat().st_mode & 0o077 == 0
    assert not folder.exists()


def test_plain_folders_a_killed_run_left_are_removed_at_the_next_start(tmp_path):
    import os
    import subprocess
    import sys

    # A run killed with SIGKILL: its folder names a pid that no longer exists.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f"{artifact.PLAIN_PREFIX}stale"
    stale.mkdir()
    (stale / artifact.OWNER_FILE).write_text(dead.stdout.strip())
    (stale / "model.safetensors").write_bytes(b"weights")
    unnamed = tmp_path / f"{artifact.PLAIN_PREFIX}unnamed"  # killed before it named its owner
    unnamed.mkdir()
    os.utime(unnamed, (1, 1))
    starting = tmp_path / f"{artifact.PLAIN_PREFIX}starting"  # just made; naming its owner next
    starting.mkdir()
    live = tmp_path / f"{artifact.PLAIN_PREFIX}live"  # another run, still sampling
    live.mkdir()
    (live / artifact.OWNER_FILE).write_text(str(os.getpid()))
    other = tmp_path / "someone-elses"
    other.mkdir()
    removed = artifact.remove_stale_plain_folders(tmp_path)
    assert sorted(removed) == sorted([stale, unnamed])
    assert not stale.exists() and not unnamed.exists()
    assert live.exists() and starting.exists() and other.exists()


def test_training_stream_holds_no_real_identifier(trained):
    ws, export, _ = trained
    corpus, _ = prepare(ws, _recipe())
    stream = "\n".join(corpus.train_docs + corpus.holdout_docs).lower()
    gold = [json.loads(line) for line in export.gold_path.read_text(encoding="utf-8").splitlines()]
    values = {i["value"] for g in gold for i in g["identifiers"] if len(i["value"]) >= 4}
    assert values
    leaked = sorted(v for v in values if v.lower() in stream)
    assert not leaked, f"real identifiers in the training stream: {leaked[:5]}"
    assert sum(corpus.counts.values()) > 0


def test_swedish_tokenizer_keeps_words_whole(shared_corpora):
    from appliance.generator.tokenizer import tokens_per_word, train_tokenizer

    path = shared_corpora / "swedish-medical-wiki-silver" / "Wiki_annotated_60.txt"
    if not path.exists():
        pytest.skip("Swedish silver corpus not present")
    lines = path.read_text(encoding="utf-8").splitlines()
    # The silver labels are brackets around words; the tokenizer sees plain text.
    text = [re.sub(r"[{}\[\]()<>]", "", line) for line in lines if line.strip()]
    train_part, test_part = text[: len(text) * 9 // 10][:20000], text[len(text) * 9 // 10 :][:2000]
    tok = train_tokenizer(train_part, vocab_size=8000, min_frequency=2)
    ratio = tokens_per_word(tok, test_part)
    assert ratio < 1.8, f"{ratio:.2f} tokens per word: the tokenizer shreds Swedish words"
    # Common Swedish words, with å, ä, ö too, are single tokens, not byte pieces.
    single = [
        w for w in ("och", "är", "för", "också", "människor") if len(tok.encode(" " + w).ids) == 1
    ]
    assert len(single) >= 4, single


class _FakeVllm:
    """Stands in for the vllm package: loads the folder it is given with transformers,
    as vLLM would, and records how it was called."""

    calls: ClassVar[list] = []

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, model, tokenizer, seed, gpu_memory_utilization, max_model_len):
            from transformers import GPT2LMHeadModel

            _FakeVllm.calls.append(("LLM", model, max_model_len))
            self.folder = Path(model)
            self.model = GPT2LMHeadModel.from_pretrained(model, local_files_only=True)
            assert (self.folder / "tokenizer.json").exists()

        def generate(self, prompts, params, use_tqdm=False):
            import types

            import torch

            _FakeVllm.calls.append(("generate", [p.kwargs for p in params]))
            outs = []
            for prompt, p in zip(prompts, params, strict=True):
                ids = torch.tensor([prompt["prompt_token_ids"]])
                new = self.model.generate(
                    ids, max_new_tokens=p.kwargs["max_tokens"], do_sample=False
                )[0, ids.shape[1] :]
                outs.append(
                    types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=new.tolist())])
                )
            return outs


def test_vllm_backend_with_a_stand_in_engine(trained, monkeypatch):
    import sys

    ws, _, _ = trained
    monkeypatch.setitem(sys.modules, "vllm", _FakeVllm)
    _FakeVllm.calls.clear()
    result = sample.run(
        ws,
        count=3,
        backend="vllm",
        corpus="vllm",
        settings=sample.SamplingSettings(batch_size=2, seed=4, max_new_tokens=12),
    )
    assert result.written == 3 and result.backend == "vllm"
    kind, folder, max_len = _FakeVllm.calls[0]
    assert kind == "LLM" and max_len == artifact.load_generator(ws).model.config.n_positions
    assert not Path(folder).exists(), "the decrypted model folder must be removed after sampling"
    params = [p for call in _FakeVllm.calls if call[0] == "generate" for p in call[1]]
    assert len(params) == 3
    assert len({p["seed"] for p in params}) == 3  # one seed per request
    assert all(p["stop_token_ids"] == [0] and p["max_tokens"] <= 12 for p in params)
    notes = list(corpus.read_corpus(ws, "vllm"))
    assert [n.id for n in notes] == ["S000001", "S000002", "S000003"]


def test_entity_terms_condition_training_and_cover_the_list_in_generation(tmp_path):
    from click.testing import CliRunner

    from appliance.annotate.lexicon import demo_lexicon
    from appliance.cli import cli
    from appliance.generator.prefixes import ENTITY_LINE, EntityTerms

    ws, _ = _workspace(tmp_path, notes=40)
    terms = tmp_path / "drugs.tsv"
    terms.write_text(
        "term\tlabel\nmetformin\tDRUG\nwarfarin\tDRUG\nlisinopril\tDRUG\nzzquinol\tDRUG\n"
    )
    runner = CliRunner()
    base = ["generator", "train", "-w", str(ws.root), "--recipe", "tiny", "--max-steps", "4"]
    result = runner.invoke(cli, [*base, "--entity-terms", "demo"])
    assert result.exit_code == 0, result.output
    assert re.search(r"entity terms named in \d+ of \d+ training records", result.output)
    manifest = json.loads((ws.generator_dir / "manifest.json").read_text())
    named = manifest["data"]["entity_terms"]
    assert named["notes_naming_terms"] > 0 and named["terms_named"] >= named["notes_naming_terms"]
    assert named["sources"][0]["path"] == demo_lexicon().sources[0]["path"]
    gen = artifact.load_generator(ws)
    assert gen.entities is not None
    assert set(gen.entities.vocabulary) == {"DIAGNOSIS", "DRUG", "PROCEDURE"}

    # The training text names, on the line after the metadata, terms the note mentions.
    from appliance.annotate.annotators import AnnotatorOptions
    from appliance.annotate.annotators.lexicon import term_finder

    find, vocab, sources = term_finder(AnnotatorOptions(), ws.policy.entity_schema(), "en")
    corpus_, _ = prepare(ws, load_recipe("tiny"), EntityTerms(find, vocab, sources))
    doc = next(d for d in corpus_.train_docs if f"\n{ENTITY_LINE}" in d)
    meta, line, body = doc.split("\n", 2)
    assert meta.endswith(",")
    for term in line.removeprefix(ENTITY_LINE).split("; "):
        assert term.casefold() in body.casefold()

    # Generation names terms of the list (never note text), deterministically for a seed.
    settings = sample.SamplingSettings(batch_size=4, seed=2, max_new_tokens=10)
    sample.run(ws, count=6, settings=settings, corpus="e1")
    sample.run(ws, count=6, settings=settings, corpus="e2")
    e1, e2 = (list(corpus.read_corpus(ws, n)) for n in ("e1", "e2"))
    assert [n.prefix for n in e1] == [n.prefix for n in e2]
    listed = {t for v in vocab.values() for t in v}
    lines = [n.prefix.split("\n")[1] for n in e1 if "\n" in n.prefix]
    assert lines and all(x.startswith(ENTITY_LINE) for x in lines)
    assert {t for x in lines for t in x.removeprefix(ENTITY_LINE).split("; ")} <= listed
    assert all(n.metadata.get("note_type") for n in e1)  # the metadata line still parses
    off = dataclasses.replace(settings, entity_terms=False)
    sample.run(ws, count=2, settings=off, corpus="e3")
    assert all(ENTITY_LINE not in n.prefix for n in corpus.read_corpus(ws, "e3"))

    # A term file of the user's: its terms (and its hash) condition the generator.
    result = runner.invoke(cli, [*base, "--entity-terms", str(terms)])
    assert result.exit_code == 0, result.output
    gen = artifact.load_generator(ws)
    assert gen.entities is not None and gen.entities.vocabulary == {
        "DRUG": ["lisinopril", "metformin", "warfarin", "zzquinol"]
    }
    # A list no record mentions is said, not silently trained on.
    unseen = tmp_path / "unseen.tsv"
    unseen.write_text("term\tlabel\nzzquinol\tDRUG\n")
    result = runner.invoke(cli, [*base, "--entity-terms", str(unseen)])
    assert result.exit_code == 0 and "no training record mentions a term" in result.output
    bad = runner.invoke(cli, [*base, "--entity-terms", str(tmp_path / "missing.tsv")])
    assert bad.exit_code != 0 and bad.output.startswith("error: ")
    assert len(bad.output.strip().splitlines()) == 1
    unlabelled = tmp_path / "unlabelled.tsv"
    unlabelled.write_text("term\nmetformin\n")
    bad = runner.invoke(cli, [*base, "--entity-terms", str(unlabelled)])
    assert bad.exit_code != 0 and "give it as TYPE=FILE" in bad.output
    mixed = runner.invoke(cli, [*base, "--entity-terms", "demo", "--entity-terms", str(terms)])
    assert mixed.exit_code != 0 and "either `demo` or term files" in mixed.output


def test_vllm_server_that_stops_answering_is_a_one_line_error():
    import socket
    from types import SimpleNamespace

    import httpx

    from appliance.errors import ApplianceError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    backend = object.__new__(sample.VllmServerBackend)
    backend.settings = sample.SamplingSettings()
    backend.eos = 0
    backend.server = SimpleNamespace(endpoint=f"http://127.0.0.1:{port}/v1")
    backend.client = httpx.Client(base_url=backend.server.endpoint, trust_env=False)
    with pytest.raises(ApplianceError, match="stopped answering: ConnectError"):
        backend.complete([[1, 2, 3]], seed=1, max_new_tokens=[4])
    backend.client.close()
