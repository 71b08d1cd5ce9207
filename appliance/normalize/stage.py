"""``appliance normalize train`` and ``appliance normalize evaluate``: one importable ``run`` each.

Training reads only the screened zone: the terminology files and the
annotated *released* synthetic notes. No real note and no record reaches
the normalizer, so its files are plaintext even beside a real-zone model;
the model package signs them with the model.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.annotate.lexicon import Lexicon, LexiconRules, load_lexicon, reload_source
from appliance.corpus import read_annotations
from appliance.documents import Document, read_gold
from appliance.errors import UsageError, WorkspaceError
from appliance.normalize.build import build
from appliance.normalize.encoder import EncoderSettings
from appliance.normalize.evaluate import NormalizeReport, evaluate
from appliance.normalize.linker import Normalizer, NormalizerSettings, has_normalizer, load
from appliance.normalize.llm_mentions import write_mentions
from appliance.normalize.terminology import Terminology
from appliance.security.audit import utc_now
from appliance.security.keys import DataKey
from appliance.workspace import Workspace, hashed, read_manifest, write_manifest

FOLDER = "normalizer"


@dataclass(frozen=True)
class LLMMentionOptions:
    endpoint: str
    model: str
    concepts: int = 1000  # a seeded sample of this many concepts is asked
    api_key: str | None = field(default=None, repr=False)


@dataclass
class TrainResult:
    folder: Path
    normalizer: Normalizer
    seconds: float
    documents: int
    lexicon_from: str
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        n = self.normalizer
        seen = sum(1 for v in n.mentions.values() if v)
        return (
            f"built a normalizer in {self.seconds:.1f}s: {n.describe()}; {seen} concepts with "
            f"mentions from {self.documents} annotated synthetic notes{self._llm()}; lexicon "
            f"from {self.lexicon_from}; saved to {self.folder}"
        )

    def _llm(self) -> str:
        info = self.details.get("llm_mentions")
        if not info:
            return ""
        failed = sum(info["failures"].values())
        return f", {info['mentions']} LLM-written mentions of {info['answered']} concepts" + (
            f" ({failed} requests failed)" if failed else ""
        )


def parse_lexicons(items: Sequence[str | Path], label: str | None) -> list[tuple[Path, str | None]]:
    """``--lexicon [TYPE=]FILE`` items as (path, type)."""
    out: list[tuple[Path, str | None]] = []
    for item in items:
        text = str(item)
        head, sep, tail = text.partition("=")
        if sep and head and head.isupper() and not Path(text).exists():
            out.append((Path(tail), head))
        else:
            out.append((Path(text), label))
    return out


def lexicon_of(items: Sequence[tuple[Path, str | None]]) -> Lexicon:
    lex = Lexicon()
    for path, label in items:
        lex.extend(load_lexicon(path, label))
    return lex


def annotation_lexicon(ws: Workspace, name: str) -> tuple[Lexicon, str]:
    """The lexicon annotation set ``name`` was made with, and its language."""
    manifest = read_manifest(ws.annotation_dir(name)) or {}
    annotator = manifest.get("annotator") or {}
    members = annotator.get("members") if isinstance(annotator, dict) else None
    params = next(
        (m for m in members or [] if isinstance(m, dict) and m.get("annotator") == "lexicon"),
        None,
    )
    if params is None:
        raise WorkspaceError(
            f"annotation set '{name}' was made without a lexicon annotator; pass --lexicon FILE"
        )
    lex = Lexicon()
    for source in params.get("sources") or []:
        lex.extend(reload_source(source, ws.root, "pass --lexicon FILE"))
    return lex, str(params.get("language", ws.config.workspace.language))


def run(
    ws: Workspace,
    *,
    lexicons: Sequence[tuple[Path, str | None]] = (),
    annotations: str = "default",
    base: Path | None = None,
    overrides: dict[str, Any] | None = None,
    encoder_settings: EncoderSettings | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    llm: LLMMentionOptions | None = None,
    llm_progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Build the workspace's normalizer into ``models/normalizer``.

    The terminology: ``lexicons`` when given, else the lexicon annotation
    set ``annotations`` was made with. Mentions: that set's annotated notes
    (when it exists). ``base``: a local encoder folder to fine-tune; without
    one the normalizer uses exact, variant and character n-gram matching.
    ``llm``: an endpoint that writes more mentions per concept (they train
    the encoder, so they need ``base``), through the policy's egress guard.
    """
    args = {
        "lexicons": [str(p) for p, _ in lexicons],
        "annotations": annotations,
        "base": str(base) if base else None,
        "llm": {"endpoint": llm.endpoint, "model": llm.model, "concepts": llm.concepts}
        if llm
        else None,
    }
    if llm is not None and base is None:
        raise UsageError("LLM-written mentions train the encoder; give --base ENCODER_DIR too")
    folder = ws.models_dir / FOLDER
    with ws.stage("normalize train", args) as stage:
        has_set = read_manifest(ws.annotation_dir(annotations)) is not None
        docs: list[Document] = read_annotations(ws, annotations) if has_set else []
        if lexicons:
            lex = lexicon_of(lexicons)
            language = ws.config.workspace.language
            origin = ", ".join(str(p) for p, _ in lexicons)
        elif has_set:
            lex, language = annotation_lexicon(ws, annotations)
            origin = f"annotation set '{annotations}'"
        else:
            raise UsageError(
                f"no annotation set '{annotations}' to take the lexicon from; pass --lexicon FILE"
            )
        terminology = Terminology.from_lexicon(lex, origin)
        rules = LexiconRules.from_schema(ws.policy.entity_schema(), language)
        extra: list[tuple[str, str]] = []
        llm_info = None
        if llm is not None:
            written = write_mentions(
                terminology.concepts,
                llm.endpoint,
                llm.model,
                ws.policy.egress,
                limit=llm.concepts,
                api_key=llm.api_key,
                progress=llm_progress,
            )
            extra, llm_info = written.mentions, written.as_dict()
            stage.details["llm_mentions"] = llm_info
        built = build(
            terminology,
            rules,
            docs=docs,
            base=base,
            settings=dataclasses.replace(NormalizerSettings(), **(overrides or {})),
            encoder_settings=encoder_settings,
            extra_mentions=extra,
            calibrate="nil_threshold" not in (overrides or {}),
            progress=progress,
        )
        if llm_info is not None:
            built.normalizer.info["llm_mentions"] = llm_info
        if has_set:
            stage.inputs.append(hashed(ws.annotation_dir(annotations), ws.root))
        for source in lex.sources:
            stage.inputs.append({"path": source.get("path"), "sha256": source.get("sha256")})
        # Written aside and swapped in: a crash leaves the old normalizer or the new one
        # (``recover`` finishes a swap cut between its two renames).
        recover(folder)
        tmp = folder.with_name(f".{FOLDER}.new")
        built.save(tmp)
        write_manifest(
            tmp,
            {
                "stage": "normalize train",
                "created": utc_now(),
                "annotations": annotations if has_set else None,
                "lexicon_from": origin,
                "language": language,
                "terminology_sha256": terminology.sha256(),
                "concepts": len(terminology.concepts),
                "documents": len(docs),
                "base": str(base) if base else None,
            },
        )
        old = folder.with_name(f".{FOLDER}.old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
        stage.outputs.append(hashed(folder, ws.root))
        stage.details.update(
            {"concepts": len(terminology.concepts), "seconds": round(built.seconds, 1)}
        )
    return TrainResult(
        folder, built.normalizer, built.seconds, len(docs), origin, {"llm_mentions": llm_info}
    )


def recover(folder: Path) -> None:
    """Finish a swap a crash interrupted: the new folder if it was complete, else the old one back."""
    new, old = folder.with_name(f".{FOLDER}.new"), folder.with_name(f".{FOLDER}.old")
    if not folder.exists():
        if (new / "manifest.json").is_file():
            new.rename(folder)  # the manifest is written last: the new normalizer is whole
        elif old.is_dir():
            old.rename(folder)
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def workspace_normalizer(ws: Workspace) -> Path | None:
    """The workspace's normalizer folder, when one was built."""
    folder = ws.models_dir / FOLDER
    recover(folder)
    return folder if has_normalizer(folder) else None


def run_evaluate(
    gold: Path,
    *,
    fmt: str = "auto",
    normalizer: Path | None = None,
    lexicons: Sequence[tuple[Path, str | None]] = (),
    language: str = "en",
    base: Path | None = None,
    overrides: dict[str, Any] | None = None,
    encoder_settings: EncoderSettings | None = None,
    key: DataKey | None = None,
) -> NormalizeReport:
    """Accuracy@1/@5 on ``gold``'s coded spans: a saved normalizer, or one built from ``lexicons``.

    ``key`` decrypts the normalizer of a real-zone package.
    """
    if (normalizer is None) == (not lexicons):
        raise UsageError("give either --normalizer PATH or --lexicon FILE (one of the two)")
    docs = read_gold(gold, fmt)
    if not any(s.code for d in docs for s in d.spans):
        raise UsageError(
            f"{gold}: no gold span carries a concept code (PubTator's 6th column, JSONL 'code', "
            "BRAT N lines)"
        )
    if normalizer is not None:
        linker = load(normalizer, key=key)
        linker.settings = dataclasses.replace(linker.settings, **(overrides or {}))
    else:
        terminology = Terminology.from_lexicon(
            lexicon_of(lexicons), ", ".join(str(p) for p, _ in lexicons)
        )
        built = build(
            terminology,
            LexiconRules.builtin(language),
            base=base,
            settings=dataclasses.replace(NormalizerSettings(), **(overrides or {})),
            encoder_settings=encoder_settings,
            calibrate="nil_threshold" not in (overrides or {}),
        )
        linker = built.normalizer
    return evaluate(linker, docs)
