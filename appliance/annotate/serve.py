"""Starting a local LLM with vLLM's OpenAI-compatible server, on loopback only.

``appliance llm serve MODEL_DIR`` runs ``vllm serve MODEL_DIR`` bound to
127.0.0.1 with offline settings (no model hub, no usage statistics), waits
until ``/health`` answers and ``/v1/models`` lists the served name, then
stays in the foreground; Ctrl-C (SIGINT) or SIGTERM is passed to vLLM and the
launcher waits for it to stop (SIGKILL only if it has not after a grace
period). The model must be a local folder: nothing is downloaded.

Request logging is off by default in current vLLM (``--enable-log-requests``
turns it on; the older ``--disable-log-requests`` is deprecated), so no flag
is passed for it and note text does not reach vLLM's log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from appliance.errors import ApplianceError, UsageError, missing_dependency

__all__ = ["OFFLINE_ENV", "ServeOptions", "VLLMServer", "build_command"]

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
}


@dataclass(frozen=True)
class ServeOptions:
    model_dir: Path
    port: int = 8000
    served_model_name: str | None = None  # default: the folder's name
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return self.served_model_name or self.model_dir.resolve().name


def build_command(opts: ServeOptions, executable: str = "vllm") -> list[str]:
    """The ``vllm serve`` command line for ``opts``."""
    cmd = [
        executable,
        "serve",
        str(opts.model_dir.resolve()),
        "--host",
        "127.0.0.1",
        "--port",
        str(opts.port),
        "--served-model-name",
        opts.name,
        "--gpu-memory-utilization",
        f"{opts.gpu_memory_utilization:g}",
        "--tensor-parallel-size",
        str(opts.tensor_parallel_size),
    ]
    if opts.max_model_len is not None:
        cmd += ["--max-model-len", str(opts.max_model_len)]
    return cmd + list(opts.extra_args)


def _check(opts: ServeOptions) -> None:
    folder = opts.model_dir
    if not folder.is_dir():
        raise UsageError(
            f"MODEL_DIR {folder}: not a folder; pass a local model folder (nothing is downloaded)"
        )
    if not (folder / "config.json").is_file() and not any(folder.glob("*.gguf")):
        raise UsageError(f"MODEL_DIR {folder}: no config.json (or .gguf) in it; not a model folder")
    if not 0 < opts.gpu_memory_utilization <= 1:
        raise UsageError("--gpu-memory-utilization must be in (0, 1]")
    if opts.tensor_parallel_size < 1:
        raise UsageError("--tensor-parallel-size must be at least 1")
    if not 0 < opts.port < 65536:
        raise UsageError(f"--port {opts.port} is out of range")


class VLLMServer:
    """One ``vllm serve`` child process: start, wait until ready, stop."""

    def __init__(self, opts: ServeOptions, executable: str | None = None) -> None:
        _check(opts)
        found = executable or shutil.which("vllm")
        if not found:
            raise missing_dependency("vllm", "gpu", "appliance llm serve")
        self.opts = opts
        self.command = build_command(opts, found)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.opts.port}/v1"

    def start(self) -> None:
        env = {**os.environ, **OFFLINE_ENV}
        # Its own process group: a Ctrl-C in the terminal reaches the launcher,
        # which forwards it once, rather than vLLM's workers all at once.
        self.proc = subprocess.Popen(self.command, env=env, start_new_session=True)

    def wait_ready(self, timeout: float = 900.0, poll: float = 0.5) -> None:
        """Return when ``/health`` is up and ``/v1/models`` lists the model; raise if vLLM exits."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        base = f"http://127.0.0.1:{self.opts.port}"
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise ApplianceError(
                        f"vllm exited with code {code} before it was ready; see its output above"
                    )
                try:
                    if client.get(base + "/health").status_code == 200:
                        models = client.get(base + "/v1/models").json()
                        names = [m.get("id") for m in models.get("data", [])]
                        if self.opts.name in names:
                            return
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise ApplianceError(
                        f"vllm did not become ready within {timeout:g} s; stopped it"
                    )
                time.sleep(poll)

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait()

    def stop(self, grace: float = 30.0, sig: int = signal.SIGINT) -> int:
        """Forward ``sig`` to vLLM and wait; SIGKILL after ``grace`` seconds. Returns its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                return self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait()


def serve(opts: ServeOptions, executable: str | None = None) -> VLLMServer:
    """Start vLLM and wait until it is ready; the caller waits and stops it."""
    server = VLLMServer(opts, executable)
    server.start()
    try:
        server.wait_ready()
    except BaseException:
        server.stop(grace=10.0)
        raise
    return server
