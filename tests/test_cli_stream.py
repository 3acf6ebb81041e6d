"""`ssamba-stream file` and `stdin`, the KeywordSpotter API behind them, and every bad input (design §8).

The model is a random-weight export (fast, arbitrary but deterministic posteriors): these tests pin
the engine's plumbing (formats, rates, channels, chunking, errors); tests/test_bundled.py checks
that the bundled model hears the right words.
"""

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from model_fixtures import export_random_model

from ssamba_stream import KeywordSpotter, StreamClassifier, __version__
from ssamba_stream.errors import InputWarning, UserError

CLI = [sys.executable, "-m", "ssamba_stream.cli"]


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], input=stdin, capture_output=True, timeout=300)


def json_lines(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    err = result.stderr.decode()
    assert result.returncode == 2, (result.returncode, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def audio(speech_16k) -> np.ndarray:
    """Speech, a pause, speech again: ~13 s, so that a random model moves between labels."""
    return np.concatenate([speech_16k, np.zeros(8000, np.float32), speech_16k[::-1].copy()])


@pytest.fixture(scope="module")
def reference_wav(audio, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wav") / "speech.wav"
    sf.write(path, audio, 16000, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def low_threshold() -> list[str]:
    return ["--threshold", "0.3"]


def test_file_command_prints_the_api_events(random_kws_model, reference_wav, low_threshold):
    expected = KeywordSpotter(random_kws_model, threshold=0.3).process_file(reference_wav)
    assert len(expected) >= 2, "the random model should fire on this audio at 0.3"
    result = run_cli("file", reference_wav, "--model", random_kws_model, "--json", *low_threshold)
    assert json_lines(result) == [e.to_json() for e in expected]
    assert "13." in result.stderr.decode() or "12." in result.stderr.decode()  # audio seconds in the summary
    text = (
        run_cli("file", reference_wav, "--model", random_kws_model, *low_threshold)
        .stdout.decode()
        .splitlines()
    )
    assert [line.split()[1] for line in text] == [e.label for e in expected]


def test_smoothing_and_refractory_options_override_the_sidecar(random_kws_model, reference_wav):
    """--smoothing and --refractory reach the detector as the API's overrides do, and change what fires."""
    defaults = KeywordSpotter(random_kws_model, threshold=0.3).process_file(reference_wav)
    expected = KeywordSpotter(
        random_kws_model, threshold=0.3, smoothing_blocks=4, refractory_seconds=4.0
    ).process_file(reference_wav)
    result = run_cli("file", reference_wav, "--model", random_kws_model, "--json", "--threshold", "0.3",
                     "--smoothing", "4", "--refractory", "4")  # fmt: skip
    events = json_lines(result)
    assert events == [e.to_json() for e in expected]
    assert 1 <= len(events) < len(defaults)
    gaps = np.diff([event["time"] for event in events])
    assert (gaps >= 4.0).all()


def test_stdin_at_44k_stereo_int16_gives_the_same_events_as_the_file(
    random_kws_model, audio, tmp_path, low_threshold
):
    stereo44 = soxr.resample(np.stack([audio, audio * 0.5], axis=1), 16000, 44100)
    pcm = np.clip(np.round(stereo44 * 32767), -32768, 32767).astype("<i2")
    wav = tmp_path / "stereo44.wav"
    sf.write(wav, pcm, 44100, subtype="PCM_16")
    from_file = json_lines(run_cli("file", wav, "--model", random_kws_model, "--json", *low_threshold))
    from_stdin = run_cli("stdin", "--rate", "44100", "--channels", "2", "--format", "s16le", "--model", random_kws_model,
                         "--json", *low_threshold, stdin=pcm.tobytes())  # fmt: skip
    assert json_lines(from_stdin) == from_file
    assert (
        "note: stdin: 2 channels downmixed to mono, resampled from 44100 Hz to 16000 Hz"
        in from_stdin.stderr.decode()
    )
    assert len(from_file) >= 1


def top1_scores(result: subprocess.CompletedProcess) -> np.ndarray:
    return np.array([row["top"][0]["score"] for row in json_lines(result)])


@pytest.mark.parametrize(
    "subtype, tolerance",
    [("DOUBLE", 1e-4), ("PCM_32", 1e-4), ("PCM_24", 1e-3), ("PCM_16", 0.05), ("PCM_U8", None)],
)
def test_integer_and_float64_files_decode_like_float32(
    random_kws_model, reference_wav, audio, tmp_path, subtype, tolerance
):
    path = tmp_path / f"speech_{subtype}.wav"
    sf.write(path, audio * 0.9, 16000, subtype=subtype)
    sf.write(tmp_path / "ref.wav", audio * 0.9, 16000, subtype="FLOAT")
    args = ["--model", random_kws_model, "--task", "classify", "--every", "0.16", "--json"]
    reference = top1_scores(run_cli("file", tmp_path / "ref.wav", *args))
    scores = top1_scores(run_cli("file", path, *args))
    assert scores.shape == reference.shape == (len(audio) // 2560,)
    if tolerance is not None:  # 8-bit audio is too coarse to compare; it must decode and stream
        assert np.abs(scores - reference).max() <= tolerance


def test_api_takes_chunks_of_any_size_rate_and_layout(random_kws_model, audio):
    whole = KeywordSpotter(random_kws_model, threshold=0.3)
    expected = whole.process(audio) + whole.finish()
    chunked = KeywordSpotter(random_kws_model, threshold=0.3)
    rng = np.random.default_rng(0)
    events, start = [], 0
    while start < len(audio):
        size = int(rng.integers(1, 5000))
        events += chunked.process(audio[start : start + size])
        start += size
    assert events + chunked.finish() == expected
    assert chunked.seconds == pytest.approx(len(audio) / 16000)
    with pytest.raises(UserError, match="sample rate changed"):
        chunked.process(audio[:100], 8000)
    chunked.reset()
    assert chunked.process(audio[:100], 8000) == [] and chunked.seconds == pytest.approx(100 / 8000)


def test_classifier_reports_top_k_at_the_interval(random_kws_model, reference_wav):
    rankings = StreamClassifier(random_kws_model, top_k=2, every_seconds=0.48).process_file(reference_wav)
    assert [round(r.time, 2) for r in rankings[:3]] == [0.48, 0.96, 1.44]
    assert all(len(r.top) == 2 and r.top[0][1] >= r.top[1][1] for r in rankings)


def write_bad(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.wav"
    tone = np.sin(np.arange(16000) / 5).astype(np.float32)
    if kind in ("nan", "inf"):
        tone[5000] = np.nan if kind == "nan" else np.inf
        sf.write(path, tone, 16000, subtype="FLOAT")
    elif kind == "empty":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif kind in ("truncated_header", "truncated_data"):
        sf.write(path, tone, 16000, subtype="PCM_16")
        data = path.read_bytes()
        path.write_bytes(data[:20] if kind == "truncated_header" else data[:-9000])
    elif kind == "not_audio":
        path.write_text("this is a text file, not a recording\n")
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("nan", "NaN"),
        ("inf", "NaN or infinite"),
        ("empty", "no samples"),
        ("truncated_header", "not a readable audio file"),
        ("truncated_data", "truncated"),
        ("not_audio", "not a readable audio file"),
        ("missing", "file not found"),
        ("directory", "a directory, not an audio file"),
    ],
)
def test_bad_audio_files_are_one_line_errors(random_kws_model, tmp_path, kind, needle):
    path = write_bad(tmp_path, kind)
    assert_one_line_error(run_cli("file", path, "--model", random_kws_model), str(path), needle)


def test_a_bad_file_among_good_ones_keeps_the_good_results(
    random_kws_model, reference_wav, tmp_path, low_threshold
):
    bad = write_bad(tmp_path, "not_audio")
    result = run_cli(
        "file", reference_wav, bad, reference_wav, "--model", random_kws_model, "--json", *low_threshold
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr.decode()
    files = [json.loads(line)["file"] for line in result.stdout.decode().splitlines()]
    single = json_lines(run_cli("file", reference_wav, "--model", random_kws_model, "--json", *low_threshold))
    assert files == [str(reference_wav)] * (2 * len(single))


def test_model_errors(random_kws_model, reference_wav, tmp_path):
    assert_one_line_error(run_cli("file", reference_wav, "--model", tmp_path / "absent.onnx"), "not found")
    assert_one_line_error(run_cli("file", reference_wav, "--model", tmp_path), "is a directory, not a file")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage" * 100)
    corrupt.with_suffix(".json").write_text(random_kws_model.with_suffix(".json").read_text())
    assert_one_line_error(run_cli("file", reference_wav, "--model", corrupt), "corrupt.onnx")
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(random_kws_model.read_bytes())
    assert_one_line_error(run_cli("file", reference_wav, "--model", lonely), "sidecar")


def test_a_classify_model_refuses_the_kws_task(reference_wav, tmp_path):
    model = export_random_model(tmp_path, ["dog", "rain", "siren"], task="classify")
    assert_one_line_error(
        run_cli("file", reference_wav, "--model", model, "--task", "kws"), "--task classify"
    )
    rows = json_lines(run_cli("file", reference_wav, "--model", model, "--task", "classify", "--json"))
    assert {entry["label"] for row in rows for entry in row["top"]} <= {"dog", "rain", "siren"}


@pytest.mark.parametrize(
    "args, stdin, needle",
    [
        (["stdin", "--rate", "16000", "--format", "s24"], b"", "unknown --format"),
        (["stdin", "--rate", "16000"], b"\x01\x02\x03", "stray bytes"),
        (["stdin", "--rate", "0"], b"", "--rate"),
        (["stdin", "--rate", "16000", "--format", "f32le"], np.array([0.1, np.nan], "<f4").tobytes(), "NaN"),
        (["file", "x.wav", "--threshold", "2"], None, "between 0 and 1"),
        (["file", "x.wav", "--thresholds", "marvin=0.5"], None, "not a label"),
        (["file", "x.wav", "--smoothing", "0"], None, "smoothing must be a whole number of blocks >= 1"),
        (["stdin", "--rate", "16000", "--refractory", "-1"], b"", "refractory period must be >= 0"),
        (["evaluate", "--stream", "x.wav", "--smoothing", "0"], None, "smoothing must be a whole number"),
        (["file", "x.wav", "--task", "transcribe"], None, "--task kws or --task classify"),
        (["file", "x.wav", "--threads", "0"], None, "threads must be a whole number >= 1, got 0"),
        (["file", "x.wav", "--task", "classify", "--every", "0"], None, "(--every) must be positive"),
        (["stdin", "--rate", "16000", "--threads", "-3"], b"", "threads must be a whole number >= 1, got -3"),
    ],
)
def test_bad_options_and_streams_are_one_line_errors(random_kws_model, args, stdin, needle):
    assert_one_line_error(run_cli(*args, "--model", random_kws_model, stdin=stdin), needle)


def test_stdin_closed_is_a_one_line_error(random_kws_model):
    """`ssamba-stream stdin <&-` starts Python without sys.stdin: say so instead of an AttributeError."""
    result = subprocess.run(
        [*CLI, "stdin", "--rate", "16000", "--model", str(random_kws_model)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=300,
        preexec_fn=lambda: os.close(0),
    )
    assert_one_line_error(result, "standard input is closed")


def test_standard_input_and_pipes_are_audio_files(random_kws_model, reference_wav, low_threshold):
    """`file -` and `file /dev/stdin` read a piped recording; /dev/null is empty, not 'not found'."""
    expected = json_lines(
        run_cli("file", reference_wav, "--model", random_kws_model, "--json", *low_threshold)
    )
    for name in ("-", "/dev/stdin"):
        piped = run_cli("file", name, "--model", random_kws_model, "--json", *low_threshold,
                        stdin=reference_wav.read_bytes())  # fmt: skip
        assert json_lines(piped) == expected, name
    assert_one_line_error(
        run_cli("file", "/dev/null", "--model", random_kws_model), "/dev/null", "empty (0 bytes)"
    )


@pytest.mark.parametrize("placeholder", [0, 0xFFFFFFFF])
def test_a_wav_whose_header_size_is_a_placeholder_holds_its_audio(random_kws_model, reference_wav, tmp_path,
                                                                    low_threshold, placeholder):  # fmt: skip
    """Streaming writers leave the data size at 0 (or 0xFFFFFFFF): the audio after it is still read."""
    data = bytearray(reference_wav.read_bytes())
    size_at = data.index(b"data") + 4
    data[size_at : size_at + 4] = placeholder.to_bytes(4, "little")
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(bytes(data))
    expected = json_lines(
        run_cli("file", reference_wav, "--model", random_kws_model, "--json", *low_threshold)
    )
    assert (
        expected
        and json_lines(run_cli("file", streamed, "--model", random_kws_model, "--json", *low_threshold))
        == expected
    )


def test_api_refuses_channels_first_arrays_and_warns_once_on_unscaled_floats(random_kws_model, audio):
    spotter = KeywordSpotter(random_kws_model)
    with pytest.raises(UserError, match=r"got \(2, 16000\).*pass pcm.T"):
        spotter.process(np.stack([audio[:16000], audio[:16000]]))
    spotter.reset()
    with pytest.warns(InputWarning, match="far outside"):
        spotter.process(audio[:16000] * 32768)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            spotter.process(audio[:16000] * 32768)
    assert len([w for w in caught if issubclass(w.category, InputWarning)]) <= 1


def test_an_8_khz_file_says_it_was_upsampled_and_what_that_costs(random_kws_model, audio, tmp_path):
    path = tmp_path / "phone.wav"
    sf.write(path, soxr.resample(audio, 16000, 8000), 8000)
    result = run_cli("file", path, "--model", random_kws_model)
    assert result.returncode == 0, result.stderr.decode()
    err = result.stderr.decode()
    assert "resampled from 8000 Hz to 16000 Hz" in err and "nothing above 4000 Hz" in err
    assert "Traceback" not in err and "InputWarning" not in err


def test_help_shows_flags_bare_and_version_is_an_option():
    for command in ("file", "stdin", "evaluate"):
        text = run_cli(command, "--help").stdout.decode()
        assert "--json" in text and "<bool>" not in text, text
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.decode().split()[-1] == __version__
    export = subprocess.run(
        [sys.executable, "-m", "ssamba_export.cli", "--version"], capture_output=True, text=True
    )
    assert export.returncode == 0 and export.stdout.split()[-1] == __version__, export.stderr


def test_classify_on_a_keyword_model_says_so(random_kws_model, reference_wav):
    result = run_cli("file", reference_wav, "--model", random_kws_model, "--task", "classify")
    assert result.returncode == 0 and "is a keyword model" in result.stderr.decode(), result.stderr.decode()


def test_ctrl_c_on_file_prints_the_summary_so_far(random_kws_model, tmp_path):
    long = tmp_path / "long.wav"
    noise = np.random.default_rng(0).normal(0, 0.1, 22050 * 1200).astype(np.float32)
    # 20 minutes at 22.05 kHz: a 'resampled' note once it runs, and ~15 s of work, so a loaded
    # machine cannot finish the file before the signal arrives (5 minutes once did)
    sf.write(long, noise, 22050, subtype="PCM_16")
    # A shell starting the suite as a background job ignores SIGINT in it, and the CLI inherits that
    # (Python installs no Ctrl-C handler then): restore the default, as a terminal's foreground has.
    process = subprocess.Popen([*CLI, "file", str(long), "--model", str(random_kws_model)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    first = process.stderr.readline().decode()
    assert "resampled" in first, first
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    err = rest.decode()
    assert process.returncode == 130 and "Traceback" not in err, err
    assert "s of audio" in err and "(interrupted)" in err, err


def test_errors_name_options_and_files_not_functions(reference_wav):
    line = assert_one_line_error(run_cli("info", reference_wav), "pass a checkpoint directory (config.json")
    assert "save_model" not in line
