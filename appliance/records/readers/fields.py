"""Field names of record exports: which columns hold the id, the text and identifiers.

Shared by the CSV and JSONL readers (and ``records stats``). The types a
reader yields (``Record``, ``Identifier``, ``Reject``) live in
``appliance.documents``, shared with every later stage.
"""

from __future__ import annotations

import re

# Identifier types (the policy's [identifiers] types) and the column / field
# names that are recognized as holding them when no identifier columns are
# named explicitly. Names are compared lower-case, with the last component of
# a dotted JSON path ("patient.name" -> "name").
IDENTIFIER_FIELD_TYPES: dict[str, str] = {
    "name": "PERSON",
    "patient_name": "PERSON",
    "full_name": "PERSON",
    "first_name": "PERSON",
    "last_name": "PERSON",
    "given_name": "PERSON",
    "family_name": "PERSON",
    "national_id": "NATIONAL_ID",
    "personal_code": "NATIONAL_ID",
    "isikukood": "NATIONAL_ID",
    "personnummer": "NATIONAL_ID",
    "ssn": "NATIONAL_ID",
    "phone": "PHONE_NUMBER",
    "phone_number": "PHONE_NUMBER",
    "telephone": "PHONE_NUMBER",
    "mobile": "PHONE_NUMBER",
    "email": "EMAIL_ADDRESS",
    "address": "ADDRESS",
    "street_address": "ADDRESS",
    "birth_date": "DATE_OF_BIRTH",
    "birthdate": "DATE_OF_BIRTH",
    "date_of_birth": "DATE_OF_BIRTH",
    "dob": "DATE_OF_BIRTH",
    "patient_id": "MEDICAL_RECORD_NUMBER",
    "mrn": "MEDICAL_RECORD_NUMBER",
    "medical_record_number": "MEDICAL_RECORD_NUMBER",
    "surname": "PERSON",
    "forename": "PERSON",
    "patient": "PERSON",
    "next_of_kin": "PERSON",
    "guardian": "PERSON",
    "relative": "PERSON",
    "contact_person": "PERSON",
    "physician_name": "PERSON",
    "hetu": "NATIONAL_ID",
    "henkilotunnus": "NATIONAL_ID",
    "cpr": "NATIONAL_ID",
    "cpr_number": "NATIONAL_ID",
    "fodselsnummer": "NATIONAL_ID",
    "nhs_number": "NATIONAL_ID",
    "social_security_number": "NATIONAL_ID",
    "personal_id": "NATIONAL_ID",
    "national_id_number": "NATIONAL_ID",
    "mobile_phone": "PHONE_NUMBER",
    "phone_no": "PHONE_NUMBER",
    "home_phone": "PHONE_NUMBER",
    "work_phone": "PHONE_NUMBER",
    "email_address": "EMAIL_ADDRESS",
    "e_mail": "EMAIL_ADDRESS",
    "home_address": "ADDRESS",
    "postal_address": "ADDRESS",
    "postal_code": "ADDRESS",
    "zip": "ADDRESS",
    "zip_code": "ADDRESS",
    "postcode": "ADDRESS",
    "city": "ADDRESS",
    "street": "ADDRESS",
    "patient_number": "MEDICAL_RECORD_NUMBER",
    "hospital_number": "MEDICAL_RECORD_NUMBER",
    "record_number": "MEDICAL_RECORD_NUMBER",
}

# Accepted names for the id and text columns when not given explicitly, in
# order of preference.
ID_FIELD_NAMES = ("note_id", "id", "document_id", "doc_id", "record_id")
TEXT_FIELD_NAMES = ("text", "note_text", "note", "body", "content")


def normalize_field_name(name: str) -> str:
    """``PatientName``, ``Patient Name``, ``patient-name`` -> ``patient_name``."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    return re.sub(r"[^0-9a-z]+", "_", snake.lower()).strip("_")


def identifier_type(field_name: str) -> str | None:
    """The identifier type a column name suggests, or None if it is not an identifier column."""
    return IDENTIFIER_FIELD_TYPES.get(normalize_field_name(field_name.rsplit(".", 1)[-1]))
