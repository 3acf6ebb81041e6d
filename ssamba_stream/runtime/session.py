"""StreamingSession: feed PCM of any length, get posteriors for every completed block.

The session owns the step graph's state and a buffer of samples that do not yet fill a block, so
callers can push microphone callbacks, file chunks or stdin reads of any size. Input is validated
before anything changes: a bad call raises a one-line ``UserError`` and leaves the stream intact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .backends import OUTPUT_NAMES, make_backend
from .spec import load_spec


class InputError(UserError):
    """PCM handed to a session that it cannot take (dtype, shape, rate, values)."""


@dataclass(frozen=True)
class SessionSnapshot:
    """A copy of a session's stream position, restorable into a session of the same graph."""

    fingerprint: str
    state: dict[str, np.ndarray]
    pending: np.ndarray
    blocks: int


class StreamingSession:
    """One or more concurrent audio streams through an exported step graph.

    ``model_path`` is the graph (``.onnx`` for onnxruntime and torch, ``.plan`` for TensorRT) with
    its JSON sidecar beside it. ``streams`` > 1 batches several streams through one graph call.
    """

    def __init__(
        self, model_path: str | Path, backend: str = "onnxruntime", streams: int = 1, threads: int = 1
    ) -> None:
        if streams < 1:
            raise UserError(f"streams must be at least 1, got {streams}")
        if not (isinstance(threads, int) and threads >= 1):
            raise UserError(f"threads must be a whole number >= 1, got {threads!r}: e.g. --threads 1")
        self.model_path = Path(model_path)
        self.spec = load_spec(self.model_path)
        fixed = self.spec.extra.get("batch")
        if fixed is not None and fixed != streams:
            raise UserError(
                f"{self.model_path.name} was exported for {fixed} stream(s), not {streams}: use streams={fixed}, "
                "or re-export with --batch 0 (any number of streams)"
            )
        self.streams = streams
        self.backend_name = backend
        self.backend = make_backend(backend, self.model_path, self.spec, threads)
        self.reset()

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    @property
    def blocks(self) -> int:
        """Blocks completed since the last reset (block k ends at (k+1) * block_seconds)."""
        return self._blocks

    def reset(self) -> None:
        """Start new streams: zero state, empty buffer."""
        self._state = {s.name: s.zeros(self.streams) for s in self.spec.state}
        self._pending = np.zeros((self.streams, 0), dtype=np.float32)
        self._blocks = 0

    def snapshot(self) -> SessionSnapshot:
        return SessionSnapshot(
            self.spec.fingerprint,
            {k: v.copy() for k, v in self._state.items()},
            self._pending.copy(),
            self._blocks,
        )

    def restore(self, snapshot: SessionSnapshot) -> None:
        """Continue from ``snapshot``; it must come from a session of the same graph and stream count."""
        if not isinstance(snapshot, SessionSnapshot):
            raise UserError(
                f"restore() takes a SessionSnapshot from snapshot(), got {type(snapshot).__name__}"
            )
        if snapshot.fingerprint != self.spec.fingerprint:
            raise UserError(
                "this snapshot was taken from another model: restore it into a session of the same model file"
            )
        for spec in self.spec.state:
            value = snapshot.state.get(spec.name)
            if value is None or value.shape != spec.concrete(self.streams):
                raise UserError(
                    f"snapshot state {spec.name!r} does not fit this session ({self.streams} streams): "
                    "restore into a session with the same number of streams"
                )
        self._state = {k: v.copy() for k, v in snapshot.state.items()}
        self._pending = snapshot.pending.copy()
        self._blocks = snapshot.blocks

    def _validate(self, pcm: np.ndarray, sample_rate: int | None) -> np.ndarray:
        if sample_rate is not None and sample_rate != self.spec.sample_rate:
            raise InputError(
                f"audio is {sample_rate} Hz but the model expects {self.spec.sample_rate} Hz: resample it first "
                f"(e.g. soxr.resample(audio, {sample_rate}, {self.spec.sample_rate}))"
            )
        pcm = np.asarray(pcm)
        if pcm.dtype not in (np.float32, np.float64):
            fix = " (divide int16 PCM by 32768)" if np.issubdtype(pcm.dtype, np.integer) else ""
            raise InputError(
                f"expected float32 PCM in [-1, 1], got dtype {pcm.dtype}: convert it to float32{fix}"
            )
        if pcm.ndim == 1 and self.streams == 1:
            pcm = pcm[None]
        if pcm.ndim != 2 or pcm.shape[0] != self.streams:
            expected = "(samples,) or (1, samples)" if self.streams == 1 else f"({self.streams}, samples)"
            raise InputError(f"expected PCM of shape {expected}, got {pcm.shape}: one row per stream, mono")
        if not np.isfinite(pcm).all():
            raise InputError(
                "PCM contains NaN or Inf samples: clean the input (e.g. np.nan_to_num) before streaming"
            )
        return pcm.astype(np.float32, copy=False)

    def process_detailed(self, pcm: np.ndarray, sample_rate: int | None = None) -> dict[str, np.ndarray]:
        """Like ``process`` but returns posteriors, logits and token features, each (streams, blocks, ...)."""
        pcm = self._validate(pcm, sample_rate)
        buffer = np.concatenate([self._pending, pcm], axis=1) if self._pending.shape[1] else pcm
        chunk = self.spec.chunk_samples
        outputs: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
        state = self._state
        full = buffer.shape[1] // chunk
        for k in range(full):
            result = self.backend.run(
                {"pcm": np.ascontiguousarray(buffer[:, k * chunk : (k + 1) * chunk]), **state}
            )
            state = {name: result[f"{name}_out"] for name in state}
            for name in OUTPUT_NAMES:
                outputs[name].append(result[name])
        self._state = state
        self._pending = buffer[:, full * chunk :].copy()
        self._blocks += full
        classes = len(self.spec.labels)
        empty = {"posteriors": (self.streams, 0, classes), "logits": (self.streams, 0, classes)}
        return {
            name: np.stack(values, axis=1)
            if values
            else np.zeros(empty.get(name, (self.streams, 0, 0)), np.float32)
            for name, values in outputs.items()
        }

    def process(self, pcm: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """Posteriors for each block completed by ``pcm``: (blocks, classes), or (streams, blocks, classes)."""
        posteriors = self.process_detailed(pcm, sample_rate)["posteriors"]
        return posteriors[0] if self.streams == 1 else posteriors
