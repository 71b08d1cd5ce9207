"""`appliance llm serve` with a stand-in for vLLM's Python (``APPLIANCE_VLLM_PYTHON``) that really serves on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.llmserver import (
    ENTRYPOINT,
    ServeOptions,
    build_command,
    cpu_kv_cache_gib,
    server_env,
)

FAKE_VLLM = """#!{python}
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

args = sys.argv[1:]  # -m vllm.entrypoints.openai.api_server --model ...
log = os.environ["FAKE_VLLM_LOG"]
opt = lambda name: args[args.index(name) + 1]
with open(log, "w") as fh:
    json.dump({{"argv": args, "env": {{k: os.environ.get(k) for k in
        ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK",
         "VLLM_CPU_KVCACHE_SPACE")}}}}, fh)
name = opt("--served-model-name")

class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = b"{{}}" if self.path == "/health" else json.dumps(
            {{"object": "list", "data": [{{"id": name}}]}}).encode()
        self.send_response(200 if self.path in ("/health", "/v1/models") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = HTTPServer((opt("--host"), int(opt("--port"))), H)
def stop(signum, frame):
    with open(log + ".stopped", "w") as fh:
        fh.write(str(signum))
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
server.serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fake_vllm(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "python-with-vllm"
    exe.write_text(FAKE_VLLM.format(python=sys.executable))
    exe.chmod(0o755)
    model = tmp_path / "tiny-llm"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return bindir, model, tmp_path / "vllm.log"


def _env(bindir: Path, log: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "APPLIANCE_VLLM_PYTHON": str(bindir / "python-with-vllm"),
        "FAKE_VLLM_LOG": str(log),
    }
    env.pop("HF_HUB_OFFLINE", None)
    return env


def test_command_line():
    opts = ServeOptions(
        Path("/models/m"), port=8011, max_model_len=4096, gpu_memory_utilization=0.5
    )
    cmd = build_command(opts, "/opt/vllm/bin/python", "cuda")
    assert cmd[:5] == ["/opt/vllm/bin/python", "-m", ENTRYPOINT, "--model", "/models/m"]
    joined = " ".join(cmd)
    for part in (
        "--host 127.0.0.1",
        "--port 8011",
        "--served-model-name m",
        "--gpu-memory-utilization 0.5",
        "--tensor-parallel-size 1",
        "--max-model-len 4096",
    ):
        assert part in joined
    assert "--enforce-eager" not in cmd
    # On a CPU: no GPU flags, eager (compilation costs minutes and does not pay)
    cpu = build_command(opts, "python", "cpu")
    assert "--enforce-eager" in cpu and "--gpu-memory-utilization" not in cpu
    assert "--enforce-eager" not in build_command(
        ServeOptions(Path("/models/m"), eager=False), "python", "cpu"
    )


def test_cpu_kv_cache_is_sized_to_the_machine():
    assert cpu_kv_cache_gib(2.0) == 1  # never below 1 GiB
    assert cpu_kv_cache_gib(9.2) == 2  # a quarter of what is available
    assert cpu_kv_cache_gib(500.0) == 8  # never most of a large machine either
    env = server_env(ServeOptions(Path("/m"), kv_cache_gib=1.5), "cpu")
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1.5" and env["HF_HUB_OFFLINE"] == "1"
    # a key goes into the environment, never the command line (ps shows that to every user)
    keyed = ServeOptions(Path("/m"), api_key="s3cret")
    assert server_env(keyed, "cpu")["VLLM_API_KEY"] == "s3cret"
    assert "s3cret" not in " ".join(build_command(keyed, "python", "cpu"))
    assert "VLLM_API_KEY" not in server_env(ServeOptions(Path("/m")), "cpu")
    # on a GPU the KV cache is vLLM's share of GPU memory; the CPU setting is left alone
    gpu_env = server_env(ServeOptions(Path("/m")), "cuda")
    assert gpu_env.get("VLLM_CPU_KVCACHE_SPACE") == os.environ.get("VLLM_CPU_KVCACHE_SPACE")


@pytest.mark.parametrize(
    ("sig", "inherited"),
    [
        (signal.SIGINT, signal.SIG_DFL),
        (signal.SIGTERM, signal.SIG_DFL),
        # started from a script in the background, a process inherits SIGINT ignored
        (signal.SIGINT, signal.SIG_IGN),
    ],
)
def test_serve_waits_for_health_and_stops_cleanly(fake_vllm, sig, inherited):
    bindir, model, log = fake_vllm
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "llm",
            "serve",
            str(model),
            "--port",
            str(port),
            "--served-model-name",
            "tiny",
            "--gpu-memory-utilization",
            "0.6",
            "--max-model-len",
            "2048",
            "--device",
            "cpu",
            "--kv-cache-gib",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(bindir, log),
        preexec_fn=lambda: signal.signal(signal.SIGINT, inherited),
    )
    try:
        line = proc.stdout.readline()
        assert f"serving tiny at http://127.0.0.1:{port}/v1 on cpu" in line, (
            line or proc.stderr.read()
        )
        started = json.loads(log.read_text())
        argv = " ".join(started["argv"])
        assert argv.startswith(
            f"-m {ENTRYPOINT} --model {model.resolve()} --host 127.0.0.1 --port {port}"
        )
        assert "--max-model-len 2048" in argv and "--enforce-eager" in argv
        assert "--gpu-memory-utilization" not in argv  # a CPU server
        assert started["env"] == {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_CPU_KVCACHE_SPACE": "2",
        }
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped vllm (exit code 0)" in out
    assert Path(str(log) + ".stopped").read_text() == str(int(sig))
    # the port is free again: the server really stopped
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                break
        time.sleep(0.05)
    else:
        pytest.fail("the fake vllm still listens")


def test_missing_vllm_names_the_install_step(tmp_path, monkeypatch):
    import importlib.util

    from click.testing import CliRunner

    from appliance import llmserver
    from appliance.cli import cli

    # No vLLM anywhere: not named, not importable here, no .venv-vllm beside this environment.
    monkeypatch.delenv("APPLIANCE_VLLM_PYTHON", raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "vllm" else real_find_spec(name, *a),
    )
    monkeypatch.setattr(llmserver.sys, "prefix", str(tmp_path / "venv"))
    assert llmserver.find_vllm_python() is None
    (tmp_path / ".venv-vllm" / "bin").mkdir(parents=True)
    (tmp_path / ".venv-vllm" / "bin" / "python").write_text("")
    assert llmserver.find_vllm_python() == str(tmp_path / ".venv-vllm" / "bin" / "python")
    (tmp_path / ".venv-vllm" / "bin" / "python").unlink()

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    done = CliRunner().invoke(cli, ["llm", "serve", str(model)])
    assert done.exit_code == 7, done.output
    assert "install.sh --vllm" in done.output and "APPLIANCE_VLLM_PYTHON" in done.output


def test_a_named_vllm_python_that_is_not_there(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    env = {**os.environ, "APPLIANCE_VLLM_PYTHON": str(tmp_path / "nope" / "python")}
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "llm", "serve", str(model)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 7 and "Traceback" not in done.stderr
    assert "APPLIANCE_VLLM_PYTHON" in done.stderr and "no such file" in done.stderr


def test_not_a_model_folder(tmp_path, fake_vllm):
    bindir, _, log = fake_vllm
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "llm", "serve", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=_env(bindir, log),
        timeout=60,
    )
    assert done.returncode == 2 and "not a folder" in done.stderr
