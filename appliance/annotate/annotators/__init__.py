"""Annotators behind one interface, in a registry, and ensembles of them.

An annotator takes ``(id, text)`` notes and returns, per note, either spans
or the reason it failed. Two kinds exist: the lexicon annotator (local, never
fails) and the LLM annotator (names entities through the chat API; code
places them). Several annotators, or one LLM with several prompts, combine
into an ensemble:

* ``union``: every span any member found;
* ``intersection``: spans (same characters, same type) every member found;
* ``majority``: spans more than half of the members found.

A span several members found keeps the highest confidence given to it. The
ranges a member could not decide on (``MemberResult.uncertain``; the lexicon
annotator's weak head-noun phrases, for instance) are united over the members,
less those overlapping a span the ensemble kept.

Overlaps left after combining are resolved by the alignment rule (longest,
then earliest). A note a member failed on is rejected by the ensemble with
that member's reason: a vote with a missing voter would quietly change the
rule.

Adding an annotator is one new module in this package with a ``build``
function (see :class:`~appliance.annotate.annotators.base.Builder`) that
turns the options into members, and one line in ``REGISTRY`` below.
"""

from __future__ import annotations

from appliance.annotate.annotators import lexicon, llm
from appliance.annotate.annotators.base import AnnotatorOptions, Builder, Member, MemberResult
from appliance.annotate.annotators.ensemble import (
    COMBINE,
    EnsembleResult,
    combine,
    combine_uncertain,
    run_members,
)
from appliance.annotate.annotators.lexicon import LexiconMember
from appliance.annotate.annotators.llm import LLMMember
from appliance.annotate.cache import AnswerCache
from appliance.config import EgressPolicy, EntitySchema
from appliance.errors import UsageError

__all__ = [
    "ANNOTATORS",
    "COMBINE",
    "REGISTRY",
    "AnnotatorOptions",
    "EnsembleResult",
    "LLMMember",
    "LexiconMember",
    "Member",
    "MemberResult",
    "build_members",
    "combine",
    "combine_uncertain",
    "run_members",
]

# name -> how its members are built; the order is the order of --annotator choices.
REGISTRY: dict[str, Builder] = {
    "lexicon": lexicon.build,
    "llm": llm.build,
}
ANNOTATORS = tuple(REGISTRY)


def build_members(
    options: AnnotatorOptions,
    schema: EntitySchema,
    egress: EgressPolicy,
    *,
    cache: AnswerCache | None = None,
    language: str = "en",
) -> list[Member]:
    """The annotators the options ask for; an LLM endpoint passes the egress guard here."""
    if not options.annotators:
        raise UsageError("choose at least one --annotator")
    for a in options.annotators:
        if a not in REGISTRY:
            raise UsageError(f"unknown annotator '{a}'; choose from: {', '.join(ANNOTATORS)}")
    if options.combine not in COMBINE:
        raise UsageError(
            f"unknown --combine '{options.combine}'; choose from: {', '.join(COMBINE)}"
        )
    members: list[Member] = []
    for a in dict.fromkeys(options.annotators):
        members.extend(REGISTRY[a](options, schema, egress, cache=cache, language=language))
    return members
