"""FHIR R4 exports: DocumentReferences as NDJSON, in Bundles, or as one .json document.

The mapping is fixed, so ``id_column``, ``text_column`` and
``identifier_columns`` do not apply; ``metadata_columns`` filters the
metadata keys (note_type, loinc_code, date, status, diagnosis_code,
department, sex, language). The text is the first text/plain attachment
with inline base64 data; identifiers come from the subject and contained
Patient resources. Locations are ``line L``, ``line L entry E`` (an entry
of a Bundle on line L), ``item N`` / ``entry E`` / ``document``; FHIR
element paths in reasons are 0-based as in FHIRPath
(``content[0].attachment.data``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance.documents import Identifier, Record, Reject
from appliance.records.readers.base import (
    Export,
    ExportFormat,
    Head,
    ReaderOptions,
    Rejected,
    dedupe,
    quiet_id,
    scalar_str,
    show,
    valid_id,
    valid_text,
)
from appliance.records.readers.decoding import (
    encoding_name,
    error_start,
    is_text_encoding,
    resolve_encoding,
)
from appliance.records.readers.json_source import (
    Document,
    has_resource_type,
    json_document,
    json_items,
    looks_like_json,
    not_an_object,
)

# Identifier systems that hold national person numbers; every other identifier
# of the patient is treated as a medical record number.
NATIONAL_ID_SYSTEMS = frozenset(
    {
        "urn:oid:1.3.6.1.4.1.28284.6.2.2.1",  # Estonia, isikukood
        "http://hl7.org/fhir/sid/us-ssn",  # United States, SSN
        "urn:oid:2.16.840.1.113883.4.1",  # United States, SSN (OID)
        "urn:oid:1.2.752.129.2.1.3.1",  # Sweden, personnummer
        "urn:oid:1.2.246.21",  # Finland, henkilötunnus
        "urn:oid:2.16.578.1.12.4.1.4.1",  # Norway, fødselsnummer
        "urn:oid:1.2.208.176.1.2",  # Denmark, CPR
        "http://fhir.nl/fhir/NamingSystem/bsn",  # Netherlands, BSN
        "urn:oid:2.16.840.1.113883.2.4.6.3",  # Netherlands, BSN (OID)
    }
)
# HL7 v2 table 0203 identifier type codes for national person identifiers.
_NATIONAL_ID_TYPE_CODES = frozenset({"NI", "SS", "NN", "SB"})
_BUNDLE_TYPES = frozenset({"collection", "batch", "searchset", "transaction"})
_PATIENT_REFERENCE = re.compile(r"(?:^|/)Patient/([^/]+)")
_CHARSET_ALIASES = {"latin1": "latin-1", "iso8859-1": "latin-1", "utf8": "utf-8"}


def _read_fhir(
    path: Path, name: str, options: ReaderOptions, document: Document | None
) -> Iterator[Record | Reject]:
    for item in json_items(path, name, options, document):
        if isinstance(item, Reject):
            yield item
            continue
        location, value = item
        if not isinstance(value, dict):
            yield not_an_object(name, location, value)
        elif value.get("resourceType") == "Bundle":
            yield from _fhir_bundle(
                value, name, "" if location == "document" else location, options
            )
        else:
            yield _fhir_item(value, name, location, options)


def _fhir_bundle(
    bundle: dict[str, Any], name: str, location: str, options: ReaderOptions
) -> Iterator[Record | Reject]:
    where = location or "document"
    kind = bundle.get("type")
    if not isinstance(kind, str) or kind not in _BUNDLE_TYPES:
        yield Reject(name, where, f"unsupported Bundle type (type={show(kind)})")
        return
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        yield Reject(name, where, "Bundle has no entries")
        return
    for number, entry in enumerate(entries, 1):
        entry_location = f"{location} entry {number}".strip()
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            yield Reject(name, entry_location, "Bundle entry has no resource")
        else:
            yield _fhir_item(resource, name, entry_location, options)


def _fhir_item(
    resource: dict[str, Any], name: str, location: str, options: ReaderOptions
) -> Record | Reject:
    try:
        return _fhir_record(resource, name, location, options)
    except Rejected as exc:
        return Reject(name, location, exc.reason, exc.record_id)


def _fhir_record(
    resource: dict[str, Any], name: str, location: str, options: ReaderOptions
) -> Record:
    kind = resource.get("resourceType")
    if kind != "DocumentReference":
        shown = "no resourceType" if kind is None else f"resourceType={show(kind)}"
        raise Rejected(f"not a DocumentReference ({shown})", quiet_id(resource.get("id")))
    rid = valid_id(resource.get("id"))
    raw_text, attachment = _fhir_text(resource, rid)
    text = valid_text(raw_text, rid, options.max_note_chars)
    metadata = _fhir_metadata(resource, attachment)
    if options.metadata_columns is not None:
        wanted = {c.lower() for c in options.metadata_columns}
        metadata = {k: v for k, v in metadata.items() if k.lower() in wanted}
    return Record(rid, text, metadata, _fhir_identifiers(resource), f"{name}:{location}")


def _media_type(content_type: object) -> tuple[str, dict[str, str]]:
    """("text/plain", {"charset": "utf-8"}) from a contentType value; ("", {}) when absent."""
    if not isinstance(content_type, str):
        return "", {}
    media, *params = content_type.split(";")
    parsed = {}
    for param in params:
        key, _, value = param.partition("=")
        parsed[key.strip().lower()] = value.strip().strip('"').strip()
    return media.strip().lower(), parsed


def _fhir_text(resource: dict[str, Any], rid: str) -> tuple[str, dict[str, Any]]:
    """The note text from the first text/plain attachment with inline data, and that attachment."""
    content = resource.get("content")
    attachments = [
        (index, entry["attachment"])
        for index, entry in enumerate(content if isinstance(content, list) else [])
        if isinstance(entry, dict) and isinstance(entry.get("attachment"), dict)
    ]
    if not attachments:
        raise Rejected("no content attachment", rid)
    plain = []
    for index, attachment in attachments:
        media, params = _media_type(attachment.get("contentType"))
        if media == "text/plain":
            plain.append((index, attachment, params))
    if not plain:
        given = attachments[0][1].get("contentType")
        shown = show(given) if isinstance(given, str) and given.strip() else "none given"
        raise Rejected(f"unsupported contentType ({shown}; only text/plain is read)", rid)
    inline = [(i, a, p) for i, a, p in plain if a.get("data") is not None]
    if not inline:
        if any(a.get("url") for _, a, _ in plain):
            raise Rejected("attachment has no inline data (only a url)", rid)
        raise Rejected("attachment has no inline data", rid)
    index, attachment, params = inline[0]
    path = f"content[{index}].attachment"
    data = attachment["data"]
    try:
        if not isinstance(data, str):
            raise ValueError("not a string")
        # Some systems wrap base64 at 76 characters; whitespace is not data.
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise Rejected(f"bad base64 in {path}.data", rid) from None
    charset = params.get("charset", "utf-8").lower()
    charset = _CHARSET_ALIASES.get(charset, charset)
    if not is_text_encoding(charset):
        raise Rejected(f"unsupported charset ({show(charset)} in {path}.contentType)", rid)
    encoding = encoding_name(charset)
    encoding, bom = resolve_encoding(raw[:4], encoding)
    try:
        text = raw[bom:].decode(encoding)
    except UnicodeError as exc:
        raise Rejected(
            f"bad encoding: invalid {encoding} in {path}.data at byte offset {bom + error_start(exc)}",
            rid,
        ) from None
    return (text[1:] if text.startswith("\ufeff") else text), attachment


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _codings(concept: object) -> list[dict[str, Any]]:
    return [c for c in _as_list(_as_dict(concept).get("coding")) if isinstance(c, dict)]


def _concept_text(concept: object) -> object:
    text = _as_dict(concept).get("text")
    if isinstance(text, str) and text.strip():
        return text
    return next((c.get("display") for c in _codings(concept) if c.get("display")), None)


def _identifier_kind(identifier: dict[str, Any]) -> str:
    system = identifier.get("system")
    if isinstance(system, str) and system.strip() in NATIONAL_ID_SYSTEMS:
        return "NATIONAL_ID"
    for coding in _codings(identifier.get("type")):
        code = coding.get("code")
        if isinstance(code, str) and (
            code in _NATIONAL_ID_TYPE_CODES or re.fullmatch(r"NN[A-Z]{3}", code)
        ):
            return "NATIONAL_ID"
    return "MEDICAL_RECORD_NUMBER"


def _patients(resource: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [
        (index, c)
        for index, c in enumerate(_as_list(resource.get("contained")))
        if isinstance(c, dict) and c.get("resourceType") == "Patient"
    ]


def _fhir_identifiers(resource: dict[str, Any]) -> tuple[Identifier, ...]:
    found: list[Identifier] = []

    def add(type_: str, value: object, field: str) -> None:
        text = None if isinstance(value, bool) else scalar_str(value)
        if text and text.strip():
            found.append(Identifier(type_, text.strip(), field))

    subject = _as_dict(resource.get("subject"))
    add("PERSON", subject.get("display"), "subject.display")
    reference = subject.get("reference")
    if isinstance(reference, str) and (match := _PATIENT_REFERENCE.search(reference)):
        add("MEDICAL_RECORD_NUMBER", match.group(1), "subject.reference")
    logical = _as_dict(subject.get("identifier"))
    if logical:
        add(_identifier_kind(logical), logical.get("value"), "subject.identifier.value")
    for index, patient in _patients(resource):
        at = f"contained[{index}]"
        for n, entry in enumerate(_as_list(patient.get("name"))):
            name = _as_dict(entry)
            full = name.get("text")
            if not (isinstance(full, str) and full.strip()):
                parts = [g for g in _as_list(name.get("given")) if isinstance(g, str)]
                if isinstance(name.get("family"), str):
                    parts.append(name["family"])
                full = " ".join(p.strip() for p in parts if p.strip())
            add("PERSON", full, f"{at}.name[{n}]")
        for n, entry in enumerate(_as_list(patient.get("identifier"))):
            if isinstance(entry, dict):
                add(_identifier_kind(entry), entry.get("value"), f"{at}.identifier[{n}].value")
        add("DATE_OF_BIRTH", patient.get("birthDate"), f"{at}.birthDate")
        for n, entry in enumerate(_as_list(patient.get("telecom"))):
            telecom = _as_dict(entry)
            system = telecom.get("system")
            if system in ("phone", "sms", "fax"):
                add("PHONE_NUMBER", telecom.get("value"), f"{at}.telecom[{n}].value")
            elif system == "email":
                add("EMAIL_ADDRESS", telecom.get("value"), f"{at}.telecom[{n}].value")
        for n, entry in enumerate(_as_list(patient.get("address"))):
            address = _as_dict(entry)
            full = address.get("text")
            if not (isinstance(full, str) and full.strip()):
                parts = [line for line in _as_list(address.get("line")) if isinstance(line, str)]
                if isinstance(address.get("city"), str):
                    parts.append(address["city"])
                full = ", ".join(p.strip() for p in parts if p.strip())
            add("ADDRESS", full, f"{at}.address[{n}]")
    return dedupe(found)


def _fhir_metadata(resource: dict[str, Any], attachment: dict[str, Any]) -> dict[str, Any]:
    context = _as_dict(resource.get("context"))
    patients = _patients(resource)
    candidates: dict[str, object] = {
        "note_type": _concept_text(resource.get("type")),
        "loinc_code": next(
            (
                c.get("code")
                for c in _codings(resource.get("type"))
                if c.get("system") == "http://loinc.org"
            ),
            None,
        ),
        "date": resource.get("date"),
        "status": resource.get("status"),
        "diagnosis_code": next(
            (
                c.get("code")
                for event in _as_list(context.get("event"))
                for c in _codings(event)
                if c.get("code")
            ),
            None,
        ),
        "department": _concept_text(context.get("practiceSetting")),
        "sex": patients[0][1].get("gender") if patients else None,
        "language": attachment.get("language") or resource.get("language"),
    }
    metadata: dict[str, Any] = {}
    for key, value in candidates.items():
        text = None if isinstance(value, bool) else scalar_str(value)
        if text and text.strip():
            metadata[key] = text.strip()
    return metadata


def read_fhir(export: Export) -> Iterator[Record | Reject]:
    """Parse a single-document .json now (InputError if it cannot be); lines stream later."""
    document = json_document(export.path, export.name, export.options)
    return _read_fhir(export.path, export.name, export.options, document)


def _sniff_fhir(head: Head) -> bool:
    return looks_like_json(head) and has_resource_type(head.text)


FORMAT = ExportFormat("fhir", read_fhir, sniff=_sniff_fhir)
