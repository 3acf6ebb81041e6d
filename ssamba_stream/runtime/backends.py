"""Inference backends for the step graph: onnxruntime, TensorRT, and PyTorch (for development).

Each backend runs one step: a dict of named numpy inputs (pcm plus the state) to a dict of named
numpy outputs (posteriors, logits, features, and ``<state>_out``). onnxruntime and TensorRT are
imported lazily and never import torch; the torch backend exists to check the graph against the
model it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from .spec import ModelFileError, StreamModelSpec

OUTPUT_NAMES = ("posteriors", "logits", "features")


class BackendUnavailable(UserError):
    """The requested backend cannot run here (package or GPU missing)."""


class OnnxRuntimeBackend:
    """onnxruntime on CPU, or CUDA when onnxruntime-gpu and a GPU are present (``device='cuda'``)."""

    def __init__(self, graph_path: Path, spec: StreamModelSpec, threads: int = 1, device: str = "cpu") -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable(
                "onnxruntime is not installed: pip install 'ssamba-stream[cpu]' (or [gpu] for onnxruntime-gpu)"
            ) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable(
                    "onnxruntime has no CUDA provider here: pip install onnxruntime-gpu on a machine with an NVIDIA GPU"
                )
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(graph_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise ModelFileError(f"{graph_path} is not a loadable ONNX graph ({_first_line(exc)}): re-export it") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        _check_io(graph_path, spec, self.input_names, [o.name for o in self.session.get_outputs()])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {name: inputs[name] for name in self.input_names})
        return dict(zip(names, values, strict=True))


class TorchBackend:
    """The PyTorch step module rebuilt from the checkpoint recorded in the sidecar (development)."""

    def __init__(self, graph_path: Path, spec: StreamModelSpec, threads: int = 1) -> None:
        try:
            import torch
        except ImportError:
            raise BackendUnavailable("the torch backend needs PyTorch: pip install 'ssamba-stream[export]'") from None
        from ..model.checkpoint import load_model
        from ..model.streaming import StreamStep

        source = spec.extra.get("source", {}).get("checkpoint")
        if not source:
            raise ModelFileError(f"{graph_path}'s sidecar names no source checkpoint: the torch backend needs one")
        checkpoint = (Path(graph_path).parent / source).resolve()
        torch.set_num_threads(threads)
        self.torch = torch
        self.step = StreamStep(load_model(checkpoint), block=spec.block_tokens, activation=spec.activation)
        self.input_names = ["pcm", *(s.name for s in spec.state)]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.no_grad():
            values = self.step(*(torch.from_numpy(inputs[name]) for name in self.input_names))
        names = [*OUTPUT_NAMES, *(f"{name}_out" for name in self.input_names[1:])]
        return {name: value.numpy() for name, value in zip(names, values, strict=True)}


def _check_io(graph_path: Path, spec: StreamModelSpec, inputs: list[str], outputs: list[str]) -> None:
    """The graph must have exactly the inputs and outputs its sidecar describes."""
    state = [s.name for s in spec.state]
    want_in, want_out = {"pcm", *state}, {*OUTPUT_NAMES, *(f"{n}_out" for n in state)}
    if set(inputs) != want_in or not want_out <= set(outputs):
        raise ModelFileError(
            f"{graph_path} does not match its sidecar (inputs {sorted(inputs)}): it is not the graph "
            "ssamba-export wrote with it; re-export both"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
