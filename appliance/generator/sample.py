"""``appliance generate``: sample synthetic notes from the workspace's generator.

Notes are written in batches; batch ``b`` is sampled with seed
``seed * 1_000_003 + b``, so the same settings always give the same notes,
and a run interrupted after some batches continues with the next one: N
counts notes written, nothing is duplicated or skipped.

Until the leakage screen releases them, synthetic notes may contain
memorized real text: they are stored encrypted like real records, marked
``unscreened``, and nothing downstream reads them.

    synthetic/NAME/
      manifest.json            generator hash, sampling settings, seed, count, parts with hashes
      part-000001.jsonl.enc    one batch of notes (encrypted JSON lines)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from appliance.corpus import STATUS_UNSCREENED, UNSCREENED_ZONE, SyntheticNote, write_part
from appliance.errors import (
    ApplianceError,
    DependencyError,
    UsageError,
    missing_dependency,
)
from appliance.generator.artifact import Generator, load_generator, plain_model_folder
from appliance.generator.prefixes import join_prefix, parse_prefix
from appliance.generator.tokenizer import EOS
from appliance.llmserver import ServeOptions, VLLMServer, find_vllm_python
from appliance.security.audit import utc_now
from appliance.training import quiet_transformers, resolve_device
from appliance.workspace import Workspace, hashed, read_manifest, write_manifest

BACKENDS = ("transformers", "vllm")


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.95
    max_new_tokens: int | None = None  # None: up to the model's context length
    batch_size: int = 16
    seed: int = 0
    prefix: str | None = (
        None  # fixed prefix for every note; None draws from the training frequencies
    )
    # With a generator trained on entity terms: name terms of its list in each prompt.
    entity_terms: bool = True

    def validate(self) -> None:
        if not 0 < self.temperature <= 10:
            raise UsageError("--temperature must be in (0, 10]")
        if self.top_k < 0:
            raise UsageError("--top-k must be ≥ 0 (0 disables top-k)")
        if not 0 < self.top_p <= 1:
            raise UsageError("--top-p must be in (0, 1]")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise UsageError("--max-new-tokens must be ≥ 1")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be ≥ 1")


class Backend(Protocol):
    name: str

    def complete(
        self, prompts: list[list[int]], seed: int, max_new_tokens: list[int]
    ) -> list[list[int]]:
        """Sample one continuation (token ids, without the prompt) per prompt."""


class TransformersBackend:
    """transformers ``generate`` on CPU or CUDA."""

    name = "transformers"

    def __init__(self, gen: Generator, settings: SamplingSettings, device: str) -> None:
        self.model = gen.model.to(device)
        self.device = device
        self.settings = settings
        self.eos = gen.tokenizer.token_to_id(EOS)

    def complete(
        self, prompts: list[list[int]], seed: int, max_new_tokens: list[int]
    ) -> list[list[int]]:
        import torch

        width = max(len(p) for p in prompts)
        # Left padding, so every sequence's continuation starts at the same position.
        ids = torch.tensor([[self.eos] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device
        )
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=self.settings.temperature,
                top_k=self.settings.top_k,
                top_p=self.settings.top_p,
                # Padded prompts all occupy `width` positions of the context.
                max_new_tokens=max(
                    1, min(max(max_new_tokens), self.model.config.n_positions - width)
                ),
                pad_token_id=self.eos,
                eos_token_id=self.eos,
            )
        return [row[width:].tolist() for row in out]


def vllm_backend(gen: Generator, settings: SamplingSettings) -> Backend:
    """vLLM in this environment (its offline engine), else vLLM in its own (a loopback server).

    The CUDA build comes with the GPU set in the appliance's environment; the
    CPU build lives in ``.venv-vllm`` (``install.sh --vllm``), whose Python
    runs the server (:mod:`appliance.llmserver`).
    """
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        return VllmBackend(gen, settings)
    python = find_vllm_python()
    if python is None:
        raise DependencyError(
            "the vllm generation backend needs vLLM, which is not installed; install it with "
            "bash install.sh --vllm (the CUDA build on a GPU server, the CPU build elsewhere)"
        )
    return VllmServerBackend(gen, settings, python)


class VllmServerBackend:
    """vLLM's OpenAI-compatible server, run by another environment's Python, on loopback.

    The generator is decrypted into the same private memory-backed folder as
    for the offline engine, for the server's lifetime; the server binds
    127.0.0.1 on a free port, offline. Prompts go in and continuations come
    back as token ids (``/v1/completions`` with ``return_token_ids``), one
    request per note with its own seed, so a note does not depend on which
    others share its batch. The generator may have memorized real notes, so
    the server wants a random key for this run only: another local user who
    finds the port cannot sample from it.
    """

    name = "vllm"

    def __init__(
        self, gen: Generator, settings: SamplingSettings, python: str, ready_timeout: float = 900.0
    ) -> None:
        import secrets
        import socket

        import httpx

        self.settings = settings
        self.eos = gen.tokenizer.token_to_id(EOS)
        self._folder_cm = plain_model_folder(gen)
        folder = self._folder_cm.__enter__()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            opts = ServeOptions(
                folder,
                port=port,
                served_model_name="generator",
                max_model_len=gen.model.config.n_positions,
                extra_args=("--seed", str(settings.seed)),
                api_key=secrets.token_urlsafe(32),
            )
            self.server = VLLMServer(opts, python)
            self.server.start(quiet=True)
            self.server.wait_ready(timeout=ready_timeout)
        except BaseException:
            if getattr(self, "server", None) is not None:
                self.server.stop(grace=10.0)
            self._folder_cm.__exit__(None, None, None)
            raise
        self.client = httpx.Client(
            base_url=self.server.endpoint,
            timeout=httpx.Timeout(600.0, connect=10.0),
            headers={"Authorization": f"Bearer {opts.api_key}"},
            trust_env=False,
        )

    def _one(self, prompt: list[int], seed: int, max_tokens: int) -> list[int]:
        import httpx

        try:
            resp = self._post(prompt, seed, max_tokens)
        except httpx.HTTPError as exc:  # the server died or hung: one line, not a traceback
            raise ApplianceError(
                f"vllm server at {self.server.endpoint} stopped answering: "
                f"{type(exc).__name__}: {exc}"[:300]
            ) from None
        if resp.status_code != 200:
            raise UsageError(f"vllm answered HTTP {resp.status_code}: {resp.text[:200].strip()}")
        ids = resp.json()["choices"][0].get("token_ids")
        if ids is None:
            raise UsageError("this vllm does not return token ids (return_token_ids); upgrade it")
        return [int(t) for t in ids]

    def _post(self, prompt: list[int], seed: int, max_tokens: int) -> Any:
        s = self.settings
        return self.client.post(
            "/completions",
            json={
                "model": "generator",
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": s.temperature,
                "top_k": s.top_k if s.top_k > 0 else -1,
                "top_p": s.top_p,
                "seed": seed,
                "stop_token_ids": [self.eos],
                "return_token_ids": True,
            },
        )

    def complete(
        self, prompts: list[list[int]], seed: int, max_new_tokens: list[int]
    ) -> list[list[int]]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, len(prompts))) as pool:
            futures = [
                pool.submit(self._one, p, seed * 10_007 + i, n)
                for i, (p, n) in enumerate(zip(prompts, max_new_tokens, strict=True))
            ]
            return [f.result() for f in futures]

    def close(self) -> None:
        try:
            self.client.close()
            self.server.stop()
        finally:
            self._folder_cm.__exit__(None, None, None)


class VllmBackend:
    """vLLM's offline engine on a GPU (vLLM supports GPT-2).

    vLLM loads a model from a folder, so the generator is decrypted into a
    private temporary folder in memory-backed storage for the engine's
    lifetime (see ``artifact.plain_model_folder``).
    """

    name = "vllm"

    def __init__(
        self, gen: Generator, settings: SamplingSettings, *, gpu_memory_utilization: float = 0.85
    ) -> None:
        try:
            import vllm
        except ImportError:
            raise missing_dependency("vllm", "gpu", "the vllm generation backend") from None
        self._vllm = vllm
        self.settings = settings
        self.eos = gen.tokenizer.token_to_id(EOS)
        self._folder_cm = plain_model_folder(gen)
        folder = self._folder_cm.__enter__()
        try:
            self.llm = vllm.LLM(
                model=str(folder),
                tokenizer=str(folder),
                seed=settings.seed,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=gen.model.config.n_positions,
            )
        except BaseException:
            self._folder_cm.__exit__(None, None, None)
            raise

    def complete(
        self, prompts: list[list[int]], seed: int, max_new_tokens: list[int]
    ) -> list[list[int]]:
        params = [
            self._vllm.SamplingParams(
                temperature=self.settings.temperature,
                top_k=self.settings.top_k if self.settings.top_k > 0 else -1,
                top_p=self.settings.top_p,
                max_tokens=n,
                seed=seed * 10_007 + i,  # per request: independent of batch composition
                stop_token_ids=[self.eos],
            )
            for i, n in enumerate(max_new_tokens)
        ]
        outputs = self.llm.generate(
            [{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False
        )
        return [list(o.outputs[0].token_ids) for o in outputs]

    def close(self) -> None:
        self._folder_cm.__exit__(None, None, None)


@dataclass
class GenerateResult:
    corpus: Path
    requested: int
    written: int
    new: int
    resumed_from: int
    seconds: float
    tokens: int
    backend: str

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        resumed = f", resumed after {self.resumed_from}" if self.resumed_from else ""
        return (
            f"generated {self.new} synthetic notes ({self.written}/{self.requested} in {self.corpus.name}{resumed}) "
            f"with {self.backend} at {self.tokens_per_second:.0f} tokens/s; status: unscreened (run `appliance screen`)"
        )


def run(
    ws: Workspace,
    *,
    count: int,
    backend: str = "transformers",
    settings: SamplingSettings | None = None,
    corpus: str = "default",
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> GenerateResult:
    """Sample until the corpus holds ``count`` notes (resuming one that holds fewer)."""
    settings = settings or SamplingSettings()
    settings.validate()
    quiet_transformers()
    if count < 1:
        raise UsageError("--count must be at least 1")
    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}")
    args = {"count": count, "backend": backend, "corpus": corpus, **asdict(settings)}
    with ws.stage("generate", args) as stage:
        result = _generate(ws, count, backend, settings, corpus, device, progress)
        stage.inputs = [hashed(ws.generator_dir / "manifest.json", ws.root)]
        stage.outputs = [hashed(result.corpus / "manifest.json", ws.root)]
        stage.details = {
            "written": result.written,
            "new": result.new,
            "resumed_from": result.resumed_from,
        }
    return result


def _generate(
    ws: Workspace,
    count: int,
    backend_name: str,
    settings: SamplingSettings,
    corpus: str,
    device: str,
    progress: Callable[[int, int], None] | None,
) -> GenerateResult:
    started = time.monotonic()
    gen = load_generator(ws, device="cpu")
    folder = ws.corpus_dir(corpus)
    sampling = asdict(settings)
    previous = read_manifest(folder)
    parts: list[dict[str, Any]] = []
    if previous is not None:
        # Settings added since a corpus was started read as their defaults.
        before = {**asdict(SamplingSettings()), **(previous.get("sampling") or {})}
        same = previous.get("generator_sha256") == gen.sha256 and before == sampling
        if not same:
            raise UsageError(
                f"{folder} was generated with another generator or other sampling settings; "
                "choose a new --corpus NAME (or delete that folder)"
            )
        parts = list(previous["parts"])
    written = sum(p["notes"] for p in parts)
    resumed_from = written
    folder.mkdir(parents=True, exist_ok=True)
    # A part file not in the manifest is from an interrupted write: it is redone.
    listed = {p["name"] for p in parts}
    for stray in folder.glob("part-*.jsonl.enc"):
        if stray.name not in listed:
            stray.unlink()

    n_positions = gen.model.config.n_positions
    tok = gen.tokenizer
    eos = tok.token_to_id(EOS)
    backend: Backend
    if backend_name == "vllm":
        backend = vllm_backend(gen, settings)
    else:
        backend = TransformersBackend(gen, settings, resolve_device(device))

    def manifest(status: str = STATUS_UNSCREENED) -> dict[str, Any]:
        return {
            "stage": "generate",
            "status": status,
            "zone": UNSCREENED_ZONE,
            "corpus": corpus,
            "generator_sha256": gen.sha256,
            "generator_manifest": hashed(ws.models_dir / "generator" / "manifest.json", ws.root),
            "prefix_schema": gen.schema.as_dict(),
            "backend": backend_name,
            "sampling": sampling,
            "count": max(count, written),
            "written": written,
            "parts": parts,
            "updated": utc_now(),
        }

    tokens = 0
    try:
        while written < count:
            index = len(parts) + 1
            n = min(settings.batch_size, count - written)
            batch_seed = settings.seed * 1_000_003 + index
            rng = random.Random(batch_seed)
            prefixes = (
                [settings.prefix] * n if settings.prefix is not None else gen.sampler.sample(rng, n)
            )
            if gen.entities is not None and settings.prefix is None and settings.entity_terms:
                # Entity lines walk the term list by note number (see EntitySampler).
                prefixes = [
                    join_prefix(p, gen.entities.line(written + i, rng))
                    for i, p in enumerate(prefixes)
                ]
            prompts = [[eos, *tok.encode(f"{p}\n" if p else "").ids] for p in prefixes]
            budget = [
                max(1, min(settings.max_new_tokens or n_positions, n_positions - len(p)))
                for p in prompts
            ]
            outputs = backend.complete(prompts, batch_seed, budget)
            notes = []
            for i, (prefix, out) in enumerate(zip(prefixes, outputs, strict=True)):
                if eos in out:
                    out = out[: out.index(eos)]
                tokens += len(out)
                notes.append(
                    SyntheticNote(
                        id=f"S{written + i + 1:06d}",
                        text=tok.decode(out).strip(),
                        prefix=prefix,
                        metadata=parse_prefix(prefix.split("\n", 1)[0], gen.schema),
                    )
                )
            parts.append({**write_part(ws, folder, index, notes), "seed": batch_seed})
            written += len(notes)
            write_manifest(folder, manifest())
            if progress is not None:
                progress(written, count)
    finally:
        if isinstance(backend, (VllmBackend, VllmServerBackend)):
            backend.close()
    write_manifest(folder, manifest())
    return GenerateResult(
        corpus=folder,
        requested=count,
        written=written,
        new=written - resumed_from,
        resumed_from=resumed_from,
        seconds=time.monotonic() - started,
        tokens=tokens,
        backend=backend_name,
    )
