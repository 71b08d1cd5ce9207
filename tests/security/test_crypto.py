"""Whole-file encryption of real-zone artifacts: round trip, and every kind of tampering refused."""

from __future__ import annotations

import io

import numpy as np
import pytest

from appliance.errors import IntegrityError
from appliance.security.crypto import FILE_MAGIC, atomic_write, read_encrypted, write_encrypted
from appliance.security.keys import DataKey

KEY = DataKey(bytes(range(32)))


def test_round_trip_from_bytes_and_from_a_buffer_view(tmp_path):
    path = tmp_path / "a.bin"
    write_encrypted(path, KEY, b"secret weights", label="test")
    assert read_encrypted(path, KEY, label="test") == b"secret weights"
    # A large artifact is encrypted from a view of its buffer, without a joined copy.
    buf = io.BytesIO()
    buf.write(b'{"format": 1}\n')
    np.savez(buf, x=np.arange(1000))
    with buf.getbuffer() as view:
        write_encrypted(path, KEY, view, label="test")
    plain = read_encrypted(path, KEY, label="test")
    assert plain == buf.getvalue()
    assert b"secret" not in path.read_bytes() and path.read_bytes().startswith(FILE_MAGIC)


@pytest.mark.parametrize("offset", [0, len(FILE_MAGIC), len(FILE_MAGIC) + 8, 30, -1])
def test_a_flipped_byte_anywhere_is_refused(tmp_path, offset):
    path = tmp_path / "a.bin"
    write_encrypted(path, KEY, b"x" * 64, label="test")
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="a.bin"):
        read_encrypted(path, KEY, label="test")


def test_renamed_relabelled_truncated_or_other_key_is_refused(tmp_path):
    path = tmp_path / "a.bin"
    write_encrypted(path, KEY, b"x" * 64, label="test")
    moved = tmp_path / "b.bin"
    moved.write_bytes(path.read_bytes())
    for args in ((moved, KEY, "test"), (path, KEY, "other"), (path, DataKey(bytes(32)), "test")):
        with pytest.raises(IntegrityError):
            read_encrypted(args[0], args[1], label=args[2])
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(IntegrityError, match="truncated|authentication"):
        read_encrypted(path, KEY, label="test")
    with pytest.raises(IntegrityError, match="missing"):
        read_encrypted(tmp_path / "nope.bin", KEY, label="test")


def test_atomic_write_in_parts(tmp_path):
    path = tmp_path / "f"
    atomic_write(path, (b"ab", b"", b"cd"))
    assert path.read_bytes() == b"abcd"
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
