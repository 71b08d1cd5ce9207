"""appliance doctor: a readable report; non-zero only when something required is broken."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

from appliance import doctor
from appliance.cli import cli


def test_doctor_reports_and_fails_only_on_required(tmp_path):
    runner = CliRunner()
    ws = tmp_path / "ws"
    assert runner.invoke(cli, ["init", str(ws)]).exit_code == 0

    result = runner.invoke(cli, ["doctor", "-w", str(ws), "--json"])
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.output)}
    for name in (
        "python",
        "torch",
        "cuda",
        "gpu",
        "vllm",
        "onnxruntime",
        "ray",
        "presidio",
        "offline",
        "disk",
        "data key",
        "signing key",
        "audit log",
        "policy",
    ):
        assert name in checks, name
    assert checks["data key"]["status"] == "ok"
    assert checks["offline"]["status"] == "ok"
    assert checks["vllm"]["status"] in ("ok", "info", "warn")  # optional: never a failure
    assert checks["ray"]["status"] in ("ok", "info")
    assert "CPUExecutionProvider" in checks["onnxruntime"]["detail"]

    os.chmod(ws / "keys" / "data.key", 0o644)
    broken = runner.invoke(cli, ["doctor", "-w", str(ws)])
    assert broken.exit_code == 1
    assert "chmod 600" in broken.output
    assert "first failure: data key" in broken.output


def test_offline_check_flags_a_re_enabled_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    check = doctor._check_offline()
    assert check.status == "fail" and "HF_HUB_OFFLINE=0" in check.detail
