"""The Wyoming wake-word server, end to end over TCP on 127.0.0.1 with real clients.

Concurrent clients replay examples/keywords.wav in several rates, widths and channel counts and
must get exactly the detections an independent KeywordSpotter gives the same chunks, while other
clients send malformed or out-of-order events, disconnect mid-stream or trickle audio slowly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soxr

pytest.importorskip("wyoming")

from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.event import Event, async_read_event, async_write_event  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402
from wyoming.ping import Ping  # noqa: E402
from wyoming.wake import Detect  # noqa: E402

from ssamba_stream.audio import load_audio  # noqa: E402
from ssamba_stream.kws import detect  # noqa: E402
from ssamba_stream.serving.wyoming_server import MAX_BACKLOG_BLOCKS, WakeServer  # noqa: E402
from ssamba_stream.spotter import DEFAULT_MODEL, KeywordSpotter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "keywords.wav"
SAID = ["down", "go", "yes", "stop", "left", "on"]  # examples/keywords.csv without _unknown_
WIDTH_DTYPES = {1: np.uint8, 2: np.int16, 4: np.int32}


def _frames(rate: int, width: int, channels: int) -> np.ndarray:
    """The example as a client would capture it: (frames, channels) integer PCM."""
    audio = load_audio(EXAMPLE, 16000)
    audio = soxr.resample(audio, 16000, rate) if rate != 16000 else audio
    scale = 2.0 ** (8 * width - 1)
    values = np.clip(audio.astype(np.float64), -1, 1 - 1 / scale) * scale
    values = values + 128 if width == 1 else values
    return np.repeat(np.round(values)[:, None], channels, axis=1).astype(WIDTH_DTYPES[width])


def _expected(
    frames: np.ndarray, rate: int, step: int, names: list[str] | None = None
) -> list[tuple[str, int]]:
    """(name, timestamp ms) a single-stream spotter gives the same chunks (only ``names``, if given)."""
    spotter = KeywordSpotter()
    posteriors = [spotter.posteriors(frames[i : i + step], rate) for i in range(0, len(frames), step)]
    posteriors = np.concatenate([*posteriors, spotter.posteriors(frames[:0], rate, last=True)])
    config = spotter.detector.config
    if names is not None:
        config = dataclasses.replace(config, ignore=tuple(x for x in spotter.labels if x not in names))
    return [
        (e.label, round(e.time * 1000))
        for e in detect(posteriors, spotter.labels, spotter.block_seconds, config)
    ]


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, *events: Event) -> None:
        for event in events:
            await async_write_event(event, self.writer)

    async def receive(self) -> Event | None:
        return await asyncio.wait_for(async_read_event(self.reader), timeout=60)

    async def until_pong(self) -> list[Event]:
        """Events up to the answer to a ping (the server answers in order, after finishing a stop)."""
        await self.send(Ping(text="sync").event())
        events = []
        while (event := await self.receive()) is not None and event.type != "pong":
            events.append(event)
        assert event is not None, f"connection closed; got {events}"
        return events

    async def replay(
        self, frames: np.ndarray, rate: int, step: int, names=None, pause: float = 0.0
    ) -> list[Event]:
        width, channels = frames.dtype.itemsize, frames.shape[1]
        await self.send(Detect(names=names).event(), AudioStart(rate, width, channels).event())
        for start in range(0, len(frames), step):
            await self.send(AudioChunk(rate, width, channels, frames[start : start + step].tobytes()).event())
            if pause:
                await asyncio.sleep(pause)
        await self.send(AudioStop().event())
        return await self.until_pong()

    def close(self) -> None:
        self.writer.close()


def _detections(events: list[Event]) -> list[tuple[str, int]]:
    return [(e.data["name"], e.data["timestamp"]) for e in events if e.type == "detection"]


async def _serving(body, models=(DEFAULT_MODEL,), **options):
    """Run ``body(port, server)`` against a server on a free port of 127.0.0.1."""
    server = WakeServer(list(models), **options)
    listener = await server.serve("tcp://127.0.0.1:0")
    server.start()
    try:
        return await body(listener.sockets[0].getsockname()[1], server)
    finally:
        listener.close()
        await server.stop()


FORMATS = [
    (16000, 2, 1, 1024),
    (44100, 2, 2, 2000),
    (48000, 4, 1, 960),
    (22050, 1, 1, 512),
    (16000, 2, 1, 5000),
]


def test_concurrent_clients_in_any_format_get_exact_detections(cpu_backend):
    cases = [(fmt, _frames(*fmt[:3])) for fmt in FORMATS]
    expected = [_expected(frames, fmt[0], fmt[3]) for fmt, frames in cases]
    assert [name for name, _ in expected[0]] == SAID  # the plain 16 kHz client hears what was said
    only = _expected(cases[0][1], 16000, 1024, ["yes", "stop"])
    batches = []

    async def body(port: int, server: WakeServer) -> None:
        engine = server.models[0].engine

        async def watch():  # how far clients run ahead of the model (backpressure bounds it)
            while True:
                batches.append(max((s.ready_blocks for s in engine.streams), default=0))
                await asyncio.sleep(0.005)

        watcher = asyncio.get_running_loop().create_task(watch())
        clients = [await Client.connect(port) for _ in range(len(cases) * 2 + 1)]
        runs = [
            c.replay(frames, fmt[0], fmt[3]) for c, (fmt, frames) in zip(clients, cases * 2, strict=False)
        ]
        runs.append(clients[-1].replay(cases[0][1], 16000, 1024, names=["yes", "stop"]))
        got = await asyncio.gather(*runs)
        watcher.cancel()
        for events, want in zip(got, expected * 2 + [only], strict=True):
            assert _detections(events) == want
            assert all(e.type == "detection" for e in events)
        assert [name for name, _ in _detections(got[-1])] == ["yes", "stop"]
        # the same connection streams again from fresh state
        again = await clients[0].replay(cases[0][1], 16000, 1024)
        assert _detections(again) == expected[0]
        assert (
            server.models[0].scheduler.steps < sum(len(f) / fmt[0] for fmt, f in cases) * 2 / 0.16
        )  # batched
        for client in clients:
            client.close()

    asyncio.run(_serving(body, backend=cpu_backend))
    assert max(batches) <= MAX_BACKLOG_BLOCKS + 2


def test_describe_lists_the_keywords_and_silence_gives_not_detected():
    async def body(port: int, server: WakeServer) -> None:
        client = await Client.connect(port)
        await client.send(Describe().event())
        info = Info.from_event(await client.receive())
        assert [m.name for m in info.wake[0].models] == list(KeywordSpotter().labels[:10])
        quiet = np.zeros((16000 * 2, 1), dtype=np.int16)
        events = await client.replay(quiet, 16000, 1600)
        assert [e.type for e in events] == ["not-detected"]
        client.close()

    asyncio.run(_serving(body))


def test_bad_events_get_errors_and_disconnects_leave_other_clients_alone():
    frames = _frames(16000, 2, 1)
    want = _expected(frames, 16000, 1024)

    async def misbehave(port: int) -> list[str]:
        client = await Client.connect(port)
        await client.send(
            AudioChunk(16000, 2, 1, b"\0\0" * 100).event(),  # before audio-start
            AudioStop().event(),  # before audio-start
            AudioStart(16000, 3, 1).event(),  # 24-bit
            Event("audio-start", {"rate": "fast", "width": 2, "channels": 1}),
            Detect(names=["marvin"]).event(),
            AudioStart(16000, 2, 1).event(),
            AudioChunk(16000, 2, 1, b"\0\0\0").event(),  # not whole frames
            AudioChunk(8000, 2, 1, b"\0\0").event(),  # another format than audio-start's
            Event("run-pipeline", {"start_stage": "wake"}),  # not for us: ignored
        )
        errors = [e.data.get("code") for e in await client.until_pong()]
        client.writer.write(b"this is not json\n")
        closing = await client.receive()
        assert closing.type == "error" and closing.data["code"] == "protocol"
        assert await client.receive() is None  # the server closed this connection
        return errors

    async def abrupt(port: int, how: str) -> None:
        client = await Client.connect(port)
        await client.send(AudioStart(16000, 2, 1).event())
        for start in range(0, 16000 * 8, 1024):
            await client.send(AudioChunk(16000, 2, 1, frames[start : start + 1024].tobytes()).event())
        if how == "mid-payload":
            client.writer.write(
                json.dumps({"type": "audio-chunk", "payload_length": 4096}).encode() + b"\n\0\0"
            )
            await client.writer.drain()
        elif how == "huge":
            client.writer.write(json.dumps({"type": "audio-chunk", "payload_length": 2**40}).encode() + b"\n")
            await client.writer.drain()
            while (event := await client.receive()).type == "detection":  # of the 8 s sent
                pass
            assert event.type == "error" and event.data["code"] == "protocol"
        client.writer.transport.abort()

    async def body(port: int, server: WakeServer) -> None:
        good = [await Client.connect(port) for _ in range(3)]
        runs = [g.replay(frames, 16000, 1024, pause=0.002 * i) for i, g in enumerate(good)]
        outcome = await asyncio.gather(*runs, misbehave(port), abrupt(port, "between"), abrupt(port, "mid-payload"),
                                       abrupt(port, "huge"))  # fmt: skip
        for events in outcome[:3]:
            assert _detections(events) == want
        assert outcome[3] == ["out-of-order", "out-of-order", "bad-format", "bad-format", "unknown-wake-word",
                              "bad-audio", "bad-format"]  # fmt: skip
        for client in good:
            client.close()
        await asyncio.sleep(0.2)
        assert server.models[0].engine.streams == [] and server.owners == {}  # nothing left behind
        late = await Client.connect(port)  # the server still serves
        assert _detections(await late.replay(frames, 16000, 4000)) == _expected(frames, 16000, 4000)
        late.close()

    asyncio.run(_serving(body))


def test_model_dir_serves_every_model_and_custom_keywords_are_wake_words(tmp_path):
    pytest.importorskip("torch")
    from model_fixtures import export_random_model

    from ssamba_stream.cli_wyoming import served_models

    (tmp_path / "models").mkdir()
    custom = export_random_model(tmp_path / "models", ["marvin", "lights", "_silence_", "_unknown_"])
    for suffix in (".onnx", ".json"):
        (tmp_path / "models" / f"kws12{suffix}").write_bytes(DEFAULT_MODEL.with_suffix(suffix).read_bytes())
    models = served_models(None, tmp_path / "models")
    assert sorted(p.name for p in models) == ["kws.onnx", "kws12.onnx"]
    frames = _frames(16000, 2, 1)

    async def body(port: int, server: WakeServer) -> None:
        client = await Client.connect(port)
        await client.send(Describe().event())
        names = {m.name for m in Info.from_event(await client.receive()).wake[0].models}
        assert {"marvin", "lights", "yes", "go"} <= names and "_unknown_" not in names
        both = await client.replay(frames, 16000, 1024, names=["marvin", "lights", "go"])
        spotter = KeywordSpotter(custom, threshold=0.3)
        posteriors = np.concatenate([spotter.posteriors(frames[i : i + 1024], 16000) for i in range(0, len(frames), 1024)]
                                    + [spotter.posteriors(frames[:0], 16000, last=True)])  # fmt: skip
        custom_events = [(e.label, round(e.time * 1000)) for e in
                         detect(posteriors, spotter.labels, spotter.block_seconds, spotter.detector.config)]  # fmt: skip
        assert custom_events  # the random model fires at threshold 0.3
        got = _detections(both)
        assert sorted(x for x in got if x[0] != "go") == sorted(custom_events)
        assert [x for x in got if x[0] == "go"] == [x for x in _expected(frames, 16000, 1024) if x[0] == "go"]
        client.close()

    bundled_go = KeywordSpotter().detector.config.threshold  # "go" of kws12 at the bundled default
    asyncio.run(_serving(body, models, threshold=0.3, thresholds={"go": bundled_go}))


def test_cli_serves_until_sigterm_and_bad_options_are_one_line():
    process = subprocess.Popen(
        [sys.executable, "-m", "ssamba_stream.cli", "wyoming", "--uri", "tcp://127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        line = process.stderr.readline()
        assert line.startswith("serving wake words yes, no, up"), line
        port = int(line.rsplit(":", 1)[1])

        async def describe() -> Info:
            client = await Client.connect(port)
            await client.send(Describe().event())
            info = Info.from_event(await client.receive())
            client.close()
            return info

        assert len(asyncio.run(describe()).wake[0].models) == 10
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    bad = subprocess.run([sys.executable, "-m", "ssamba_stream.cli", "wyoming", "--model-dir", "/nonexistent"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "not found" in bad.stderr


def test_save_activations_keeps_each_detection_with_the_client_named(tmp_path):
    from test_activations import check_saved

    frames = _frames(16000, 2, 1)

    async def body(port: int, server: WakeServer) -> tuple[list[Event], str]:
        client = await Client.connect(port)
        events = await client.replay(frames, 16000, 1024)
        host, port_here = client.writer.get_extra_info("sockname")[:2]
        name = f"{host}:{port_here}"
        client.close()
        return events, name

    events, name = asyncio.run(_serving(body, save_activations=tmp_path / "saved"))
    detections = [{"label": label, "time": ms / 1000} for label, ms in _detections(events)]
    assert len(detections) == 6
    check_saved(tmp_path / "saved", detections, name)


def test_a_client_that_reads_nothing_is_cut_off_and_others_are_served():
    frames = _frames(16000, 2, 1)

    async def stall(port: int) -> int:
        client = await Client.connect(port)
        sent = 0
        try:
            while sent < 20000:  # answers pile up unread: the server gives up on this client
                await asyncio.wait_for(client.send(Describe().event()), timeout=10)
                sent += 1
        except (ConnectionError, asyncio.TimeoutError):
            pass
        client.writer.transport.abort()
        return sent

    async def body(port: int, server: WakeServer) -> None:
        good = await Client.connect(port)
        sent, events = await asyncio.gather(stall(port), good.replay(frames, 16000, 1024))
        assert sent < 20000, sent  # cut off
        assert _detections(events) == _expected(frames, 16000, 1024)
        good.close()

    asyncio.run(_serving(body))
