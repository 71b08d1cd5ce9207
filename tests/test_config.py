"""Policy, entity schema and workspace config: valid files load, bad ones name file, key and expectation."""

from __future__ import annotations

import pytest

from appliance.config import default_policy_path, load_config, load_entity_schema, load_policy
from appliance.errors import ConfigError


def test_default_policy_and_schema_load():
    policy = load_policy()
    assert policy.leakage.verbatim_max_tokens == 12
    assert policy.egress.allowed_hosts == []
    assert len(policy.sha256) == 64
    schema = policy.entity_schema()
    assert {"DRUG", "PROCEDURE", "DIAGNOSIS"} <= set(schema.labels)
    for entity in schema.entities:
        assert len(entity.definition.split()) > 20, "definitions are written for LLM prompts"
        assert len(entity.examples) >= 3


def test_partial_policy_takes_defaults(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[policy]\nname = "strict"\n[leakage]\nverbatim_max_tokens = 20\n')
    policy = load_policy(path)
    assert policy.policy.name == "strict"
    assert policy.leakage.verbatim_max_tokens == 20
    assert policy.leakage.ngram_tokens == 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[policy]\nname = "x"\n[leakage]\nverbatim_max_tokens = "twelve"\n',
            r"\[leakage\] verbatim_max_tokens: expected an integer from 3 to 1000, got 'twelve'",
        ),
        (
            '[policy]\nname = "x"\n[leakage]\nverbatim_max_tokens = 2\n',
            r"verbatim_max_tokens: expected an integer",
        ),
        (
            '[policy]\nname = "x"\n[leakage]\nlcs_ratio_max = 1.5\n',
            r"lcs_ratio_max: expected a number from 0 to 1",
        ),
        (
            '[policy]\nname = "x"\n[leakage]\nverbatim_max_tokn = 12\n',
            r"unknown key 'verbatim_max_tokn' in \[leakage\]",
        ),
        ('[policy]\nname = "x"\n[leekage]\n', r"unknown section \[leekage\]"),
        ("[leakage]\n", r"missing section \[policy\]"),
        ('[policy]\nname = ""\n', r"\[policy\] name: expected a non-empty string"),
        (
            '[policy]\nname = "x"\n[egress]\nallowed_hosts = "llm"\n',
            r"allowed_hosts: expected a list",
        ),
        (
            '[policy]\nname = "x"\n[egress]\nallowed_schemes = ["ftp"]\n',
            r"allowed_schemes: expected a list drawn from",
        ),
        (
            '[policy]\nname = "x"\n[egress]\nallowed_hosts = ["http://llm:8000"]\n',
            r"allowed_hosts: .*not a plain host",
        ),
        (
            '[policy]\nname = "x"\n[identifiers]\ntypes = ["PERSON", "SHOE_SIZE"]\n',
            r"\[identifiers\] types: expected a list drawn from",
        ),
        (
            '[policy]\nname = "x"\n[pseudonymize]\nenabled = "yes"\n',
            r"enabled: expected true or false",
        ),
        (
            '[policy]\nname = "x"\n[leakage]\nngram_tokens = 16\nverbatim_max_tokens = 12\n',
            r"must be ≥ ngram_tokens",
        ),
        ('[policy\nname = "x"\n', r"is not valid TOML"),
        ('[policy]\nname = "x"\nleakage = 3\n', r"unknown key 'leakage' in \[policy\]"),
    ],
)
def test_policy_errors_name_file_key_and_expectation(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_policy(path)
    assert str(path) in info.value.message
    assert "\n" not in info.value.message


def test_missing_policy_file(tmp_path):
    with pytest.raises(ConfigError, match="policy not found"):
        load_policy(tmp_path / "nope.toml")


def test_policy_not_utf8(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(b'[policy]\nname = "\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_policy(path)


def test_missing_entity_schema_is_named(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[policy]\nname = "x"\n[annotation]\nentity_schema = "entities/none.toml"\n')
    with pytest.raises(ConfigError, match="entity_schema: file 'entities/none.toml' not found"):
        load_policy(path).entity_schema()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[schema]\nname = "s"\n', "at least one"),
        (
            '[schema]\n[[entity]]\nlabel = "DRUG"\ndefinition = "a drug given to the patient"\n',
            r"\[schema\] name",
        ),
        (
            '[schema]\nname = "s"\n[[entity]]\nlabel = "drug"\ndefinition = "a drug given to them"\n',
            "upper-case",
        ),
        ('[schema]\nname = "s"\n[[entity]]\nlabel = "DRUG"\ndefinition = "drug"\n', "definition"),
        (
            '[schema]\nname = "s"\n[[entity]]\nlabel = "DRUG"\ndefinition = "a drug given to them"\nexamples = "x"\n',
            "examples",
        ),
        (
            '[schema]\nname = "s"\n[[entity]]\nlabel = "DRUG"\ndefinition = "a drug given to them"\ncolour = 1\n',
            "unknown key 'colour'",
        ),
        (
            '[schema]\nname = "s"\n[[entity]]\nlabel = "DRUG"\ndefinition = "a drug given to them"\n'
            '[[entity]]\nlabel = "DRUG"\ndefinition = "a drug given to them"\n',
            "defined twice",
        ),
    ],
)
def test_entity_schema_errors(tmp_path, text, message):
    path = tmp_path / "schema.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_entity_schema(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[workspace]\nlanguage = "english"\n', r"\[workspace\] language: expected an ISO 639-1"),
        (
            '[workspace]\nlanguage = "en"\n[store]\nshard_max_records = 0\n',
            r"shard_max_records: expected an integer",
        ),
        ('[workspace]\nlanguage = "en"\n[storage]\n', r"unknown section \[storage\]"),
        ('[keys]\ndata_key = "k"\n', r"missing section \[workspace\]"),
    ],
)
def test_config_errors(tmp_path, text, message):
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_default_policy_is_the_repository_file():
    assert default_policy_path().name == "default.toml"
