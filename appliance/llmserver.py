"""Starting a local LLM with vLLM's OpenAI-compatible server, on loopback only.

``appliance llm serve MODEL_DIR`` runs vLLM's OpenAI-compatible server
(``python -m vllm.entrypoints.openai.api_server``: the ``vllm`` command of
the CPU build cannot find its own distribution) on MODEL_DIR, bound to
127.0.0.1 with offline settings (no model hub, no usage statistics), waits
until ``/health`` answers and ``/v1/models`` lists the served name, then
stays in the foreground; Ctrl-C (SIGINT) or SIGTERM is passed to vLLM and the
launcher waits for it to stop (SIGKILL only if it has not after a grace
period). The model must be a local folder: nothing is downloaded.

Which Python runs vLLM (:func:`find_vllm_python`): ``$APPLIANCE_VLLM_PYTHON``,
else this environment when it has vllm, else the separate environment
``install.sh --vllm`` makes beside it (``.venv-vllm``: vLLM pins its own
transformers range). On a GPU the server gets ``--gpu-memory-utilization``;
on a CPU, where vLLM would otherwise reserve most of the RAM for its KV
cache, ``VLLM_CPU_KVCACHE_SPACE`` is sized to the machine (a quarter of the
available memory, 1 to 8 GiB) and ``--enforce-eager`` skips graph
compilation, which costs minutes at start and does not pay for the short
answers annotation asks for.

Request logging is off by default in current vLLM (``--enable-log-requests``
turns it on; the older ``--disable-log-requests`` is deprecated), so no flag
is passed for it and note text does not reach vLLM's log.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from appliance.errors import ApplianceError, DependencyError, UsageError

__all__ = [
    "OFFLINE_ENV",
    "VLLM_PYTHON_ENV",
    "ServeOptions",
    "VLLMServer",
    "build_command",
    "cpu_kv_cache_gib",
    "find_vllm_python",
    "server_env",
]

VLLM_PYTHON_ENV = "APPLIANCE_VLLM_PYTHON"
SIDE_VENV = ".venv-vllm"  # install.sh --vllm, beside the appliance's own environment
ENTRYPOINT = "vllm.entrypoints.openai.api_server"
DEVICES = ("auto", "cpu", "cuda")

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
    device: str = "auto"  # auto: cuda when nvidia-smi lists a GPU, else cpu
    kv_cache_gib: float | None = None  # CPU only; None: sized to the machine
    eager: bool | None = None  # None: eager on CPU, compiled graphs on GPU
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    # Clients must send it (vLLM's VLLM_API_KEY: never on the command line, which
    # other local users can read); /health stays open.
    api_key: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.served_model_name or self.model_dir.resolve().name

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        return "cuda" if _has_gpu() else "cpu"


def _has_gpu() -> bool:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return False
    try:
        proc = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and "GPU" in proc.stdout


def _available_gib() -> float:
    """MemAvailable from /proc/meminfo, in GiB (8 when it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return 8.0


def cpu_kv_cache_gib(available_gib: float | None = None) -> int:
    """The KV cache for vLLM on a CPU: a quarter of the available memory, 1 to 8 GiB."""
    avail = _available_gib() if available_gib is None else available_gib
    return int(max(1, min(8, avail // 4)))


def find_vllm_python() -> str | None:
    """The Python that runs vLLM (see the module docstring), or None."""
    explicit = os.environ.get(VLLM_PYTHON_ENV)
    if explicit:
        if not Path(explicit).is_file():
            raise DependencyError(
                f"{VLLM_PYTHON_ENV}={explicit}: no such file; point it at the Python of an "
                "environment that has vllm (bash install.sh --vllm makes one)"
            )
        return explicit
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    side = Path(sys.prefix).parent / SIDE_VENV / "bin" / "python"
    return str(side) if side.exists() else None


def build_command(opts: ServeOptions, python: str = "python", device: str = "cuda") -> list[str]:
    """The command line that serves ``opts`` with vLLM's OpenAI-compatible server."""
    cmd = [
        python,
        "-m",
        ENTRYPOINT,
        "--model",
        str(opts.model_dir.resolve()),
        "--host",
        "127.0.0.1",
        "--port",
        str(opts.port),
        "--served-model-name",
        opts.name,
    ]
    if device == "cuda":
        cmd += [
            "--gpu-memory-utilization",
            f"{opts.gpu_memory_utilization:g}",
            "--tensor-parallel-size",
            str(opts.tensor_parallel_size),
        ]
    if opts.eager if opts.eager is not None else device == "cpu":
        cmd.append("--enforce-eager")
    if opts.max_model_len is not None:
        cmd += ["--max-model-len", str(opts.max_model_len)]
    return cmd + list(opts.extra_args)


def server_env(opts: ServeOptions, device: str) -> dict[str, str]:
    """The environment vLLM runs with: offline, and on a CPU a KV cache sized to the machine."""
    env = {**os.environ, **OFFLINE_ENV}
    env.pop("VLLM_API_KEY", None)
    if opts.api_key:
        env["VLLM_API_KEY"] = opts.api_key
    if device == "cpu":
        gib = opts.kv_cache_gib if opts.kv_cache_gib is not None else cpu_kv_cache_gib()
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{gib:g}"
    return env


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
    if opts.device not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}")
    if opts.kv_cache_gib is not None and opts.kv_cache_gib <= 0:
        raise UsageError("--kv-cache-gib must be positive")


class VLLMServer:
    """One ``vllm serve`` child process: start, wait until ready, stop."""

    def __init__(self, opts: ServeOptions, python: str | None = None) -> None:
        _check(opts)
        found = python or find_vllm_python()
        if not found:
            raise DependencyError(
                "appliance llm serve needs vLLM, which is not installed; install it with "
                f"bash install.sh --vllm (or set {VLLM_PYTHON_ENV} to a Python that has vllm)"
            )
        self.opts = opts
        self.device = opts.resolved_device()
        self.command = build_command(opts, found, self.device)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.opts.port}/v1"

    def start(self, quiet: bool = False) -> None:
        """Start vLLM; ``quiet`` keeps its output out of the terminal (the tail goes into errors)."""
        env = server_env(self.opts, self.device)
        out: Any = None
        if quiet:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 (open while vLLM runs)
            out = self._log
        # Its own process group: a Ctrl-C in the terminal reaches the launcher,
        # which forwards it once, rather than vLLM's workers all at once.
        self.proc = subprocess.Popen(
            self.command, env=env, start_new_session=True, stdout=out, stderr=out
        )

    def _tail(self) -> str:
        log = getattr(self, "_log", None)
        if log is None:
            return "see its output above"
        log.seek(0)
        lines = log.read().decode("utf-8", "replace").strip().splitlines()
        return "its last output: " + (lines[-1][:300] if lines else "(none)")

    def wait_ready(self, timeout: float = 900.0, poll: float = 0.5) -> None:
        """Return when ``/health`` is up and ``/v1/models`` lists the model; raise if vLLM exits."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        base = f"http://127.0.0.1:{self.opts.port}"
        headers = {"Authorization": f"Bearer {self.opts.api_key}"} if self.opts.api_key else {}
        with httpx.Client(timeout=5.0, trust_env=False, headers=headers) as client:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise ApplianceError(
                        f"vllm exited with code {code} before it was ready; {self._tail()}"
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
        try:
            return self._stop(grace, sig)
        finally:
            if getattr(self, "_log", None) is not None:
                self._log.close()

    def _stop(self, grace: float, sig: int) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                return self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait()


def serve(opts: ServeOptions, python: str | None = None) -> VLLMServer:
    """Start vLLM and wait until it is ready; the caller waits and stops it."""
    server = VLLMServer(opts, python)
    server.start()
    try:
        server.wait_ready()
    except BaseException:
        server.stop(grace=10.0)
        raise
    return server
