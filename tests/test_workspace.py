"""Workspace creation: layout, keys and their modes, refusal to overwrite."""

from __future__ import annotations

import os
import stat

import pytest

from appliance.errors import KeyFileError, WorkspaceError
from appliance.security.keys import load_data_key
from appliance.workspace import Workspace, init


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_layout_and_private_keys(tmp_path):
    ws = init(tmp_path / "ws", language="et")
    root = ws.root
    for name in ("appliance.toml", "policy.toml", "audit.log", "entities/clinical.toml"):
        assert (root / name).is_file(), name
    for sub in ("keys", "records", "synthetic", "annotations", "models", "reports"):
        assert (root / sub).is_dir(), sub
    assert _mode(root / "keys" / "data.key") == 0o600
    assert _mode(root / "keys" / "signing.key") == 0o600
    assert _mode(root / "keys") == 0o700
    assert len(ws.data_key.material) == 32
    assert ws.config.workspace.language == "et"
    assert len(ws.policy.sha256) == 64
    assert ws.audit.verify().entries == 1


def test_two_workspaces_get_different_keys(tmp_path):
    a = init(tmp_path / "a")
    b = init(tmp_path / "b")
    assert a.data_key.material != b.data_key.material


def test_refuses_existing_workspace_and_non_empty_folder(tmp_path):
    ws = init(tmp_path / "ws")
    key_before = (ws.root / "keys" / "data.key").read_bytes()
    with pytest.raises(WorkspaceError, match="is a workspace; refusing to overwrite"):
        init(tmp_path / "ws")
    assert (ws.root / "keys" / "data.key").read_bytes() == key_before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.csv").write_text("x")
    with pytest.raises(WorkspaceError, match="non-empty folder"):
        init(other)


def test_empty_existing_folder_is_fine(tmp_path):
    (tmp_path / "empty").mkdir()
    assert init(tmp_path / "empty").root == (tmp_path / "empty").resolve()


@pytest.mark.parametrize(
    "content",
    [bytes(range(32)), b"ab" * 32 + b"\n", b"q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=\n"],
    ids=["raw", "hex", "base64"],
)
def test_init_with_hospital_key_file(tmp_path, content):
    key = tmp_path / "hospital.key"
    key.write_bytes(content)
    os.chmod(key, 0o600)
    ws = init(tmp_path / "ws", key_file=key)
    assert ws.data_key_path == key.resolve()
    assert not (ws.root / "keys" / "data.key").exists()
    assert ws.data_key.material == load_data_key(key).material


def test_key_file_too_open_or_malformed_is_refused_and_nothing_created(tmp_path):
    key = tmp_path / "k"
    key.write_bytes(b"ab" * 32)
    os.chmod(key, 0o644)
    with pytest.raises(KeyFileError, match="mode 0644.*chmod 600"):
        init(tmp_path / "ws", key_file=key)
    assert not (tmp_path / "ws").exists()
    os.chmod(key, 0o600)
    key.write_bytes(b"short")
    with pytest.raises(KeyFileError, match="not a 256-bit key"):
        init(tmp_path / "ws", key_file=key)


def test_open_reports_missing_workspace(tmp_path):
    with pytest.raises(WorkspaceError, match="not an appliance workspace.*appliance init"):
        Workspace.open(tmp_path)


def test_open_validates_config(tmp_path):
    ws = init(tmp_path / "ws")
    (ws.root / "appliance.toml").write_text("[workspace]\nlanguage = 5\n")
    from appliance.errors import ConfigError

    with pytest.raises(ConfigError, match="language"):
        Workspace.open(ws.root)


def test_loosened_key_mode_is_refused(tmp_path):
    ws = init(tmp_path / "ws")
    os.chmod(ws.root / "keys" / "data.key", 0o640)
    with pytest.raises(KeyFileError, match="0640"):
        _ = Workspace.open(ws.root).data_key


def test_bad_language_is_refused(tmp_path):
    from appliance.errors import UsageError

    with pytest.raises(UsageError, match="ISO 639-1"):
        init(tmp_path / "ws", language="english!")


def test_policy_with_outside_schema_is_copied_inside(tmp_path):
    import shutil

    from appliance.config import default_policy_path

    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(
        default_policy_path().parent / "entities" / "clinical.toml", outside / "mine.toml"
    )
    policy = outside / "sub" / "policy.toml"
    policy.parent.mkdir()
    policy.write_text('[policy]\nname = "p"\n[annotation]\nentity_schema = "../mine.toml"\n')
    ws = init(tmp_path / "ws", policy_file=policy)
    assert (ws.root / "entities" / "mine.toml").is_file()
    assert ws.policy.annotation.entity_schema == "entities/mine.toml"
    assert ws.policy.entity_schema().path == ws.root / "entities" / "mine.toml"
    assert not (tmp_path / "mine.toml").exists()


@pytest.mark.parametrize("kind", ["dir", "huge"])
def test_key_file_must_be_a_small_regular_file(tmp_path, kind):
    key = tmp_path / "k"
    if kind == "dir":
        key.mkdir()
    else:
        key.write_bytes(b"0" * 100_000)
        os.chmod(key, 0o600)
    with pytest.raises(KeyFileError, match="not a regular file|too large"):
        init(tmp_path / "ws", key_file=key)


def test_policy_change_is_recorded_in_the_audit_log(tmp_path):
    ws = init(tmp_path / "ws")
    before = ws.policy.sha256
    text = (ws.root / "policy.toml").read_text()
    (ws.root / "policy.toml").write_text(
        text.replace("allowed_hosts = []", 'allowed_hosts = ["llm.internal:8000"]')
    )
    again = Workspace.open(ws.root)
    entry = again.log("test")
    assert entry["details"]["policy_changed_from"] == before
    assert entry["policy_sha256"] == again.policy.sha256 != before
    assert "policy_changed_from" not in again.log("test")["details"]


def _hold_lock(ws_root, command):
    """A separate process that takes the workspace lock as ``command`` and waits."""
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        "from appliance.workspace import Workspace\n"
        f"w = Workspace.open({str(ws_root)!r})\n"
        f"with w.lock({command!r}):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_busy_workspace_names_the_holder_and_frees_when_it_dies(tmp_path):
    """A second writer is told which command holds the lock (exit 8); a holder
    killed with SIGKILL leaves no lock behind."""
    import signal

    from click.testing import CliRunner

    from appliance.cli import cli
    from appliance.errors import WorkspaceBusy

    ws = init(tmp_path / "ws")
    holder = _hold_lock(ws.root, "screen")
    try:
        assert _mode(ws.root / ".lock") == 0o600
        with pytest.raises(WorkspaceBusy) as busy, Workspace.open(ws.root).lock("generate"):
            pass
        message = str(busy.value)
        assert f"`screen`, pid {holder.pid}" in message and "run `generate`" in message, message
        export = tmp_path / "notes.jsonl"
        export.write_text('{"id": "n1", "text": "Patient seen today."}\n')
        result = CliRunner().invoke(cli, ["ingest", str(export), "-w", str(ws.root)])
        assert result.exit_code == 8, result.output
        assert "`screen`" in result.output and "Traceback" not in result.output
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with Workspace.open(ws.root).lock("generate"):
        pass
