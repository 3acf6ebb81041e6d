"""`ssamba-stream wyoming --vad`: each client's stream has its own Silero VAD gate, over real TCP.

At a low threshold the bundled model fires on loud white noise and between the words of
examples/keywords.wav; the gate must drop exactly what a single-stream ``KeywordSpotter(vad=True)``
drops on the same chunks, and one client's speech must not let another client's noise through.
"""

from __future__ import annotations

import asyncio
import importlib.util

import numpy as np
import pytest
from test_vad import assert_one_line_error, run_cli
from test_wyoming import EXAMPLE, Client, _detections, _frames, _serving

from ssamba_stream.audio import load_audio
from ssamba_stream.serving.wyoming_server import WakeServer
from ssamba_stream.spotter import KeywordSpotter

needs_silero = pytest.mark.skipif(
    importlib.util.find_spec("silero_vad") is None,
    reason="silero-vad is not installed (pip install --no-deps silero-vad)",
)
LOW = 0.01  # the bundled model fires on loud white noise at this threshold (it ignores it at its default)
HOLD = 1.5


def _noise(seconds: float = 10.0) -> np.ndarray:
    """Loud white noise as a 16 kHz mono int16 client sends it."""
    audio = np.random.default_rng(0).normal(0, 0.5, int(seconds * 16000))
    return np.round(np.clip(audio, -1, 1 - 2**-15) * 2**15).astype(np.int16)[:, None]


def _spotted(frames: np.ndarray, rate: int, step: int, vad: bool) -> list[tuple[str, int]]:
    """(name, timestamp ms) a single-stream spotter at the low threshold gives the same chunks."""
    spotter = KeywordSpotter(threshold=LOW, vad=vad)
    events = [e for i in range(0, len(frames), step) for e in spotter.process(frames[i : i + step], rate)]
    return [(e.label, round(e.time * 1000)) for e in events + spotter.finish()]


@needs_silero
def test_gated_clients_get_what_a_gated_spotter_gets():
    cases = [(_frames(16000, 2, 1), 16000, 1024), (_frames(44100, 2, 2), 44100, 2000)]
    expected = [_spotted(frames, rate, step, vad=True) for frames, rate, step in cases]
    ungated = _spotted(*cases[0], vad=False)
    assert {"down", "go", "yes", "stop", "left", "on"} <= {name for name, _ in expected[0]}
    assert set(expected[0]) < set(ungated)  # the gate drops some events between the words

    async def body(port: int, server: WakeServer) -> list[list[tuple[str, int]]]:
        clients = [await Client.connect(port) for _ in cases]
        got = await asyncio.gather(*(c.replay(*case) for c, case in zip(clients, cases, strict=True)))
        for client in clients:
            client.close()
        return [_detections(events) for events in got]

    assert asyncio.run(_serving(body, threshold=LOW, vad_hold_seconds=HOLD)) == expected


@needs_silero
def test_noise_fires_without_the_gate_and_not_with_it():
    noise = _noise()
    ungated = _spotted(noise, 16000, 1600, vad=False)
    assert len(ungated) >= 3  # the model does fire on this noise at the low threshold

    async def body(port: int, server: WakeServer) -> list[str]:
        client = await Client.connect(port)
        events = await client.replay(noise, 16000, 1600)
        client.close()
        return events

    assert _detections(asyncio.run(_serving(body, threshold=LOW))) == ungated
    gated = asyncio.run(_serving(body, threshold=LOW, vad_hold_seconds=HOLD))
    assert [e.type for e in gated] == ["not-detected"]


@needs_silero
def test_concurrent_clients_keep_separate_gates_released_when_they_leave():
    from ssamba_stream.vad import SpeechGate

    speech, noise = _frames(16000, 2, 1), _noise()
    want = _spotted(speech, 16000, 1024, vad=True)
    heard_speech = SpeechGate(hold_seconds=HOLD)
    heard_speech.listen(load_audio(EXAMPLE, 16000))
    noise_times = [ms / 1000 for _, ms in _spotted(noise, 16000, 1600, vad=False)]
    assert any(heard_speech.allows(t) for t in noise_times)  # a gate shared with the speech would pass some
    gates = {}

    async def body(port: int, server: WakeServer) -> tuple[list, list]:
        engine = server.models[0].engine

        async def watch():
            while True:
                gates.update({stream: stream.gate for stream in engine.streams})
                await asyncio.sleep(0.005)

        watcher = asyncio.get_running_loop().create_task(watch())
        talker, hisser = await Client.connect(port), await Client.connect(port)
        got = await asyncio.gather(talker.replay(speech, 16000, 1024), hisser.replay(noise, 16000, 1600))
        watcher.cancel()
        talker.close()
        hisser.close()
        assert engine.streams == []
        return got

    spoken, hissed = asyncio.run(_serving(body, threshold=LOW, vad_hold_seconds=HOLD))
    assert _detections(spoken) == want and want
    assert [e.type for e in hissed] == ["not-detected"]
    assert len(gates) == 2 and len({id(g) for g in gates.values()}) == 2 and None not in gates.values()
    assert all(stream.gate is None for stream in gates)  # each left with its VAD state let go


def test_vad_options_are_one_line_errors():
    missing = run_cli("wyoming", "--uri", "tcp://127.0.0.1:0", "--vad", blocked=("torch", "silero_vad"))
    assert_one_line_error(missing, "pip install 'ssamba-stream[vad]'")
    assert_one_line_error(run_cli("wyoming", "--vad-hold", "1"), "add --vad")
