"""Decoding of export files: encodings, BOMs, undecodable bytes and bounded physical lines.

Shared by every reader. An undecodable byte spoils only its own row (which
becomes a "bad encoding" reject); only a decoder that gives up altogether
(UTF-16 without a BOM) ends the file.
"""

from __future__ import annotations

import codecs
import io
from typing import BinaryIO

from appliance.errors import InputError

_CHUNK = 1 << 16

BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class LineTooLong(Exception):
    """Internal: a physical line exceeded the cap; it has been skipped."""


class Undecodable(Exception):
    """Internal: the decoder gave up (e.g. UTF-16 without a BOM); nothing after it can be read."""


def error_start(exc: UnicodeError) -> int:
    # A plain UnicodeError (utf-16 "stream does not start with BOM") has no position.
    start = getattr(exc, "start", 0)
    return start if isinstance(start, int) else 0


def _bad_offset(raw: bytes, encoding: str, base: int) -> str:
    """Where ``raw`` (starting at file offset ``base``) stops decoding, as text for a reason."""
    try:
        raw.decode(encoding)
    except UnicodeError as exc:
        return f"at byte offset {base + error_start(exc)}"
    return "(offset unknown)"


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: each undecodable byte becomes a lone surrogate, like surrogateescape,
    but also for bytes below 0x80 (a cut-off UTF-16 unit), so the row is rejected, not the file."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(chr(0xDC00 + byte) for byte in exc.object[exc.start : exc.end]), exc.end


_MARK_UNDECODABLE = "appliance.readers.mark"
codecs.register_error(_MARK_UNDECODABLE, _mark_undecodable)


def is_text_encoding(encoding: object) -> bool:
    """True for a known bytes-to-text codec (not rot13, base64 and other transforms)."""
    try:
        codecs.lookup(encoding)  # type: ignore[arg-type]
        # Decoding real bytes is what refuses transforms; "ignore" forgives a cut-off utf-16 unit.
        b"a".decode(encoding, "ignore")  # type: ignore[arg-type]
    except (LookupError, TypeError, ValueError):
        return False
    return True


def encoding_name(encoding: str) -> str:
    return codecs.lookup(encoding).name


def _ascii_compatible(encoding: str) -> bool:
    """True when ASCII is itself (utf-8, cp1252, latin-1...): a line then maps back to its bytes."""
    probe = 'ab,;|\t"\r\n'
    try:
        return probe.encode(encoding) == probe.encode("ascii")
    except (UnicodeError, LookupError):
        return False


def resolve_encoding(head: bytes, encoding: str) -> tuple[str, int]:
    """(encoding to use, BOM bytes to skip) given the first bytes of the file."""
    name = encoding_name(encoding)
    if name in ("utf-8", "utf-8-sig"):
        for bom, bom_encoding in BOMS:
            if head.startswith(bom):
                if bom_encoding == "utf-8":
                    return "utf-8", len(bom)
                return bom_encoding, 0  # the utf-16/32 codecs consume their BOM
        return "utf-8", 0
    return encoding, 0


# --------------------------------------------------------------------------- physical lines


class Lines:
    """Physical lines of a file, decoded, in bounded memory (each line capped at ``max_chars``).

    A TextIOWrapper splits the lines (in C). Undecodable bytes become lone
    surrogates, so they spoil only their own row, which is rejected, and
    reading goes on. In ASCII-compatible encodings (utf-8, cp1252, latin-1...)
    surrogateescape makes each line map back to its bytes, so the reject can
    name the byte offset; in utf-16/32 the offset is not tracked. An error the
    codec cannot hand to its error handler (utf-16 without a BOM) ends the file
    (Undecodable).
    ``universal`` splits at \\r, \\n and \\r\\n like ``open(newline="")`` (what
    the csv module expects); otherwise only at \\n (JSON lines).
    """

    def __init__(
        self, fh: BinaryIO, name: str, encoding: str, *, universal: bool, max_chars: int
    ) -> None:
        self.name = name
        self.max_chars = max_chars
        self.number = 0  # 1-based number of the line last returned (or skipped)
        self.offset: int | None = None  # byte offset where that line starts, when known
        try:
            head = fh.read(4)
            self.encoding, bom = resolve_encoding(head, encoding)
            fh.seek(bom)
        except OSError as exc:
            raise InputError(f"{name}: read failed ({exc.strerror})") from exc
        self.exact = _ascii_compatible(self.encoding)
        # Byte offset of the next line; counted only where lines map back to bytes exactly.
        self._consumed: int | None = bom if self.exact else None
        self._ends = ("\n", "\r") if universal else ("\n",)
        self._text: io.TextIOWrapper | None = io.TextIOWrapper(
            fh,
            encoding=self.encoding,
            errors="surrogateescape" if self.exact else _MARK_UNDECODABLE,
            newline="" if universal else "\n",
        )

    def __iter__(self) -> Lines:
        return self

    def close(self) -> None:
        """Let go of the TextIOWrapper without closing the file twice (its owner closes it)."""
        if self._text is not None:
            self._text.detach()
            self._text = None

    def __next__(self) -> str:
        line = self._read(self.max_chars + 1)
        if not line:
            raise StopIteration
        self.number += 1
        self.offset = self._consumed
        self._count(line)
        if len(line) > self.max_chars and not line.endswith(self._ends):
            # Skip the rest of the overlong line without holding it.
            while True:
                more = self._read(_CHUNK)
                self._count(more)
                if not more or more.endswith(self._ends):
                    break
            raise LineTooLong
        if self.number == 1 and line.startswith("\ufeff"):
            line = line[1:]  # a BOM the codec did not consume (e.g. --encoding utf-16-le)
        return line

    def raw(self, text: str) -> bytes:
        """The bytes ``text`` (read from this file) came from; exact for ASCII-compatible encodings."""
        return text.encode(self.encoding, "surrogateescape")

    def where_bad(self, text: str, offset: int | None) -> str:
        """Where the undecodable bytes in ``text`` (lines starting at ``offset``) are, for a reason."""
        if not self.exact or offset is None:
            return "(offset unknown)"
        return _bad_offset(self.raw(text), self.encoding, offset)

    def _count(self, text: str) -> None:
        if self._consumed is not None:
            self._consumed += len(text) if text.isascii() else len(self.raw(text))

    def _read(self, limit: int) -> str:
        assert self._text is not None
        try:
            return self._text.readline(limit)
        except UnicodeError as exc:
            # Strict decoding failed, or surrogateescape could not stand in for an ASCII byte.
            self.number += 1
            raise Undecodable from exc
        except OSError as exc:
            raise InputError(f"{self.name}: read failed ({exc.strerror})") from exc


def head_text(head: bytes) -> str:
    """The first bytes of a file as text for sniffing (BOM-aware, lenient)."""
    for bom, encoding in BOMS:
        if head.startswith(bom):
            # The utf-16/32 codecs read their BOM; a cut-off last character becomes U+FFFD.
            return head.decode("utf-8-sig" if encoding == "utf-8" else encoding, "replace")
    return head.decode("utf-8", "replace")
