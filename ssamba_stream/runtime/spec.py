"""The JSON sidecar of an exported streaming model: what the runtime needs besides the graph.

Written by ``ssamba-export`` next to the graph (``model.onnx`` -> ``model.json``); read here without
torch. It names the labels, the audio format, the block size, every state tensor with its shape,
the detector defaults and the checkpoint the graph came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError, absence
from ..formats import atomic_write, read_json_document

SPEC_FORMAT = "ssamba-stream/stream-model-v1"
TASKS = ("kws", "classify")  # what the labels are: keywords to detect, or classes to rank
BATCH = "batch"  # the symbolic batch dimension in shapes


class ModelFileError(UserError):
    """A model file (graph or sidecar) that is missing, corrupt, or not ours."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # BATCH marks the batch dimension
    dtype: str = "float32"

    def concrete(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if dim == BATCH else int(dim) for dim in self.shape)

    def zeros(self, batch: int) -> np.ndarray:
        """The tensor at the start of a stream (every state starts at zero)."""
        return np.zeros(self.concrete(batch), dtype=np.float32)


@dataclass(frozen=True)
class StreamModelSpec:
    """Everything about an exported step graph that is not the graph itself."""

    labels: tuple[str, ...]
    sample_rate: int
    block_tokens: int
    chunk_samples: int
    activation: str
    state: tuple[TensorSpec, ...]
    detector: dict = field(default_factory=dict)
    task: str = "kws"
    fingerprint: str = ""  # sha256 of the graph file: states only move between identical graphs
    extra: dict = field(default_factory=dict)

    @property
    def block_seconds(self) -> float:
        return self.chunk_samples / self.sample_rate

    def to_json(self) -> dict:
        return {
            "format": SPEC_FORMAT,
            "task": self.task,
            "labels": list(self.labels),
            "sample_rate": self.sample_rate,
            "block_tokens": self.block_tokens,
            "chunk_samples": self.chunk_samples,
            "activation": self.activation,
            "state": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in self.state],
            "detector": self.detector,
            "fingerprint": self.fingerprint,
            **self.extra,
        }


def sidecar_path(graph_path: str | Path) -> Path:
    """``model.onnx`` / ``model.plan`` -> ``model.json``."""
    return Path(graph_path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_spec(graph_path: str | Path) -> StreamModelSpec:
    """Read and validate the sidecar of ``graph_path``; one-line errors name the fix."""
    graph_path = Path(graph_path)
    if not graph_path.is_file():
        raise ModelFileError(
            f"model file {graph_path} {absence(graph_path)}: export one with 'ssamba-export onnx CHECKPOINT'"
        )
    path = sidecar_path(graph_path)
    document = read_json_document(
        path,
        SPEC_FORMAT,
        "an ssamba-stream model description",
        ModelFileError,
        missing=f"keep the JSON sidecar that ssamba-export wrote next to {graph_path.name}",
        fix="re-export the model",
    )
    known = {
        "format",
        "task",
        "labels",
        "sample_rate",
        "block_tokens",
        "chunk_samples",
        "activation",
        "state",
        "detector",
        "fingerprint",
    }
    try:
        spec = StreamModelSpec(
            labels=tuple(document["labels"]),
            sample_rate=int(document["sample_rate"]),
            block_tokens=int(document["block_tokens"]),
            chunk_samples=int(document["chunk_samples"]),
            activation=str(document["activation"]),
            state=tuple(
                TensorSpec(s["name"], tuple(s["shape"]), s.get("dtype", "float32")) for s in document["state"]
            ),
            detector=dict(document.get("detector", {})),
            task=str(document.get("task", "kws")),
            fingerprint=str(document.get("fingerprint", "")),
            extra={k: v for k, v in document.items() if k not in known},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path} lacks a valid field ({exc}): re-export the model") from None
    _check_belongs(spec, graph_path, path)
    return spec


def _check_belongs(spec: StreamModelSpec, graph_path: Path, path: Path) -> None:
    """The sidecar must be the one written with this graph, and agree with the model it records:
    a sidecar from another export would relabel every event, a wrong rate silence them all."""
    if spec.fingerprint != file_sha256(graph_path):
        raise ModelFileError(
            f"{path.name} was written for another graph than {graph_path.name} (fingerprint differs): "
            f"keep the .json that ssamba-export wrote with this graph, or re-export both"
        )
    trained = spec.extra.get("model", {}).get("sample_rate", spec.sample_rate)
    if trained != spec.sample_rate:
        raise ModelFileError(
            f"{path.name} says sample_rate {spec.sample_rate} but its model was trained at {trained} Hz: "
            "restore the sidecar ssamba-export wrote, or re-export the model"
        )


def write_detector_defaults(graph_path: str | Path, detector: dict) -> None:
    """Replace the sidecar's detector defaults (thresholds tuned on held-out audio), atomically.

    Only the ``detector`` section changes; the graph and its fingerprint stay as exported.
    """
    load_spec(graph_path)  # the sidecar must be valid before it is rewritten
    path = sidecar_path(graph_path)
    document = json.loads(path.read_text())
    document["detector"] = detector
    atomic_write(path, lambda temp: temp.write_text(json.dumps(document, indent=2) + "\n"))
