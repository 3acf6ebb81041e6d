"""A Wyoming wake-word server (Home Assistant's protocol): every client's audio through batched engines.

Each served model (the bundled one, ``--model``, or every model in ``--model-dir``) has one
``MultiStreamEngine`` and one ``BatchScheduler``; its keywords are the wake words ``describe``
lists. A client sends ``detect`` (optional: which wake words), ``audio-start``, ``audio-chunk``s
in any rate, width and channel count, and ``audio-stop``; it gets a ``detection`` per keyword
event (``timestamp``: stream time in ms) and, at ``audio-stop``, ``not-detected`` if nothing fired.
A bad event gets an ``error`` event and the connection goes on; a broken byte stream or a
disconnect ends that client only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Attribution, Describe, Info, WakeModel, WakeProgram
from wyoming.ping import Ping, Pong
from wyoming.wake import Detect, Detection, NotDetected

from .. import __version__
from ..activations import ActivationSaver
from ..errors import UserError
from ..runtime.spec import load_spec
from .engine import BlockResult, EngineStream, MultiStreamEngine
from .scheduler import BatchScheduler
from .wyoming_protocol import MAX_HEADER_BYTES, AudioFormat, Fault, ProtocolError, read_event

LOG = logging.getLogger("ssamba_stream.serving")
MAX_BACKLOG_BLOCKS = (
    32  # a client ahead of the model by this many blocks (~5 s) is not read until it catches up
)
MAX_OUTBOX = 256  # events waiting for a client that does not read them: beyond this it is dropped
ATTRIBUTION = Attribution(name="ssamba-stream", url="https://github.com/ssamba-stream/ssamba-stream")


@dataclass
class ServedModel:
    """One model file: its engine and scheduler, and the wake words it spots."""

    path: Path
    engine: MultiStreamEngine
    scheduler: BatchScheduler
    saver: ActivationSaver | None

    @property
    def keywords(self) -> tuple[str, ...]:
        return self.engine.keywords


class WakeServer:
    """The models, their schedulers and the clients' streams; ``serve`` accepts clients on a URI.

    ``threshold``, ``thresholds`` (per wake word, across the models), ``smoothing_blocks`` and
    ``refractory_seconds`` override the models' detector defaults; ``vad_hold_seconds`` gives every
    client stream its own VAD gate with that look back (None: none), so a detection with no speech
    before it is not sent (nor counted against ``not-detected``); ``save_activations`` (a folder)
    keeps each detection's audio there as WAV with a JSON line naming the client.
    """

    def __init__(
        self,
        models: Sequence[Path],
        *,
        backend: str = "onnxruntime",
        threads: int = 1,
        max_wait: float = 0.05,
        threshold: float | None = None,
        thresholds: Mapping[str, float] | None = None,
        smoothing_blocks: int | None = None,
        refractory_seconds: float | None = None,
        vad_hold_seconds: float | None = None,
        save_activations: Path | None = None,
    ) -> None:
        self.models: list[ServedModel] = []
        self.owners: dict[EngineStream, WakeConnection] = {}
        self.wake_words: dict[str, Path] = {}
        thresholds = dict(thresholds or {})
        for path in models:
            labels = load_spec(path).labels
            engine = MultiStreamEngine(
                path, backend=backend, threads=threads, threshold=threshold, smoothing_blocks=smoothing_blocks,
                thresholds={k: v for k, v in thresholds.items() if k in labels}, refractory_seconds=refractory_seconds,
                vad_hold_seconds=vad_hold_seconds,
            )  # fmt: skip
            for word in engine.keywords:
                if word in self.wake_words:
                    raise UserError(
                        f"wake word {word!r} is in both {self.wake_words[word]} and {path}: serve them from "
                        "different servers (or ports)"
                    )
                self.wake_words[word] = path
            saver = None if save_activations is None else ActivationSaver(save_activations, path)
            scheduler = BatchScheduler(engine, partial(self._deliver, saver), max_wait=max_wait)
            self.models.append(ServedModel(path, engine, scheduler, saver))
        unknown = sorted(set(thresholds) - set(self.wake_words))
        if unknown:
            raise UserError(f"threshold given for {', '.join(unknown)}, not a wake word served here: use one of "
                            f"{', '.join(self.wake_words)}")  # fmt: skip
        self.info = Info(wake=[WakeProgram(
            name="ssamba-stream", attribution=ATTRIBUTION, installed=True, version=__version__,
            description="streaming keyword spotting with SSAMBA (bidirectional Mamba), batched over clients",
            models=[WakeModel(name=word, attribution=ATTRIBUTION, installed=True, version=__version__, languages=[],
                              phrase=word.replace("_", " "), description=f"{word} ({path.name})")
                    for word, path in self.wake_words.items()],
        )])  # fmt: skip

    def start(self) -> None:
        """Start the schedulers (inside the running event loop)."""
        for model in self.models:
            model.scheduler.start()

    async def stop(self) -> None:
        for model in self.models:
            await model.scheduler.stop()

    def _deliver(self, saver: ActivationSaver | None, results: list[BlockResult]) -> None:
        for result in results:
            owner = self.owners.get(result.stream)
            if result.events and owner is not None:
                owner.detected(result)
                if saver is not None and result.stream.history is not None:
                    for event in result.events:
                        saver.save(event, result.stream.history, owner.name)

    async def serve(self, uri: str) -> asyncio.AbstractServer:
        """Listen on ``tcp://HOST:PORT`` or ``unix://PATH`` (port 0: any free port; see .sockets)."""
        parsed = urlparse(uri)
        if parsed.scheme == "tcp" and parsed.hostname and parsed.port is not None:
            return await asyncio.start_server(
                self._client, parsed.hostname, parsed.port, limit=MAX_HEADER_BYTES
            )
        if parsed.scheme == "unix" and parsed.path:
            return await asyncio.start_unix_server(self._client, parsed.path, limit=MAX_HEADER_BYTES)
        raise UserError(
            f"cannot serve on {uri!r}: use tcp://HOST:PORT (e.g. tcp://0.0.0.0:10400) or unix://PATH"
        )

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await WakeConnection(self, reader, writer).run()


class WakeConnection:
    """One client: its requested wake words, audio format, streams (one per model) and outgoing events."""

    def __init__(
        self, server: WakeServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server, self.reader, self.writer = server, reader, writer
        self.names: list[str] | None = None
        self.format: AudioFormat | None = None
        self.streams: list[tuple[ServedModel, EngineStream]] = []
        self.detections = 0
        self._outbox: asyncio.Queue[Event | None] = asyncio.Queue()
        self.peer = writer.get_extra_info("peername")
        self.name = ":".join(map(str, self.peer)) if isinstance(self.peer, tuple) else "client"

    async def run(self) -> None:
        sender = asyncio.get_running_loop().create_task(self._send_loop())
        try:
            while (event := await read_event(self.reader)) is not None:
                try:
                    await self._handle(event)
                except Fault as fault:
                    LOG.info("client %s: %s", self.peer, fault)
                    self.send(Error(text=str(fault), code=fault.code).event())
        except ProtocolError as exc:
            LOG.info("client %s: %s; closing", self.peer, exc)
            self.send(Error(text=f"{exc}; closing the connection", code="protocol").event())
        except (ConnectionError, asyncio.IncompleteReadError):
            LOG.info("client %s: connection lost", self.peer)
        finally:
            self._end_streams()
            self._outbox.put_nowait(None)
            try:
                await asyncio.wait_for(sender, timeout=1.0)  # flush what is queued, unless the client stalls
                self.writer.close()
            except (asyncio.TimeoutError, ConnectionError):
                self.writer.transport.abort()  # a client that reads nothing holds no buffers here

    def send(self, event: Event) -> None:
        if self._outbox.qsize() >= MAX_OUTBOX:  # the client reads nothing: cut it off, not the server
            self.reader.feed_eof()
            return
        self._outbox.put_nowait(event)

    async def _send_loop(self) -> None:
        while (event := await self._outbox.get()) is not None:
            await async_write_event(event, self.writer)

    def detected(self, result: BlockResult) -> None:
        for event in result.events:
            self.detections += 1
            self.send(Detection(name=event.label, timestamp=round(event.time * 1000)).event())

    async def _handle(self, event: Event) -> None:
        kind = event.type
        if Describe.is_type(kind):
            self.send(self.server.info.event())
        elif Detect.is_type(kind):
            self.names = self._wake_words(event.data.get("names"))
        elif AudioStart.is_type(kind):
            self._start(AudioFormat.of(event))
        elif AudioChunk.is_type(kind):
            await self._chunk(event)
        elif AudioStop.is_type(kind):
            await self._stop()
        elif Ping.is_type(kind):
            self.send(Pong(text=event.data.get("text")).event())
        # other events (e.g. a satellite's run-pipeline) are not for a wake-word service: ignored

    def _wake_words(self, names: object) -> list[str] | None:
        if names is None or names == []:
            return None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise Fault(f"detect names must be a list of wake word names, got {names!r}", "bad-detect")
        unknown = sorted(set(names) - set(self.server.wake_words))
        if unknown:
            raise Fault(f"unknown wake word(s) {', '.join(unknown)}: this server has "
                        f"{', '.join(self.server.wake_words)}", "unknown-wake-word")  # fmt: skip
        return names

    def _start(self, audio: AudioFormat) -> None:
        """A new audio stream (an audio-start during one restarts it, in the new format)."""
        self._end_streams()
        self.format, self.detections = audio, 0
        for model in self.server.models:
            wanted = None if self.names is None else [w for w in self.names if w in model.keywords]
            if wanted == []:
                continue
            history = None if model.saver is None else model.saver.history(model.engine.spec.sample_rate)
            stream = model.engine.open(audio.rate, wanted, history)
            self.server.owners[stream] = self
            self.streams.append((model, stream))

    async def _chunk(self, event: Event) -> None:
        if self.format is None:
            raise Fault(
                "audio-chunk before audio-start: send audio-start (rate, width, channels) first",
                "out-of-order",
            )
        audio = AudioFormat.of(event)
        if audio != self.format:
            raise Fault(f"audio-chunk format {audio} differs from audio-start's {self.format}: send a new "
                        "audio-start to change it", "bad-format")  # fmt: skip
        pcm = audio.samples(event.payload)
        for model, stream in self.streams:
            stream.feed(pcm)
            if stream.ready_blocks:  # the scheduler acts on whole blocks: no wake-up per chunk
                model.scheduler.notify()
        for model, stream in self.streams:  # backpressure: a client far ahead of the model waits
            await model.scheduler.wait_until(
                lambda s=stream: s.ready_blocks < MAX_BACKLOG_BLOCKS or not s.open
            )

    async def _stop(self) -> None:
        if self.format is None:
            raise Fault("audio-stop without audio-start", "out-of-order")
        for model, stream in self.streams:
            stream.finish()
            model.scheduler.notify()
        for model, stream in self.streams:
            await model.scheduler.wait_until(lambda s=stream: not s.busy or not s.open)
        if not self.detections:
            self.send(NotDetected().event())
        self._end_streams()

    def _end_streams(self) -> None:
        for model, stream in self.streams:
            model.engine.close(stream)
            self.server.owners.pop(stream, None)
            model.scheduler.notify()
        self.streams, self.format = [], None
