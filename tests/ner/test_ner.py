"""NER core: windows and alignment, a tiny model trained here, signed ONNX export, batch inference."""

from __future__ import annotations

import csv
import itertools
import json
import shutil

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.documents import Document, Span, read_gold
from appliance.errors import IntegrityError, UsageError
from appliance.ner import encoding, infer
from appliance.ner.encoding import align_labels, bio_paths, decode, owners, window_ranges
from appliance.ner.evaluate import evaluate
from appliance.ner.export import check_parity, export_package
from appliance.ner.model import load_model
from appliance.ner.package import verify_package
from appliance.ner.runtime import Tagger, TorchBackend, onnx_tagger, torch_tagger
from appliance.ner.train import split_dev, train_model
from appliance.security.keys import DataKey
from tests.ner_helpers import TYPES, demo_export, one_thread, tiny_settings


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


# ---------------------------------------------------------------------------
# windows, alignment, decoding


@pytest.mark.parametrize(
    ("n", "body", "stride"), [(0, 10, 2), (5, 10, 2), (10, 10, 2), (11, 10, 2), (57, 10, 3)]
)
def test_windows_cover_every_token_and_owner_is_most_central(n, body, stride):
    ranges = window_ranges(n, body, stride)
    covered = set()
    for s, e in ranges:
        assert 0 <= s < e <= n and e - s <= body
        covered |= set(range(s, e))
    assert covered == set(range(n))
    window, position = owners(n, ranges)
    for t in range(n):
        s, e = ranges[window[t]]
        assert s + position[t] == t
        best = max(min(t - a, b - 1 - t) for a, b in ranges if a <= t < b)
        assert min(t - s, e - 1 - t) == best


def test_labels_align_to_subwords_by_character_overlap():
    label2id = {"O": 0, "B-DRUG": 1, "I-DRUG": 2}
    # "metoprolol 50 mg": metoprolol split into three sub-words, all inside the span.
    offsets = [(0, 4), (4, 7), (7, 10), (11, 13), (14, 16)]
    assert align_labels(offsets, [Span(0, 10, "DRUG", "metoprolol")], label2id) == [1, 2, 2, 0, 0]
    assert align_labels(offsets, [Span(0, 16, "DRUG", "x")], label2id) == [1, 2, 2, 2, 2]
    assert align_labels(offsets, [Span(0, 4, "OTHER", "x")], label2id) == [0] * 5


def _probs(rows):
    p = np.asarray(rows, dtype=float)
    return p / p.sum(axis=1, keepdims=True)


def test_decode_snaps_to_whole_words():
    text = "gave metoprolol today"
    labels = ["O", "B-DRUG", "I-DRUG"]
    offsets = [(0, 4), (5, 9), (9, 12), (12, 15), (16, 21)]
    # Only the middle sub-word tagged: widened to "metoprolol".
    ents = decode(
        text, offsets, _probs([[9, 1, 0], [9, 1, 0], [1, 9, 0], [9, 0, 1], [9, 1, 0]]), labels
    )
    assert [(e.start, e.end, e.label, e.text) for e in ents] == [(5, 15, "DRUG", "metoprolol")]
    assert ents[0].confidence == pytest.approx(0.9)
    assert decode(text, offsets, _probs([[9, 1, 0]] * 5), labels) == []


def test_decode_keeps_a_multi_word_entity_whole_where_one_token_leans_outside():
    text = "Type 2 diabetes today"
    labels = ["O", "B-DIAGNOSIS", "I-DIAGNOSIS"]
    offsets = [(0, 4), (5, 6), (7, 15), (16, 21)]
    # Token by token: B, O (0.55 against 0.40 for I), I: two pieces, "Type" and "diabetes".
    # As a sequence, B I I is far likelier than any valid path through O.
    probs = _probs([[0.1, 0.85, 0.05], [0.55, 0.05, 0.40], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]])
    ents = decode(text, offsets, probs, labels)
    assert [(e.text, e.label) for e in ents] == [("Type 2 diabetes", "DIAGNOSIS")]
    assert ents[0].confidence == pytest.approx((0.85 + 0.40 + 0.9) / 3)
    # An I- with nothing before it to continue: the path starts the entity (B) or drops it.
    lone = _probs([[0.9, 0.05, 0.05], [0.3, 0.05, 0.65], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]])
    assert decode(text, offsets, lone, labels) == []


def test_bio_paths_are_the_best_valid_sequences_whatever_the_batch(monkeypatch):
    labels = ["O", "B-A", "I-A", "B-B", "I-B"]

    def valid(path):
        for t, tag in enumerate(path):
            name = labels[tag]
            if name.startswith("I-"):
                prev = labels[path[t - 1]] if t else "O"
                if prev == "O" or prev[2:] != name[2:]:
                    return False
        return True

    def brute(p):
        best = max(
            (seq for seq in itertools.product(range(len(labels)), repeat=len(p)) if valid(seq)),
            key=lambda seq: sum(np.log(p[t, tag]) for t, tag in enumerate(seq)),
        )
        return list(best)

    rng = np.random.default_rng(0)
    arrays = [_probs(rng.random((n, len(labels))) ** 3 + 1e-3) for n in (1, 4, 2, 5, 3, 5, 0, 4)]
    expected = [brute(p) if len(p) else [] for p in arrays]
    assert bio_paths(arrays, labels) == expected  # decoded together, each its own length
    assert [bio_paths([p], labels)[0] for p in arrays] == expected  # one at a time
    monkeypatch.setattr(encoding, "_VITERBI_TOKENS", 8)  # several passes, a long note alone
    assert bio_paths(arrays, labels) == expected
    assert all(valid(path) for path in expected)


# ---------------------------------------------------------------------------
# a tiny model trained here, shared by the tests below


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner")
    gold = demo_export(root / "demo", "jsonl", notes=30).parent / "gold.jsonl"
    docs = read_gold(gold)
    train, dev = split_dev(docs, 0.2, 0)
    result = train_model(
        train, dev, base=None, out_dir=root / "model", settings=tiny_settings(), types=TYPES
    )
    key = Ed25519PrivateKey.generate()
    # A limit no int8 model can meet: the package falls back to fp32 (and the path is tested).
    export = export_package(
        root / "model",
        root / "package",
        signing_key=key,
        dev_docs=dev,
        int8=True,
        max_f1_drop=-100.0,
    )
    return {
        "root": root,
        "docs": docs,
        "dev": dev,
        "result": result,
        "key": key,
        "export": export,
        "gold": gold,
    }


def test_tiny_model_learns_and_rebuilds_from_its_folder(trained):
    result = trained["result"]
    assert result.dev_f1 is not None and result.dev_f1 > 0.2, result.history
    meta = json.loads((result.model_dir / "ner.json").read_text())
    assert meta["labels"][0] == "O" and {"B-DRUG", "I-DIAGNOSIS"} <= set(meta["labels"])
    assert meta["zone"] == "screened" and meta["data"]["train_notes"] == result.train_docs
    assert meta["metrics"]["dev"]["exact"]["micro"]["f1"] == pytest.approx(result.dev_f1)
    # The folder alone rebuilds the model: same predictions as the tagger used in training.
    m = load_model(result.model_dir)
    tagger = Tagger(TorchBackend(m.model), m.tokenizer, m.labels, m.special, m.max_length, m.stride)
    report = evaluate(tagger, trained["dev"])
    assert report["spans"]["exact"]["micro"]["f1"] == pytest.approx(result.dev_f1)


def test_interrupted_training_resumes_to_the_same_weights(trained, tmp_path):
    import torch

    docs = trained["docs"][:12]
    settings = tiny_settings(max_steps=8, checkpoint_every=3)

    def stop_at_5(p):
        if p.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(
            docs, [], base=None, out_dir=tmp_path / "a", settings=settings, progress=stop_at_5
        )
    assert (tmp_path / "a" / "checkpoint.pt").exists()
    resumed = train_model(docs, [], base=None, out_dir=tmp_path / "a", settings=settings)
    straight = train_model(docs, [], base=None, out_dir=tmp_path / "b", settings=settings)
    assert resumed.resumed_from == 5 and resumed.steps == straight.steps == 8
    assert not (tmp_path / "a" / "checkpoint.pt").exists()
    a, b = (
        load_model(tmp_path / "a").model.state_dict(),
        load_model(tmp_path / "b").model.state_dict(),
    )
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_long_note_is_windowed_and_stitched_by_offsets(trained):
    tagger = torch_tagger(trained["result"].model_dir, device="cpu")
    notes = [d.text for d in trained["docs"][:6]]
    joined = "\n\n".join(notes)
    assert len(tagger.tokenizer.encode(joined, add_special_tokens=False).ids) > 3 * tagger.body
    whole = tagger.predict([joined])[0]
    assert whole, "the model finds entities in its own training notes"
    for e in whole:
        assert joined[e.start : e.end] == e.text and e.label in TYPES
    # Entities of the first note are found the same way inside the long text.
    first = {(e.start, e.end, e.label) for e in tagger.predict([notes[0]])[0]}
    inside = {(e.start, e.end, e.label) for e in whole if e.end <= len(notes[0])}
    assert len(first & inside) >= 0.7 * max(1, len(first))


def test_export_parity_and_signed_package(trained):
    pkg = trained["root"] / "package"
    export = trained["export"]
    assert export.parity["labels_identical"] and export.parity["max_abs_diff"] < 1e-3
    manifest = verify_package(pkg, trained["key"].public_key())
    assert set(manifest["files"]) == {
        "model.onnx",
        "tokenizer.json",
        "labels.json",
        "ner.json",
        "MODEL_CARD.md",
    }
    card = (pkg / "MODEL_CARD.md").read_text()
    assert "never shown" in card and "real notes" in card
    # Dynamic axes: batch sizes 1 and 3, different lengths.
    onnx = onnx_tagger(pkg, device="cpu", threads=1)
    for b, t in ((1, 5), (3, 40)):
        ids = np.random.default_rng(0).integers(5, 100, size=(b, t)).astype(np.int64)
        assert onnx.backend(ids, np.ones_like(ids)).shape == (b, t, len(onnx.labels))
    # ONNX and PyTorch give the same evaluation.
    torch_report = evaluate(trained["result"].model_dir, trained["dev"])
    onnx_report = evaluate(pkg, trained["dev"], public_key=trained["key"].public_key())
    assert onnx_report["seqeval"]["micro"] == torch_report["seqeval"]["micro"]
    assert (
        onnx_report["model"]["backend"] == "onnx" and torch_report["model"]["backend"] == "pytorch"
    )


def test_parity_check_fails_when_the_models_differ(trained):
    tagger = torch_tagger(trained["result"].model_dir, device="cpu")
    other = torch_tagger(trained["result"].model_dir, device="cpu")
    with __import__("torch").no_grad():
        other.backend.model.classifier.bias.add_(1.0)  # type: ignore[attr-defined]
    with pytest.raises(IntegrityError, match="parity check failed"):
        check_parity(tagger, other, [trained["docs"][0].text])


@pytest.mark.parametrize("tamper", ["model", "manifest", "unsigned", "extra", "other_key"])
def test_tampered_or_unsigned_package_is_refused(trained, tmp_path, tamper):
    pkg = tmp_path / "pkg"
    shutil.copytree(trained["root"] / "package", pkg)
    key = trained["key"].public_key()
    if tamper == "model":
        data = bytearray((pkg / "model.onnx").read_bytes())
        data[-100] ^= 1
        (pkg / "model.onnx").write_bytes(bytes(data))
    elif tamper == "manifest":
        m = json.loads((pkg / "manifest.json").read_text())
        m["precision"] = "int8"
        (pkg / "manifest.json").write_text(json.dumps(m))
    elif tamper == "unsigned":
        (pkg / "manifest.sig").unlink()
    elif tamper == "extra":
        (pkg / "patch.onnx").write_bytes(b"x")
    else:
        key = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(IntegrityError):
        verify_package(pkg, key)
    export = demo_export(tmp_path / "ex", "jsonl", notes=3)
    with pytest.raises(IntegrityError):
        infer.run(export, pkg, tmp_path / "out.jsonl", trusted_public_key=key)
    assert not (tmp_path / "out.jsonl").exists()


def test_int8_kept_or_fallback_by_the_limit(trained, tmp_path):
    fallback = trained["export"]
    assert fallback.precision == "fp32" and fallback.int8 is not None and not fallback.int8["kept"]
    assert "fell back to fp32" in fallback.summary()
    assert json.loads((trained["root"] / "package" / "ner.json").read_text())["precision"] == "fp32"
    assert "fell back to fp32" in (trained["root"] / "package" / "MODEL_CARD.md").read_text()
    key = trained["key"]
    kept = export_package(
        trained["result"].model_dir,
        tmp_path / "q",
        signing_key=key,
        int8=True,
        dev_docs=trained["dev"],
        max_f1_drop=100.0,
    )
    assert kept.precision == "int8" and kept.int8 is not None and kept.int8["kept"]
    assert kept.files["model.onnx"] < fallback.files["model.onnx"]
    # the graph was fused and smoothed on the calibration notes (the development notes here)
    assert {"MultiHeadAttention", "BiasGelu"} <= set(kept.int8["fused"])
    assert kept.int8["fusion_error"] is None and kept.int8["smoothed_activations"] > 0
    assert kept.int8["calibration"] == {
        "notes": len(trained["dev"]),
        "source": "the development notes",
    }
    assert "calibrated on" in (tmp_path / "q" / "MODEL_CARD.md").read_text()
    assert abs(kept.int8["f1_fp32"] - fallback.int8["f1_fp32"]) < 1e-9
    verify_package(tmp_path / "q", key.public_key())
    with pytest.raises(UsageError, match="int8"):
        export_package(
            trained["result"].model_dir, tmp_path / "n", signing_key=key, int8=True, dev_docs=[]
        )


def test_smoothing_and_fusion_keep_the_fp32_function(trained):
    """Before rounding to int8, the fused, smoothed graph computes what the exported one does."""
    import onnx

    from appliance.ner.export import export_onnx
    from appliance.ner.quantize import calibration_windows, fuse, smooth
    from appliance.ner.runtime import OnnxBackend

    m = load_model(trained["result"].model_dir)
    exported = export_onnx(m)
    plain = OnnxBackend(exported, "cpu", 1)
    tagger = Tagger(plain, m.tokenizer, m.labels, m.special, m.max_length, m.stride)
    texts = [d.text for d in trained["docs"][:12]]
    windows = calibration_windows(tagger, texts)
    proto = fuse(onnx.load_from_string(exported))
    assert smooth(proto, windows) > 0
    changed = OnnxBackend(proto.SerializeToString(), "cpu", 1)
    for ids, mask in windows:
        a, b = plain(ids, mask), changed(ids, mask)
        real = mask.astype(bool)
        assert np.abs(a - b)[real].max() < 1e-3
        assert (a.argmax(-1) == b.argmax(-1))[real].all()


# ---------------------------------------------------------------------------
# inference


def _run(trained, export, out, fmt="jsonl", **kw):
    kw.setdefault("threads", 1)
    return infer.run(
        export,
        trained["root"] / "package",
        out,
        fmt,
        trusted_public_key=trained["key"].public_key(),
        **kw,
    )


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory):
    """The uninterrupted JSONL output over the demo JSONL export."""
    root = tmp_path_factory.mktemp("ref")
    export = demo_export(root / "ex", "jsonl", notes=30, seed=9)
    _run(trained, export, root / "out.jsonl", chunk_notes=7)
    return _jsonl(root / "out.jsonl")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "txt", "fhir"])
def test_infer_reads_every_export_format(trained, reference, tmp_path, fmt):
    export = demo_export(tmp_path / "ex", fmt, notes=30, seed=9)
    result = _run(trained, export, tmp_path / "out.jsonl")
    assert result.notes == 30 and result.rejected == 0
    lines = _jsonl(tmp_path / "out.jsonl")
    by_id = {r["id"]: r["entities"] for r in reference}
    assert len(lines) == 30 and all(line["entities"] == by_id[line["id"]] for line in lines)
    assert result.entities == sum(len(v) for v in by_id.values()) > 0


def test_output_formats_agree_and_brat_round_trips(trained, reference, tmp_path):
    export = demo_export(tmp_path / "ex", "jsonl", notes=30, seed=9)
    texts = {d.id: d.text for d in read_gold(export.parent / "gold.jsonl")}
    expected = {
        r["id"]: [(e["start"], e["end"], e["label"], e["text"]) for e in r["entities"]]
        for r in reference
    }
    for e in reference[0]["entities"]:
        assert (
            texts[reference[0]["id"]][e["start"] : e["end"]] == e["text"]
            and 0 < e["confidence"] <= 1
        )

    _run(trained, export, tmp_path / "brat", "brat")
    docs = {d.id: d for d in read_gold(tmp_path / "brat", "brat")}
    assert set(docs) == set(expected)
    for doc_id, doc in docs.items():
        assert doc.text == texts[doc_id]
        assert [(s.start, s.end, s.label, s.text) for s in doc.spans] == sorted(
            expected[doc_id], key=lambda x: (x[0], -(x[1] - x[0]), x[2])
        )

    _run(trained, export, tmp_path / "out.csv", "csv")
    with open(tmp_path / "out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(len(v) for v in expected.values())
    assert {(r["note_id"], int(r["start"]), int(r["end"]), r["label"]) for r in rows} == {
        (k, s, e, lab) for k, v in expected.items() for s, e, lab, _ in v
    }

    _run(trained, export, tmp_path / "out.ndjson", "fhir")
    bundles = _jsonl(tmp_path / "out.ndjson")
    assert len(bundles) == 30 and all(
        b["resourceType"] == "Bundle" and b["type"] == "transaction" for b in bundles
    )
    kinds = {e["resource"]["resourceType"] for b in bundles for e in b["entry"]}
    assert kinds <= {"Condition", "MedicationStatement", "Procedure"} and kinds
    for b in bundles:
        assert len(b["entry"]) == len(expected[b["identifier"]["value"]])
        for entry in b["entry"]:
            assert entry["request"] == {"method": "POST", "url": entry["resource"]["resourceType"]}
            assert entry["fullUrl"].startswith("urn:uuid:")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "brat", "fhir"])
def test_interrupted_run_resumes_without_duplicates(trained, reference, tmp_path, fmt):
    export = demo_export(tmp_path / "ex", "csv", notes=30, seed=9)
    out = tmp_path / ("out" if fmt == "brat" else f"out.{fmt}")
    full = tmp_path / ("full" if fmt == "brat" else f"full.{fmt}")
    _run(trained, export, full, fmt)
    first = _run(trained, export, out, fmt, chunk_notes=4, stop_after=11)
    assert first.notes == 11
    if fmt != "brat":  # a crash after writing a note but before committing it
        with open(out, "ab") as fh:
            fh.write(b'{"id": "N000012", "half": ')
    second = _run(trained, export, out, fmt, chunk_notes=4)
    assert second.resumed == 11 and second.notes == 19
    if fmt == "brat":
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in full.iterdir())
        for p in full.iterdir():
            assert (out / p.name).read_bytes() == p.read_bytes()
    else:
        assert out.read_bytes() == full.read_bytes()
    third = _run(trained, export, out, fmt)
    assert third.notes == 0 and third.resumed == 30


def test_existing_unrelated_output_is_not_overwritten(trained, tmp_path):
    export = demo_export(tmp_path / "ex", "jsonl", notes=3)
    (tmp_path / "out.jsonl").write_text("precious\n")
    with pytest.raises(UsageError, match="exists"):
        _run(trained, export, tmp_path / "out.jsonl")
    assert (tmp_path / "out.jsonl").read_text() == "precious\n"


def test_rejects_are_reported_with_reasons(trained, tmp_path):
    export = tmp_path / "notes.jsonl"
    lines = [
        {"id": "a", "text": "Started metoprolol for atrial fibrillation."},
        {"id": "b", "text": "   "},
        {"id": "a", "text": "Second note with the same id."},
        {"text": "no id"},
        {"id": "c", "text": "Colonoscopy planned."},
    ]
    export.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    result = _run(trained, export, tmp_path / "out.jsonl")
    assert result.notes == 2 and result.rejected == 4
    assert result.reasons == {
        "empty text": 1,
        "duplicate id": 1,
        "missing id": 1,
        "invalid JSON": 1,
    }
    rejects = _jsonl(tmp_path / "out.jsonl.rejects.jsonl")
    assert len(rejects) == 4 and all("text" not in r for r in rejects)
    assert [r["id"] for r in _jsonl(tmp_path / "out.jsonl")] == ["a", "c"]
    assert "4 rejected" in result.summary()


@pytest.mark.parametrize("fmt", ["jsonl", "brat"])
def test_encrypted_output_decrypts_to_the_plain_output(trained, tmp_path, fmt):
    export = demo_export(tmp_path / "ex", "jsonl", notes=8, seed=9)
    key = DataKey(b"k" * 32)
    plain = tmp_path / ("plain" if fmt == "brat" else "plain.jsonl")
    enc = tmp_path / ("enc" if fmt == "brat" else "enc.jsonl")
    _run(trained, export, plain, fmt)
    first = _run(trained, export, enc, fmt, encrypt_key=key, stop_after=3)
    _run(trained, export, enc, fmt, encrypt_key=key)
    assert first.encrypted
    text = read_gold(export.parent / "gold.jsonl")[0].text
    if fmt == "brat":
        for p in plain.glob("*.*"):
            if p.name.startswith("."):
                continue
            sealed = enc / (p.name + ".enc")
            assert text[:40].encode() not in sealed.read_bytes()
            assert infer.read_output(sealed, key) == p.read_bytes()
    else:
        blob = enc.read_bytes()
        assert b"N0000" not in blob and b"entities" not in blob
        assert infer.read_output(enc, key) == plain.read_bytes()
        (enc).write_bytes(blob[:-5])
        with pytest.raises(IntegrityError):
            infer.read_output(enc, key)


def test_empty_and_entity_free_notes(trained):
    tagger = onnx_tagger(trained["root"] / "package", device="cpu", threads=1)
    assert tagger.predict(["", "   ", "ok"])[:2] == [[], []]
    assert evaluate(tagger, [Document("x", "nothing here", [])])["documents"] == 1
