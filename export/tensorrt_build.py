"""Build a TensorRT engine (.plan) from the ONNX step graph with the TensorRT Python API (10.x).

Kept to API present in TensorRT 10.3 (JetPack 6) and later: ``create_network(0)`` (explicit batch
is the only mode in 10.x), ``set_memory_pool_limit``, ``build_serialized_network``. The frontend
(power spectrum and log) stays in fp32 in fp16 engines: a loud frame's power spectrum exceeds
fp16's range. TF32 is off so fp32 engines match onnxruntime to ~1e-5 rather than ~1e-3.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnx.inliner

from ssamba_stream.errors import UserError
from ssamba_stream.runtime.spec import file_sha256, load_spec, sidecar_path

FP32_SCOPES = ("/frontend/",)  # ONNX node-name scopes that must stay fp32


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError(
            "TensorRT is not installed: pip install 'ssamba-stream[gpu]' on a machine with an NVIDIA GPU "
            "(on Jetson it comes with JetPack)"
        ) from None
    return trt


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    fp16: bool = False,
    workspace_mb: int = 1024,
    max_batch: int = 8,
) -> Path:
    """Compile ``onnx_path`` to ``plan_path`` and write the plan's sidecar; returns the plan path."""
    trt = _import_tensorrt()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    spec = load_spec(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except (RuntimeError, TypeError) as exc:  # raised when CUDA cannot initialise
        raise UserError(
            f"TensorRT found no usable NVIDIA GPU ({exc}): build the engine on the device that will run it"
        ) from None
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    # Each layer's block scan is a local function in the graph (for onnxruntime-native): inlined,
    # the parser sees plain operators whatever its version supports.
    graph = onnx.inliner.inline_local_functions(onnx.load(str(onnx_path)))
    if not parser.parse(graph.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    config.clear_flag(trt.BuilderFlag.TF32)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            if any(scope in layer.name for scope in FP32_SCOPES):
                layer.precision = trt.float32
                for output in range(layer.num_outputs):
                    layer.set_output_type(output, trt.float32)
    inputs = [network.get_input(index) for index in range(network.num_inputs)]
    if any(-1 in tuple(tensor.shape) for tensor in inputs):  # a graph exported with a free batch
        profile = builder.create_optimization_profile()
        for tensor in inputs:
            shape = list(tensor.shape)
            batch_axis = shape.index(-1)
            low, best, high = (list(shape) for _ in range(3))
            low[batch_axis], best[batch_axis], high[batch_axis] = 1, 1, max_batch
            profile.set_shape(tensor.name, low, best, high)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    document = spec.to_json()
    document["fingerprint"] = file_sha256(plan_path)
    document["export"] = {
        **document.get("export", {}),
        "format": "tensorrt",
        "tensorrt": trt.__version__,
        "fp16": fp16,
        "max_batch": max_batch,
        "onnx": onnx_path.name,
    }
    sidecar_path(plan_path).write_text(json.dumps(document, indent=2) + "\n")
    return plan_path
