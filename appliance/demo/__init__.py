"""Demo data: a fake hospital export with gold entity spans and fake patients.

``appliance demo-data OUT`` writes what a hospital's export would look like
(CSV, JSONL, a folder of .txt, or FHIR R4 ``DocumentReference`` NDJSON) and a
gold sidecar ``OUT/gold.jsonl`` with every drug, procedure and diagnosis
mention and every patient identifier, with character offsets (``export``).

Patients are fake (``patients``): mixed Estonian, Finnish, Swedish and
English names, a checksum-valid Estonian isikukood matching birth date and
sex, a +372 mobile number and an invented street in a real Estonian town.
About a quarter of the notes repeat some of these identifiers in the text
(recorded in gold).

The notes are the product's demo and test data: a small GPT-2 is trained on
them and an NER model is later trained on lexicon-annotated synthetic notes.
So they are built compositionally (many phrasings per slot, optional and
reordered sections, random numbers, surface variants of every mention) to
keep a language model from simply copying a handful of templates.

How a note is made: clinical content is written as small templates in the
data files (``data/*.toml``, read by ``knowledge``), rendered by the
``writer`` in the template language of ``template``; one builder per note
type (``discharge``, ``procedure``, ``outpatient``) lays out the sections.
Mentions are drawn from the vocabularies in ``data/vocab/*.tsv``
(``vocabulary``; a term gets a random surface form: itself, a synonym, brand
name or abbreviation; a synonym is used as written).

Procedure codes in ``data/vocab/procedures.tsv`` are a local scheme (``PX`` +
a specialty digit + a number: 1 cardiac, 2 digestive, 3 musculoskeletal,
4 neurology, 5 respiratory, 6 urology/gynaecology, 7 imaging, 8 other),
since the real classifications differ by country.
"""

from __future__ import annotations

from appliance.demo.export import (
    CSV_HEADER,
    FORMATS,
    GOLD_NAME,
    MAX_NOTES,
    DemoResult,
    export_path_for,
    run,
)
from appliance.demo.knowledge import check_knowledge
from appliance.demo.patients import NOTE_TYPES
from appliance.demo.vocabulary import VocabEntry, load_vocabulary

__all__ = [
    "CSV_HEADER",
    "FORMATS",
    "GOLD_NAME",
    "MAX_NOTES",
    "NOTE_TYPES",
    "DemoResult",
    "VocabEntry",
    "check_knowledge",
    "export_path_for",
    "load_vocabulary",
    "run",
]
