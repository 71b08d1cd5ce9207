"""The trained generator on disk: real-zone data, encrypted at rest.

    models/generator/
      model.safetensors.enc   weights (safetensors bytes, AES-256-GCM)
      tokenizer.json.enc      the BPE tokenizer (its merges were learned from real notes)
      generator.json.enc      prefix schema and frequencies, canaries, holdout rule
      config.json             the GPT-2 shape (no data in it)
      manifest.json           recipe, inputs and their hashes, metrics, file hashes
      checkpoint.pt.enc       only while training: the state an interrupted run resumes from

A generator may have memorized notes, so no plaintext weight or tokenizer
file is ever written here; they are decrypted only in memory. The one
exception is ``plain_model_folder``: vLLM loads models from a folder, so
that helper writes one into a private temporary directory in memory-backed
storage when available and removes it as soon as the caller is done.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import IntegrityError, WorkspaceError
from appliance.generator.prefixes import EntitySampler, PrefixSampler, PrefixSchema
from appliance.security.crypto import read_encrypted, write_encrypted
from appliance.workspace import Workspace, hashed, read_manifest, write_manifest

MODEL_FILE = "model.safetensors.enc"
TOKENIZER_FILE = "tokenizer.json.enc"
META_FILE = "generator.json.enc"
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt.enc"


@dataclass
class Generator:
    """A generator decrypted into memory: model, tokenizer, prefixes and its manifest."""

    model: Any  # transformers.GPT2LMHeadModel
    tokenizer: Any  # tokenizers.Tokenizer
    schema: PrefixSchema
    sampler: PrefixSampler
    meta: dict[str, Any]
    manifest: dict[str, Any]
    entities: EntitySampler | None = None  # entity lines, when trained with entity terms

    @property
    def sha256(self) -> str:
        return str(self.manifest["generator_sha256"])


def _state_bytes(model: Any) -> bytes:
    from safetensors.torch import save

    state = model.state_dict()
    # GPT-2 ties the output layer to the token embedding; safetensors refuses
    # shared tensors, and the tie is restored on load.
    if model.config.tie_word_embeddings:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    return save({k: v.contiguous() for k, v in state.items()})


def save_generator(
    ws: Workspace,
    model: Any,
    tokenizer: Any,
    meta: dict[str, Any],
    manifest: dict[str, Any],
) -> dict[str, Any]:
    """Encrypt and write the generator; returns the final manifest (with file hashes)."""
    folder = ws.generator_dir
    folder.mkdir(parents=True, exist_ok=True)
    key = ws.data_key
    write_encrypted(folder / MODEL_FILE, key, _state_bytes(model), label="generator/model")
    write_encrypted(
        folder / TOKENIZER_FILE, key, tokenizer.to_str().encode(), label="generator/tokenizer"
    )
    write_encrypted(folder / META_FILE, key, json.dumps(meta).encode(), label="generator/meta")
    (folder / CONFIG_FILE).write_text(model.config.to_json_string(), encoding="utf-8")
    files = [
        hashed(folder / name, ws.root)
        for name in (MODEL_FILE, TOKENIZER_FILE, META_FILE, CONFIG_FILE)
    ]
    import hashlib

    digest = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()
    final = {**manifest, "files": files, "generator_sha256": digest, "key_id": key.key_id}
    write_manifest(folder, final)
    return final


def load_generator(ws: Workspace, device: str = "cpu") -> Generator:
    """Decrypt the workspace's generator into memory (verifying every file against the manifest)."""
    from safetensors.torch import load
    from tokenizers import Tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = ws.generator_dir
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("stage") != "generator":
        raise WorkspaceError(
            f"{ws.root}: no trained generator; run `appliance generator train` first"
        )
    for entry in manifest.get("files", []):
        path = ws.root / entry["path"]
        if not path.exists() or hashed(path, ws.root)["sha256"] != entry["sha256"]:
            raise IntegrityError(
                f"{path}: generator file missing or changed since training (manifest hash differs)"
            )
    key = ws.data_key
    config = GPT2Config.from_json_file(str(folder / CONFIG_FILE))
    model = GPT2LMHeadModel(config)
    state = load(read_encrypted(folder / MODEL_FILE, key, label="generator/model"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise IntegrityError(f"{folder / MODEL_FILE}: weights do not match config.json")
    model.tie_weights()
    model.to(device).eval()  # type: ignore[arg-type]
    tokenizer = Tokenizer.from_str(
        read_encrypted(folder / TOKENIZER_FILE, key, label="generator/tokenizer").decode()
    )
    meta = json.loads(read_encrypted(folder / META_FILE, key, label="generator/meta"))
    return Generator(
        model=model,
        tokenizer=tokenizer,
        schema=PrefixSchema.from_dict(meta["prefix_schema"]),
        sampler=PrefixSampler(dict(meta["prefix_counts"])),
        entities=EntitySampler.from_dict(meta["entity_prefix"])
        if meta.get("entity_prefix")
        else None,
        meta=meta,
        manifest=manifest,
    )


PLAIN_PREFIX = "appliance-generator-"
OWNER_FILE = "owner.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive, and not ours to judge
    return True


def remove_stale_plain_folders(base: Path) -> list[Path]:
    """Remove plaintext model folders left by a process that was killed (kill -9, power loss).

    Each folder names its owner's pid in ``owner.pid``; a folder of this user
    whose owner is gone, or that never named one within a minute, is removed.
    """
    removed: list[Path] = []
    uid = os.getuid()
    for folder in base.glob(PLAIN_PREFIX + "*"):
        try:
            info = folder.lstat()
        except OSError:
            continue  # removed meanwhile
        if not folder.is_dir() or folder.is_symlink() or info.st_uid != uid:
            continue
        try:
            pid = int((folder / OWNER_FILE).read_text().strip() or "0")
        except (OSError, ValueError):
            pid = 0
            if time.time() - info.st_mtime < 60:
                continue  # just made by a run that is about to name itself
        if pid and _alive(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


@contextmanager
def plain_model_folder(gen: Generator) -> Iterator[Path]:
    """A temporary plaintext model folder (for vLLM), private and removed on exit.

    Written under /dev/shm when it exists so the weights stay in memory-backed
    storage rather than on disk. Folders that a killed run left behind are
    removed first (:func:`remove_stale_plain_folders`), so plaintext weights
    outlive a ``kill -9`` only until the next start (or the next reboot, which
    empties /dev/shm).
    """
    from appliance.generator.tokenizer import to_transformers

    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    remove_stale_plain_folders(Path(base or tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix=PLAIN_PREFIX, dir=base))
    os.chmod(folder, 0o700)
    try:
        (folder / OWNER_FILE).write_text(str(os.getpid()))
        gen.model.save_pretrained(folder, safe_serialization=True)
        to_transformers(gen.tokenizer).save_pretrained(folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
