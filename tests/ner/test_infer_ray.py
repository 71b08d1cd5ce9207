"""Batch inference on Ray: the local engine's output, a worker killed mid-run, the package checked on each worker.

A tiny model is trained here and exported with a small lexicon, so a run
exercises the model, the union with the lexicon and the writers. Ray runs on
this machine, on loopback: started by the engine itself, or as a cluster
started with ``ray start`` in a subprocess, which a second subprocess drives
while the test kills one of its workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.documents import read_gold
from appliance.errors import ClusterError, IntegrityError, UsageError
from appliance.ner import infer
from appliance.ner.export import export_package
from appliance.ner.lexicon import lexicon_from_files
from appliance.ner.package import verify_package
from appliance.ner.train import split_dev, train_model
from tests.ner_helpers import TYPES, demo_export, one_thread, tiny_settings

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    gold = demo_export(root / "demo", "jsonl", notes=30).parent / "gold.jsonl"
    docs = read_gold(gold)
    train, dev = split_dev(docs, 0.2, 0)
    train_model(
        train, dev, base=None, out_dir=root / "model", settings=tiny_settings(), types=TYPES
    )
    terms = sorted({s.text for d in docs[:10] for s in d.spans if s.label == "DIAGNOSIS"})
    (root / "terms.txt").write_text("\n".join(terms) + "\n", encoding="utf-8")
    key = Ed25519PrivateKey.generate()
    export_package(
        root / "model",
        root / "package",
        signing_key=key,
        dev_docs=dev,
        lexicon=lexicon_from_files([root / "terms.txt"], "DIAGNOSIS", "en"),
    )
    (root / "signing.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    export = demo_export(root / "ex", "csv", notes=60, seed=9)
    return {"root": root, "package": root / "package", "key": key, "export": export}


def _run(package, out, fmt="jsonl", **kw):
    kw.setdefault("threads", 1)
    return infer.run(
        package["export"],
        package["package"],
        out,
        fmt,
        trusted_public_key=package["key"].public_key(),
        **kw,
    )


def _tree(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != ".progress"}
    return {path.name: path.read_bytes()}


@pytest.mark.parametrize("fmt", ["jsonl", "brat"])
def test_ray_engine_writes_what_the_local_engine_writes(package, tmp_path, fmt):
    name = "out" if fmt == "brat" else "out.jsonl"
    local = _run(package, tmp_path / "local" / name, fmt, chunk_notes=8)
    lines: list[str] = []
    on_ray = _run(
        package,
        tmp_path / "ray" / name,
        fmt,
        chunk_notes=8,
        engine="ray",
        workers=2,
        log=lines.append,
    )
    assert _tree(tmp_path / "local" / name) == _tree(tmp_path / "ray" / name)
    assert on_ray.notes == local.notes == 60 and on_ray.entities == local.entities > 0
    assert on_ray.by_source == local.by_source and local.combine == "union"
    assert on_ray.engine == "ray" and on_ray.workers == 2
    assert len(lines) == 1 and "2 workers" in lines[0] and "verified by each" in lines[0]
    assert "on Ray (2 workers)" in on_ray.summary()


def test_a_run_stopped_on_ray_resumes_locally_to_the_same_output(package, tmp_path):
    _run(package, tmp_path / "full.jsonl")
    first = _run(
        package, tmp_path / "out.jsonl", chunk_notes=5, stop_after=23, engine="ray", workers=2
    )
    assert first.notes == 23
    second = _run(package, tmp_path / "out.jsonl", chunk_notes=5)
    assert second.resumed == 23 and second.notes == 37
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "full.jsonl").read_bytes()


def _package_files(package) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(package["package"].iterdir())}


def _worker(package, files, digest=None):
    from appliance.ner.cluster import Worker, files_digest

    manifest = verify_package(package["package"], package["key"].public_key())
    settings = infer.PredictSettings.for_package(package["package"], None, None, True, 32, "cpu", 1)
    raw = (
        package["key"]
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return Worker(files, raw, digest or files_digest(manifest), settings, None, "PKG")


def test_each_worker_checks_the_package_signature_and_the_files_the_run_verified(package):
    files = _package_files(package)
    good = _worker(package, files)
    assert good.error is None
    assert good.predict(["no entity here"]) == [[]]

    tampered = dict(files, **{"model.onnx": files["model.onnx"][:-1] + b"\0"})
    bad = _worker(package, tampered)
    assert bad.error is not None and bad.error[0] == "IntegrityError"
    assert "PKG/model.onnx" in bad.error[1] and "does not match the signed manifest" in bad.error[1]
    with pytest.raises(IntegrityError, match="does not match"):
        bad.predict(["text"])

    other = _worker(package, files, digest="0" * 64)
    assert other.error is not None and "not the one the run verified" in other.error[1]

    stranger = dict(files, **{"extra.bin": b"x"})
    assert "not part of the signed package" in _worker(package, stranger).error[1]


def test_an_unreachable_cluster_is_one_line_and_quick(package, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        _run(package, tmp_path / "o.jsonl", engine="ray", address=f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "o.jsonl").exists()


def test_a_cluster_address_without_a_token_is_refused_at_once(package, tmp_path, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "no-token"))
    try:
        with pytest.raises(UsageError, match="no Ray token here; set RAY_AUTH_TOKEN"):
            _run(package, tmp_path / "o.jsonl", engine="ray", address=f"127.0.0.1:{port}")
    finally:
        listener.close()
    assert not (tmp_path / "o.jsonl").exists()


def test_engine_options_are_checked_on_the_command_line(package, tmp_path):
    from click.testing import CliRunner

    from appliance.cli import cli

    base = [
        "infer",
        str(package["export"]),
        "--model",
        str(package["package"]),
        "--public-key",
        str(package["root"] / "signing.pub"),
        "--out",
        str(tmp_path / "o.jsonl"),
    ]
    result = CliRunner().invoke(cli, [*base, "--workers", "2"])
    assert result.exit_code == 2 and "go with --engine ray" in result.output
    result = CliRunner().invoke(cli, [*base, "--engine", "ray", "--address", "nohost"])
    assert result.exit_code == 2 and "expected HOST:PORT" in result.output


# ---------------------------------------------------------------------------
# a cluster started with `ray start`, one of its workers killed mid-run

_DRIVER = """
import sys, time
from pathlib import Path
from appliance.ner import infer
from appliance.security.keys import load_public_key

export, package, out, address, pub, workers = sys.argv[1:7]
result = infer.run(
    Path(export), Path(package), Path(out), "jsonl",
    trusted_public_key=load_public_key(Path(pub)),
    chunk_notes=2, engine="ray", address=address, workers=int(workers), threads=1,
    progress=lambda done, rate: time.sleep(0.15),  # a slow writer: the kill lands mid-run
)
print(result.notes, result.resumed, result.restarted)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes(token: str) -> list[psutil.Process]:
    """The processes of the test's cluster: every one carries its token in its environment."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("RAY_AUTH_TOKEN") == token:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _workers(token: str) -> list[psutil.Process]:
    found = []
    for proc in _processes(token):
        try:
            cmd = proc.cmdline()
        except psutil.Error:
            continue
        if cmd and cmd[0].startswith("ray::Worker"):
            found.append(proc)
    return found


@pytest.fixture
def ray_cluster():
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit 107 bytes
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # stay on loopback
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": os.urandom(16).hex(),
    }
    port = _free_port()
    started = subprocess.run(
        [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--object-store-memory=100000000",
            f"--temp-dir={temp}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield {"address": f"127.0.0.1:{port}", "env": env, "token": env["RAY_AUTH_TOKEN"]}
    finally:
        for proc in _processes(env["RAY_AUTH_TOKEN"]):  # this cluster only, not others here
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


def _driver_args(package, out, ray_cluster, workers):
    return [
        sys.executable,
        "-c",
        _DRIVER,
        str(package["export"]),
        str(package["package"]),
        str(out),
        ray_cluster["address"],
        str(package["root"] / "signing.pub"),
        str(workers),
    ]


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(package, ray_cluster, tmp_path):
    # more workers than the cluster's 2 CPUs could place: refused at once, not left waiting
    too_many = subprocess.run(
        _driver_args(package, tmp_path / "none.jsonl", ray_cluster, 3),
        env=ray_cluster["env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert too_many.returncode != 0
    assert "--workers 3 x --threads 1 needs 3 CPUs; the Ray cluster has 2" in too_many.stderr

    _run(package, tmp_path / "local.jsonl")
    out = tmp_path / "ray.jsonl"
    journal = out.with_name(out.name + ".progress")
    driver = subprocess.Popen(
        _driver_args(package, out, ray_cluster, 2),
        env=ray_cluster["env"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            if journal.exists() and len(journal.read_text().splitlines()) > 8:
                break
            time.sleep(0.05)
        workers = _workers(ray_cluster["token"])
        assert driver.poll() is None, driver.communicate()[1][-2000:]
        assert len(workers) == 2
        killed = workers[0].pid
        os.kill(killed, signal.SIGKILL)
        stdout, stderr = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr[-2000:]
    # the last line (Ray reports the worker's death on stdout before it)
    assert stdout.splitlines()[-1].split() == ["60", "0", "1"]
    assert out.read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    ids = [json.loads(line)["id"] for line in journal.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 61  # the header entry and each note once
    assert killed not in {p.pid for p in _workers(ray_cluster["token"])}
