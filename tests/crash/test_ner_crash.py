"""``ner train`` with self-training rounds, killed (SIGKILL) at its commit points: the
rerun ends with the model an uninterrupted run trains, and no round is left behind."""

from __future__ import annotations

import shutil
import signal

import pytest

from tests.crash.harness import ok, pick_points, run, trace_points

SWITCHES = ("--max-steps", "6", "--o-keep", "0.5", "--self-training-rounds", "1",
            "--self-training-threshold", "0.6", "--device", "cpu")  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    from appliance.documents import write_jsonl
    from tests.ner.test_partial_labels import toy_corpus

    root = tmp_path_factory.mktemp("ner-crash")
    docs, _ = toy_corpus(24)
    write_jsonl(docs, root / "gold.jsonl")
    ok("init", root / "ws")
    return root


def _train(root, ws, **kwargs):
    return run("ner", "train", "-w", ws, "--train", root / "gold.jsonl", *SWITCHES, **kwargs)


def _weights(ws):
    from appliance.ner.model import load_model
    from appliance.workspace import Workspace

    w = Workspace.open(ws)
    return load_model(w.ner_model_dir("default") / "model", w.data_key).model.state_dict()


def test_killed_at_commit_points_of_self_training_then_rerun(template, tmp_path):
    import torch

    ref = tmp_path / "ref"
    shutil.copytree(template / "ws", ref)
    trace = tmp_path / "trace"
    done = _train(template, ref, trace=trace)
    assert done.returncode == 0, done.stderr
    points = [p for p in trace_points(trace) if p.startswith("ner train/")]
    # Both rounds save a model folder, the kept one is saved again.
    assert points.count("ner train/ner.model") == 3, points
    want = _weights(ref)
    # Each round's model saved, the kept one saved again, and one other point of the stage.
    specs = [f"ner train/ner.model:{n}" for n in (1, 2, 3)]
    specs += [p for p in pick_points(points, k=1, seed=5) if p.startswith("*")]
    for spec in specs:
        ws = tmp_path / spec.replace("*", "any").replace(":", "-").replace("/", "_")
        shutil.copytree(template / "ws", ws)
        crashed = _train(template, ws, crash_at=spec)
        assert crashed.returncode == -signal.SIGKILL, (spec, crashed.stderr)
        again = _train(template, ws)
        assert again.returncode == 0, (spec, again.stdout, again.stderr)
        assert "self-training round" in again.stdout
        got = _weights(ws)
        assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want), spec
        assert not (ws / "models" / "ner" / "default" / "model" / "self-training").exists()
        assert "intact" in ok("audit", "verify", "-w", ws).stdout
