"""The encrypted record store: round trip, no plaintext on disk, every kind of tampering detected by name."""

from __future__ import annotations

import json

import pytest

from appliance.documents import Identifier, Record
from appliance.errors import IntegrityError
from appliance.records.store import RecordStore
from appliance.security.keys import DataKey

KEY = DataKey(bytes(range(32)))


def _records(n):
    return [
        Record(
            id=f"N{i:04d}",
            text=f"Patient admitted with pneumonia number {i}. Started amoxicillin ✓ åäö.",
            metadata={"note_type": "discharge_summary"},
            identifiers=(Identifier("PERSON", f"Mari Tamm{i}", "patient_name"),),
            source=f"notes.csv:row {i + 2}",
        )
        for i in range(n)
    ]


@pytest.fixture
def store(tmp_path):
    store = RecordStore(tmp_path / "records", KEY, shard_max_records=4)
    with store.writer() as w:
        for r in _records(10):
            w.add(r)
    return store


def test_round_trip_and_sharding(store, tmp_path):
    again = RecordStore(tmp_path / "records", KEY)
    assert len(again) == 10
    assert [s.records for s in again.shards] == [4, 4, 2]
    assert list(again) == _records(10)
    assert again.get("N0007") == _records(10)[7]
    assert again.get("missing") is None
    assert again.verify() == 10


def test_no_plaintext_on_disk(store, tmp_path):
    blob = b"".join(p.read_bytes() for p in (tmp_path / "records").rglob("*") if p.is_file())
    for needle in (
        "pneumonia",
        "amoxicillin",
        "Mari Tamm",
        "N0003",
        "discharge_summary",
        "notes.csv",
    ):
        assert needle.encode() not in blob


def test_index_tells_same_from_changed_text(store):
    index = store.index()
    assert index[store.id_mac("N0001")].text_mac == store.text_mac(_records(10)[1].text)
    assert index[store.id_mac("N0001")].text_mac != store.text_mac("something else")


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("offset", [0, 20, 200, -40, -1])
def test_flipped_byte_in_a_shard_is_named(store, tmp_path, offset):
    shard = tmp_path / "records" / "shards" / "shard-000002.bin"
    _flip(shard, offset)
    fresh = RecordStore(tmp_path / "records", KEY)
    with pytest.raises(IntegrityError, match="shard-000002.bin"):
        fresh.verify()
    with pytest.raises(IntegrityError, match="shard-000002.bin"):
        fresh.index()


def test_flipped_byte_detected_even_with_manifest_rewritten(store, tmp_path):
    # Even an attacker who fixes up the listed SHA-256 cannot forge the shard MAC.
    import hashlib

    shard = tmp_path / "records" / "shards" / "shard-000001.bin"
    _flip(shard, 100)
    manifest = json.loads((tmp_path / "records" / "store.json").read_text())
    manifest["shards"][0]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (tmp_path / "records" / "store.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="store.json.*authentication failed"):
        RecordStore(tmp_path / "records", KEY)


def test_deleted_shard_is_named(store, tmp_path):
    (tmp_path / "records" / "shards" / "shard-000003.bin").unlink()
    with pytest.raises(IntegrityError, match="shard-000003.bin is missing"):
        list(RecordStore(tmp_path / "records", KEY))


def test_swapped_shards_are_detected(store, tmp_path):
    d = tmp_path / "records" / "shards"
    a, b = (d / "shard-000001.bin").read_bytes(), (d / "shard-000002.bin").read_bytes()
    (d / "shard-000001.bin").write_bytes(b)
    (d / "shard-000002.bin").write_bytes(a)
    with pytest.raises(IntegrityError, match="shard-000001.bin"):
        RecordStore(tmp_path / "records", KEY).verify()


def test_truncated_shard_is_detected(store, tmp_path):
    shard = tmp_path / "records" / "shards" / "shard-000001.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(IntegrityError, match="shard-000001.bin"):
        RecordStore(tmp_path / "records", KEY).verify()


def test_deleted_manifest_is_detected(store, tmp_path):
    (tmp_path / "records" / "store.json").unlink()
    with pytest.raises(IntegrityError, match="store.json: missing while shards exist"):
        RecordStore(tmp_path / "records", KEY)


def test_wrong_key_is_refused(store, tmp_path):
    with pytest.raises(IntegrityError, match="encrypted with key"):
        RecordStore(tmp_path / "records", DataKey(b"\x07" * 32))


def test_unlisted_shard_means_rolled_back_manifest(store, tmp_path):
    # An older, authentic store.json that does not list the newest shard.
    records = tmp_path / "records"
    older = RecordStore(tmp_path / "older", KEY, shard_max_records=4)
    with older.writer() as w:
        for r in _records(8):
            w.add(r)
    (records / "store.json").write_bytes((tmp_path / "older" / "store.json").read_bytes())
    with pytest.raises(IntegrityError, match="shard-000003.bin is not listed .* rolled back"):
        RecordStore(records, KEY)


def test_uncommitted_shard_from_interrupted_ingest(store, tmp_path):
    stray = tmp_path / "records" / "shards" / "shard-000009.bin"
    stray.write_bytes(b"partial")
    (tmp_path / "records" / "shards" / ".pending-shard-000009.bin").write_bytes(b"")
    fresh = RecordStore(tmp_path / "records", KEY)
    assert fresh.uncommitted_shards() == ["shard-000009.bin"]
    assert fresh.verify() == 10  # committed data unaffected
    assert fresh.remove_uncommitted() == ["shard-000009.bin"]
    assert not stray.exists()
    assert not list((tmp_path / "records" / "shards").glob(".pending-*"))


def test_record_ciphertext_is_bound_to_its_id(store, tmp_path):
    # Swap two entries' ciphertexts inside one shard and re-MAC it with the right key:
    # the per-record AAD (the id's keyed hash) still refuses the swap.
    import hashlib
    import struct

    from appliance.records import store as st
    from appliance.security.crypto import mac

    path = tmp_path / "records" / "shards" / "shard-000001.bin"
    data = path.read_bytes()
    body = data[: -st.TRAILER.size]
    entries, pos = [], st.HEADER_LEN
    while pos < len(body):
        id_mac, text_mac, n = st.ENTRY_HEAD.unpack_from(body, pos)
        pos += st.ENTRY_HEAD.size
        entries.append((id_mac, text_mac, body[pos : pos + n]))
        pos += n
    (a_id, a_t, a_ct), (b_id, b_t, b_ct) = entries[0], entries[1]
    entries[0], entries[1] = (a_id, a_t, b_ct), (b_id, b_t, a_ct)
    new_body = body[: st.HEADER_LEN] + b"".join(
        st.ENTRY_HEAD.pack(i, t, len(c)) + c for i, t, c in entries
    )
    mac_key = store._mac_key
    tag = mac(mac_key, b"shard", path.name.encode(), new_body, struct.pack(">I", len(entries)))
    new = new_body + st.TRAILER.pack(st.TRAILER_MAGIC, len(entries), tag)
    path.write_bytes(new)
    store.shards[0] = st.ShardInfo(path.name, 4, len(new), hashlib.sha256(new).hexdigest())
    with pytest.raises(IntegrityError, match="authentication failed"):
        list(store)


def test_shard_mac_alone_catches_an_edit(store, tmp_path):
    # Edit a shard, then fix up the manifest's SHA-256 *and* its MAC (as only the
    # key holder could): the shard's own MAC still refuses it.
    import hashlib

    records = tmp_path / "records"
    shard = records / "shards" / "shard-000002.bin"
    _flip(shard, 120)
    manifest = json.loads((records / "store.json").read_text())
    manifest.pop("mac")
    manifest["shards"][1]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    manifest["mac"] = store._manifest_mac(manifest)
    (records / "store.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="shard-000002.bin failed authentication"):
        RecordStore(records, KEY).verify()


def test_lookups_reuse_authenticated_shards_within_a_budget(tmp_path, monkeypatch):
    store = RecordStore(tmp_path / "records", KEY, shard_max_records=4)
    with store.writer() as w:
        for r in _records(10):
            w.add(r)
    fresh = RecordStore(tmp_path / "records", KEY)
    reads: list[str] = []
    real_read = RecordStore._read_shard
    monkeypatch.setattr(
        RecordStore,
        "_read_shard",
        lambda self, info: reads.append(info.name) or real_read(self, info),
    )
    want = {f"N{i:04d}": r for i, r in enumerate(_records(10)) if i in (1, 5, 9)}
    assert fresh.get_many(want) == want
    assert sorted(reads) == ["shard-000001.bin", "shard-000002.bin", "shard-000003.bin"]
    assert fresh.get_many([*want, "missing"]) == want
    assert fresh.get("N0005") == want["N0005"]
    assert len(reads) == 3  # every later lookup came from the authenticated cache
    # The budget bounds what is kept: with room for one shard, each lookup of another rereads.
    small = RecordStore(tmp_path / "records", KEY)
    small.cache_bytes = max(s.bytes for s in small.shards)
    reads.clear()
    for _ in range(2):
        assert small.get("N0001") == want["N0001"]
        assert small.get("N0009") == want["N0009"]
    assert reads == ["shard-000001.bin", "shard-000002.bin", "shard-000003.bin"] * 2
    assert small._cached_bytes <= small.cache_bytes
    # A shard changed on disk afterwards is caught by any store that reads it.
    _flip(tmp_path / "records" / "shards" / "shard-000002.bin", 200)
    with pytest.raises(IntegrityError, match="shard-000002.bin"):
        RecordStore(tmp_path / "records", KEY).get_many(want)
