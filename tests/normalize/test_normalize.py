"""The normalizer on tiny terminologies: terminology checks, linking, files, evaluation, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.annotate.lexicon import LexiconRules, load_lexicon
from appliance.cli import cli
from appliance.documents import Document, Span, read_gold, write_brat
from appliance.errors import InputError
from appliance.normalize import linker
from appliance.normalize.build import build
from appliance.normalize.evaluate import evaluate, span_code_scores
from appliance.normalize.linker import NormalizerSettings, load
from appliance.normalize.mentions import note_mentions, rule_variants
from appliance.normalize.terminology import Terminology, guess_system, load_terminology

TERMS = """term\tlabel\tcode\tsynonyms\txrefs
myocardial infarction\tDIAGNOSIS\tDX1\theart attack|MI\tMESH:D009203
factor VIII deficiency\tDIAGNOSIS\tDX2\thaemophilia A|hemophilia A\tMESH:D006467|OMIM:306700
type 2 diabetes mellitus\tDIAGNOSIS\tDX3\tT2DM|adult-onset diabetes\t
pneumonia\tDIAGNOSIS\tDX4\tlung infection\t
Duchenne muscular dystrophy\tDIAGNOSIS\tDX5\t\tMESH:D020388
metformin\tDRUG\tRX1\tGlucophage\t
warfarin\tDRUG\tRX2\tCoumadin\t
coronary angiography\tPROCEDURE\tPX1\tcoronary angiogram\t
"""


@pytest.fixture
def terms(tmp_path: Path) -> Path:
    path = tmp_path / "terms.tsv"
    path.write_text(TERMS, encoding="utf-8")
    return path


@pytest.fixture
def normalizer(terms: Path) -> linker.Normalizer:
    term = load_terminology([terms], [None])
    return build(term, LexiconRules.builtin("en")).normalizer


def _cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


# ---------------------------------------------------------------------------
# Terminology


def test_terminology_keeps_names_synonyms_xrefs_and_systems(terms):
    term = load_terminology([terms], [None])
    assert len(term.concepts) == 8
    mi = term.by_code["DX1"]
    assert mi.name == "myocardial infarction"
    assert mi.synonyms == ["heart attack", "MI"]
    assert mi.xrefs == ["MESH:D009203"]
    assert term.resolve("D009203") == ["DX1"]  # a MeSH id without its prefix
    assert term.resolve("OMIM:306700") == ["DX2"]
    assert term.resolve("DX4") == ["DX4"]
    assert term.resolve("D999999") == []
    assert guess_system("DOID:9352", "DIAGNOSIS") == "http://purl.obolibrary.org/obo/doid.owl"
    assert guess_system("A10BA02", "DRUG") == "http://www.whocc.no/atc"
    assert guess_system("E11.9", "DIAGNOSIS") == "http://hl7.org/fhir/sid/icd-10"
    assert mi.system == "urn:appliance:terminology:diagnosis"
    assert term.sha256() == Terminology.from_jsonl(term.to_jsonl(), "x").sha256()


def test_obo_xrefs_and_names(tmp_path):
    obo = tmp_path / "mini.obo"
    obo.write_text(
        "format-version: 1.2\n\n[Term]\nid: DOID:1\nname: cystic fibrosis\n"
        'synonym: "mucoviscidosis" EXACT []\nsynonym: "CF narrow" NARROW []\n'
        "xref: MESH:D003550\nxref: OMIM:219700\n\n[Term]\nid: DOID:2\nname: gone\n"
        "is_obsolete: true\n",
        encoding="utf-8",
    )
    term = Terminology.from_lexicon(load_lexicon(obo, "DIAGNOSIS"))
    (c,) = term.concepts
    assert (c.code, c.name, c.synonyms) == ("DOID:1", "cystic fibrosis", ["mucoviscidosis"])
    assert c.xrefs == ["MESH:D003550", "OMIM:219700"]
    assert c.system == "http://purl.obolibrary.org/obo/doid.owl"
    assert term.resolve("MESH:D003550") == ["DOID:1"]


def test_a_lexicon_without_codes_is_refused(tmp_path):
    path = tmp_path / "nocodes.tsv"
    path.write_text("term\tlabel\nasthma\tDIAGNOSIS\n", encoding="utf-8")
    with pytest.raises(InputError, match="no term has a concept code"):
        load_terminology([path], [None])
    code, out = _cli("normalize", "evaluate", "--gold", path, "--lexicon", path)
    assert code != 0 and "Traceback" not in out


def test_conflicting_names_or_types_for_one_code_are_refused(tmp_path):
    two_names = tmp_path / "two.tsv"
    two_names.write_text(
        "term\tlabel\tcode\nasthma\tDIAGNOSIS\tX1\nbronchitis\tDIAGNOSIS\tX1\n", encoding="utf-8"
    )
    with pytest.raises(InputError, match="code X1 is given two names, 'asthma' and 'bronchitis'"):
        load_terminology([two_names], [None])
    two_types = tmp_path / "types.tsv"
    two_types.write_text(
        "term\tlabel\tcode\nasthma\tDIAGNOSIS\tX1\nasthma inhaler\tDRUG\tX1\n", encoding="utf-8"
    )
    with pytest.raises(InputError, match="code X1 is given two types"):
        load_terminology([two_types], [None])
    # Two files naming one concept alike (case aside) give one concept with both synonyms.
    one = tmp_path / "one.tsv"
    one.write_text("term\tlabel\tcode\tsynonyms\nasthma\tDIAGNOSIS\tX1\twheeze\n", "utf-8")
    other = tmp_path / "other.tsv"
    other.write_text("term\tlabel\tcode\tsynonyms\nASTHMA\tDIAGNOSIS\tX1\tRAD\n", "utf-8")
    (c,) = load_terminology([one, other], [None, None]).concepts
    assert (c.name, c.synonyms) == ("asthma", ["wheeze", "RAD"])


def test_terms_without_a_code_are_skipped_and_counted(tmp_path):
    path = tmp_path / "mixed.tsv"
    path.write_text("term\tlabel\tcode\nasthma\tDIAGNOSIS\tX1\ncough\tDIAGNOSIS\t\n", "utf-8")
    term = load_terminology([path], [None])
    assert term.skipped == 1 and "1 terms without a code skipped" in term.describe()


# ---------------------------------------------------------------------------
# Linking


def test_exact_variant_and_similar_mentions(normalizer):
    links = normalizer.link(
        [
            ("Heart  Attack", "DIAGNOSIS"),
            ("deficiency of factor VIII", "DIAGNOSIS"),  # word order and a stop word
            ("myocardial infarctions", "DIAGNOSIS"),  # plural
            ("pnuemonia", "DIAGNOSIS"),  # a typo
            ("Coumadin", "DRUG"),
        ]
    )
    assert [(x.code, x.via) for x in links] == [
        ("DX1", "exact"),
        ("DX2", "variant"),
        ("DX1", "variant"),
        ("DX4", "similarity"),
        ("RX2", "exact"),
    ]
    assert links[0].score == 1.0 and 0 < links[3].score < 1.0


def test_candidates_stay_within_the_type_and_unrelated_text_is_nil(normalizer):
    (drug,) = normalizer.link([("metformine", "DRUG")])
    assert drug.code == "RX1"
    assert {c.code for c in drug.candidates} <= {"RX1", "RX2"}
    (nil,) = normalizer.link([("zzqx vortex", "DIAGNOSIS")])
    assert nil.code is None and nil.best is None
    assert nil.fields()["code_via"] == "nil" and nil.fields()["code_candidates"]
    normalizer.settings = NormalizerSettings(top_k=2)
    (two,) = normalizer.link([("diabetes", "DIAGNOSIS")])
    assert len(two.candidates) == 2 and two.candidates[0].code == "DX3"


def test_an_abbreviation_the_note_defines_is_normalized_as_its_long_form(normalizer):
    text = "Boy with Duchenne muscular dystrophy (DMD). DMD progressed."
    start = text.rindex("DMD")
    (link,) = normalizer.link_note(text, [(start, start + 3, "DIAGNOSIS")])
    assert link.code == "DX5" and link.via == "abbreviation+exact"
    (alone,) = normalizer.link([("DMD", "DIAGNOSIS")])
    assert alone.code != "DX5" or alone.via == "similarity"


def test_files_round_trip_and_refuse_changes(normalizer, tmp_path):
    folder = tmp_path / "norm"
    normalizer.save(folder, None, None)
    again = load(folder)
    mentions = [("heart attack", "DIAGNOSIS"), ("pnuemonia", "DIAGNOSIS")]
    assert [x.fields() for x in again.link(mentions)] == [
        x.fields() for x in normalizer.link(mentions)
    ]
    concepts = folder / linker.CONCEPTS
    concepts.write_bytes(concepts.read_bytes().replace(b"pneumonia", b"pneumonitis"))
    with pytest.raises(InputError, match="hash .* is not the one the normalizer was built on"):
        load(folder)
    normalizer.save(folder, None, None)
    sparse = folder / linker.SPARSE
    sparse.write_bytes(sparse.read_bytes()[:-2] + b"}}")
    with pytest.raises(InputError, match="changed since the normalizer was built"):
        load(folder)
    with pytest.raises(InputError, match="no normalizer here"):
        load(tmp_path)


def test_rule_variants_differ_from_the_name():
    import random

    out = rule_variants("deficiency of factor-VIII, acquired", random.Random(0), frozenset({"of"}))
    assert out and "deficiency of factor-VIII, acquired" not in out
    assert "acquired deficiency of factor-VIII" in out
    assert any("factor VIII" in v for v in out)


# ---------------------------------------------------------------------------
# Evaluation


def _gold() -> list[Document]:
    text = "Heart attack and pnuemonia; DMD. Later a foo syndrome, warfarin given."
    spans = [
        Span(0, 12, "DIAGNOSIS", "Heart attack", code="D009203"),  # through the MeSH xref
        Span(17, 26, "DIAGNOSIS", "pnuemonia", code="DX4"),
        Span(28, 31, "DIAGNOSIS", "DMD", code="D020388"),
        Span(41, 53, "DIAGNOSIS", "foo syndrome", code="D000001"),  # not in the terminology
        Span(55, 63, "DRUG", "warfarin", code="RX2|RX9"),
        Span(64, 69, "DIAGNOSIS", "given"),  # no code
    ]
    for s in spans:
        assert text[s.start : s.end] == s.text
    return [Document("n1", text, spans)]


def test_accuracy_beside_the_exact_match_baseline(normalizer):
    report = evaluate(normalizer, _gold())
    d = report.as_dict()
    assert (d["gold_mentions"], d["with_code"], d["mappable"], d["unmappable"]) == (6, 5, 4, 1)
    assert d["normalizer"]["all"]["accuracy_at_1"] == 0.75  # DMD has no definition here
    assert d["exact_match_baseline"]["all"]["accuracy_at_1"] == 0.5  # heart attack, warfarin
    assert d["normalizer"]["all"]["accuracy_at_5"] >= 0.75
    assert "normalizer all" in report.table() and "accuracy@1 0.750" in report.summary()


def test_seen_and_unseen_concepts_come_from_note_mentions(terms):
    term = load_terminology([terms], [None])
    rules = LexiconRules.builtin("en")
    note = Document(
        "s1",
        "Patient on Glucophage for T2DM. Hx of myocardial infarctions.",
        [Span(11, 21, "DRUG", "Glucophage"), Span(38, 61, "DIAGNOSIS", "myocardial infarctions")],
    )
    found = note_mentions([note], term, linker.SurfaceKeys(rules))
    assert set(found) == {("Glucophage", "RX1"), ("myocardial infarctions", "DX1")}
    built = build(term, rules, docs=[note]).normalizer
    assert built.mentions == {"RX1": 1, "DX1": 1}
    report = evaluate(built, _gold()).as_dict()
    assert report["normalizer"]["seen"]["mentions"] == 1  # heart attack (DX1)
    assert report["normalizer"]["unseen"]["mentions"] == 3


def test_span_and_code_scores(normalizer):
    gold = _gold()
    right = [(0, 12, "DIAGNOSIS"), (55, 63, "DRUG"), (41, 53, "DIAGNOSIS")]
    scores = span_code_scores(normalizer, gold, [right])
    assert scores["gold"] == 4 and scores["tp"] == 2
    assert scores["pred"] in (2, 3)  # the unknown syndrome is NIL or a wrong code


# ---------------------------------------------------------------------------
# Gold formats carry codes


def test_codes_in_pubtator_jsonl_and_brat(tmp_path):
    pub = tmp_path / "g.txt"
    pub.write_text(
        "1|t|Heart attack.\n1|a|Nothing else.\n1\t0\t12\tHeart attack\tDisease\tD009203\n\n",
        encoding="utf-8",
    )
    (doc,) = read_gold(pub)
    assert doc.spans[0].code == "D009203"
    jsonl = tmp_path / "g.jsonl"
    jsonl.write_text(
        json.dumps(
            {
                "id": "a",
                "text": "on warfarin",
                "entities": [{"start": 3, "end": 11, "label": "DRUG", "code": "RX2"}],
            }
        )
        + "\n",
        encoding="utf-8",
    )
    (jdoc,) = read_gold(jsonl)
    assert jdoc.spans[0].code == "RX2"
    write_brat([jdoc], tmp_path / "brat")
    ann = (tmp_path / "brat" / "a.ann").read_text(encoding="utf-8")
    assert "N1\tReference T1 RX2\twarfarin" in ann
    (bdoc,) = read_gold(tmp_path / "brat")
    assert bdoc.spans[0].code == "RX2"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "text": "ab", "entities": [{"start": 0, "end": 1, '
        '"label": "X", "code": 5}]}\n',
        encoding="utf-8",
    )
    with pytest.raises(InputError, match="'code' must be a string without spaces"):
        read_gold(bad)


# ---------------------------------------------------------------------------
# Command line


def test_normalize_evaluate_cli(terms, tmp_path):
    gold = tmp_path / "gold.jsonl"
    (doc,) = _gold()
    gold.write_text(
        json.dumps(
            {
                "id": doc.id,
                "text": doc.text,
                "entities": [
                    {"start": s.start, "end": s.end, "label": s.label, "code": s.code}
                    for s in doc.spans
                ],
            }
        )
        + "\n",
        encoding="utf-8",
    )
    code, out = _cli("normalize", "evaluate", "--gold", gold, "--lexicon", terms)
    assert code == 0, out
    assert "exact-match baseline all" in out and "accuracy@1 0.750" in out
    code, out = _cli("normalize", "evaluate", "--gold", gold, "--lexicon", terms, "--json")
    assert code == 0 and json.loads(out)["mappable"] == 4
    nocode = tmp_path / "nocode.jsonl"
    nocode.write_text('{"id": "a", "text": "asthma", "entities": []}\n', encoding="utf-8")
    code, out = _cli("normalize", "evaluate", "--gold", nocode, "--lexicon", terms)
    assert code != 0 and "no gold span carries a concept code" in out
    code, out = _cli("normalize", "evaluate", "--gold", gold)
    assert code != 0 and "either --normalizer PATH or --lexicon FILE" in out


def test_normalize_train_refuses_a_lexicon_without_codes(workspace, tmp_path):
    path = tmp_path / "nocodes.tsv"
    path.write_text("term\tlabel\nasthma\tDIAGNOSIS\n", encoding="utf-8")
    code, out = _cli("normalize", "train", "-w", workspace.root, "--lexicon", path)
    assert code != 0 and "no term has a concept code" in out and "Traceback" not in out
    code, out = _cli("normalize", "train", "-w", workspace.root)
    assert code != 0 and "pass --lexicon FILE" in out


# ---------------------------------------------------------------------------
# LLM-written mentions


class _MentionServer:
    """A loopback OpenAI-compatible server that answers each concept's prompt from a table."""

    def __init__(self, answers: dict[str, object]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self
        self.answers = answers
        self.prompts: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                outer.prompts.append(prompt)
                assert body["response_format"]["json_schema"]["name"] == "mentions"
                name = prompt.split('"')[1]
                answer = outer.answers.get(name, {"mentions": []})
                if answer == 500:
                    self.send_response(500)
                    self.end_headers()
                    return
                content = answer if isinstance(answer, str) else json.dumps(answer)
                data = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_llm_written_mentions_are_parsed_counted_and_guarded(terms):
    from appliance.config import EgressPolicy
    from appliance.errors import EgressDenied
    from appliance.normalize.llm_mentions import LLMMentionsFailed, write_mentions

    term = load_terminology([terms], [None])
    server = _MentionServer(
        {
            "myocardial infarction": {"mentions": ["AMI", "heart attack", "  STEMI  "]},
            "pneumonia": "not json",
            "warfarin": 500,
        }
    )
    egress = EgressPolicy()
    try:
        result = write_mentions(term.concepts, server.url, "m", egress, retries=0)
        assert ("AMI", "DX1") in result.mentions and ("STEMI", "DX1") in result.mentions
        assert ("heart attack", "DX1") not in result.mentions  # already a synonym
        assert result.asked == 8 and result.answered == 6
        assert result.failures == {"malformed": 1, "http_500": 1}
        assert all("clinical note" in p for p in server.prompts)
        assert any("(also: heart attack; MI)" in p for p in server.prompts)
        sample = write_mentions(term.concepts, server.url, "m", egress, limit=3, retries=0)
        assert sample.asked == 3
        server.answers = {c.name: 500 for c in term.concepts}
        with pytest.raises(LLMMentionsFailed, match="no concept got an answer"):
            write_mentions(term.concepts, server.url, "m", egress, retries=0)
    finally:
        server.close()
    with pytest.raises(EgressDenied):
        write_mentions(term.concepts, "http://10.9.8.7:8000/v1", "m", egress)


# ---------------------------------------------------------------------------
# Edges


def test_types_signs_and_empty_mentions(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text(
        "term\tlabel\tcode\n"
        "HER2+ breast cancer\tDIAGNOSIS\tC1\nHER2- breast cancer\tDIAGNOSIS\tC2\n"
        "(+)\tDIAGNOSIS\tC3\ninsulinoma\tDIAGNOSIS\tC4\n",
        encoding="utf-8",
    )
    n = build(load_terminology([path], [None]), LexiconRules.builtin("en")).normalizer
    plus, minus, empty, blank, drug, anytype = n.link(
        [
            ("her2+ breast cancer", "DIAGNOSIS"),
            ("HER2- breast cancer", "DIAGNOSIS"),
            ("", "DIAGNOSIS"),
            ("-", "DIAGNOSIS"),
            ("insulin", "DRUG"),  # a type the terminology lacks: NIL, never a disease code
            ("insulinoma", None),  # any type
        ]
    )
    assert (plus.code, plus.via) == ("C1", "exact")
    assert minus.code == "C2"
    assert empty.code is None and blank.code is None
    assert drug.code is None and drug.via == "type not in terminology" and not drug.candidates
    assert anytype.code == "C4"


def test_codes_resolve_without_case_or_mesh_prefix_and_systems_are_told_apart(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("term\tlabel\tcode\nasthma\tDIAGNOSIS\tD001249\n", encoding="utf-8")
    term = load_terminology([path], [None])
    assert term.resolve("MESH:D001249") == ["D001249"] == term.resolve("d001249")
    assert guess_system("C0011849", "DIAGNOSIS") == "http://www.nlm.nih.gov/research/umls"
    assert guess_system("C000657245", "DIAGNOSIS") == "http://id.nlm.nih.gov/mesh"
    spaced = tmp_path / "s.tsv"
    spaced.write_text("term\tlabel\tcode\nasthma\tDIAGNOSIS\tJ45 9\n", encoding="utf-8")
    with pytest.raises(InputError, match="has a space"):
        load_terminology([spaced], [None])


def test_nil_counts_wrong_in_coded_right_not_in_accuracy_at_1(normalizer):
    normalizer.settings = NormalizerSettings(nil_threshold=0.99)
    d = evaluate(normalizer, _gold()).as_dict()["normalizer"]["all"]
    assert d["coded_right"] == 0.5  # the two exact matches; the typo is NIL now
    assert d["accuracy_at_1"] == 0.75 and d["nil"] >= 1


def test_full_width_text_is_compared_as_its_plain_form(normalizer):
    (link,) = normalizer.link([("ｐｎｅｕｍｏｎｉａ", "DIAGNOSIS")])
    assert (link.code, link.via) == ("DX4", "exact")


def test_a_swap_cut_by_a_crash_is_finished_at_next_use(workspace, terms):
    from appliance.normalize.stage import FOLDER, parse_lexicons, run, workspace_normalizer

    run(workspace, lexicons=parse_lexicons([terms], None))
    folder = workspace.models_dir / FOLDER
    # Killed after the old folder moved away, before the new one moved in.
    folder.rename(folder.with_name(f".{FOLDER}.new"))
    assert workspace_normalizer(workspace) == folder and load(folder).terminology
    folder.rename(folder.with_name(f".{FOLDER}.old"))
    assert workspace_normalizer(workspace) == folder
    assert not folder.with_name(f".{FOLDER}.old").exists()


def test_unreadable_normalizer_files_are_one_line_errors(normalizer, tmp_path):
    folder = tmp_path / "n"
    normalizer.save(folder, None, None)
    meta = folder / linker.META
    meta.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(InputError, match="not a normalizer of format"):
        load(folder)
    normalizer.save(folder, None, None)
    data = json.loads(meta.read_text())
    data["files"] = "none"
    meta.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match="no file hashes recorded"):
        load(folder)
