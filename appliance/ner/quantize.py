"""int8 for an exported NER model: fused graph, calibrated smoothing, per-channel int8 weights.

:func:`quantize` takes the fp32 ONNX model ``export`` made and windows of
calibration notes (released synthetic notes, as the tagger pads them) and
returns the int8 model:

1. **Fusion** (onnxscript's onnxruntime fusions, made for the graphs torch's
   exporter writes): erf-GELU and its bias into ``BiasGelu``, scaled
   dot-product attention into ``MultiHeadAttention``. Q, K and V stay
   separate MatMuls, so that each is smoothed and quantized per channel.
   Residual add + LayerNorm is left unfused: onnxruntime's CPU
   ``SkipLayerNormalization`` kernel took a quarter of the int8 model's
   time at batch 32, so an int8 session is also told not to fuse it at load
   (:data:`appliance.ner.runtime.INT8_CPU_DISABLED_OPTIMIZERS`). A graph the fusions
   do not recognise (another architecture) is quantized unfused; the result
   says which fusions were made.
2. **Smoothing, calibrated** (SmoothQuant, Xiao et al. 2023): every
   activation that feeds MatMuls with constant weights is divided, channel by
   channel, by ``s_j = max|x_j|^alpha / max|w_j|^(1 - alpha)`` (one ``Mul``)
   and the weights' row ``j`` multiplied by ``s_j``. The fp32 function is the
   same up to rounding, but the few outlier channels of a transformer's
   LayerNorm and GELU outputs no longer set the int8 scale of the whole
   tensor. ``max|x_j|`` is measured on the calibration windows' real tokens.
3. **int8**: weights per-channel symmetric int8, activations quantized per
   call (onnxruntime's ``quantize_dynamic``). Static activation scales (QDQ)
   from the same windows were measured slower and less accurate on CPU
   (BENCHMARKS.md, "NER runtimes").

Everything happens in memory or in a private (0700) folder in memory-backed
storage (``/dev/shm`` where available), removed when done, so a real-zone
model's plaintext never reaches a disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import missing_dependency
from appliance.training import quiet_export

ALPHA = 0.8  # SmoothQuant's migration strength: 0 = weights only, 1 = activations only
MAX_CALIBRATION_WINDOWS = 256
CALIBRATION_BATCH = 32

Windows = Sequence[tuple[np.ndarray, np.ndarray]]  # (ids, mask) int64 batches


@dataclass
class Quantized:
    model: bytes
    fused: dict[str, int] = field(default_factory=dict)  # op type -> count in the int8 graph
    fusion_error: str = ""  # why the graph was quantized unfused
    smoothed: int = 0  # activations smoothed
    windows: int = 0  # calibration windows
    alpha: float = ALPHA

    def describe(self) -> dict[str, Any]:
        return {
            "method": "fused graph, SmoothQuant calibrated on synthetic notes, "
            "int8 per-channel weights, activations quantized per call",
            "fused": self.fused,
            "fusion_error": self.fusion_error or None,
            "smoothed_activations": self.smoothed,
            "calibration_windows": self.windows,
            "alpha": self.alpha,
        }


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A private (0700) folder for the quantizer's files, in memory-backed storage when there is one.

    The quantizer also makes temporary folders of its own, so ``tempfile``'s
    default folder points here meanwhile; everything is removed on exit.
    """
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    folder = Path(tempfile.mkdtemp(prefix="appliance-ner-export-", dir=base))
    os.chmod(folder, 0o700)
    before = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = before
        shutil.rmtree(folder, ignore_errors=True)


def calibration_windows(
    tagger: Any, texts: Sequence[str], limit: int = MAX_CALIBRATION_WINDOWS
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Padded (ids, mask) batches of the notes' windows, as the tagger makes them at inference."""
    _, rows, _ = tagger._windows(texts)
    rows = rows[:limit]
    return [(b.ids, b.mask) for b in tagger.batches(rows, CALIBRATION_BATCH)]


def fuse(model: Any) -> Any:
    """The ModelProto with onnxruntime's fused transformer operators (see the module docstring)."""
    import onnx
    import onnx_ir as ir
    import onnx_ir.passes.common as common_passes
    from onnxscript.rewriter.ort_fusions import _core as fusions

    g = ir.serde.deserialize_model(model)
    fusions.rewrite(g, [fusions._gemm_to_matmul_add.gemm_to_matmul_add_rule])
    g = fusions._pre_optimize(g)
    fusions.fuse_erfgelu(g)
    fusions.fuse_sdpa(g, apply_shape_inference=True)
    if fusions.fuse_mha1(g) + fusions.fuse_mha2(g):
        fusions.fuse_mha_scale(g)
        fusions.fuse_mha_bias(g)
    fusions.fuse_gelu(g)
    fusions.fuse_bias_gelu(g)
    fusions.replace_sdpa_by_mha(g)
    fusions.optimize(g)
    fusions.rewrite(g, fusions.ORT_PATTERN_REWRITE_RULES)
    ir.passes.Sequential(
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
        common_passes.RemoveInitializersFromInputsPass(),
        common_passes.ShapeInferencePass(),
    )(g)
    fused = ir.serde.serialize_model(g)
    if not any(o.domain == "com.microsoft" for o in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return fused


def _absmax(model: Any, windows: Windows, tensors: list[str]) -> dict[str, np.ndarray]:
    """Per-channel max |x| of the named tensors over the windows' real (unpadded) tokens."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in have:
            probe.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    out: dict[str, np.ndarray] = {}
    for ids, mask in windows:
        values = session.run(
            tensors,
            {"input_ids": np.asarray(ids, np.int64), "attention_mask": np.asarray(mask, np.int64)},
        )
        real = np.asarray(mask).astype(bool)
        for name, v in zip(tensors, values, strict=True):
            m = np.abs(np.asarray(v)[real]).max(0)
            out[name] = m if name not in out else np.maximum(out[name], m)
    return out


def smooth(model: Any, windows: Windows, alpha: float = ALPHA) -> int:
    """SmoothQuant in place on a ModelProto; returns how many activations were smoothed."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    groups: dict[str, list[Any]] = {}
    for n in model.graph.node:
        # a constant weight used by this MatMul only: rescaling it changes nothing else
        if n.op_type == "MatMul" and n.input[1] in inits and uses[n.input[1]] == 1:
            groups.setdefault(n.input[0], []).append(n)
    if not groups or not windows:
        return 0
    amax = _absmax(model, windows, list(groups))
    inserted = []
    for act, nodes in groups.items():
        weights = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes]
        if any(w.ndim != 2 for w in weights) or amax[act].ndim != 1:
            continue
        x = np.maximum(amax[act], 1e-5)
        w = np.maximum(np.max([np.abs(w).max(1) for w in weights], 0), 1e-5)
        s = np.clip((x**alpha) / (w ** (1 - alpha)), 1e-3, 1e3).astype(np.float32)
        inv = numpy_helper.from_array((1.0 / s).astype(np.float32), name=act + "/smooth_inv")
        model.graph.initializer.append(inv)
        smoothed = act + "/smoothed"
        inserted.append(
            (
                nodes[0],
                onnx.helper.make_node("Mul", [act, inv.name], [smoothed], name=act + "/smooth"),
            )
        )
        for n, wt in zip(nodes, weights, strict=True):
            inits[n.input[1]].CopyFrom(
                numpy_helper.from_array((wt * s[:, None]).astype(np.float32), name=n.input[1])
            )
            n.input[0] = smoothed
    order = list(model.graph.node)
    for first, mul in inserted:  # each Mul right before its first consumer: still topological
        order.insert(order.index(first), mul)
    del model.graph.node[:]
    model.graph.node.extend(order)
    return len(inserted)


def quantize(model: bytes, windows: Windows, alpha: float = ALPHA) -> Quantized:
    """The int8 version of an fp32 ONNX NER model (inputs input_ids/attention_mask, output logits)."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise missing_dependency("onnxruntime", "cpu", "int8 quantization") from None
    proto = onnx.load_from_string(model)
    result = Quantized(b"", windows=sum(len(ids) for ids, _ in windows), alpha=alpha)
    with quiet_export():
        try:
            proto = fuse(proto)
        except Exception as exc:  # another architecture, or another onnxscript
            proto = onnx.load_from_string(model)
            result.fusion_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        result.smoothed = smooth(proto, windows, alpha)
        with scratch() as folder:
            out = folder / "model.int8.onnx"
            quantize_dynamic(
                proto,
                str(out),
                weight_type=QuantType.QInt8,
                per_channel=True,
                # shape inference does not know the fused com.microsoft operators
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
            result.model = out.read_bytes()
    counts: dict[str, int] = {}
    for node in onnx.load_from_string(result.model).graph.node:
        if node.domain == "com.microsoft":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    result.fused = dict(sorted(counts.items()))
    return result
