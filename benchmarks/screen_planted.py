"""Planted-leak benchmark of the leakage screen: recall per leak kind, false quarantines on clean notes.

Real-note stand-ins (MTS-Dialog note sections or MTSamples transcriptions
from ``../shared/corpora``, or demo data) are split by patient: most are
ingested into a fresh workspace as the real records, each with metadata
identifiers (``patient_name``, ``national_id`` — a checksum-valid Estonian
isikukood —, ``phone``; demo data brings its own); the rest are held out and
never ingested. A synthetic set then mixes:

* ``clean``: held-out notes as they are (the false-quarantine rate);
* ``whole``: verbatim copies of whole ingested notes (of at least 20 words);
* ``span12`` / ``span20`` / ``span50``: a verbatim span of 12, 20 or 50 word
  tokens of an ingested note (its original characters), inserted into a
  held-out note ("otherwise new text");
* ``edit10``: copies of ingested notes (of at least 20 words) with 10 % of
  the words replaced by words of held-out notes;
* ``name`` / ``national_id`` / ``phone`` / ``phone_other_format``: an
  ingested record's identifier, written into a held-out note in a short
  sentence (the phone as stored, ``+372 5xxx xxxx``, or without the
  country code and spaces).

The set is screened with ``appliance.privacy.screen.run`` (``--input``) and
scored from its JSON report: per kind, the share quarantined (recall) and
which detectors fired; for clean notes, the share quarantined (the
false-quarantine rate) and why. For span plants the script also checks,
with the workspace's own index, which spans are pure boilerplate (every
word k-gram in the notes of at least ``boilerplate_patients`` patients: by
design not a leak). With ``--variant KEY=VALUE`` (repeatable) the same set
is screened again under a policy with that [leakage] value (the workspace
policy copy edited; the index is reused, or rebuilt when the value is part
of its fingerprint), e.g. ``--variant boilerplate_patients=3
--variant verbatim_calibrate=true``.

Usage::

    .venv/bin/python benchmarks/screen_planted.py --source mts-dialog --json-out planted.json
    .venv/bin/python benchmarks/screen_planted.py --source demo --notes 3000
    .venv/bin/python benchmarks/screen_planted.py --source mtsamples --variant boilerplate_patients=10
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.privacy.ngram_index import tokenize  # noqa: E402

SPAN_KINDS = {"span12": 12, "span20": 20, "span50": 50}
IDENT_KINDS = ("name", "national_id", "phone", "phone_other_format")
KINDS = ("whole", *SPAN_KINDS, "edit10", *IDENT_KINDS)
MIN_COPY_TOKENS = 20  # whole and edited copies: the LCS detector's default minimum
GOALS = {
    "clean": "false quarantines ≤ 2 %",
    "span12": "100 %",
    "span20": "100 %",
    "span50": "100 %",
    "name": "100 %",
    "national_id": "100 %",
    "phone": "100 %",
    "phone_other_format": "100 %",
}

NAME_SENTENCES = (
    "Patient {} was seen today.",
    "Seen with {} in the clinic.",
    "{} reports no change.",
)
ID_SENTENCES = ("Isikukood {}.", "Personal code: {}.", "IK {}.")
PHONE_SENTENCES = ("Contact phone {}.", "Call back on {}.", "Phone: {}.")


@dataclass
class Note:
    id: str
    text: str
    group: str  # patient: all of a group's notes are ingested or all held out
    ident: dict[str, str] = field(default_factory=dict)  # patient_name, national_id, phone


@dataclass
class Plant:
    id: str
    kind: str
    text: str
    record: str | None = None  # the ingested note or record it leaks
    leaked: str | None = None  # the leaked span or identifier (kept out of the output)


# --------------------------------------------------------------------------- sources


def _read_csv(path: Path, column: str) -> list[str]:
    csv.field_size_limit(1 << 30)
    with open(path, encoding="utf-8", newline="") as fh:
        return [row[column] for row in csv.DictReader(fh)]


def _identities(n: int, seed: int) -> list[dict[str, str]]:
    """Fake patients (name, checksum-valid isikukood, phone) from the demo data's generator."""
    from appliance.demo.patients import make_patients as _make_patients

    out = []
    for p in _make_patients(random.Random(seed), n):
        out.append({"patient_name": p.name, "national_id": p.national_id, "phone": p.phone})
    return out


_SYLLABLES = [
    "ka",
    "ri",
    "lu",
    "ve",
    "ta",
    "mo",
    "sa",
    "ne",
    "ko",
    "pi",
    "ro",
    "la",
    "mi",
    "tu",
    "se",
    "va",
    "no",
    "re",
    "ki",
    "du",
    "bo",
    "ge",
    "fa",
    "hu",
]


def synthetic_notes(n: int, seed: int) -> list[Note]:
    """``n`` notes of random pseudo-words (no templates, nothing shared by chance), one patient each."""
    rng = random.Random(seed)
    people = _identities(n, seed)
    notes = []
    for i in range(n):
        words = [
            "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
            for _ in range(rng.randint(30, 120))
        ]
        text = " ".join(
            " ".join(words[j : j + 9]).capitalize() + "." for j in range(0, len(words), 9)
        )
        notes.append(Note(f"R{i:05d}", text, f"R{i:05d}", people[i]))
    return notes


def load_notes(source: str, corpora: Path, limit: int, seed: int, work: Path) -> list[Note]:
    """Distinct non-empty notes of ``source``; corpus notes get one fake patient each."""
    if source == "synthetic":
        return synthetic_notes(min(limit, 2000), seed)
    if source == "demo":
        from appliance import demo

        res = demo.run(work / "demo-source", notes=limit, fmt="jsonl", seed=seed)
        notes = []
        for line in res.export_path.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            p = d["patient"]
            ident = {
                "patient_name": p["name"],
                "national_id": p["national_id"],
                "phone": p["phone"],
            }
            notes.append(Note(d["note_id"], d["text"], p["patient_id"], ident))
        return notes
    if source == "mts-dialog":
        folder = corpora / "mts-dialog"
        texts = [
            t for f in sorted(folder.glob("MTS-Dialog-*.csv")) for t in _read_csv(f, "section_text")
        ]
    elif source == "mtsamples":
        path = corpora / "mtsamples-partial" / "mtsamples_subset_complete_rows.csv"
        texts = _read_csv(path, "transcription")
    else:
        raise SystemExit(f"unknown source {source!r}")
    distinct = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
    if not distinct:
        raise SystemExit(f"no notes found for {source} under {corpora}")
    distinct = distinct[:limit]
    people = _identities(len(distinct), seed)
    # The corpora list some encounters twice (one transcription under two specialties, small
    # edits): notes that open with the same 25 words count as one encounter, so both go
    # to the same side of the split.
    groups: dict[tuple[str, ...], str] = {}
    notes = []
    for i, t in enumerate(distinct):
        group = groups.setdefault(tuple(tokenize(t)[0][:25]), f"R{i:05d}")
        notes.append(Note(f"R{i:05d}", t, group, people[i]))
    return notes


def split(notes: list[Note], holdout: int, seed: int) -> tuple[list[Note], list[Note]]:
    """(ingested, held out) by patient: at least ``holdout`` notes held out."""
    groups: dict[str, list[Note]] = {}
    for n in notes:
        groups.setdefault(n.group, []).append(n)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    held: list[Note] = []
    taken = set()
    for g in order:
        if len(held) >= holdout:
            break
        held += groups[g]
        taken.add(g)
    real = [n for n in notes if n.group not in taken]
    return real, held


# --------------------------------------------------------------------------- planting


def _insert(filler: str, snippet: str, rng: random.Random) -> str:
    """``snippet`` between two words near the middle of ``filler``."""
    spans = tokenize(filler)[1]
    if len(spans) < 2:
        return f"{filler} {snippet}"
    cut = spans[rng.randint(len(spans) // 3, max(len(spans) // 3, 2 * len(spans) // 3))][0]
    return f"{filler[:cut]}{snippet} {filler[cut:]}"


def _span(text: str, n: int, rng: random.Random) -> str:
    spans = tokenize(text)[1]
    start = rng.randint(0, len(spans) - n)
    return text[spans[start][0] : spans[start + n - 1][1]]


def _edit(text: str, fraction: float, vocab: list[str], rng: random.Random) -> str:
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, round(len(words) * fraction))):
        new = rng.choice(vocab)
        while new.lower() == words[i].lower():
            new = rng.choice(vocab)
        words[i] = new
    return " ".join(words)


def _other_phone_format(phone: str, rng: random.Random) -> str:
    digits = re.sub(r"\D", "", phone)
    national = digits[3:] if digits.startswith("372") else digits
    return national if rng.random() < 0.5 else f"{national[:3]} {national[3:]}"


def make_plants(
    real: list[Note], held: list[Note], *, clean: int, per_kind: int, seed: int
) -> list[Plant]:
    """The synthetic set: ``clean`` held-out notes, and ``per_kind`` planted leaks of every kind.

    Held-out notes used as clean notes are not reused as filler ("new text") for plants.
    """
    rng = random.Random(seed)
    held = list(held)
    rng.shuffle(held)
    clean_notes, fillers = held[:clean], held[clean:] or held
    vocab = sorted({w for n in fillers for w in n.text.split() if w.isalpha()})
    lengths = {n.id: len(tokenize(n.text)[0]) for n in real}
    plants = [Plant(f"clean-{i:04d}", "clean", n.text) for i, n in enumerate(clean_notes)]

    def sources(min_tokens: int) -> list[Note]:
        pool = [n for n in real if lengths[n.id] >= min_tokens]
        if not pool:
            return []
        if len(pool) >= per_kind:
            return rng.sample(pool, per_kind)
        return [rng.choice(pool) for _ in range(per_kind)]  # fewer notes than plants: reuse

    def filler(i: int) -> str:
        return fillers[(i * 7 + len(plants)) % len(fillers)].text

    for i, src in enumerate(sources(MIN_COPY_TOKENS)):
        plants.append(Plant(f"whole-{i:04d}", "whole", src.text, src.id, src.text))
    for kind, n in SPAN_KINDS.items():
        for i, src in enumerate(sources(n)):
            leak = _span(src.text, n, rng)
            plants.append(
                Plant(f"{kind}-{i:04d}", kind, _insert(filler(i), leak, rng), src.id, leak)
            )
    for i, src in enumerate(sources(MIN_COPY_TOKENS)):
        plants.append(
            Plant(f"edit10-{i:04d}", "edit10", _edit(src.text, 0.10, vocab, rng), src.id, None)
        )
    people = rng.sample(real, min(per_kind, len(real)))
    for i, src in enumerate(people):
        name = src.ident["patient_name"]
        code = src.ident["national_id"]
        phone = src.ident["phone"]
        other = _other_phone_format(phone, rng)
        for kind, value, templates in (
            ("name", name, NAME_SENTENCES),
            ("national_id", code, ID_SENTENCES),
            ("phone", phone, PHONE_SENTENCES),
            ("phone_other_format", other, PHONE_SENTENCES),
        ):
            sentence = rng.choice(templates).format(value)
            plants.append(
                Plant(f"{kind}-{i:04d}", kind, _insert(filler(i), sentence, rng), src.id, value)
            )
    return plants


def write_export(real: list[Note], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for n in real:
            fh.write(json.dumps({"id": n.id, "text": n.text, **n.ident}, ensure_ascii=False) + "\n")


def write_plants(plants: list[Plant], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for p in plants:
            fh.write(json.dumps({"id": p.id, "text": p.text}, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- scoring


def boilerplate_only(ws: Any, plants: list[Plant]) -> set[str]:
    """Ids of span plants that are boilerplate by the policy's own rule, i.e. not a leak by design.

    With ``verbatim_counts_boilerplate`` on, a span whose every word k-gram is in
    the notes of ≥ ``boilerplate_patients`` patients; off (the default), a span
    with fewer than ``verbatim_max_tokens`` tokens outside such k-grams.
    """
    import numpy as np

    from appliance.privacy.detectors import Candidate, _rare_tokens
    from appliance.privacy.reference import gram_hashes, load_or_build

    index, _ = load_or_build(ws)
    lk = ws.policy.leakage
    spans = [p for p in plants if p.kind in SPAN_KINDS and p.leaked is not None]
    # the part of the on-disk index these spans touch
    view = index.view([Candidate.of(p.id, p.leaked or "", index) for p in spans], dcr=False)
    out = set()
    for p in spans:
        tokens = tokenize(p.leaked or "")[0]
        grams = gram_hashes(index.hasher.many(tokens), index.k)
        if len(view.ukeys):
            pos = np.minimum(np.searchsorted(view.ukeys, grams), len(view.ukeys) - 1)
            common = (view.ukeys[pos] == grams) & (view.udf[pos] >= lk.boilerplate_patients)
        else:
            common = np.zeros(len(grams), dtype=bool)
        if lk.verbatim_counts_boilerplate:
            if common.all():
                out.add(p.id)
        elif _rare_tokens(common, 0, len(tokens), index.k) < lk.verbatim_max_tokens:
            out.add(p.id)
    return out


def near_copies(real: list[Note], plants: list[Plant], *, ratio: float = 0.8) -> set[str]:
    """Ids of clean plants that are edited copies of an ingested note (the corpus's own duplicates).

    A clean note of at least ``MIN_COPY_TOKENS`` words is a near copy when one
    ingested note sharing a word 8-gram with it holds ``ratio`` of its words in
    order (the LCS ratio rule's default): the same encounter twice in the
    corpus with small edits, which the split by opening words did not group.
    Counted separately, as pure-boilerplate spans are; read from the plain
    texts, not from the screen.
    """
    from appliance.privacy.detectors import lcs_length

    grams: dict[tuple[str, ...], set[int]] = {}
    real_tokens = [tokenize(n.text)[0] for n in real]
    for i, toks in enumerate(real_tokens):
        for j in range(len(toks) - 7):
            grams.setdefault(tuple(toks[j : j + 8]), set()).add(i)
    out = set()
    for p in plants:
        if p.kind != "clean":
            continue
        toks = tokenize(p.text)[0]
        if len(toks) < MIN_COPY_TOKENS:
            continue
        near = {i for j in range(len(toks) - 7) for i in grams.get(tuple(toks[j : j + 8]), ())}
        if any(lcs_length(toks, real_tokens[i]) >= ratio * len(toks) for i in near):
            out.add(p.id)
    return out


def score(
    report: dict[str, Any],
    plants: list[Plant],
    boilerplate: set[str],
    copies: set[str] | None = None,
) -> dict[str, Any]:
    """Per kind: planted, quarantined, recall (or false-quarantine rate), detectors that fired."""
    decided = {n["id"]: n["decision"] for n in report["notes"]}
    fired: dict[str, set[str]] = {
        q["id"]: {f["detector"] for f in q["findings"] if f["quarantine"]}
        for q in report["quarantined"]
    }
    rows: dict[str, Any] = {}
    for kind in ("clean", *KINDS):
        mine = [p for p in plants if p.kind == kind]
        if not mine:
            continue
        caught = [p for p in mine if decided.get(p.id) == "quarantined"]
        why: Counter[str] = Counter()
        for p in caught:
            why.update(fired.get(p.id, set()))
        row: dict[str, Any] = {
            "planted": len(mine),
            "quarantined": len(caught),
            "rate": len(caught) / len(mine),
            "detectors": dict(why.most_common()),
        }
        if kind == "clean" and copies is not None:
            fresh = [p for p in mine if p.id not in copies]
            row["near_copies"] = len(mine) - len(fresh)
            row["rate_without_near_copies"] = (
                sum(1 for p in fresh if decided.get(p.id) == "quarantined") / len(fresh)
                if fresh
                else None
            )
        if kind in SPAN_KINDS:
            leaks = [p for p in mine if p.id not in boilerplate]
            row["boilerplate_only"] = len(mine) - len(leaks)
            row["rate_without_boilerplate"] = (
                sum(1 for p in leaks if decided.get(p.id) == "quarantined") / len(leaks)
                if leaks
                else None
            )
        rows[kind] = row
    return {
        "verbatim_threshold": report.get("verbatim_threshold"),
        "screened": report["counts"]["screened"],
        "rejected": report["counts"]["rejected"],
        "kinds": rows,
        "seconds": report.get("seconds"),
    }


def _set_policy(ws: Any, key: str, value: str) -> Any:
    """The workspace reopened with ``[leakage] key = value`` in its policy copy."""
    from appliance.workspace import Workspace

    policy = ws.root / "policy.toml"
    text = policy.read_text(encoding="utf-8")
    new, n = re.subn(rf"(?m)^{re.escape(key)}\s*=.*$", f"{key} = {value}", text)
    if n != 1:
        raise SystemExit(f"{policy}: no [leakage] {key} to change")
    policy.write_text(new, encoding="utf-8")
    return Workspace.open(ws.root)


def run_planted(
    work: Path,
    notes: list[Note],
    *,
    holdout: int,
    clean: int,
    per_kind: int,
    seed: int,
    variants: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Ingest, plant, screen and score; then once more per ``KEY=VALUE`` policy variant."""
    from appliance.privacy import screen
    from appliance.records import ingest
    from appliance.workspace import init

    real, held = split(notes, holdout, seed)
    plants = make_plants(real, held, clean=clean, per_kind=per_kind, seed=seed)
    ws = init(work / "ws")
    export = work / "real.jsonl"
    write_export(real, export)
    ing = ingest.run(ws, export)
    cand = work / "synthetic.jsonl"
    write_plants(plants, cand)
    out: dict[str, Any] = {"runs": {}}
    copies = near_copies(real, plants)
    original = (ws.root / "policy.toml").read_text(encoding="utf-8")
    for variant in ("default", *variants):
        if variant != "default":
            key, sep, value = variant.partition("=")
            if not sep:
                raise SystemExit(f"--variant {variant!r}: expected KEY=VALUE")
            (ws.root / "policy.toml").write_text(original, encoding="utf-8")
            ws = _set_policy(ws, key.strip(), value.strip())
        t0 = time.perf_counter()
        result = screen.run(ws, corpus=None, input_path=cand)
        seconds = time.perf_counter() - t0
        assert result.report_json is not None
        report = json.loads(result.report_json.read_text())
        boiler = boilerplate_only(ws, plants)
        if variant == "default":
            out.update(
                {
                    "real_notes": len(real),
                    "real_stored": ing.stored,
                    "held_out_notes": len(held),
                    "index_records": report["index"]["records"],
                    "index_holdout_records": report["index"]["holdout_records"],
                    "dcr": {
                        k: report["dcr"].get(k)
                        for k in ("enabled", "threshold_similarity", "threshold_rank", "why")
                    },
                }
            )
        out["runs"][variant] = {
            **score(report, plants, boiler, copies),
            "dcr_threshold": report["dcr"].get("threshold_similarity"),
            "wall_seconds": round(seconds, 2),
        }
    (ws.root / "policy.toml").write_text(original, encoding="utf-8")
    return out


# --------------------------------------------------------------------------- output


def markdown(result: dict[str, Any], source: str) -> str:
    runs = result["runs"]
    head = (
        f"Source: {source}; {result['real_notes']:,} notes ingested as real records "
        f"({result['index_holdout_records']:,} of them the generator's held-out split), "
        f"{result['held_out_notes']:,} held out and never ingested.\n"
    )
    for name, r in runs.items():
        vt = r["verbatim_threshold"]
        head += f"\nRun `{name}`: effective verbatim threshold {vt['tokens']} tokens ({vt['source']}).\n"
    lines = [
        head,
        "| kind | planted | "
        + " | ".join(f"quarantined, {n}" for n in runs)
        + " | detectors that fired (first run) | goal |",
        "|---|---:|" + "---:|" * len(runs) + "---|---|",
    ]
    first = next(iter(runs.values()))
    for kind, row in first["kinds"].items():
        cells = []
        for r in runs.values():
            k = r["kinds"][kind]
            cell = f"{k['quarantined']} ({k['rate']:.1%})"
            if kind in SPAN_KINDS and k.get("boilerplate_only"):
                cell += f"; {k['rate_without_boilerplate']:.1%} of non-boilerplate"
            if kind == "clean" and k.get("near_copies"):
                cell += f"; {k['rate_without_near_copies']:.1%} without near copies"
            cells.append(cell)
        why = ", ".join(f"{d} {c}" for d, c in row["detectors"].items()) or "—"
        extra = (
            f" ({row['boilerplate_only']} pure boilerplate)" if row.get("boilerplate_only") else ""
        )
        if row.get("near_copies"):
            extra = f" ({row['near_copies']} near copies of ingested notes)"
        lines.append(
            f"| {kind}{extra} | {row['planted']} | "
            + " | ".join(cells)
            + f" | {why} | {GOALS.get(kind, '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--source", choices=["mts-dialog", "mtsamples", "demo", "synthetic"], default="mts-dialog"
    )
    p.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    p.add_argument("--notes", type=int, default=100_000, help="at most this many source notes")
    p.add_argument("--holdout", type=int, default=400, help="notes held out (never ingested)")
    p.add_argument("--clean", type=int, default=200, help="held-out notes screened as clean notes")
    p.add_argument("--per-kind", type=int, default=100, help="planted leaks of each kind")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="screen again with this [leakage] policy value (repeatable)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, help="keep the workspace here")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="screen-planted-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    notes = load_notes(args.source, args.corpora, args.notes, args.seed, work)
    result = run_planted(
        work,
        notes,
        holdout=args.holdout,
        clean=args.clean,
        per_kind=args.per_kind,
        seed=args.seed,
        variants=args.variant,
    )
    result["source"] = args.source
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(f"# Leakage screen: planted leaks ({args.source})\n")
    print(markdown(result, args.source))
    print(f"\n{result['wall_seconds']:.0f} s in all.")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
