"""OpenVINO backend: the step graph on CPU with its elementwise chains fused (no torch).

Most of a step's CPU time in onnxruntime is the block scan's elementwise arithmetic, one pass over
memory per operator (benchmarks/RESULTS.md, "Serving"); OpenVINO's CPU compiler fuses such chains
into one kernel. Its compiled models have static shapes, so a graph with a free batch dimension is
compiled, on first use, for batches of 1, 2, 4, 8 and 16 (each compiled model holds about 50 MB),
and a call for N streams runs as N's binary parts, with sixteen at a time beyond that.

Registers itself as ``openvino`` on import; openvino is imported when a graph is opened.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backends import BackendUnavailable, _check_io, _first_line, register_backend
from .spec import BATCH, ModelFileError, StreamModelSpec

PART_SIZES = (16, 8, 4, 2, 1)  # compiled batch sizes, largest first


def batch_parts(count: int) -> list[int]:
    """The compiled sizes a call for ``count`` streams runs as: sixteens, then ``count % 16`` in binary."""
    parts = [PART_SIZES[0]] * (count // PART_SIZES[0])
    rest = count % PART_SIZES[0]
    return parts + [size for size in PART_SIZES[1:] if rest & size]


class OpenVinoBackend:
    """OpenVINO's CPU plugin on ``threads`` threads, one infer request per compiled batch size."""

    def __init__(self, graph_path: Path, spec: StreamModelSpec, threads: int = 1) -> None:
        try:
            import openvino
        except ImportError:
            raise BackendUnavailable(
                "OpenVINO is not installed: pip install 'ssamba-stream[openvino]'"
            ) from None
        try:
            import onnx.inliner
        except ImportError:
            raise BackendUnavailable(
                "the openvino backend needs onnx: pip install 'ssamba-stream[openvino]'"
            ) from None
        self.core = openvino.Core()
        try:
            # OpenVINO's ONNX reader takes no local functions, and the exporter keeps each layer's
            # block scan as one (for the onnxruntime-native backend): inline them first.
            graph = onnx.inliner.inline_local_functions(onnx.load(str(graph_path)))
            self.model = self.core.read_model(graph.SerializeToString())
        except Exception as exc:  # onnx and OpenVINO raise their own exception types for unreadable graphs
            raise ModelFileError(
                f"{graph_path} is not a loadable ONNX graph ({_first_line(exc)}): re-export it"
            ) from None
        self.input_names = [port.get_any_name() for port in self.model.inputs]
        self.output_names = [port.get_any_name() for port in self.model.outputs]
        _check_io(graph_path, spec, self.input_names, self.output_names)
        self.properties = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False,
                           "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}  # fmt: skip
        self.axes = {s.name: s.shape.index(BATCH) for s in spec.state}
        self.fixed = spec.extra.get("batch")  # a graph exported for one batch size
        self.requests: dict[int, object] = {}

    def _axis(self, name: str) -> int:
        return self.axes.get(name.removesuffix("_out"), 0)

    def _request(self, batch: int):
        """The infer request of the graph compiled for ``batch`` streams (compiled on first use)."""
        if batch not in self.requests:
            model = self.model.clone()
            shapes = {}
            for port in model.inputs:
                name = port.get_any_name()
                dims = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
                dims[self._axis(name)] = batch
                shapes[name] = dims
            model.reshape(shapes)
            self.requests[batch] = self.core.compile_model(
                model, "CPU", self.properties
            ).create_infer_request()
        return self.requests[batch]

    def _infer(self, inputs: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
        result = self._request(batch).infer({name: inputs[name] for name in self.input_names})
        return {port.get_any_name(): value for port, value in result.items()}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = inputs["pcm"].shape[0]
        parts = [count] if self.fixed is not None else batch_parts(count)
        if len(parts) == 1:
            return self._infer(inputs, count)
        results, start = [], 0
        for size in parts:
            rows = slice(start, start + size)
            part = {name: _take(value, self._axis(name), rows) for name, value in inputs.items()}
            results.append(self._infer(part, size))
            start += size
        return {
            name: np.concatenate([r[name] for r in results], axis=self._axis(name)) for name in results[0]
        }


def _take(value: np.ndarray, axis: int, rows: slice) -> np.ndarray:
    index = [slice(None)] * value.ndim
    index[axis] = rows
    return value[tuple(index)]


register_backend("openvino", lambda path, spec, threads: OpenVinoBackend(path, spec, threads))
