"""``onnxruntime-native``: the step graph in onnxruntime, its block scans in a compiled kernel (no torch).

The graph is cut at its ``BlockScan`` calls (runtime/graph_split.py): onnxruntime runs the
standard-op segments between them (projections, conv, frontend, head), and each layer's scan runs
in ``host_scan``'s kernel, which keeps the state in vector registers. Same outputs as the
``onnxruntime`` backend within float rounding; less CPU per stream where many streams share a call.

Registers itself as ``onnxruntime-native`` on import; needs onnxruntime, onnx and a C++ compiler
(the kernel is compiled on first use).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from .backends import (
    BackendUnavailable,
    OnnxRuntimeBackend,
    _first_line,
    ort_session_options,
    register_backend,
)
from .graph_split import HostCall, Segment, split_at_calls
from .host_scan import HostBlockScan, host_block_scan, random_scan_inputs
from .spec import ModelFileError, StreamModelSpec

SCAN_FUNCTION = "BlockScan"
# Calls of one stream run the whole graph in one onnxruntime session: there the split graph's nine
# session calls cost more than the kernel saves (1.67-1.82 against 1.84-2.14 ms); from two streams the
# split is 12-24% cheaper (benchmarks/RESULTS.md, "native kernel").
SPLIT_FROM_STREAMS = 2
# The function's inputs, as ssamba_stream/model/block_scan.py names them (kept here so that the
# runtime needs no torch).
SCAN_ROLES = ("u", "dt", "A", "B", "C", "D", "z", "initial_state")


class NativeScanBackend:
    """onnxruntime sessions for the segments, the compiled kernel for the scans, run in order (and
    the whole graph in one session for calls of fewer than ``SPLIT_FROM_STREAMS`` streams)."""

    def __init__(self, graph_path: Path, spec: StreamModelSpec, threads: int = 1) -> None:
        # The whole graph for calls of few streams; it also checks onnxruntime, the file and its sidecar.
        self.whole = OnnxRuntimeBackend(graph_path, spec, threads)
        import onnxruntime as ort  # importable: the whole graph's backend needed it

        kernel = host_block_scan()
        if isinstance(kernel, str):
            raise BackendUnavailable(f"the native block scan cannot be built here ({kernel})")
        self.kernel = kernel
        try:
            model = onnx.load(str(graph_path))
        except Exception as exc:  # protobuf raises several types for a file that is not ONNX
            raise ModelFileError(
                f"{graph_path} is not a loadable ONNX graph ({_first_line(exc)}): re-export it"
            ) from None
        try:
            split = split_at_calls(model, SCAN_FUNCTION, SCAN_ROLES)
        except ModelFileError as exc:
            raise ModelFileError(f"{graph_path}: {exc}") from None
        options = ort_session_options(ort, threads)

        def session(graph: onnx.ModelProto):  # noqa: ANN202 (onnxruntime's type)
            return ort.InferenceSession(
                graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )

        first_call = next(p for p in split.parts if isinstance(p, HostCall))
        order = _scan_output_order(
            kernel, spec, session(_probe(split.function, first_call, model.ir_version))
        )
        if order is None:
            raise ModelFileError(
                f"{graph_path}: its {SCAN_FUNCTION} function does not compute the block scan this runtime "
                "knows: re-export it with this version of ssamba-export"
            )
        self.output_order = order
        self.steps = [
            (part, session(part.model) if isinstance(part, Segment) else None) for part in split.parts
        ]
        self.constants = split.constants
        self.output_names = split.outputs

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if inputs["pcm"].shape[0] < SPLIT_FROM_STREAMS:
            return self.whole.run(inputs)
        values = {**self.constants, **inputs}
        for part, session in self.steps:
            if isinstance(part, HostCall):
                y, last = self.kernel(**{role: values[name] for role, name in part.inputs.items()})
                values[part.outputs[self.output_order[0]]] = y
                values[part.outputs[self.output_order[1]]] = last
            else:
                results = session.run(part.outputs, {name: values[name] for name in part.inputs})
                values.update(zip(part.outputs, results, strict=True))
        return {name: values[name] for name in self.output_names}


def _probe(function: onnx.FunctionProto, call: HostCall, ir_version: int) -> onnx.ModelProto:
    """A model of one call of ``function``, whose inputs are named by role (at the graph's IR
    version: the installed onnx may write a newer one than the installed onnxruntime reads)."""
    roles = list(call.inputs)
    node = helper.make_node(function.name, roles, ["first", "second"], domain=function.domain)
    inputs = [helper.make_tensor_value_info(role, TensorProto.FLOAT, None) for role in roles]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("first", "second")]
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(function.domain, 1)]
    model = helper.make_model(helper.make_graph([node], "probe", inputs, outputs), opset_imports=opsets)
    model.functions.append(function)
    model.ir_version = ir_version
    return model


def _scan_output_order(kernel: HostBlockScan, spec: StreamModelSpec, probe: object) -> tuple[int, int] | None:
    """The positions of y and of the last state among the function's outputs (an exporter orders
    them as it likes), found by running the function in onnxruntime and the kernel on the same
    random inputs; None when the kernel matches neither."""
    state = next((s for s in spec.state if s.name == "ssm_state"), None)
    if state is None:
        return None
    d, n = state.shape[-2:]
    feeds = random_scan_inputs(0, 1, spec.block_tokens, n, d)
    graph_outputs = probe.run(None, feeds)
    y, last = kernel(**feeds)
    for order in ((0, 1), (1, 0)):
        pair = (graph_outputs[order[0]], graph_outputs[order[1]])
        if all(
            a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-4)
            for a, b in zip(pair, (y, last), strict=True)
        ):
            return order
    return None


register_backend("onnxruntime-native", lambda path, spec, threads: NativeScanBackend(path, spec, threads))
