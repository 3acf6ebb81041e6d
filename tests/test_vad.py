"""The VAD gate (ssamba_stream.vad): the real Silero VAD from the silero-vad wheel, run without torch,
on espeak-ng speech and white noise; the gate on events; `--vad` through the CLI."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ssamba_stream.kws import Event

needs_silero = pytest.mark.skipif(
    importlib.util.find_spec("silero_vad") is None,
    reason="silero-vad is not installed (pip install --no-deps silero-vad)",
)
RATE = 16000
WINDOW = 512  # Silero's window at 16 kHz


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.05, int(seconds * RATE)).astype(np.float32)


def window_energy(audio: np.ndarray) -> np.ndarray:
    count = len(audio) // WINDOW
    return np.sqrt((audio[: count * WINDOW].reshape(count, WINDOW) ** 2).mean(axis=1))


def speech_span(speech: np.ndarray) -> tuple[float, float]:
    """First and last audible sample of the speech, in seconds."""
    loud = np.flatnonzero(np.abs(speech) > 0.01)
    return loud[0] / RATE, loud[-1] / RATE


@needs_silero
def test_speech_probability_is_high_in_words_and_low_in_silence_and_noise(speech_16k):
    from ssamba_stream.vad import SileroVad

    vad = SileroVad(RATE)
    speech = vad.process(speech_16k)
    assert len(speech) == len(speech_16k) // WINDOW
    energy = window_energy(speech_16k)
    assert speech[energy > 0.02].mean() > 0.8  # inside words
    assert speech[energy < 1e-4].mean() < 0.3  # espeak's digital silence between them
    vad.reset()
    assert vad.process(noise(5.0)).max() < 0.3  # white noise is not speech


@needs_silero
def test_streaming_in_odd_chunks_gives_the_same_probabilities(speech_16k):
    from ssamba_stream.vad import SileroVad

    whole = SileroVad(RATE).process(speech_16k)
    vad = SileroVad(RATE)
    cuts = np.arange(0, len(speech_16k), 777)
    parts = [vad.process(speech_16k[a : a + 777]) for a in cuts]
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)


@needs_silero
def test_gate_drops_events_in_noise_and_keeps_one_right_after_speech(speech_16k):
    from ssamba_stream.vad import SpeechGate

    gate = SpeechGate(RATE, hold_seconds=1.0)
    lead = 4.0
    gate.listen(np.concatenate([noise(lead), speech_16k + noise(len(speech_16k) / RATE, 1), noise(4.0, 2)]))
    start, end = speech_span(speech_16k)
    in_noise = Event(2.0, "yes", 0.99)
    after_word = Event(lead + end + 0.4, "no", 0.99)  # fires shortly after the last word ends
    long_after = Event(lead + end + 2.5, "go", 0.99)
    assert gate.keep([in_noise, after_word, long_after]) == [after_word]
    gate.reset()
    assert not gate.allows(lead + end + 0.4)  # nothing heard since the reset


def mixed_wav(speech: np.ndarray, path) -> tuple[float, float]:
    """Noise, speech in noise, noise: returns the speech's span in the file, in seconds."""
    lead = 4.0
    audio = np.concatenate([noise(lead), speech + noise(len(speech) / RATE, 1), noise(4.0, 2)])
    sf.write(path, audio, RATE, subtype="FLOAT")
    start, end = speech_span(speech)
    return lead + start, lead + end


# The CLI in a child interpreter where torch cannot be imported (a device install has none), and
# optionally silero_vad neither (not installed).
BLOCKED = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked}:
            raise ModuleNotFoundError(name + " is blocked in this test")
sys.meta_path.insert(0, Block())
from ssamba_stream.cli import main
sys.argv = ["ssamba-stream", *sys.argv[1:]]
main()
"""


def run_cli(*args, blocked=("torch",)) -> subprocess.CompletedProcess:
    code = BLOCKED.format(blocked=repr(set(blocked)))
    command = [sys.executable, "-c", code, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def events(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@needs_silero
def test_file_vad_keeps_only_the_events_near_speech(random_kws_model, speech_16k, tmp_path):
    wav = tmp_path / "mixed.wav"
    start, end = mixed_wav(speech_16k, wav)
    args = ["file", wav, "--model", random_kws_model, "--threshold", "0.2", "--refractory", "0.3", "--json"]
    ungated = events(run_cli(*args))
    gated = events(run_cli(*args, "--vad", "--vad-hold", "1.0"))
    in_noise = [e for e in ungated if e["time"] < start or e["time"] > end + 1.5]
    assert in_noise, "the random model should fire in the noise at this threshold"
    assert gated and all(e in ungated for e in gated)
    assert all(start <= e["time"] <= end + 1.0 + 0.05 for e in gated)
    assert not any(e in gated for e in in_noise)


def assert_one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_vad_without_the_package_is_a_one_line_error(random_kws_model, tmp_path):
    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(RATE, np.float32), RATE)
    result = run_cli("file", wav, "--model", random_kws_model, "--vad", blocked=("torch", "silero_vad"))
    assert_one_line_error(result, "pip install 'ssamba-stream[vad]'")
    assert result.stdout == ""


def test_vad_options_used_wrongly_are_one_line_errors(random_kws_model, tmp_path):
    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(RATE, np.float32), RATE)
    assert_one_line_error(run_cli("file", wav, "--model", random_kws_model, "--vad-hold", "1"), "add --vad")
    classify = run_cli("file", wav, "--model", random_kws_model, "--task", "classify", "--vad")
    assert_one_line_error(classify, "--task kws")
