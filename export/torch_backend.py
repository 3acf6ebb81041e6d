"""The PyTorch development backend: the step module rebuilt from the checkpoint the sidecar names.

It checks an exported graph against the model it came from (``ssamba-export verify --backend torch``,
the streaming benchmark). It needs torch, so it lives with the exporter, outside the torch-free
runtime, and registers itself as ``torch`` when a session first asks for that backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ssamba_stream.model.checkpoint import load_model
from ssamba_stream.model.streaming import StreamStep
from ssamba_stream.runtime.backends import OUTPUT_NAMES, register_backend
from ssamba_stream.runtime.spec import ModelFileError, StreamModelSpec


class TorchBackend:
    """The PyTorch step module of the checkpoint recorded in the sidecar, run on CPU."""

    def __init__(self, graph_path: Path, spec: StreamModelSpec, threads: int = 1) -> None:
        source = spec.extra.get("source", {}).get("checkpoint")
        if not source:
            raise ModelFileError(
                f"{graph_path}'s sidecar names no source checkpoint: the torch backend needs one"
            )
        checkpoint = (Path(graph_path).parent / source).resolve()
        torch.set_num_threads(threads)
        self.step = StreamStep(load_model(checkpoint), block=spec.block_tokens, activation=spec.activation)
        self.input_names = ["pcm", *(s.name for s in spec.state)]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            values = self.step(*(torch.from_numpy(inputs[name]) for name in self.input_names))
        names = [*OUTPUT_NAMES, *(f"{name}_out" for name in self.input_names[1:])]
        return {name: value.numpy() for name, value in zip(names, values, strict=True)}


register_backend("torch", TorchBackend)
