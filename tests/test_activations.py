"""--save-activations: each event's audio as WAV with a JSON line, from the CLI and the Wyoming server."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from ssamba_stream.activations import AudioHistory
from ssamba_stream.audio import load_audio

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "keywords.wav"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssamba_stream.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)  # fmt: skip


def check_saved(folder: Path, events: list[dict], stream: str) -> None:
    """One WAV per event: the 2 s of the example up to the event's time, and its JSON line."""
    lines = [json.loads(line) for line in (folder / "activations.jsonl").read_text().splitlines()]
    assert [(x["label"], x["time"]) for x in lines] == [(e["label"], e["time"]) for e in events]
    audio = load_audio(EXAMPLE, 16000)
    for line in lines:
        clip, rate = sf.read(folder / line["wav"], dtype="float32")
        assert (
            rate == 16000
            and len(clip) == 32000
            and line["stream"] == stream
            and line["model"] == "model.onnx"
        )
        end = round(line["time"] * 16000)
        np.testing.assert_allclose(clip, audio[end - 32000 : end], atol=1 / 16000)


def test_file_saves_each_event_audio_and_json_line(tmp_path):
    result = _cli("file", str(EXAMPLE), "--json", "--save-activations", str(tmp_path / "saved"))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 6
    check_saved(tmp_path / "saved", events, "stream1")


def test_save_activations_is_for_keyword_events_and_needs_a_folder(tmp_path):
    classify = _cli("file", str(EXAMPLE), "--task", "classify", "--save-activations", str(tmp_path))
    assert classify.returncode == 2 and "use it with --task kws" in classify.stderr
    (tmp_path / "file").write_text("")
    taken = _cli("file", str(EXAMPLE), "--save-activations", str(tmp_path / "file"))
    assert (
        taken.returncode == 2 and len(taken.stderr.strip().splitlines()) == 1 and "is a file" in taken.stderr
    )


def test_history_keeps_the_last_seconds_by_stream_time():
    history = AudioHistory(1.0, 10)
    history.append(np.arange(7, dtype=np.float32))
    history.append(np.arange(7, 25, dtype=np.float32))  # 0..24 all kept: the chunk and 1 s (10) before it
    history.append(np.arange(25, 27, dtype=np.float32))  # 0..26: 15..26 kept
    np.testing.assert_array_equal(history.until(2.0, 0.5), np.arange(15, 20))
    np.testing.assert_array_equal(history.until(2.0, 5.0), np.arange(15, 20))  # from the first sample kept
    np.testing.assert_array_equal(history.until(9.0, 2.0), np.arange(15, 27))  # only what is kept, up to now
