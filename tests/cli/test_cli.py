"""Every command has help with an example, is documented in README, and fails with one line, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from appliance.cli import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(cmd, click.Group):
            out += _leaf_commands(cmd, path)
        else:
            out.append(path)
    return out


COMMANDS = _leaf_commands(cli)


def test_there_are_commands():
    assert ("init",) in COMMANDS and ("audit", "verify") in COMMANDS


HEAVY = ("torch", "transformers", "presidio_analyzer", "spacy", "onnxruntime", "vllm", "ray")


def test_the_command_line_starts_without_loading_a_stage():
    # Every command imports its stage when it runs: `appliance --help` (and a command that
    # needs none of these) must not pay seconds of start-up for torch or presidio.
    code = (
        "import sys; from appliance.cli import cli; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_has_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output
    assert "appliance " + " ".join(path) in result.output.split("Example:")[1]


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_readme_documents_command(path):
    text = README.read_text(encoding="utf-8")
    assert f"appliance {' '.join(path)}" in text, (
        f"README does not show `appliance {' '.join(path)}`"
    )


def _run(*args, cwd=None, env_extra=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    env.pop("APPLIANCE_WORKSPACE", None)
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["records", "stats"], 4, "not an appliance workspace"),
        (["audit", "verify"], 4, "not an appliance workspace"),
        (["init", "{tmp}/ws", "--language", "xx-yy"], 2, "ISO 639-1"),
        (["init", "{tmp}/ws", "--key-file", "{tmp}/nokey"], 6, "data key file not found"),
        (["audit", "show", "--last", "0"], 2, "--last must be at least 1"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path, args, code, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_workspace_from_environment(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(tmp_path / "ws")]).exit_code == 0
    result = runner.invoke(
        cli, ["audit", "verify"], env={"APPLIANCE_WORKSPACE": str(tmp_path / "ws")}
    )
    assert result.exit_code == 0, result.output
    assert "intact: 1 entries" in result.output


def test_audit_verify_names_the_edited_line(tmp_path):
    runner = CliRunner()
    ws = tmp_path / "ws"
    runner.invoke(cli, ["init", str(ws)])
    runner.invoke(cli, ["audit", "show", "-w", str(ws)])
    runner.invoke(cli, ["doctor", "-w", str(ws)])
    log = ws / "audit.log"
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) >= 1
    lines[0] = lines[0].replace('"init"', '"inot"')
    log.write_text("".join(lines))
    result = _run("audit", "verify", "-w", str(ws))
    assert result.returncode == 6
    assert "line 1" in result.stderr and "modified" in result.stderr
