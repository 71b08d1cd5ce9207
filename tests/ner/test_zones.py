"""Zones of NER models: training on real gold notes makes a real-zone model, stored and exported encrypted.

A gold file with distinctive identifiers (a national ID, a phone number, a
surname, a note-id prefix) is trained on in a workspace; then no file under
the workspace's ``models/`` folder or the exported package holds any of them
in plaintext, while the decrypted tokenizer shows they were learned (so the
search would have found them). The package still runs with the workspace key,
and without it fails with one line.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.cli import cli
from appliance.documents import read_gold
from appliance.errors import KeyRequired
from appliance.ner import train as train_mod
from appliance.ner import zones
from appliance.ner.evaluate import evaluate
from appliance.ner.export import export_package
from appliance.ner.model import load_model, read_tokenizer_json
from appliance.ner.package import verify_package
from appliance.ner.runtime import onnx_tagger, torch_tagger
from appliance.ner.train import train_model
from appliance.security.crypto import FILE_MAGIC, read_encrypted
from tests.ner_helpers import demo_export, one_thread, tiny_settings

NATIONAL_ID = "19121212-1212"
PHONE = "0705551234"
SURNAME = "Quistbergh"
ID_PREFIX = "QX7731"
# What a byte search looks for; the tokenizer lower-cases words, so both cases of the name.
NEEDLES = [
    b"19121212",
    PHONE.encode(),
    SURNAME.encode(),
    SURNAME.lower().encode(),
    ID_PREFIX.encode(),
]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


def _real_gold(folder: Path, notes: int = 30) -> Path:
    """Demo gold notes, each with a real-looking identity line appended (offsets unchanged)."""
    demo_gold = demo_export(folder / "demo", "jsonl", notes=notes).parent / "gold.jsonl"
    out = folder / "hospital-gold.jsonl"
    with open(demo_gold, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for n, line in enumerate(src):
            doc = json.loads(line)
            doc["id"] = f"{ID_PREFIX}-{n:04d}"
            doc["text"] += (
                f"\n\nPatient: Anna {SURNAME}, personal ID {NATIONAL_ID}, phone {PHONE}.\n"
            )
            dst.write(json.dumps(doc) + "\n")
    return out


def _files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


def _leaks(*roots: Path) -> list[tuple[str, bytes]]:
    """(file, needle) for every identifier found in plaintext under ``roots``."""
    found = []
    for path in _files(*roots):
        data = path.read_bytes()
        found += [(str(path), n) for n in NEEDLES if n in data]
    return found


def _invoke(*args: object) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    from appliance.workspace import init

    root = tmp_path_factory.mktemp("zones")
    ws = init(root / "ws")
    gold = _real_gold(root)
    seen_checkpoint: list[list[tuple[str, bytes]]] = []
    model_root = ws.models_dir / "ner" / "real"

    def look_mid_training(p):
        # Right after the first checkpoint: it is encrypted, and nothing on disk leaks.
        if p.phase != "ner" or p.step != 4 or seen_checkpoint:
            return
        assert (model_root / "model" / train_mod.CHECKPOINT_ENC).is_file()
        assert not (model_root / "model" / train_mod.CHECKPOINT).exists()
        seen_checkpoint.append(_leaks(ws.models_dir))

    result = train_mod.run(
        ws,
        train_gold=gold,
        name="real",
        settings=tiny_settings(checkpoint_every=3),
        progress=look_mid_training,
    )
    out = _invoke("export", "-w", ws.root, "--name", "real")
    return {
        "ws": ws,
        "gold": gold,
        "result": result,
        "root": model_root,
        "package": model_root / "package",
        "export_output": out,
        "mid_training": seen_checkpoint,
    }


def test_gold_notes_make_a_real_zone_model_with_reasons(real):
    ws, gold, root = real["ws"], real["gold"], real["root"]
    sha = json.loads((root / "manifest.json").read_text())["inputs"][0]["sha256"]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["zone"] == "real" and manifest["data"]["real_notes_seen"] is True
    assert manifest["encrypted"] == {"key_id": ws.data_key.key_id}
    reasons = manifest["zone_reasons"]
    assert f"trained on gold notes {gold.name} (sha256 {sha})" in reasons
    assert any(r.startswith("WordPiece tokenizer learned from gold notes") for r in reasons)
    assert any(r.startswith("development notes split from gold notes") for r in reasons)
    meta = json.loads((root / "model" / "ner.json").read_text())
    assert meta["zone"] == "real" and meta["zone_reasons"] == reasons
    assert meta["encrypted"]["key_id"] == ws.data_key.key_id
    assert "ids" not in meta["data"]["dev"] and "ids_sha256" in meta["data"]["dev"]
    assert "real zone" in real["result"].summary()
    audit = [e for _, e in ws.audit.entries() if e["command"] == "ner train"]
    assert audit[-1]["details"]["zone"] == "real"

    pkg = real["package"]
    assert "real zone: encrypted" in real["export_output"]
    signed = verify_package(pkg, _pub(ws))
    assert signed["zone"] == "real" and signed["zone_reasons"] == reasons
    assert signed["encrypted"]["key_id"] == ws.data_key.key_id
    assert set(signed["files"]) == {
        "model.onnx.enc",
        "tokenizer.json.enc",
        "labels.json",
        "ner.json",
        "MODEL_CARD.md",
    }
    runtime = json.loads((pkg / "ner.json").read_text())
    assert runtime["zone"] == "real" and runtime["encrypted"]["key_id"] == ws.data_key.key_id
    card = (pkg / "MODEL_CARD.md").read_text()
    assert "No real record reached training" not in card and "never shown" not in card
    assert "Real zone: this model saw real data" in card
    assert "must stay inside the hospital" in card and ws.data_key.key_id in card
    assert f"trained on gold notes {gold.name}" in card


def _pub(ws):
    from appliance.security.keys import load_public_key

    return load_public_key(ws.signing_key_path.with_suffix(".pub"))


def test_no_identifier_in_plaintext_under_models_or_in_the_package(real):
    ws, root, pkg = real["ws"], real["root"], real["package"]
    # Positive control: the text was learned, so a plaintext copy would be found.
    vocab = json.loads(read_tokenizer_json(root / "model", ws.data_key))["model"]["vocab"]
    assert {"19121212", PHONE, SURNAME.lower()} <= set(vocab)
    dev = read_encrypted(root / "dev.jsonl.enc", ws.data_key, label=zones.LABEL_DEV)
    assert ID_PREFIX.encode() in dev and NATIONAL_ID.encode() in dev
    # Nothing leaks: not mid-training (the checkpoint), not after training, not in the package.
    assert real["mid_training"] == [[]]
    assert _leaks(ws.models_dir, pkg) == []
    names = {p.name for p in _files(root)}
    assert {"dev.jsonl.enc", "model.safetensors.enc", "tokenizer.json.enc"} <= names
    assert not names & {"dev.jsonl", "model.safetensors", "tokenizer.json", "checkpoint.pt"}
    # Every file that can hold real text is encrypted and private.
    for path in _files(root):
        if path.name.endswith(".enc"):
            assert path.read_bytes().startswith(FILE_MAGIC)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for name in ("config.json", "ner.json"):
        assert stat.S_IMODE((root / "model" / name).stat().st_mode) == 0o600


def test_real_zone_package_infers_with_the_key_like_the_model(real, tmp_path):
    ws, pkg = real["ws"], real["package"]
    export = demo_export(tmp_path / "ex", "jsonl", notes=8)
    _invoke(
        "infer",
        export,
        "-w",
        ws.root,
        "--name",
        "real",
        "--out",
        tmp_path / "o.jsonl",
        "--threads",
        1,
    )
    got = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    texts = [json.loads(line)["text"] for line in export.read_text().splitlines()]
    expected = torch_tagger(real["root"] / "model", device="cpu", key=ws.data_key).predict(texts)
    assert len(got) == len(texts) == 8
    assert sum(len(g["entities"]) for g in got) > 0
    for g, e in zip(got, expected, strict=True):
        assert [(x["start"], x["end"], x["label"]) for x in g["entities"]] == [
            (x.start, x.end, x.label) for x in e
        ]
    # Outside the workspace, with the key file given explicitly.
    pub = ws.signing_key_path.with_suffix(".pub")
    r = CliRunner().invoke(
        cli,
        ["infer", str(export), "--model", str(pkg), "--public-key", str(pub),
         "--data-key", str(ws.data_key_path), "--out", str(tmp_path / "k.jsonl")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "k.jsonl").read_text() == (tmp_path / "o.jsonl").read_text()
    # Evaluation: the package (ONNX) and the model folder (PyTorch) agree on the gold notes.
    report = json.loads(
        _invoke(
            "ner", "evaluate", "-w", ws.root, "--name", "real", "--gold", real["gold"], "--json"
        )
    )
    docs = read_gold(real["gold"])
    torch_report = evaluate(real["root"] / "model", docs, key=ws.data_key)
    assert report["model"]["backend"] == "onnx" and report["model"]["zone"] == "real"
    assert report["seqeval"]["micro"] == torch_report["seqeval"]["micro"]


def test_real_zone_package_without_the_key_fails_with_one_line(real, tmp_path):
    ws, pkg = real["ws"], real["package"]
    export = demo_export(tmp_path / "ex", "jsonl", notes=3)
    pub = ws.signing_key_path.with_suffix(".pub")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "APPLIANCE_WORKSPACE"}
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "infer", str(export), "--model", str(pkg),
         "--public-key", str(pub), "--out", str(tmp_path / "o.jsonl")],
        capture_output=True, text=True, timeout=120, cwd=elsewhere, env=env,
    )  # fmt: skip
    assert proc.returncode == 6, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "real-zone" in lines[0] and ws.data_key.key_id in lines[0] and "--data-key" in lines[0]
    assert not (tmp_path / "o.jsonl").exists()
    # The library and the PyTorch folder say the same.
    with pytest.raises(KeyRequired):
        onnx_tagger(pkg)
    with pytest.raises(KeyRequired):
        load_model(real["root"] / "model")
    r = CliRunner().invoke(
        cli,
        ["ner", "evaluate", "--gold", str(real["gold"]), "--model", str(pkg), "--public-key",
         str(pub)],
    )  # fmt: skip
    assert r.exit_code == 6 and "real-zone" in r.output and "Traceback" not in r.output


def test_real_zone_int8_export_and_a_real_zone_base(real, tmp_path):
    ws, root = real["ws"], real["root"]
    dev = read_gold(real["gold"])[:6]
    with pytest.raises(KeyRequired):
        export_package(root / "model", tmp_path / "n", signing_key=Ed25519PrivateKey.generate(),
                       dev_docs=dev)  # fmt: skip
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    q = export_package(
        root / "model",
        tmp_path / "q",
        signing_key=Ed25519PrivateKey.generate(),
        int8=True,
        dev_docs=dev,
        max_f1_drop=100.0,
        data_key=ws.data_key,
    )
    assert q.precision == "int8" and q.zone == "real"
    assert _leaks(tmp_path / "q") == [] and "model.onnx" not in q.files
    assert onnx_tagger(tmp_path / "q", key=ws.data_key, device="cpu").info["precision"] == "int8"
    if before:
        assert not {n for n in set(os.listdir("/dev/shm")) - before if "appliance" in n}

    # A model trained from a real-zone (encrypted) base is real, even on screened-looking notes.
    docs = read_gold(demo_export(tmp_path / "ex", "jsonl", notes=8).parent / "gold.jsonl")
    assert zones.training_reasons({"kind": "annotations"}, None, root / "model") == [
        f"encoder initialised from the real-zone model {root / 'model'}"
    ]
    with pytest.raises(Exception, match="data key"):
        train_model(docs, [], base=root / "model", out_dir=tmp_path / "b0",
                    settings=tiny_settings(max_steps=2))  # fmt: skip
    derived = train_model(
        docs,
        [],
        base=root / "model",
        out_dir=tmp_path / "b",
        settings=tiny_settings(max_steps=2),
        data_key=ws.data_key,
    )
    assert derived.zone == "real"
    meta = json.loads((tmp_path / "b" / "ner.json").read_text())
    assert meta["zone"] == "real" and "real-zone model" in meta["zone_reasons"][0]
    assert (tmp_path / "b" / "model.safetensors.enc").is_file()
    assert not (tmp_path / "b" / "model.safetensors").exists()
    # Its tokenizer is the base's (learned from the real notes), kept encrypted.
    base_vocab = load_model(root / "model", ws.data_key).tokenizer.get_vocab()
    assert load_model(tmp_path / "b", ws.data_key).tokenizer.get_vocab() == base_vocab
    assert _leaks(tmp_path / "b") == []


def test_a_dev_gold_file_alone_does_not_make_a_model_real(tmp_path):
    assert (
        zones.training_reasons(
            {"kind": "annotations"}, {"kind": "gold file", "path": "x.jsonl"}, None
        )
        == []
    )
    assert zones.training_reasons(None, None, None) == []
    reasons = zones.training_reasons({"kind": "annotations"}, None, None, mlm_notes=5)
    assert len(reasons) == 2 and "masked language modelling on 5 real notes" in reasons[0]


def test_interrupted_real_zone_training_resumes_from_an_encrypted_checkpoint(tmp_path):
    import secrets

    from appliance.security.keys import DataKey

    key = DataKey(secrets.token_bytes(32))
    docs = read_gold(_real_gold(tmp_path, notes=10))
    settings = tiny_settings(max_steps=8, checkpoint_every=3)
    reasons = ["trained on gold notes hospital-gold.jsonl (sha256 test)"]

    def stop_at_5(p):
        if p.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(docs, [], base=None, out_dir=tmp_path / "m", settings=settings,
                    zone_reasons=reasons, data_key=key, progress=stop_at_5)  # fmt: skip
    ckpt = tmp_path / "m" / train_mod.CHECKPOINT_ENC
    assert (
        ckpt.read_bytes().startswith(FILE_MAGIC) and not (tmp_path / "m" / "checkpoint.pt").exists()
    )
    assert _leaks(tmp_path / "m") == []
    resumed = train_model(docs, [], base=None, out_dir=tmp_path / "m", settings=settings,
                          zone_reasons=reasons, data_key=key)  # fmt: skip
    assert resumed.resumed_from == 5 and resumed.steps == 8 and not ckpt.exists()
    assert resumed.zone == "real" and _leaks(tmp_path / "m") == []
