"""ssamba_training.synth with espeak-ng: Speech Commands layout, voice-disjoint splits, determinism,
noise, errors. (Other engines, reserved voices and rooms: test_synth_engines.py.)

Real espeak-ng throughout; a small build (3 keywords, 2 unknown words, 8 speakers) keeps it fast.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssamba_training import synth
from ssamba_training.synth import SynthConfig, build_dataset, espeak, main
from ssamba_training.synth.common import speaker_id
from ssamba_training.synth.dataset import DEFAULT_KEYWORDS, DEFAULT_UNKNOWN_WORDS
from ssamba_training.synth.espeak import SpeechParams
from ssamba_training.synth.noise import colored_noise

from audio_fixtures import ESPEAK, SKIP_REASON

needs_espeak = pytest.mark.skipif(ESPEAK is None, reason=SKIP_REASON)

KEYWORDS = ("yes", "no", "stop")
UNKNOWN = ("yet", "cup")
SMALL = [
    "--keywords", ",".join(KEYWORDS), "--unknown-words", ",".join(UNKNOWN),
    "--voices", "en-us,en-gb-scotland", "--variants", "m3,f2,klatt2",
    "--per-voice", "2", "--unknown-per-voice", "1", "--val-voices", "2", "--test-voices", "2",
    "--noise-clips", "4", "--noise-seconds", "2",
]  # fmt: skip
N_SPEAKERS = 8  # 2 voices x (plain + 3 variants)
FILE_RE = re.compile(r"^(?P<word>[a-z]+)/(?P<sid>[0-9a-f]{8})_nohash_(?P<n>\d+)\.wav$")


def build(out: Path, *extra: str) -> None:
    assert main([*SMALL, "--out", str(out), *extra]) == 0


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def word_files(root: Path) -> set[str]:
    return {f"{p.parent.name}/{p.name}" for p in root.glob("*/*.wav") if p.parent.name != synth.NOISE_DIR}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if ESPEAK is None:
        pytest.skip(SKIP_REASON)
    out = tmp_path_factory.mktemp("synth") / "sc"
    build(out, "--seed", "7", "--jobs", "2")
    return out


@needs_espeak
def test_layout_and_clips(dataset: Path) -> None:
    assert {p.name for p in dataset.iterdir() if p.is_dir()} == {*KEYWORDS, *UNKNOWN, synth.NOISE_DIR}
    files = word_files(dataset)
    assert all(FILE_RE.match(f) for f in files)
    for word in KEYWORDS:
        assert len(list((dataset / word).glob("*.wav"))) == N_SPEAKERS * 2
    for word in UNKNOWN:
        assert len(list((dataset / word).glob("*.wav"))) == N_SPEAKERS
    with open(dataset / synth.CLIPS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["file"] for r in rows} == files and len(rows) == len(files)
    for row in rows:
        info = sf.info(dataset / row["file"])
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 16000)
        audio, _ = sf.read(dataset / row["file"], dtype="float32")
        start, end = int(row["start"]), int(row["end"])
        assert 0 < start < end < 16000 and end - start > 1600  # a whole word, at least 0.1 s
        inside = np.sqrt(np.mean(audio[start:end] ** 2))
        outside = np.sqrt(np.mean(np.concatenate([audio[:start], audio[end:]]) ** 2))
        assert inside > 3e-3, row["file"]  # speech, not silence
        # outside the word: only the faint noise floor (<= -55 dBFS RMS), never digital silence
        assert 0 < outside < 10 ** (-52 / 20) and inside > 5 * outside, row["file"]


@needs_espeak
def test_splits_are_voice_disjoint_and_cover_every_file(dataset: Path) -> None:
    val = (dataset / "validation_list.txt").read_text().splitlines()
    test = (dataset / "testing_list.txt").read_text().splitlines()
    files = word_files(dataset)
    assert len(set(val)) == len(val) and len(set(test)) == len(test)
    assert set(val) <= files and set(test) <= files and not set(val) & set(test)
    train = files - set(val) - set(test)

    def speakers(names: set[str] | list[str]) -> set[str]:
        return {FILE_RE.match(n)["sid"] for n in names}

    assert len(speakers(val)) == 2 and len(speakers(test)) == 2 and len(speakers(train)) == N_SPEAKERS - 4
    assert not speakers(val) & speakers(test)
    assert not (speakers(val) | speakers(test)) & speakers(train)
    # every held-out speaker has all its clips held out
    for held in (val, test):
        assert set(held) == {f for f in files if FILE_RE.match(f)["sid"] in speakers(held)}

    manifest = json.loads((dataset / synth.MANIFEST).read_text())
    by_split = {name: {s["id"] for s in entries} for name, entries in manifest["speakers"].items()}
    assert by_split == {"train": speakers(train), "validation": speakers(val), "testing": speakers(test)}
    assert all(s["id"] == speaker_id(s["speaker"]) for e in manifest["speakers"].values() for s in e)
    assert manifest["counts"]["train"]["clips"] == len(train)
    assert manifest["counts"]["validation"]["per_word"] == {"cup": 2, "no": 4, "stop": 4, "yes": 4, "yet": 2}
    assert manifest["keywords"] == list(KEYWORDS) and manifest["unknown_words"] == list(UNKNOWN)
    assert manifest["seed"] == 7 and manifest["espeak_ng_version"] == espeak.espeak_version()


@needs_espeak
def test_background_noise(dataset: Path) -> None:
    noise = sorted((dataset / synth.NOISE_DIR).glob("*.wav"))
    assert [p.name for p in noise] == [f"{k}_noise_0.wav" for k in ("babble", "brown", "pink", "white")]
    for path in noise:
        audio, rate = sf.read(path, dtype="float32")
        assert rate == 16000 and audio.shape == (32000,)
        assert np.sqrt(np.mean(audio**2)) > 0.03 and np.abs(audio).max() < 1.0


@needs_espeak
def test_same_seed_identical_whatever_jobs_other_seed_differs(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build(again, "--seed", "7", "--jobs", "1")
    assert tree(again) == tree(dataset)
    build(again, "--seed", "8", "--jobs", "2", "--overwrite")
    first, other = tree(dataset), tree(again)
    assert other.keys() == first.keys()  # same speakers and file names, new audio:
    wavs = [name for name in first if name.endswith(".wav")]
    assert sum(other[name] != first[name] for name in wavs) == len(wavs)


@needs_espeak
def test_synthesize_word_is_sped_up_to_fit() -> None:
    slow = SpeechParams(speed=80)
    word = espeak.synthesize_word("marvin", "en-us", slow)
    assert word.dtype == np.float32 and word.size > 8000
    fitted = espeak.synthesize_word("marvin", "en-us", slow, max_samples=8000)
    assert 4000 < fitted.size <= 8000
    batch = espeak.synthesize_words(["yes", "marvin", "stop"], "en-us+m3", slow, max_samples=8000)
    assert len(batch) == 3 and all(1600 < w.size <= 8000 for w in batch)


@pytest.mark.parametrize(("kind", "slope"), [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_colored_noise_spectral_slope(kind: str, slope: float) -> None:
    noise = colored_noise(kind, 1 << 18, np.random.default_rng(0))
    assert noise.dtype == np.float32
    assert abs(noise.mean()) < 1e-3 and abs(np.sqrt(np.mean(noise**2)) - 1) < 1e-3
    segments = noise.reshape(-1, 4096) * np.hanning(4096)  # Welch: averaged windowed periodograms
    power = np.mean(np.abs(np.fft.rfft(segments, axis=1)) ** 2, axis=0)
    freqs = np.fft.rfftfreq(4096, d=1 / 16000)
    band = (freqs >= 50) & (freqs <= 6000)
    # equal weight per octave, not per bin, so the high band does not dominate the fit
    octaves = np.unique(np.geomspace(np.searchsorted(freqs, 50), band.nonzero()[0][-1], 60).astype(int))
    fitted = np.polyfit(np.log10(freqs[octaves]), np.log10(power[octaves]), 1)[0]
    assert abs(fitted - slope) < 0.1, fitted


def test_missing_espeak_is_one_line_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    proc = subprocess.run(
        [sys.executable, "-m", "ssamba_training.synth", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: espeak-ng is not installed: apt-get install espeak-ng"
    ]
    assert not (tmp_path / "out").exists()


@needs_espeak
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keywords", ""], "keyword list is empty"),
        (["--keywords", "yes,no", "--unknown-words", "no,cat"], "both keyword and unknown: no"),
        (["--keywords", "yes,no", "--unknown-words", "cat,know"], "'know' sounds as 'no' (n'oU)"),
        (
            ["--voices", "en-us", "--variants", "m3", "--val-voices", "1", "--test-voices", "1"],
            "none of the 2",
        ),
        (["--voices", "en-xx"], "unknown espeak-ng voice"),
        (["--per-voice", "0"], "--per-voice must be >= 1"),
        (["--jobs", "two"], "invalid int value"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


@needs_espeak
def test_default_unknown_words_are_close_to_keywords_but_never_homophones() -> None:
    espeak.check_no_homophones(DEFAULT_KEYWORDS, DEFAULT_UNKNOWN_WORDS)
    spelled = dict(
        zip(("no", "note", "go", "goat"), espeak.phonemes(["no", "note", "go", "goat"]), strict=True)
    )
    assert spelled["note"] == spelled["no"] + "t" and spelled["goat"] == spelled["go"] + "t"


def test_non_empty_output_needs_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["--out", str(tmp_path)]) == 2
    assert main(["--out", str(tmp_path), "--overwrite"]) == 2  # not a synth build: never deleted
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not empty" in err[0] and "no synth.json" in err[1]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_build_dataset_validates_before_synthesis(tmp_path: Path) -> None:
    with pytest.raises(synth.SynthError, match="both keyword and unknown"):
        build_dataset(SynthConfig(out=tmp_path / "x", keywords=("yes",), unknown_words=("yes",)))
