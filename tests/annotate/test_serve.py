"""`appliance llm serve` with a fake `vllm` executable that really serves on loopback."""

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

from appliance.annotate.serve import ServeOptions, build_command

FAKE_VLLM = """#!{python}
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

args = sys.argv[1:]
log = os.environ["FAKE_VLLM_LOG"]
opt = lambda name: args[args.index(name) + 1]
with open(log, "w") as fh:
    json.dump({{"argv": args, "env": {{k: os.environ.get(k) for k in
        ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK")}}}}, fh)
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
    exe = bindir / "vllm"
    exe.write_text(FAKE_VLLM.format(python=sys.executable))
    exe.chmod(0o755)
    model = tmp_path / "tiny-llm"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return bindir, model, tmp_path / "vllm.log"


def _env(bindir: Path, log: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_VLLM_LOG": str(log),
    }
    env.pop("HF_HUB_OFFLINE", None)
    return env


def test_command_line():
    cmd = build_command(
        ServeOptions(Path("/models/m"), port=8011, max_model_len=4096, gpu_memory_utilization=0.5)
    )
    assert cmd[:3] == ["vllm", "serve", "/models/m"]
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
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(bindir, log),
        preexec_fn=lambda: signal.signal(signal.SIGINT, inherited),
    )
    try:
        line = proc.stdout.readline()
        assert f"serving tiny at http://127.0.0.1:{port}/v1" in line, line or proc.stderr.read()
        started = json.loads(log.read_text())
        argv = " ".join(started["argv"])
        assert argv.startswith(f"serve {model.resolve()} --host 127.0.0.1 --port {port}")
        assert "--max-model-len 2048" in argv and "--gpu-memory-utilization 0.6" in argv
        assert started["env"] == {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
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


def test_missing_vllm_names_the_extra(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    env = {**os.environ, "PATH": str(Path(sys.executable).parent.parent / "nonexistent")}
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "llm", "serve", str(model)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 7 and "Traceback" not in done.stderr
    assert "appliance[gpu]" in done.stderr and "vllm" in done.stderr


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
