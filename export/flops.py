"""FLOPs of an ONNX graph, counted from its inferred shapes, and the sustained peak of this device.

The streaming benchmark reports FLOPs per second of audio and the fraction of the device's peak a
step achieves, to say how far a backend is from the hardware limit. Counting follows the usual
conventions: a multiply-add is 2 FLOPs (MatMul, Gemm, Conv, Einsum-free graphs), an elementwise
op or a reduction costs one FLOP per element it reads or writes, shape and data-movement ops cost
nothing. The peak is measured, not quoted: the best sustained fp32 GEMM rate of torch on the
same number of threads, the ceiling any graph on this device could reach.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner

ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs", "Max", "Min", "Where", "Sigmoid",
    "Softplus", "Tanh", "Relu", "Erf", "Clip", "Reciprocal", "Softmax", "LayerNormalization", "Cos", "Sin",
}  # fmt: skip
REDUCTIONS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "CumSum"}
# Cost per element beyond one FLOP: softmax (exp, sum, divide), layer norm (mean, var, scale, shift).
ELEMENT_COST = {"Softmax": 3, "LayerNormalization": 5}


def _shapes(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Actual shapes of every value, from one onnxruntime run with every intermediate exposed as an
    output (exact even where static shape inference gives up, e.g. after -1 reshapes)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in known:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    shapes = {name: tuple(np.shape(v)) for name, v in zip(names, session.run(names, feeds), strict=True)}
    shapes.update({name: tuple(np.shape(v)) for name, v in feeds.items()})
    shapes.update({init.name: tuple(init.dims) for init in probe.graph.initializer})
    return shapes


def _numel(shape: tuple[int, ...] | None) -> int:
    return 0 if shape is None else math.prod(shape)


def _node_flops(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    inputs = [shapes.get(name) for name in node.input]
    output = shapes.get(node.output[0]) if node.output else None
    if node.op_type in ("MatMul", "Gemm"):
        transposed = node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute)
        k = inputs[0][-2] if transposed else inputs[0][-1]  # the contracted dimension of A
        return 2 * _numel(output) * k
    if node.op_type == "Conv":
        weight = inputs[1]
        return 2 * _numel(output) * math.prod(weight[1:])
    if node.op_type in ELEMENTWISE:
        return ELEMENT_COST.get(node.op_type, 1) * _numel(output)
    if node.op_type in REDUCTIONS:
        return _numel(inputs[0])
    return 0


def graph_flops(path: str | Path, feeds: dict[str, np.ndarray]) -> dict[str, int]:
    """FLOPs of one call of the graph at ``path`` on ``feeds``, by op type."""
    model = onnx.inliner.inline_local_functions(onnx.load(str(path)))  # count inside functions too
    shapes = _shapes(model, feeds)
    totals: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        flops = _node_flops(node, shapes)
        if flops:
            totals[node.op_type] += flops
    return dict(totals)


def measured_peak_flops(threads: int, size: int = 1024, seconds: float = 1.0) -> float:
    """Best sustained fp32 GEMM rate (FLOP/s) of torch on ``threads`` threads: the device ceiling."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)
        best, deadline = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * size**3 / (time.perf_counter() - start))
        return best
    finally:
        torch.set_num_threads(previous)
