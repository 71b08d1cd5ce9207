"""Workspace config (appliance.toml), privacy policy and entity schema.

All three are TOML, validated once when loaded: an unknown key, a wrong type
or an out-of-range value raises ``ConfigError`` naming the file, the key and
what was expected. Loaded values are plain frozen dataclasses; ``as_dict()``
gives the plain data written into artifact manifests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from appliance.errors import ConfigError
from appliance.security.egress import parse_allowed_host

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")

# ---------------------------------------------------------------------------
# A small declarative validator: each dataclass field carries, in its metadata,
# a check and a phrase for the error message. Kept here rather than pulling in
# a schema library for a dozen keys.


def _spec(default: Any, expect: str, check: Callable[[Any], bool]) -> Any:
    if isinstance(default, list):
        return field(
            default_factory=lambda: list(default), metadata={"expect": expect, "check": check}
        )
    return field(default=default, metadata={"expect": expect, "check": check})


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return (
            isinstance(v, int)
            and not isinstance(v, bool)
            and (lo is None or v >= lo)
            and (hi is None or v <= hi)
        )

    return check


def _float(lo: float | None = None, hi: float | None = None) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and (lo is None or v >= lo)
            and (hi is None or v <= hi)
        )

    return check


def _str(nonempty: bool = False) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and (bool(v.strip()) or not nonempty)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _str_list(choices: frozenset[str] | None = None) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return (
            isinstance(v, list)
            and all(isinstance(x, str) and x for x in v)
            and (choices is None or all(x in choices for x in v))
        )

    return check


def _describe(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _build(cls: type[T], data: Any, where: str, section: str) -> T:
    """Validate the table ``data`` against dataclass ``cls`` and build it."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: [{section}] must be a table, got {_describe(data)}")
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key '{unknown[0]}' in [{section}]; known keys: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name not in data:
            continue
        value = data[name]
        check = f.metadata.get("check")
        if check is not None and not check(value):
            raise ConfigError(
                f"{where}: [{section}] {name}: expected {f.metadata['expect']}, got {_describe(value)}"
            )
        values[name] = value
    return cls(**values)


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {what} is not valid TOML: {exc}") from exc


def _sections(
    doc: dict[str, Any], where: str, schema: Mapping[str, type], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    unknown = sorted(set(doc) - set(schema))
    if unknown:
        raise ConfigError(
            f"{where}: unknown section [{unknown[0]}]; known sections: {', '.join(sorted(schema))}"
        )
    for name in required:
        if name not in doc:
            raise ConfigError(f"{where}: missing section [{name}]")
    return {name: _build(cls, doc.get(name, {}), where, name) for name, cls in schema.items()}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Policy

IDENTIFIER_TYPES = frozenset(
    {
        "PERSON",
        "NATIONAL_ID",
        "PHONE_NUMBER",
        "EMAIL_ADDRESS",
        "ADDRESS",
        "DATE_OF_BIRTH",
        "MEDICAL_RECORD_NUMBER",
    }
)
NATIONAL_ID_SCHEMES = frozenset({"EE_ISIKUKOOD", "SE_PERSONNUMMER", "FI_HETU", "US_SSN"})


@dataclass(frozen=True)
class PolicyInfo:
    name: str = _spec("default", "a non-empty string", _str(nonempty=True))
    version: str = _spec("1", "a non-empty string", _str(nonempty=True))
    description: str = _spec("", "a string", _str())


@dataclass(frozen=True)
class EgressPolicy:
    # Loopback is always allowed; these are the extra hosts ("host" or "host:port").
    allowed_hosts: list[str] = _spec([], "a list of host or host:port strings", _str_list())
    allowed_schemes: list[str] = _spec(
        ["http", "https"],
        "a list drawn from 'http', 'https'",
        _str_list(frozenset({"http", "https"})),
    )


@dataclass(frozen=True)
class IdentifierPolicy:
    types: list[str] = _spec(
        sorted(IDENTIFIER_TYPES),
        f"a list drawn from {', '.join(sorted(IDENTIFIER_TYPES))}",
        _str_list(IDENTIFIER_TYPES),
    )
    national_id_schemes: list[str] = _spec(
        sorted(NATIONAL_ID_SCHEMES),
        f"a list drawn from {', '.join(sorted(NATIONAL_ID_SCHEMES))}",
        _str_list(NATIONAL_ID_SCHEMES),
    )
    quarantine_generic: bool = _spec(False, "true or false", _bool)


@dataclass(frozen=True)
class PseudonymizePolicy:
    enabled: bool = _spec(True, "true or false", _bool)


@dataclass(frozen=True)
class LeakagePolicy:
    ngram_tokens: int = _spec(8, "an integer from 3 to 64", _int(3, 64))
    verbatim_max_tokens: int = _spec(12, "an integer from 3 to 1000", _int(3, 1000))
    boilerplate_patients: int = _spec(5, "an integer ≥ 2", _int(2))
    verbatim_counts_boilerplate: bool = _spec(False, "true or false", _bool)
    verbatim_calibrate: bool = _spec(False, "true or false", _bool)
    lcs_ratio_max: float = _spec(0.8, "a number from 0 to 1", _float(0.0, 1.0))
    lcs_min_tokens: int = _spec(20, "an integer ≥ 1", _int(1))
    near_duplicate_jaccard: float = _spec(0.6, "a number from 0 to 1", _float(0.0, 1.0))
    shingle_tokens: int = _spec(5, "an integer from 1 to 32", _int(1, 32))
    minhash_permutations: int = _spec(128, "an integer from 16 to 1024", _int(16, 1024))
    dcr_quantile: float = _spec(0.01, "a number from 0 to 0.5", _float(0.0, 0.5))
    dcr_min_tokens: int = _spec(12, "an integer ≥ 1", _int(1))
    canary_exposure_max_bits: float = _spec(10.0, "a number ≥ 0", _float(0.0))


@dataclass(frozen=True)
class AnnotationPolicy:
    entity_schema: str = _spec(
        "entities/clinical.toml", "a path to an entity schema TOML", _str(nonempty=True)
    )


@dataclass(frozen=True)
class ExportPolicy:
    int8_max_f1_drop: float = _spec(0.5, "a number of F1 points from 0 to 100", _float(0.0, 100.0))


@dataclass(frozen=True)
class IngestPolicy:
    max_note_chars: int = _spec(1_000_000, "an integer ≥ 1", _int(1))


@dataclass(frozen=True)
class Policy:
    """A validated privacy policy; ``sha256`` identifies the exact file."""

    policy: PolicyInfo
    egress: EgressPolicy
    identifiers: IdentifierPolicy
    pseudonymize: PseudonymizePolicy
    leakage: LeakagePolicy
    annotation: AnnotationPolicy
    export: ExportPolicy
    ingest: IngestPolicy
    path: Path
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        return out

    def entity_schema(self) -> EntitySchema:
        """Load the entity schema this policy names (relative to the policy, else built in)."""
        ref = Path(self.annotation.entity_schema)
        candidates = (
            [ref] if ref.is_absolute() else [self.path.parent / ref, _builtin_policy_dir() / ref]
        )
        for candidate in candidates:
            if candidate.is_file():
                return load_entity_schema(candidate)
        raise ConfigError(
            f"{self.path}: [annotation] entity_schema: file '{ref}' not found next to the policy "
            "or among the built-in policies"
        )


_POLICY_SECTIONS: dict[str, type] = {
    "policy": PolicyInfo,
    "egress": EgressPolicy,
    "identifiers": IdentifierPolicy,
    "pseudonymize": PseudonymizePolicy,
    "leakage": LeakagePolicy,
    "annotation": AnnotationPolicy,
    "export": ExportPolicy,
    "ingest": IngestPolicy,
}


def _builtin_policy_dir() -> Path:
    # Installed wheels carry the policies as the package data
    # ``appliance.policies``; an editable (development) install reads them
    # from the repository's top-level policies/ folder.
    installed = Path(str(resources.files("appliance"))) / "policies"
    if (installed / "default.toml").is_file():
        return installed
    return Path(__file__).resolve().parent.parent / "policies"


def default_policy_path() -> Path:
    """The installed default policy (policies/default.toml in the repository)."""
    return _builtin_policy_dir() / "default.toml"


def load_policy(path: Path | None = None) -> Policy:
    """Read and validate a policy file (the built-in default when ``path`` is None)."""
    path = path or default_policy_path()
    doc = _read_toml(path, "policy")
    leakage = doc.get("leakage")
    if isinstance(leakage, Mapping) and "boilerplate_records" in leakage:
        raise ConfigError(
            f"{path}: [leakage] boilerplate_records was replaced by boilerplate_patients "
            "(a k-gram in the notes of at least this many distinct patients is boilerplate; "
            "the default policy uses 5)"
        )
    sections = _sections(doc, str(path), _POLICY_SECTIONS, required=("policy",))
    pol = Policy(**sections, path=path, sha256=file_sha256(path))
    for entry in pol.egress.allowed_hosts:
        try:
            parse_allowed_host(entry)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc.message}") from None
    if pol.leakage.verbatim_max_tokens < pol.leakage.ngram_tokens:
        raise ConfigError(
            f"{path}: [leakage] verbatim_max_tokens ({pol.leakage.verbatim_max_tokens}) must be ≥ "
            f"ngram_tokens ({pol.leakage.ngram_tokens}): the index cannot see shorter spans"
        )
    return pol


# ---------------------------------------------------------------------------
# Entity schema
#
# Besides the types an LLM is prompted with, a schema may declare the lexicon
# annotator's language rules: ``[lexicon.LANG]`` (inflections, spelling
# variants, optional tokens, generic terms, stop words, where a noun phrase
# has its head) and, per type, ``[entity.lexicon.LANG]`` (head nouns,
# suffixes, word-order patterns). A workspace gets the rules of its own
# language only; nothing about any language is built into the matcher.


@dataclass(frozen=True)
class Inflection:
    """A token ending the matcher folds away: ``suffix`` becomes ``replace`` (plural → singular)."""

    suffix: str
    replace: str = ""
    min_length: int = 1  # the token's length, suffix included, at least
    unless: tuple[str, ...] = ()  # endings that keep the token as it is ("ss", "us")


@dataclass(frozen=True)
class TypeLexiconRules:
    """``[entity.lexicon.LANG]``: the head-noun and word-order rules of one type in one language."""

    head_nouns: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    word_order: tuple[tuple[str, str], ...] = ()  # ("deficiency of {}", "{} deficiency")


@dataclass(frozen=True)
class LanguageLexiconRules:
    """``[lexicon.LANG]``: the lexicon annotator's rules for one language."""

    inflections: tuple[Inflection, ...] = ()
    variants: tuple[tuple[str, str], ...] = ()  # ("tumour", "tumor"), ("ise$", "ize")
    optional_tokens: tuple[str, ...] = ()  # "'s": "Alzheimer's disease" = "Alzheimer disease"
    generic_terms: tuple[str, ...] = ()  # single words that are never an entity alone
    stop_words: tuple[str, ...] = ()  # never part of a head-noun phrase
    head: str = "last"  # where a noun phrase has its head: "last" or "first" word
    max_modifiers: int = 3  # words a head-noun phrase takes besides its head
    min_suffix_word: int = 6  # letters a word needs before a suffix makes it a head


@dataclass(frozen=True)
class EntityType:
    label: str
    definition: str
    examples: tuple[str, ...]
    lexicon: Mapping[str, TypeLexiconRules] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class EntitySchema:
    name: str
    version: str
    entities: tuple[EntityType, ...]
    path: Path
    lexicon: Mapping[str, LanguageLexiconRules] = field(default_factory=dict, compare=False)

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.entities]

    def as_dict(self) -> dict[str, Any]:
        # The types as an LLM is prompted with them (and as its answer cache is keyed);
        # the lexicon rules are recorded by the lexicon annotator's own parameters.
        return {
            "name": self.name,
            "version": self.version,
            "entities": [
                {"label": e.label, "definition": e.definition, "examples": list(e.examples)}
                for e in self.entities
            ],
        }

    @property
    def has_lexicon_rules(self) -> bool:
        return bool(self.lexicon) or any(e.lexicon for e in self.entities)


def _strings(value: Any, ctx: str, key: str, *, nonempty: bool = True) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) and x.strip() for x in value):
        raise ConfigError(
            f"{ctx} {key}: expected a list of non-empty strings, got {_describe(value)}"
        )
    if nonempty and not value:
        raise ConfigError(f"{ctx} {key}: expected at least one string")
    return tuple(x.strip() for x in value)


def _pairs(value: Any, ctx: str, key: str) -> tuple[tuple[str, str], ...]:
    ok = isinstance(value, list) and all(
        isinstance(x, list) and len(x) == 2 and all(isinstance(y, str) and y.strip() for y in x)
        for x in value
    )
    if not ok:
        raise ConfigError(
            f"{ctx} {key}: expected a list of [from, to] string pairs, got {_describe(value)}"
        )
    return tuple((a.strip(), b.strip()) for a, b in value)


def _check_keys(table: Any, known: tuple[str, ...], ctx: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{ctx}: expected a table, got {_describe(table)}")
    extra = sorted(set(table) - set(known))
    if extra:
        raise ConfigError(
            f"{ctx}: unknown key '{extra[0]}'; known keys: {', '.join(sorted(known))}"
        )
    return table


def _language_tables(value: Any, ctx: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise ConfigError(f"{ctx}: expected one table per language (en, sv, ...)")
    for lang, table in value.items():
        if not (lang.isalpha() and 2 <= len(lang) <= 3 and lang.islower()):
            raise ConfigError(f"{ctx}: '{lang}' is not {LANGUAGE_CODE}")
        if not isinstance(table, dict):
            raise ConfigError(f"{ctx}.{lang}: expected a table, got {_describe(table)}")
    return value


_INFLECTION_KEYS = ("suffix", "replace", "min_length", "unless")


def _language_rules(table: dict[str, Any], ctx: str) -> LanguageLexiconRules:
    known = tuple(f.name for f in dataclasses.fields(LanguageLexiconRules))
    table = _check_keys(table, known, ctx)
    inflections = []
    for i, item in enumerate(table.get("inflections", []), 1):
        where = f"{ctx} inflections #{i}"
        item = _check_keys(item, _INFLECTION_KEYS, where)
        suffix, replace = item.get("suffix"), item.get("replace", "")
        min_length = item.get("min_length", 1)
        if not isinstance(suffix, str) or not suffix or not isinstance(replace, str):
            raise ConfigError(f'{where}: expected {{suffix = "ies", replace = "y"}}')
        if not _int(1)(min_length):
            raise ConfigError(f"{where} min_length: expected an integer of at least 1")
        unless = _strings(item.get("unless", []), where, "unless", nonempty=False)
        inflections.append(Inflection(suffix, replace, min_length, unless))
    if not isinstance(table.get("inflections", []), list):
        raise ConfigError(f"{ctx} inflections: expected a list of tables")
    head = table.get("head", "last")
    if head not in ("last", "first"):
        raise ConfigError(f"{ctx} head: expected 'last' or 'first', got {_describe(head)}")
    numbers = {}
    for key, lo, hi in (("max_modifiers", 1, 10), ("min_suffix_word", 1, 50)):
        default = getattr(LanguageLexiconRules, key)
        value = table.get(key, default)
        if not _int(lo, hi)(value):
            raise ConfigError(f"{ctx} {key}: expected an integer from {lo} to {hi}")
        numbers[key] = value
    return LanguageLexiconRules(
        inflections=tuple(inflections),
        variants=_pairs(table.get("variants", []), ctx, "variants"),
        optional_tokens=_strings(
            table.get("optional_tokens", []), ctx, "optional_tokens", nonempty=False
        ),
        generic_terms=_strings(
            table.get("generic_terms", []), ctx, "generic_terms", nonempty=False
        ),
        stop_words=_strings(table.get("stop_words", []), ctx, "stop_words", nonempty=False),
        head=head,
        **numbers,
    )


def _type_rules(table: dict[str, Any], ctx: str) -> TypeLexiconRules:
    known = tuple(f.name for f in dataclasses.fields(TypeLexiconRules))
    table = _check_keys(table, known, ctx)
    word_order = _pairs(table.get("word_order", []), ctx, "word_order")
    for a, b in word_order:
        if a.count("{}") != 1 or b.count("{}") != 1:
            raise ConfigError(
                f"{ctx} word_order: each side needs exactly one {{}} for the rest of the term, "
                f"got [{a!r}, {b!r}]"
            )
    return TypeLexiconRules(
        head_nouns=_strings(table.get("head_nouns", []), ctx, "head_nouns", nonempty=False),
        suffixes=_strings(table.get("suffixes", []), ctx, "suffixes", nonempty=False),
        word_order=word_order,
    )


_ENTITY_KEYS = ("definition", "examples", "label", "lexicon")


def load_entity_schema(path: Path) -> EntitySchema:
    """Read and validate an entity schema: ``[schema]``, ``[[entity]]`` and optional ``[lexicon.LANG]``."""
    where = str(path)
    doc = _read_toml(path, "entity schema")
    unknown = sorted(set(doc) - {"schema", "entity", "lexicon"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown section [{unknown[0]}]; expected [schema], [[entity]] and [lexicon.LANG]"
        )
    head = doc.get("schema")
    if not isinstance(head, dict) or not isinstance(head.get("name"), str) or not head["name"]:
        raise ConfigError(f"{where}: [schema] name: expected a non-empty string")
    items = doc.get("entity")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: expected at least one [[entity]] table")
    entities: list[EntityType] = []
    seen: set[str] = set()
    for i, item in enumerate(items, 1):
        ctx = f"{where}: [[entity]] #{i}"
        if not isinstance(item, dict):
            raise ConfigError(f"{ctx}: expected a table")
        extra = sorted(set(item) - set(_ENTITY_KEYS))
        if extra:
            raise ConfigError(
                f"{ctx}: unknown key '{extra[0]}'; known keys: {', '.join(_ENTITY_KEYS)}"
            )
        label = item.get("label")
        if (
            not isinstance(label, str)
            or not label.isupper()
            or not label.replace("_", "").isalnum()
        ):
            raise ConfigError(
                f"{ctx} label: expected an upper-case name like DRUG, got {_describe(label)}"
            )
        if label in seen:
            raise ConfigError(f"{ctx} label: '{label}' is defined twice")
        seen.add(label)
        definition = item.get("definition")
        if not isinstance(definition, str) or len(definition.split()) < 3:
            raise ConfigError(f"{ctx} ({label}) definition: expected a sentence or more of text")
        examples = item.get("examples", [])
        if not isinstance(examples, list) or not all(
            isinstance(x, str) and x.strip() for x in examples
        ):
            raise ConfigError(f"{ctx} ({label}) examples: expected a list of non-empty strings")
        type_rules = {
            lang: _type_rules(table, f"{where}: [entity.lexicon.{lang}] ({label})")
            for lang, table in _language_tables(
                item.get("lexicon", {}), f"{ctx} ({label}) lexicon"
            ).items()
        }
        entities.append(
            EntityType(label, " ".join(definition.split()), tuple(examples), type_rules)
        )
    languages = {
        lang: _language_rules(table, f"{where}: [lexicon.{lang}]")
        for lang, table in _language_tables(doc.get("lexicon", {}), f"{where}: lexicon").items()
    }
    return EntitySchema(
        name=head["name"],
        version=str(head.get("version", "1")),
        entities=tuple(entities),
        path=path,
        lexicon=languages,
    )


# ---------------------------------------------------------------------------
# Workspace config (appliance.toml)

LANGUAGE_CODE = "an ISO 639-1 language code such as 'en', 'et' or 'sv'"


@dataclass(frozen=True)
class WorkspaceSection:
    language: str = _spec(
        "en", LANGUAGE_CODE, lambda v: isinstance(v, str) and v.isalpha() and 2 <= len(v) <= 3
    )
    created: str = _spec("", "an ISO 8601 timestamp", _str())
    appliance_version: str = _spec("", "a version string", _str())


@dataclass(frozen=True)
class KeysSection:
    # Relative paths are resolved against the workspace; absolute ones may
    # point at a key mounted by a hospital key service.
    data_key: str = _spec("keys/data.key", "a path to a 32-byte key file", _str(nonempty=True))
    signing_key: str = _spec(
        "keys/signing.key", "a path to an Ed25519 private key (PEM)", _str(nonempty=True)
    )


@dataclass(frozen=True)
class PolicySection:
    file: str = _spec("policy.toml", "a path to the policy TOML", _str(nonempty=True))


@dataclass(frozen=True)
class StoreSection:
    shard_max_records: int = _spec(2000, "an integer from 1 to 1000000", _int(1, 1_000_000))
    shard_max_bytes: int = _spec(8 << 20, "an integer from 4096 to 1073741824", _int(4096, 1 << 30))


@dataclass(frozen=True)
class Config:
    workspace: WorkspaceSection
    keys: KeysSection
    policy: PolicySection
    store: StoreSection
    path: Path

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        return out


_CONFIG_SECTIONS: dict[str, type] = {
    "workspace": WorkspaceSection,
    "keys": KeysSection,
    "policy": PolicySection,
    "store": StoreSection,
}


def load_config(path: Path) -> Config:
    """Read and validate a workspace's appliance.toml."""
    doc = _read_toml(path, "workspace config")
    sections = _sections(doc, str(path), _CONFIG_SECTIONS, required=("workspace",))
    return Config(**sections, path=path)


def render_config(*, language: str, created: str, version: str, data_key: str) -> str:
    """The text of a fresh appliance.toml (comments included, so it documents itself)."""
    return f"""\
# Workspace configuration. Validated on every command; `appliance doctor` checks it.

[workspace]
language = "{language}"
created = "{created}"
appliance_version = "{version}"

[keys]
# The 256-bit data key that encrypts the record store and derives the
# workspace's HMAC keys. Relative to this folder, or an absolute path to a
# key provided by the hospital's key service. Must not be readable by others.
data_key = "{data_key}"
# Ed25519 key that signs release manifests and model packages.
signing_key = "keys/signing.key"

[policy]
# The privacy policy every stage follows (a copy of policies/default.toml).
file = "policy.toml"

[store]
# Encrypted record store: records per shard, and bytes per shard before a new one starts.
shard_max_records = 2000
shard_max_bytes = {8 << 20}
"""
