"""Inference backends for the step graph, behind one small interface and a registry.

A backend runs one step: a dict of named numpy inputs (pcm plus the state) to a dict of named
numpy outputs (posteriors, logits, features, and ``<state>_out``). ``register_backend(name,
factory)`` makes one available to sessions, the CLIs' ``--backend`` and the benchmarks. onnxruntime
registers here; OpenVINO (``openvino_backend.py``), TensorRT (``tensorrt_backend.py``) and the PyTorch development backend
(``ssamba_export.torch_backend``, which needs torch and so lives outside the runtime) register
themselves when their module is first imported, which happens when a session asks for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Protocol

import numpy as np

from ..errors import UserError
from .spec import ModelFileError, StreamModelSpec

OUTPUT_NAMES = ("posteriors", "logits", "features")


class BackendUnavailable(UserError):
    """The requested backend cannot run here (package or GPU missing)."""


class Backend(Protocol):
    """What a session needs of a backend: the graph's input names, and one step."""

    input_names: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


BackendFactory = Callable[[Path, StreamModelSpec, int], Backend]  # (graph path, sidecar, CPU threads)
_FACTORIES: dict[str, BackendFactory] = {}
# Backends whose module registers them on import, imported only when asked for.
_MODULES = {
    "openvino": "ssamba_stream.runtime.openvino_backend",
    "onnxruntime-native": "ssamba_stream.runtime.native_backend",
    "tensorrt": "ssamba_stream.runtime.tensorrt_backend",
    "torch": "ssamba_export.torch_backend",
}
_NEEDS = {
    "torch": "PyTorch: pip install 'ssamba-stream[export]'",
    "tensorrt": "TensorRT: pip install 'ssamba-stream[gpu]'",
    "openvino": "OpenVINO: pip install 'ssamba-stream[openvino]'",
    "onnxruntime-native": "onnxruntime and onnx: pip install 'ssamba-stream[native]'",
}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``factory(graph_path, spec, threads)`` the backend called ``name``."""
    _FACTORIES[name] = factory


def backend_names() -> tuple[str, ...]:
    """Every backend a session can be asked for (registered, or registered on first use)."""
    return tuple(dict.fromkeys([*_FACTORIES, *_MODULES]))


def make_backend(name: str, graph_path: Path, spec: StreamModelSpec, threads: int) -> Backend:
    """The backend ``name`` for ``graph_path``; an unknown or uninstallable one is a one-line error."""
    if name not in _FACTORIES and name in _MODULES:
        try:
            importlib.import_module(_MODULES[name])
        except ImportError:
            raise BackendUnavailable(f"the {name} backend needs {_NEEDS[name]}") from None
    factory = _FACTORIES.get(name)
    if factory is None:
        raise UserError(f"unknown backend {name!r}: choose one of {', '.join(backend_names())}")
    return factory(graph_path, spec, threads)


class OnnxRuntimeBackend:
    """onnxruntime on CPU, or CUDA when onnxruntime-gpu and a GPU are present (``device='cuda'``)."""

    def __init__(
        self, graph_path: Path, spec: StreamModelSpec, threads: int = 1, device: str = "cpu"
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable(
                "onnxruntime is not installed: pip install 'ssamba-stream[cpu]' (or [gpu] for onnxruntime-gpu)"
            ) from None
        options = ort_session_options(ort, threads)
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
            raise ModelFileError(
                f"{graph_path} is not a loadable ONNX graph ({_first_line(exc)}): re-export it"
            ) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        _check_io(graph_path, spec, self.input_names, [o.name for o in self.session.get_outputs()])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {name: inputs[name] for name in self.input_names})
        return dict(zip(names, values, strict=True))


def ort_session_options(ort: ModuleType, threads: int) -> object:
    """onnxruntime session options for a step graph: ``threads`` intra-op threads, full graph optimisation."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


register_backend("onnxruntime", lambda path, spec, threads: OnnxRuntimeBackend(path, spec, threads))
register_backend(
    "onnxruntime-cuda", lambda path, spec, threads: OnnxRuntimeBackend(path, spec, threads, device="cuda")
)


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
