"""Many keyword-spotting streams through one step graph: one session call per step for all ready streams.

Each stream that joins gets a slot: a row of every state tensor, kept in arrays the engine owns,
plus its own PCM conversion (any rate, width, channels), sample buffer, detector and refractory
clock in stream time, and (with a VAD hold) its own speech gate, which hears the stream's blocks as
they go through the graph and judges its events before they become results. A step takes one
block from every stream that has one, gathers their state rows into a batch, runs the graph once,
and scatters the new rows back; only the rows of the streams in the step are copied. A stream
that leaves while its block is in the graph simply gets no result. ``gather`` / ``run`` /
``scatter`` are separate so a server can run the graph on a worker thread while its event loop
keeps feeding streams.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..activations import AudioHistory
from ..errors import UserError
from ..kws import Detector, DetectorConfig, Event
from ..pcm import PcmAdapter
from ..runtime.backends import make_backend
from ..runtime.spec import BATCH, load_spec
from ..spotter import resolve_model
from ..vad import SpeechGate


class EngineStream:
    """One stream in a ``MultiStreamEngine``: its input conversion, pending samples, detector and slot."""

    def __init__(
        self,
        slot: int,
        adapter: PcmAdapter,
        detector: Detector,
        chunk_samples: int,
        history: AudioHistory | None,
        gate: SpeechGate | None = None,
    ) -> None:
        self.slot = slot
        self.adapter = adapter
        self.detector = detector
        self.history = history  # the recent audio, kept when events are saved
        self.gate = gate  # drops events with no speech shortly before them (--vad)
        self.chunk_samples = chunk_samples
        self.blocks = 0  # blocks whose results were delivered
        self.open = True
        self.finished = False  # no more input: the resampler's tail is in the buffer
        self.in_flight = False
        self._pending = np.zeros(0, dtype=np.float32)

    @property
    def ready_blocks(self) -> int:
        """Whole blocks buffered and not yet taken by a step."""
        return len(self._pending) // self.chunk_samples

    @property
    def busy(self) -> bool:
        """A block is buffered or in the graph: results may still come."""
        return self.in_flight or self.ready_blocks > 0

    @property
    def seconds(self) -> float:
        """Audio received, in seconds of input."""
        return self.adapter.seconds

    def feed(self, pcm: np.ndarray) -> None:
        """Append a chunk: (samples,) or (samples, channels), integer or float PCM at the stream's rate."""
        if not self.open or self.finished:
            raise UserError("this stream has ended: open a new one for more audio")
        self._pending = np.concatenate([self._pending, self.adapter.convert(pcm)])

    def finish(self) -> None:
        """No more audio: release the resampler's tail (a trailing partial block is dropped, as in a session)."""
        if not self.finished:
            self._pending = np.concatenate([self._pending, self.adapter.flush()])
            self.finished = True

    def _take_block(self) -> np.ndarray:
        block, self._pending = self._pending[: self.chunk_samples], self._pending[self.chunk_samples :]
        if self.history is not None:  # kept as it goes into the model: it ends where the next event can
            self.history.append(block)
        return block


@dataclass(frozen=True)
class BlockResult:
    """What one block of one stream gave: its posteriors and the events they fired."""

    stream: EngineStream
    block: int
    posteriors: np.ndarray
    events: list[Event]


@dataclass(frozen=True)
class Batch:
    """The blocks and state rows of one step, taken by ``gather``."""

    streams: tuple[EngineStream, ...]
    slots: np.ndarray
    inputs: dict[str, np.ndarray]


class MultiStreamEngine:
    """Keyword spotting for any number of streams that join and leave at any time, batched per step.

    ``model`` defaults to the bundled model; it needs a free batch dimension to batch (a graph
    exported for a fixed batch runs in groups of that size). ``threshold`` / ``thresholds`` (per
    label), ``smoothing_blocks`` and ``refractory_seconds`` override the model's detector defaults
    for every stream, as in ``KeywordSpotter``. ``vad_hold_seconds`` gives every stream its own
    ``SpeechGate`` with that look back (None: no gate), as ``KeywordSpotter(vad=...)`` has one.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        backend: str = "onnxruntime",
        threads: int = 1,
        threshold: float | None = None,
        thresholds: Mapping[str, float] | None = None,
        smoothing_blocks: int | None = None,
        refractory_seconds: float | None = None,
        vad_hold_seconds: float | None = None,
    ) -> None:
        self.model_path = resolve_model(model)
        self.spec = load_spec(self.model_path)
        if self.spec.task != "kws":
            raise UserError(f"{self.model_path.name} is a {self.spec.task} model, not a keyword spotter")
        self.config = DetectorConfig.from_sidecar(self.spec.detector).with_overrides(
            threshold, thresholds, smoothing_blocks, refractory_seconds
        )
        Detector(self.spec.labels, self.spec.block_seconds, self.config)  # one-line errors before any stream
        self.vad_hold_seconds = vad_hold_seconds
        self._gate()  # and those of the VAD (not installed, a rate it cannot read, a bad hold)
        self.backend = make_backend(backend, self.model_path, self.spec, threads)
        self._fixed = self.spec.extra.get("batch")  # None: any number of streams per call
        self._axes = {s.name: s.shape.index(BATCH) for s in self.spec.state}
        self._capacity = 0
        self._state: dict[str, np.ndarray] = {s.name: s.zeros(0) for s in self.spec.state}
        self._free: list[int] = []
        self.streams: list[EngineStream] = []

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    @property
    def keywords(self) -> tuple[str, ...]:
        """The labels that can fire (the detector ignores the rest)."""
        return tuple(label for label in self.labels if label not in self.config.ignore)

    def open(
        self,
        sample_rate: int | None = None,
        keywords: Sequence[str] | None = None,
        history: AudioHistory | None = None,
    ) -> EngineStream:
        """A new stream at ``sample_rate`` (default: the model's), from zero state; ``keywords``
        limits which keywords may fire for it (default: all); ``history`` keeps its recent audio."""
        config = self.config
        if keywords is not None:
            unknown = sorted(set(keywords) - set(self.keywords))
            if unknown:
                raise UserError(
                    f"{', '.join(unknown)}: not a keyword of this model; use some of {', '.join(self.keywords)}"
                )
            config = replace(config, ignore=tuple(label for label in self.labels if label not in keywords))
        detector = Detector(self.labels, self.spec.block_seconds, config)
        adapter = PcmAdapter(
            self.spec.sample_rate if sample_rate is None else sample_rate, self.spec.sample_rate
        )
        if not self._free:
            self._grow()
        slot = heapq.heappop(self._free)
        for name, axis in self._axes.items():
            self._state[name][_index(axis, slot)] = 0.0
        stream = EngineStream(slot, adapter, detector, self.spec.chunk_samples, history, self._gate())
        self.streams.append(stream)
        return stream

    def _gate(self) -> SpeechGate | None:
        """A fresh gate for one stream (its VAD state and remembered windows are the stream's own)."""
        if self.vad_hold_seconds is None:
            return None
        return SpeechGate(self.spec.sample_rate, self.vad_hold_seconds)

    def close(self, stream: EngineStream) -> None:
        """The stream leaves: its slot is free for the next one, its gate is let go (even while a caller
        still holds the stream); a block of it in the graph is dropped."""
        if stream.open:
            stream.open = False
            stream.gate = None
            self.streams.remove(stream)
            heapq.heappush(self._free, stream.slot)

    def _grow(self) -> None:
        """Double the slots (amortised: the whole state is copied only when the engine fills up)."""
        old, self._capacity = self._capacity, max(4, 2 * self._capacity)
        for spec in self.spec.state:
            grown = spec.zeros(self._capacity)
            grown[_index(self._axes[spec.name], slice(0, old))] = self._state[spec.name]
            self._state[spec.name] = grown
        for slot in range(old, self._capacity):
            heapq.heappush(self._free, slot)

    @property
    def ready(self) -> list[EngineStream]:
        """Streams with a whole block buffered and none in the graph."""
        return [s for s in self.streams if s.ready_blocks and not s.in_flight]

    def gather(self, limit: int | None = None) -> Batch | None:
        """One block from each ready stream (at most ``limit``) with its state rows, or None."""
        streams = tuple(self.ready[:limit])
        if not streams:
            return None
        slots = np.array([s.slot for s in streams])
        inputs = {"pcm": np.stack([s._take_block() for s in streams])}
        for name, axis in self._axes.items():
            inputs[name] = np.take(self._state[name], slots, axis=axis)
        for stream in streams:
            stream.in_flight = True
        return Batch(streams, slots, inputs)

    def run(self, batch: Batch) -> dict[str, np.ndarray]:
        """The graph on a batch, then each gated stream's VAD on its block (after a failed call neither
        has heard it). Safe on a worker thread: it touches no engine state, and a stream's gate only
        while the stream's block is in flight."""
        outputs = self._graph(batch)
        for stream, block in zip(batch.streams, batch.inputs["pcm"], strict=True):
            if (gate := stream.gate) is not None:  # read once: close() may let it go meanwhile
                gate.listen(block)
        return outputs

    def _graph(self, batch: Batch) -> dict[str, np.ndarray]:
        """The session call(s) for a batch: one, or groups of a fixed-batch graph's size."""
        if self._fixed is None:
            return self.backend.run(batch.inputs)
        count, size = len(batch.streams), int(self._fixed)
        parts = []
        for start in range(0, count, size):  # fixed-batch graph: groups of its size, the last padded
            rows = np.arange(start, min(start + size, count))
            rows = np.pad(rows, (0, size - len(rows)), mode="edge")
            parts.append(
                self.backend.run({k: np.take(v, rows, axis=self._axis(k)) for k, v in batch.inputs.items()})
            )
        joined = {name: np.concatenate([p[name] for p in parts], axis=self._axis(name)) for name in parts[0]}
        return {name: value[_index(self._axis(name), slice(0, count))] for name, value in joined.items()}

    def _axis(self, name: str) -> int:
        return self._axes.get(name.removesuffix("_out"), 0)

    def scatter(self, batch: Batch, outputs: dict[str, np.ndarray]) -> list[BlockResult]:
        """New state rows back into the streams' slots, posteriors through their detectors (and gates)."""
        live = np.array([i for i, s in enumerate(batch.streams) if s.open], dtype=np.int64)
        self.release(batch)
        if not len(live):
            return []
        for name, axis in self._axes.items():
            rows = np.take(outputs[f"{name}_out"], live, axis=axis)
            self._state[name][_index(axis, batch.slots[live])] = rows
        results = []
        for i in live:
            stream, posteriors = batch.streams[i], outputs["posteriors"][i]
            events = stream.detector.update(posteriors[None])
            if stream.gate is not None:
                events = stream.gate.keep(events)
            results.append(BlockResult(stream, stream.blocks, posteriors, events))
            stream.blocks += 1
        return results

    def release(self, batch: Batch) -> list[BlockResult]:
        """Give up a batch (its graph call failed): its streams may step again, its blocks are lost."""
        for stream in batch.streams:
            stream.in_flight = False
        return []

    def step(self, limit: int | None = None) -> list[BlockResult]:
        """One session call for every ready stream (at most ``limit``); [] when none is ready."""
        batch = self.gather(limit)
        return [] if batch is None else self.scatter(batch, self.run(batch))

    def drain(self) -> list[BlockResult]:
        """Steps until no stream has a whole block buffered."""
        results: list[BlockResult] = []
        while step := self.step():
            results += step
        return results


def _index(axis: int, rows) -> tuple:
    """An index that selects ``rows`` along ``axis`` (the batch axis of a state tensor)."""
    return (slice(None),) * axis + (rows,)
