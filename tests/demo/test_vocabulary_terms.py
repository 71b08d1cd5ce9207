"""The demo's partial term list: a seeded share of each type's concepts, as a hospital's would be."""

from __future__ import annotations

from appliance.annotate.lexicon import load_lexicon
from appliance.demo.vocabulary import load_vocabulary, write_term_list


def test_term_list_keeps_a_seeded_share_of_each_type(tmp_path):
    counts = write_term_list(tmp_path / "a.tsv", share=0.6, seed=1)
    vocab = load_vocabulary().values()
    for label, c in counts.items():
        total = sum(1 for e in vocab if e.label == label)
        assert c["concepts"] == total and c["kept"] == round(0.6 * total)
    # Same seed, same list; another seed, another list.
    write_term_list(tmp_path / "b.tsv", share=0.6, seed=1)
    write_term_list(tmp_path / "c.tsv", share=0.6, seed=2)
    a, b, c = ((tmp_path / n).read_text() for n in ("a.tsv", "b.tsv", "c.tsv"))
    assert a == b and a != c
    # Every surface form of a chosen concept, none of a dropped one; the annotator reads it.
    lex = load_lexicon(tmp_path / "a.tsv")
    surfaces = {e.surface for e in lex.entries}
    kept = {e.term for e in vocab if e.term in surfaces}
    for entry in vocab:
        if entry.term in kept:
            assert set(entry.synonyms) <= surfaces
    assert len(kept) == sum(c["kept"] for c in counts.values())
    assert {e.label for e in lex.entries} == {"DIAGNOSIS", "DRUG", "PROCEDURE"}
