"""`ssamba-stream mic` and `devices` through real PortAudio, and the microphone's error paths (design §8).

A private PulseAudio daemon (its own socket in a temporary folder, nothing shared with a desktop
session) has one null sink at 16 kHz mono whose monitor is the default source. PortAudio reaches it
through ALSA's pulse plugin as the input device ``pulse``. A test plays a WAV into the sink with
paplay while the microphone records the monitor: the samples arrive bit-exact, only at an arbitrary
offset, so the live spotter must give the events ``KeywordSpotter.process_file`` gives on the WAV.

Needs pulseaudio, pulseaudio-utils, libportaudio2 and libasound2-plugins (apt); skipped without them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from ssamba_stream.errors import UserError
from ssamba_stream.kws import Event
from ssamba_stream.microphone import (
    CaptureSettings,
    InputDevice,
    Microphone,
    capture_settings,
    listen,
    select_device,
)
from ssamba_stream.spotter import KeywordSpotter

from audio_fixtures import ESPEAK, SKIP_REASON, synthesize_speech

RATE = 16000
THRESHOLD = 0.6  # the WAV below gives the same events at 0.52 and 0.68 at any alignment: a margin
SINK = "ssamba_mic"
CLI = [sys.executable, "-m", "ssamba_stream.cli"]
APT = "apt-get install pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins"


def import_sounddevice():
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        pytest.skip(f"sounddevice/PortAudio unavailable ({exc}): pip install sounddevice; {APT}")
    return sounddevice


@dataclass(frozen=True)
class Pulse:
    """The running test daemon; ``env`` points PulseAudio clients (subprocesses) at it."""

    env: dict[str, str]

    def play(self, wav: Path) -> None:
        subprocess.run(["paplay", str(wav)], env=self.env, check=True, timeout=120)


def _wait_until_ready(daemon: subprocess.Popen, env: dict[str, str], log: Path) -> None:
    deadline = time.monotonic() + 20
    while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
        if daemon.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"pulseaudio did not start: {log.read_text()}")
        time.sleep(0.1)
    subprocess.run(["pactl", "set-default-source", f"{SINK}.monitor"], env=env, check=True)


@pytest.fixture(scope="module")
def pulse() -> Iterator[Pulse]:
    """A private PulseAudio daemon, also made visible to PortAudio in this process."""
    missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: {APT}")
    sd = import_sounddevice()
    with tempfile.TemporaryDirectory(prefix="ssamba-pulse-") as folder, pytest.MonkeyPatch.context() as patch:
        env = {**os.environ, "PULSE_SERVER": f"unix:{folder}/native"}
        home = {"HOME": folder, "XDG_RUNTIME_DIR": folder, "PULSE_RUNTIME_PATH": folder}
        log = Path(folder) / "pulseaudio.log"
        with open(log, "w") as log_file:
            daemon = subprocess.Popen(
                ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
                 "--disable-shm=yes", "--log-level=error",
                 "-L", f"module-native-protocol-unix socket={folder}/native auth-anonymous=1",
                 "-L", f"module-null-sink sink_name={SINK} rate={RATE} channels=1"],
                env={**os.environ, **home}, stdout=log_file, stderr=log_file,
            )  # fmt: skip
        try:
            _wait_until_ready(daemon, env, log)
            patch.setenv("PULSE_SERVER", env["PULSE_SERVER"])
            sd._terminate()  # PortAudio lists devices when initialised: again, now that pulse runs
            sd._initialize()
            if "pulse" not in [device["name"] for device in sd.query_devices()]:
                pytest.skip(f"PortAudio has no 'pulse' device (ALSA's pulse plugin): {APT}")
            yield Pulse(env)
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    """int16 at 16 kHz: what the sink plays and the microphone records, sample for sample."""
    sf.write(path, (np.clip(audio, -1, 1) * 32767).astype(np.int16), RATE, subtype="PCM_16")
    return path


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.float32)


@pytest.fixture(scope="module")
def events_wav(tmp_path_factory) -> Path:
    """Speech, a noise burst, a 200 Hz hum, speech, 1.5 s apart: four events of three labels on the
    random model, whatever block alignment the live stream happens to have (checked offline)."""
    if ESPEAK is None:
        pytest.skip(SKIP_REASON)
    noise = 0.1 * np.random.default_rng(0).standard_normal(RATE // 2)
    hum = 0.3 * np.sin(2 * np.pi * 200 * np.arange(RATE // 2) / RATE)
    parts = [silence(1.0)]
    for sound in (synthesize_speech("yes"), noise, hum, synthesize_speech("aah")):
        parts += [sound.astype(np.float32), silence(1.5)]
    parts.append(silence(0.5))
    return write_wav(tmp_path_factory.mktemp("mic") / "events.wav", np.concatenate(parts))


@pytest.fixture(scope="module")
def expected(random_kws_model, events_wav) -> list[Event]:
    """The WAV's events offline, after checking that the labels hold at other block alignments
    (the live stream's is arbitrary): otherwise the model changed and the WAV must be redesigned."""
    spotter = KeywordSpotter(random_kws_model, threshold=THRESHOLD)
    events = spotter.process_file(events_wav)
    assert len({event.label for event in events}) >= 3, events
    audio = sf.read(events_wav, dtype="int16")[0]
    for shift in (700, 1400, 2100):  # samples, within one 2560-sample block
        spotter.reset()
        shifted = spotter.process(audio[shift:], RATE) + spotter.finish()
        assert [e.label for e in shifted] == [e.label for e in events], (shift, shifted, events)
    return events


def assert_same_events(got: list[Event], expected: list[Event], block_seconds: float) -> None:
    """Same labels in order; times aligned on the first event, within one block.

    The live stream starts at an arbitrary offset, so its block grid is shifted against the WAV's.
    An event fires at the end of the block in which the smoothed posterior crosses the threshold, so
    each event moves by less than one block against the sound, a difference of two event times by
    less than two; both are whole numbers of blocks, so by at most one (as observed offline at every
    offset in 80-sample steps).
    """
    assert [event.label for event in got] == [event.label for event in expected], (got, expected)
    got_times = np.array([event.time for event in got])
    expected_times = np.array([event.time for event in expected])
    np.testing.assert_allclose(
        got_times - got_times[0], expected_times - expected_times[0], atol=block_seconds + 1e-6
    )
    assert got_times[0] >= expected_times[0] - block_seconds  # the live stream only adds lead silence


def start_mic(pulse: Pulse, *args: str) -> tuple[subprocess.Popen, str]:
    """`ssamba-stream mic` once it is listening (its stderr says so), with what it said before."""
    process = subprocess.Popen(
        [*CLI, "mic", *args], env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    said = ""
    while "listening on" not in said:
        line = process.stderr.readline()
        if not line:
            process.kill()
            pytest.fail(f"mic did not start: {said}{process.communicate()[1]}")
        said += line
    return process, said


def test_mic_cli_gives_the_events_of_the_played_file(pulse, random_kws_model, events_wav, expected):
    seconds = sf.info(events_wav).duration + 0.5
    args = ("--model", random_kws_model, "--device", "pulse", "--json", "--seconds", f"{seconds:.2f}")
    process, said = start_mic(pulse, *map(str, args), "--threshold", str(THRESHOLD))
    pulse.play(events_wav)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, said + err
    got = [Event(d["time"], d["label"], d["score"]) for d in map(json.loads, out.splitlines())]
    assert_same_events(got, expected, KeywordSpotter(random_kws_model).block_seconds)
    summary = err.strip().splitlines()[-1]
    assert summary.startswith(f"mic: {seconds:.2f} s of audio, {len(expected)} events,"), summary
    assert summary.endswith("captured from pulse at 16000 Hz (no resampling, 1 channel), 0 overflows"), (
        summary
    )


def test_mic_resamples_when_the_device_refuses_16k(
    pulse, monkeypatch, random_kws_model, events_wav, expected
):
    sd = import_sounddevice()
    check = sd.check_input_settings

    def refuse_16k(*args, samplerate=None, **kwargs):
        if samplerate == RATE:
            raise sd.PortAudioError("Invalid sample rate", -9997)
        return check(*args, samplerate=samplerate, **kwargs)

    monkeypatch.setattr(sd, "check_input_settings", refuse_16k)
    spotter = KeywordSpotter(random_kws_model, threshold=THRESHOLD)
    got: list[Event] = []
    with Microphone("pulse") as microphone:
        assert microphone.settings.resampled and microphone.rate == microphone.device.default_rate != RATE
        player = subprocess.Popen(["paplay", str(events_wav)], env=pulse.env)
        listen(spotter, microphone, got.extend, seconds=sf.info(events_wav).duration + 0.5)
        player.wait(timeout=60)
    assert_same_events(got, expected, spotter.block_seconds)
    assert microphone.overflows == 0


def test_microphone_records_the_played_samples_exactly(pulse, tmp_path):
    if ESPEAK is None:
        pytest.skip(SKIP_REASON)
    wav = write_wav(
        tmp_path / "yes.wav", np.concatenate([silence(0.3), synthesize_speech("yes"), silence(0.3)])
    )
    played = sf.read(wav, dtype="int16")[0]
    with Microphone("pulse") as microphone:
        assert microphone.settings == CaptureSettings(RATE, 1, False)
        pulse.play(wav)
        time.sleep(0.5)  # the monitor's latency: the last played samples are still on their way
        recorded = np.concatenate(microphone.stop())[:, 0]
    start_recorded, start_played = np.flatnonzero(recorded)[0], np.flatnonzero(played)[0]
    sound = played[start_played:]
    np.testing.assert_array_equal(recorded[start_recorded : start_recorded + len(sound)], sound)
    assert microphone.overflows == 0


def test_microphone_counts_overflows_and_a_full_queue(pulse):
    microphone = Microphone("pulse", queue_seconds=0.08)  # room for two 40 ms blocks
    block = np.zeros((640, 1), np.int16)
    microphone._callback(block, 640, None, SimpleNamespace(input_overflow=True))
    for _ in range(3):
        microphone._callback(block, 640, None, SimpleNamespace(input_overflow=False))
    assert (microphone.device_overflows, microphone.lost_blocks, microphone.overflows) == (1, 2, 3)
    assert len(microphone.stop()) == 2
    microphone.stream.close()


def test_listen_reports_a_stream_that_stopped(pulse, random_kws_model):
    with Microphone("pulse") as microphone:
        microphone.stream.abort()  # as when a USB microphone is pulled out
        with pytest.raises(UserError, match="input stream from pulse stopped"):
            listen(KeywordSpotter(random_kws_model), microphone, lambda results: None)


def test_ctrl_c_stops_cleanly_with_a_summary(pulse, random_kws_model):
    args = ("--model", str(random_kws_model), "--device", "pulse", "--task", "classify", "--every", "0.16")
    process, said = start_mic(pulse, *args)
    first = process.stdout.readline()  # audio flows: a ranking per 160 ms block
    assert first.split()[0].endswith("s"), first
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, said + err
    assert "Traceback" not in err
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("mic: ") and summary.endswith(", 0 overflows"), summary
    assert f" {1 + len(out.splitlines())} rankings" in summary


def test_devices_lists_pulse_and_marks_the_default(pulse):
    result = subprocess.run([*CLI, "devices"], env=pulse.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[-6:-4] == ["pulse", "(ALSA),"] for line in lines), lines
    assert sum(line.startswith("*") for line in lines) == 1, lines


def devices_of(*names: str) -> list[InputDevice]:
    return [InputDevice(i, name, "ALSA", 2, 48000, i == 1) for i, name in enumerate(names)]


def test_select_device_by_index_name_part_or_default():
    available = devices_of("USB Mic: Audio (hw:1,0)", "default", "pulse")
    assert select_device(available, None).name == "default"
    assert select_device(available, "2").name == "pulse"
    assert select_device(available, 0).index == 0
    assert select_device(available, "PULSE").index == 2
    assert select_device(available, "usb mic").index == 0
    for device, message in [
        ("u", "ambiguous"),
        ("7", "no input device '7'"),
        ("webcam", "ssamba-stream devices"),
    ]:
        with pytest.raises(UserError, match=message):
            select_device(available, device)
    with pytest.raises(UserError, match="no input device found"):
        select_device([], None)


def test_capture_settings_fall_back_to_the_device_rate_and_channels():
    class PortAudioError(Exception):
        pass

    def sounddevice_accepting(*accepted: tuple[int, int]) -> SimpleNamespace:
        def check(device, samplerate, channels, dtype):
            if (samplerate, channels) not in accepted:
                raise PortAudioError("refused")

        return SimpleNamespace(PortAudioError=PortAudioError, check_input_settings=check)

    device = devices_of("mic")[0]  # 2 channels, 48 kHz
    for accepted, chosen in [
        ((16000, 1), CaptureSettings(16000, 1, False)),
        ((16000, 2), CaptureSettings(16000, 2, False)),
        ((48000, 2), CaptureSettings(48000, 2, True)),
    ]:
        assert capture_settings(sounddevice_accepting(accepted), device, 16000) == chosen
    with pytest.raises(UserError, match="accepts neither 16000 Hz nor its own 48000 Hz"):
        capture_settings(sounddevice_accepting(), device, 16000)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def run_mic(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "mic", *args], env=env, capture_output=True, text=True, timeout=120)


def test_unknown_device_is_a_one_line_error(pulse, random_kws_model):
    result = run_mic("--model", str(random_kws_model), "--device", "no-such-mic", env=pulse.env)
    assert_one_line_error(result, "no input device 'no-such-mic'", "ssamba-stream devices")


def test_bad_seconds_is_a_one_line_error(random_kws_model):
    assert_one_line_error(
        run_mic("--model", str(random_kws_model), "--seconds", "0"), "--seconds must be positive"
    )


def test_no_input_device_is_a_one_line_error():
    import_sounddevice()
    # No sound server, and a container has no sound card.
    env = {**os.environ, "PULSE_SERVER": "unix:/nonexistent/pulse"}
    result = subprocess.run([*CLI, "devices"], env=env, capture_output=True, text=True, timeout=60)
    if result.returncode == 0:
        pytest.skip(f"this machine has input devices of its own: {result.stdout.strip()}")
    assert_one_line_error(result, "no input device found")


# Runs the CLI where importing sounddevice fails as it does without PortAudio (OSError) or without
# the package (ImportError), and where torch cannot be imported at all: the mic path must not need it.
BLOCKED_IMPORTS = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "sounddevice":
            raise {error}
        if name.split(".")[0] == "torch":
            raise ImportError("torch blocked")
sys.meta_path.insert(0, Block())
from ssamba_stream.cli import main
sys.argv = ["ssamba-stream", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize(
    "error, needle",
    [
        ("OSError('PortAudio library not found')", "apt-get install libportaudio2"),
        ("ImportError('No module named sounddevice')", "pip install 'ssamba-stream[mic]'"),
    ],
)
def test_missing_portaudio_or_sounddevice_is_a_one_line_error(random_kws_model, error, needle):
    code = BLOCKED_IMPORTS.format(error=error)
    for args in (["devices"], ["mic", "--model", str(random_kws_model)]):
        result = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
        )
        assert_one_line_error(result, needle)
